"""Nomograms for every model with coefficients: points per covariate value, total points to risk.

The construction is the classic one (Harrell's rms::nomogram): each covariate's contribution to
the linear predictor, beta * (x - x_min_contribution), is scaled so that the covariate with the
widest contribution range spans 0-100 points. Total points map back to the linear predictor,
lp = lp_min + total * (range_max / 100), and the model's own link gives the risk at the horizon
(cox: 1 - S0(h)^exp(lp); logistic: expit(lp)). No library draws nomograms for
lifelines/scikit-learn models, so this is written here.

It relies only on the fitted pipeline's ``contributions`` (per model term), ``linear_predictor``
and ``risk_from_lp``, so the points of a patient add up exactly to the model's prediction, for
any model whose estimator ``supports_contributions`` (cox, coxnet, logistic, ...).

Binary covariates are labelled by their coded values ("0" / "1", or the study's own labels
when given), never "no" / "yes", which would say more than the data do. Two imaging terms that
correlate strongly (|Pearson r| > 0.7 in the development data) can earn points in opposite
directions although together they describe one property of the marrow; the nomogram then
carries a caution naming them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["Axis", "CORRELATION_CAUTION", "Nomogram", "correlated_pairs", "nomogram_for"]

POINTS_MAX = 100.0
CORRELATION_CAUTION = 0.7


@dataclass
class Axis:
    """One covariate's scale: values and the points they earn."""

    covariate: str
    values: list[Any]
    points: np.ndarray
    kind: str  # numeric | binary | categorical
    labels: list[str] = field(default_factory=list)  # tick labels, one per value


