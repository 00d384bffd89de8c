"""Figures for the paper: PNG, 150 dpi, labelled axes with units, legends.

Each ``plot_<name>(..., path) -> Path | None`` writes one figure atomically and returns its
path, or returns None when the data cannot support the figure (a time-dependent ROC curve
with no re-fracture by the horizon, say); then, if the caller passes a ``reasons`` dict, the
figure's file stem maps to why. Predictions are the ``ValidationResult.predictions`` tables
(columns ``risk``, ``lp``, ``time``, ``event``); functions that compare models take a mapping
``label -> predictions``. ``estimand`` (``net`` or ``cif``) says how a death before the
horizon is read, as for the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; lifelines' at-risk table needs pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from lifelines.plotting import add_at_risk_counts  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from sksurv.nonparametric import cumulative_incidence_competing_risks  # noqa: E402

from refracture.files import atomic_path  # noqa: E402
from refracture.models.outcome import DEATH, EVENT, check_estimand, make_outcome  # noqa: E402
from refracture.validation.concordance import ranking_score  # noqa: E402
from refracture.validation.curves import (  # noqa: E402
    calibration_groups,
    net_benefit,
    td_roc_points,
)
from refracture.validation.ipcw_metrics import cumulative_dynamic_auc  # noqa: E402
from refracture.validation.undefined import Undefined  # noqa: E402

DPI = 150
Predictions = pd.DataFrame | Mapping[str, pd.DataFrame]


def _as_mapping(preds: Predictions, default: str = "model") -> dict[str, pd.DataFrame]:
    if isinstance(preds, pd.DataFrame):
        return {default: preds}
    return dict(preds)


def _outcome(df: pd.DataFrame) -> np.ndarray:
    return make_outcome(df["event"].to_numpy(), df["time"].to_numpy())


def save_png(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically and close it (every plot of refracture)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _days(horizon: float) -> str:
    return f"{horizon:g} days"


def _skip(path: str | Path, reason: str, reasons: dict[str, str] | None) -> None:
    """Record why the figure at ``path`` was not drawn."""
    if reasons is not None:
        reasons[Path(path).stem] = reason


def _empty(preds: Mapping[str, pd.DataFrame]) -> str | None:
    if not preds or any(len(df) == 0 for df in preds.values()):
        return "no patients to plot"
    if any(not np.all(np.isfinite(df["risk"].to_numpy(float))) for df in preds.values()):
        return "some predicted risks are missing or not finite"
    return None


def _observed_label(estimand: str) -> str:
    return (
        "Aalen-Johansen, death competing"
        if check_estimand(estimand) == "cif"
        else "1 - Kaplan-Meier, death censored"
    )


def _score(df: pd.DataFrame) -> np.ndarray:
    risk = df["risk"].to_numpy(float)
    return ranking_score(risk, df["lp"].to_numpy(float) if "lp" in df else None)


def plot_calibration(
    predictions: Predictions,
    path: str | Path,
    *,
    horizon: float = 365.0,
    n_groups: int | None = None,
    title: str | None = None,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Observed vs predicted risk by the horizon in groups of predicted risk, 95 % CI band.

    Observed risk in each group is the Aalen-Johansen cumulative incidence (``cif``) or
    1 - Kaplan-Meier with deaths censored (``net``); a rug shows the distribution of
    predictions. ``n_groups`` defaults to about eight events by the horizon per group, 3 to 10.
    """
    preds = _as_mapping(predictions)
    if why := _empty(preds):
        return _skip(path, why, reasons)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    top = 0.0
    for i, (label, df) in enumerate(preds.items()):
        y = _outcome(df)
        k = n_groups or int(
            np.clip(((y["event"] == EVENT) & (y["time"] <= horizon)).sum() // 8, 3, 10)
        )
        g = calibration_groups(y, df["risk"].to_numpy(), horizon, k, estimand)
        color = f"C{i}"
        ax.fill_between(g["predicted"], g["lower"], g["upper"], color=color, alpha=0.18, lw=0)
        ax.plot(
            g["predicted"],
            g["observed"],
            "o-",
            color=color,
            ms=4,
            label=f"{label} (groups of ~{int(g['n'].median())})",
        )
        ax.plot(df["risk"], np.full(len(df), -0.012 * (i + 1)), "|", color=color, alpha=0.4, ms=6)
        top = max(top, float(g["upper"].max()), float(df["risk"].quantile(0.99)))
    lim = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, lim], [0, lim], "--", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(-0.005, lim)
    ax.set_ylim(-0.012 * (len(preds) + 1), lim)
    ax.set_xlabel(f"Predicted risk of re-fracture by {_days(horizon)}")
    ax.set_ylabel(f"Observed risk by {_days(horizon)} (95% CI)\n({_observed_label(estimand)})")
    ax.set_title(title or "Calibration at the horizon")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_km_risk_groups(
    predictions: pd.DataFrame,
    thresholds: Sequence[float],
    path: str | Path,
    *,
    horizon: float = 365.0,
    title: str | None = None,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Observed cumulative incidence of re-fracture by predicted risk group, with the numbers
    at risk under the axis and each group's mean predicted risk marked at the horizon.
    Groups: low < t1 <= intermediate < t2 <= high.

    ``net``: 1 - Kaplan-Meier with deaths censored (lifelines). ``cif``: the Aalen-Johansen
    cumulative incidence with death competing (scikit-survival, which keeps tied times
    exact), with its pointwise 95 % log-log band.
    """
    if why := _empty({"model": predictions}):
        return _skip(path, why, reasons)
    competing = check_estimand(estimand) == "cif"
    lo, hi = float(thresholds[0]), float(thresholds[1])
    risk = predictions["risk"].to_numpy(float)
    time = predictions["time"].to_numpy(float)
    event = predictions["event"].to_numpy(int)
    group = np.where(risk < lo, "low", np.where(risk < hi, "intermediate", "high"))
    t_max = float(np.ceil(min(time.max(), horizon * 2) / 30.0) * 30)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    fitters = []
    short = []
    names = {"low": f"low (< {lo:.0%})", "intermediate": f"intermediate ({lo:.0%}-{hi:.0%})",
             "high": f"high (>= {hi:.0%})"}  # fmt: skip
    for i, g in enumerate(("low", "intermediate", "high")):
        m = group == g
        if not m.any():
            continue
        label = f"{names[g]}, n={int(m.sum())}"
        # the fitter gives the numbers at risk (the same in both estimands)
        kmf = KaplanMeierFitter(label=label).fit(time[m], event[m] == EVENT)
        if competing and (event[m] == DEATH).any() and (event[m] == EVENT).any():
            t, cif, band = cumulative_incidence_competing_risks(
                event[m], time[m], conf_type="log-log"
            )
            t = np.r_[0.0, t]
            est = np.r_[0.0, cif[EVENT]]
            low = np.r_[0.0, np.nan_to_num(band[EVENT, 0], nan=0.0)]
            high = np.r_[0.0, np.nan_to_num(band[EVENT, 1], nan=1.0)]
            ax.step(t, est, where="post", color=f"C{i}", label=label)
            ax.fill_between(t, low, high, step="post", color=f"C{i}", alpha=0.15, lw=0)
        else:
            kmf.plot_cumulative_density(ax=ax, ci_show=True, color=f"C{i}", ci_alpha=0.15)
        # the group's mean predicted risk at the horizon, to read against the observed curve
        ax.plot([horizon], [risk[m].mean()], marker="D", ms=7, color=f"C{i}", mec="black",
                ls="none")  # fmt: skip
        fitters.append(kmf)
        short.append(g)
    ax.plot([], [], marker="D", ms=7, color="white", mec="black", ls="none",
            label="mean predicted risk at the horizon")  # fmt: skip
    ax.axvline(horizon, color="grey", ls=":", lw=1)
    ax.set_xlim(0, t_max)
    ax.set_ylim(0, None)
    ax.set_xlabel("Days since vertebral augmentation")
    ax.set_ylabel(f"Cumulative incidence of re-fracture\n({_observed_label(estimand)})")
    ax.set_title(title or "Re-fracture by predicted risk group")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ticks = np.arange(0, t_max + 1, 90)
    ax.set_xticks(ticks)
    if fitters:
        add_at_risk_counts(
            *fitters, labels=short, ax=ax, xticks=ticks, rows_to_show=["At risk"], fig=fig
        )
    return save_png(fig, path)


def plot_td_roc(
    predictions: Predictions,
    path: str | Path,
    *,
    horizon: float = 365.0,
    y_train: np.ndarray | None = None,
    title: str | None = None,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Cumulative/dynamic ROC curve at the horizon; the legend gives the ``auc`` metric.

    The censoring weights are estimated on the plotted patients, as for the metrics
    (``y_train`` is accepted for older callers and not used). Under ``cif`` patients who died
    before the horizon are controls (Blanche 2013). None, with the reason, when the plotted
    patients have no re-fracture by the horizon or nobody known free of it.
    """
    preds = _as_mapping(predictions)
    if why := _empty(preds):
        return _skip(path, why, reasons)
    curves = {}
    for label, df in preds.items():
        y, score = _outcome(df), _score(df)
        try:
            curves[label] = (
                *td_roc_points(y, score, horizon, estimand),
                cumulative_dynamic_auc(y, score, horizon, estimand),
            )
        except Undefined as err:
            why = str(err)
    if not curves:
        return _skip(path, why or "undefined on these data", reasons)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for i, (label, (fpr, tpr, auc)) in enumerate(curves.items()):
        # straight segments between the points: the area under them is the AUC
        ax.plot(fpr, tpr, color=f"C{i}", lw=1.6, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="no discrimination")
    controls = "event-free or dead" if check_estimand(estimand) == "cif" else "event-free"
    ax.set_xlabel(f"1 - specificity ({controls} at {_days(horizon)}, IPCW)")
    ax.set_ylabel(f"Sensitivity (re-fracture by {_days(horizon)}, IPCW)")
    ax.set_title(title or "Time-dependent ROC at the horizon")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_decision_curve(
    predictions: Predictions,
    path: str | Path,
    *,
    horizon: float = 365.0,
    thresholds: np.ndarray | None = None,
    title: str | None = None,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Net benefit against the threshold risk (0-50 %), with treat-all and treat-none.

    The observed risk above each threshold is in the estimand (``cif``: Aalen-Johansen, so a
    patient treated who then died without re-fracture counts as a false positive).
    """
    preds = _as_mapping(predictions)
    if why := _empty(preds):
        return _skip(path, why, reasons)
    pts = np.linspace(0.0, 0.5, 51)[:-1] if thresholds is None else np.asarray(thresholds)
    curves = {
        label: net_benefit(_outcome(df), df["risk"].to_numpy(float), horizon, pts, estimand)
        for label, df in preds.items()
    }
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, (label, nb) in enumerate(curves.items()):
        ax.plot(nb["threshold"] * 100, nb["model"], color=f"C{i}", lw=1.8, label=label)
    # treat-all depends only on the outcomes; with several models on the same patients the
    # first table's is everyone's
    first = next(iter(curves.values()))
    ax.plot(first["threshold"] * 100, first["treat_all"], color="black", lw=1, ls="--",
            label="treat all")  # fmt: skip
    ax.axhline(0.0, color="grey", lw=1, label="treat none")
    upper = max(
        0.01,
        float(first["treat_all"].max()),
        *(float(nb["model"].max()) for nb in curves.values()),
    )
    ax.set_ylim(-0.25 * upper, upper * 1.15)
    ax.set_xlim(0, pts.max() * 100)
    ax.set_xlabel(f"Threshold risk of re-fracture by {_days(horizon)} (%)")
    ax.set_ylabel("Net benefit (true positives per patient)")
    ax.set_title(title or "Decision curve")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_forest(
    coefficients: pd.DataFrame,
    path: str | Path,
    *,
    title: str | None = None,
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Hazard (or odds) ratios with 95 % CIs per model term, log scale, from coefficients_table.

    Terms whose ratio or interval is not finite and positive (a separated term) are left out;
    None, with the reason, when no term is left.
    """
    ratio = "hr" if "hr" in coefficients.columns else "or"
    label = "Hazard ratio" if ratio == "hr" else "Odds ratio"
    values = coefficients[[ratio, "lower95", "upper95"]].to_numpy(float)
    ok = np.all(np.isfinite(values) & (values > 0), axis=1)
    if not ok.any():
        return _skip(path, "no term has a finite ratio and confidence interval", reasons)
    df = coefficients[ok].iloc[::-1].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(df) + 1.4))
    ypos = np.arange(len(df))
    ax.errorbar(
        df[ratio], ypos,
        xerr=[df[ratio] - df["lower95"], df["upper95"] - df[ratio]],
        fmt="s", color="C0", ecolor="C0", ms=5, capsize=2, lw=1.2,
    )  # fmt: skip
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    lo_x = float(np.nanmin(df["lower95"]))
    hi_x = float(np.nanmax(df["upper95"]))
    ticks = [t for t in (0.1, 0.2, 0.25, 0.5, 1, 2, 4, 5, 10) if lo_x / 1.5 <= t <= hi_x * 1.5]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ypos)
    ax.set_yticklabels(df["term"])
    ax.set_xlabel(f"{label} per unit of the covariate (95% CI, log scale)")
    ax.set_title(title or f"{label}s")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(df) - 0.3)
    text_ax = ax.twinx()
    text_ax.set_ylim(ax.get_ylim())
    text_ax.set_yticks(ypos)
    text_ax.set_yticklabels(
        [f"{r:.2f} ({lo:.2f}-{hi:.2f})  p={_p(p)}"
         for r, lo, hi, p in zip(df[ratio], df["lower95"], df["upper95"], df["p"], strict=True)],
        fontsize=8, family="monospace",
    )  # fmt: skip
    text_ax.tick_params(length=0)
    for spine in ("top", "right"):
        text_ax.spines[spine].set_visible(False)
    return save_png(fig, path)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