@dataclass
class Nomogram:
    axes: list[Axis]
    lp_min: float  # linear predictor when every covariate earns 0 points
    lp_per_point: float
    horizon_days: float
    risk_from_lp: Any = field(repr=False)
    _typical: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    _pipeline: Any = field(repr=False, default=None)
    _offsets: dict[str, float] = field(repr=False, default_factory=dict)
    _scale: float = 1.0
    #: Pairs of imaging terms with |Pearson r| above CORRELATION_CAUTION: (a, b, r).
    correlated: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def caution(self) -> str:
        """A sentence naming the strongly correlated imaging terms ("" when there are none)."""
        if not self.correlated:
            return ""
        pairs = "; ".join(f"{a} and {b} (r = {r:.2f})" for a, b, r in self.correlated)
        return (
            f"Caution: strongly correlated imaging terms ({pairs}). Their points are adjusted "
            "for each other and may run in opposite directions; read them together, not one "
            "by one."
        )

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        X: pd.DataFrame,
        covariates: dict[str, str],
        horizon_days: float,
        n_grid: int = 6,
        *,
        imaging: Sequence[str] = (),
        binary_levels: Mapping[str, Sequence[str]] | None = None,
    ) -> Nomogram:
        """Build from a fitted pipeline with coefficients and the data it was developed on.

        ``covariates`` maps each input column to numeric | binary | categorical. Numeric axes
        run from the 1st to the 99th percentile of ``X``. ``imaging``: the imaging columns
        checked for strong pairwise correlation (the caution). ``binary_levels``: the study's
        own labels of a binary covariate's values 0 and 1 (default "0", "1").
        """
        typical = _typical_row(X, covariates)
        contrib = {}
        values: dict[str, list[Any]] = {}
        for cov, kind in covariates.items():
            if kind == "numeric":
                x = pd.to_numeric(X[cov], errors="coerce").dropna()
                lo, hi = np.nanpercentile(x, [1, 99])
                levels = np.unique(x[(x >= lo) & (x <= hi)])
                if np.all(levels == np.round(levels)) and len(levels) <= 10:
                    grid = levels  # a count (fractured vertebrae): tick its own values
                else:
                    grid = np.unique(np.round(np.linspace(lo, hi, n_grid), _decimals(lo, hi)))
                vals: list[Any] = grid.tolist()
            elif kind == "binary":
                vals = [0.0, 1.0]
            else:
                vals = sorted(pd.Series(X[cov]).dropna().astype(str).unique())
            values[cov] = vals
            contrib[cov] = _covariate_contribution(pipeline, typical, cov, vals)
        ranges = {c: float(np.ptp(v)) for c, v in contrib.items()}
        widest = max(ranges.values()) or 1.0
        scale = POINTS_MAX / widest
        offsets = {c: float(np.min(v)) for c, v in contrib.items()}
        levels = dict(binary_levels or {})
        axes = [
            Axis(
                c,
                values[c],
                (contrib[c] - offsets[c]) * scale,
                covariates[c],
                [_fmt_value(v, covariates[c], levels.get(c)) for v in values[c]],
            )
            for c in covariates
        ]
        # lp of a patient = lp(typical) - sum of typical contributions + sum of own contributions
        lp_typ = float(np.asarray(pipeline.linear_predictor(typical))[0])
        typ_contrib = sum(
            float(_covariate_contribution(pipeline, typical, c, [typical[c].iloc[0]])[0])
            for c in covariates
        )
        lp_min = lp_typ - typ_contrib + sum(offsets.values())
        return cls(
            axes=axes,
            lp_min=lp_min,
            lp_per_point=1.0 / scale,
            horizon_days=horizon_days,
            risk_from_lp=pipeline.risk_from_lp,
            _typical=typical,
            _pipeline=pipeline,
            _offsets=offsets,
            _scale=scale,
            correlated=correlated_pairs(X, [c for c in imaging if c in covariates]),
        )

    def points(self, row: pd.Series) -> dict[str, float]:
        """Points each covariate earns for one patient (exact, not read off the axis)."""
        out = {}
        for ax in self.axes:
            c = _covariate_contribution(
                self._pipeline, self._typical, ax.covariate, [row[ax.covariate]]
            )
            out[ax.covariate] = float((c[0] - self._offsets[ax.covariate]) * self._scale)
        return out

    def total_points(self, row: pd.Series) -> float:
        return float(sum(self.points(row).values()))

    def risk_from_points(self, total: float | np.ndarray) -> np.ndarray:
        lp = self.lp_min + np.asarray(total, dtype=float) * self.lp_per_point
        return np.asarray(self.risk_from_lp(np.atleast_1d(lp)), dtype=float)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Draw the nomogram: one axis per covariate, total points, and the risk scale (and the
        correlation caution under it, when there is one)."""
        path = Path(path)
        n = len(self.axes) + 3
        extra = 0.5 if self.caution else 0.0
        fig, ax = plt.subplots(figsize=(9, 0.55 * n + 1.2 + extra))
        y = n
        ax.set_xlim(-38, 112)
        _scale_line(
            ax, y, np.linspace(0, 100, 11), [f"{v:.0f}" for v in np.linspace(0, 100, 11)], "Points"
        )
        for a in self.axes:
            y -= 1
            labels = a.labels or [_fmt_value(v, a.kind) for v in a.values]
            _scale_line(ax, y, a.points, labels, a.covariate, every_label=a.kind != "numeric")
        total_max = sum(float(np.max(a.points)) for a in self.axes)
        y -= 1
        ticks = np.linspace(0, total_max, 9)
        squeeze = 100.0 / total_max if total_max else 1.0
        _scale_line(ax, y, ticks * squeeze, [f"{t:.0f}" for t in ticks], "Total points")
        y -= 1
        risks = self.risk_from_points(ticks)
        nice = [
            r
            for r in (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
            if risks.min() <= r <= risks.max()
        ]
        pos = [np.interp(r, risks, ticks) * squeeze for r in nice]
        _scale_line(
            ax,
            y,
            np.array(pos),
            [f"{r:.2f}" for r in nice],
            f"{int(round(self.horizon_days))}-day risk",
        )
        ax.set_ylim(y - 0.8, n + 0.8)
        ax.axis("off")
        if title:
            ax.set_title(title, fontsize=11)
        if self.caution:
            fig.text(0.02, 0.01, textwrap.fill(self.caution, 120), fontsize=7, color="#a33",
                     ha="left", va="bottom")  # fmt: skip
        fig.tight_layout(rect=(0, 0.06 if self.caution else 0, 1, 1))
        fig.savefig(path, dpi=150)
        plt.close(fig)
        return path


def _typical_row(X: pd.DataFrame, covariates: dict[str, str]) -> pd.DataFrame:
    row = {}
    for cov, kind in covariates.items():
        col = X[cov]
        if kind == "numeric":
            row[cov] = float(pd.to_numeric(col, errors="coerce").median())
        else:
            row[cov] = col.mode(dropna=True).iloc[0]
    return pd.DataFrame([row], columns=list(X.columns)).assign(
        **{c: X[c].iloc[0] for c in X.columns if c not in covariates}
    )


def _covariate_contribution(
    pipeline: Any, typical: pd.DataFrame, cov: str, values: list[Any]
) -> np.ndarray:
    """Sum of the contributions of ``cov``'s model terms at each value (others typical)."""
    rows = pd.concat([typical] * len(values), ignore_index=True)
    rows[cov] = values
    contrib = pipeline.contributions(rows)
    terms = [t for t in contrib.columns if t == cov or t.startswith(f"{cov}[")]
    return contrib[terms].sum(axis=1).to_numpy(dtype=float)


def _decimals(lo: float, hi: float) -> int:
    span = abs(hi - lo)
    return 0 if span >= 10 else 1 if span >= 1 else 2


def _fmt_value(v: Any, kind: str, levels: Sequence[str] | None = None) -> str:
    if kind == "binary":
        code = int(float(v))
        return str(levels[code]) if levels else str(code)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _scale_line(
    ax: Any, y: float, pos: np.ndarray, labels: list[str], name: str, every_label: bool = False
) -> None:
    """An axis at height ``y`` with ticks at ``pos``.

    A label that would overlap another is dropped on a numeric scale (its tick stays), but with
    ``every_label`` (categories: each must stay readable) it goes below the axis instead, and
    further below again if needed.
    """
    pos = np.asarray(pos, dtype=float)
    ax.text(-36, y, name, va="center", ha="left", fontsize=9)
    if len(pos) == 0:
        return
    ax.plot([pos.min(), pos.max()], [y, y], color="black", lw=1)
    rows: list[list[float]] = [[], [], []]  # above, below, further below
    offsets = (0.18, -0.22, -0.42)
    for i in np.argsort(pos):
        p, lab = pos[i], labels[i]
        ax.plot([p, p], [y, y + 0.12], color="black", lw=0.8)
        width = 1.2 * len(lab) + 1.5  # label width in points-axis units at fontsize 7
        for row, dy in zip(rows if every_label else rows[:1], offsets, strict=False):
            if all(abs(p - q) >= width for q in row):
                va = "bottom" if dy > 0 else "top"
                ax.text(p, y + dy, lab, ha="center", va=va, fontsize=7)
                row.append(p)
                break


def correlated_pairs(
    X: pd.DataFrame, columns: Sequence[str], threshold: float = CORRELATION_CAUTION
) -> list[tuple[str, str, float]]:
    """Pairs of ``columns`` whose |Pearson r| in ``X`` exceeds ``threshold`` (pairwise complete
    observations), strongest first."""
    cols = [c for c in columns if c in X]
    if len(cols) < 2:
        return []
    r = X[cols].apply(pd.to_numeric, errors="coerce").corr(method="pearson")
    out = []
    for i, a in enumerate(cols):
        for b in cols[i + 1 :]:
            v = float(r.loc[a, b])
            if np.isfinite(v) and abs(v) > threshold:
                out.append((a, b, v))
    return sorted(out, key=lambda t: -abs(t[2]))


def nomogram_unavailable(pipeline: Any) -> str | None:
    """Why no exact nomogram can be drawn for a fitted pipeline, or None when one can."""
    model = pipeline.model
    if not model.supports_contributions:
        return f"the {model.name} model has no per-term coefficients"
    if "impute" in getattr(pipeline, "named_steps", {}):
        return (
            f"the {model.name} model averages the risks of one model per imputed data set "
            "(imputation: multiple), so no single points total gives the risk"
        )
    if getattr(model, "estimand", "net") == "cif" and not model.cif_from_lp:
        return (
            f"the {model.name} model predicts the cumulative incidence from two cause-specific "
            "hazard models (re-fracture and death), so the risk is not a function of one "
            "points total; fit finegray or logistic for a nomogram on the cumulative incidence"
        )
    return None


def nomogram_for(
    validation: Any,
    X: pd.DataFrame,
    covariates: dict[str, str],
    imaging: Sequence[str],
    horizon_days: float,
    binary_levels: Mapping[str, Sequence[str]] | None = None,
    model_input: pd.DataFrame | None = None,
) -> Nomogram | None:
    """The nomogram of a validated model (``ValidationResult``), or None when its estimator
    has no per-term contributions (forests, boosting) or when, under estimand ``cif``, its risk
    is not a function of one linear predictor (the cause-specific Cox models, whose cumulative
    incidence also depends on the death model): a points scale would then not map to the risk
    exactly (:func:`nomogram_unavailable` says why).

    ``X``: the whole modelling table; the development patients are taken from it. A model
    with a harmonisation step needs ``model_input`` (``Dataset.model_input``, which carries
    the batch columns): its imaging axes are then on the harmonised scale, the scale its
    coefficients are per.
    """
    pipeline = validation.final_model
    if nomogram_unavailable(pipeline) is not None:
        return None
    dev = X.loc[validation.development_ids, list(covariates)]
    if getattr(pipeline, "harmoniser", None) is not None:
        if model_input is None:
            raise ValueError("a harmonised model's nomogram needs model_input")
        full = model_input.loc[validation.development_ids]
        dev = pipeline.harmoniser.transform(full)[list(covariates)]
        pipeline = pipeline[1:]
    return Nomogram.from_pipeline(
        pipeline,
        dev,
        covariates,
        horizon_days,
        imaging=imaging,
        binary_levels=binary_levels,
    )
