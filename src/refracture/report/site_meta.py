"""Site heterogeneity: the per-site C-index and O/E meta-analysed by random effects.

Pooling every site's validation patients into one set of metrics answers "how good is the
model on these patients"; a hospital deciding whether to use it asks "how good will it be
here". Following Debray et al. (BMJ 2017) and Riley et al. (BMJ 2016), each site's C-index
(logit scale, bootstrap standard error) and O/E ratio (log scale, standard error from the
observed risk's interval) are combined by a random-effects model
(:func:`refracture.validation.meta_analysis.random_effects`: REML, Hartung-Knapp-Sidik-Jonkman
CI, 95 % prediction interval with k - 2 degrees of freedom) and shown in a forest plot. The
metrics of all sites' patients pooled stay as a secondary line.

MLflow metrics (``{m}`` is ``cindex_harrell`` or ``oe_ratio_365d``): ``site_meta_{m}`` with
``_lo`` / ``_hi`` (95 % CI), ``_pi_lo`` / ``_pi_hi`` (95 % prediction interval), ``_tau2``
(between-site variance on the logit / log scale), ``_i2``, and ``site_meta_sites``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from refracture.validation.catalogue import horizon_label
from refracture.validation.meta_analysis import MetaResult, random_effects

__all__ = [
    "back_transform",
    "plot_site_forest",
    "site_meta",
    "site_meta_metrics",
    "site_meta_table",
]


def _inputs(h: float) -> dict[str, tuple[str, str, str]]:
    """metric -> (its per-site column, its standard-error column, scale)."""
    oe = f"oe_ratio_{horizon_label(h)}"
    return {
        "cindex_harrell": ("cindex_harrell", "cindex_harrell_logit_se", "logit"),
        oe: (oe, f"{oe}_log_se", "log"),
    }


def _to(scale: str, x: np.ndarray) -> np.ndarray:
    return logit(x) if scale == "logit" else np.log(x)


def back_transform(scale: str, x: float) -> float:
    if not math.isfinite(x):
        return float("nan")
    return float(expit(x) if scale == "logit" else math.exp(x))


def site_meta(per_site: pd.DataFrame, horizon: float) -> dict[str, tuple[MetaResult, str]]:
    """Random-effects meta-analysis of each metric over the sites that have it and its
    standard error (at least two): ``{metric: (result on the transformed scale, scale)}``."""
    out: dict[str, tuple[MetaResult, str]] = {}
    for metric, (col, se_col, scale) in _inputs(horizon).items():
        if col not in per_site or se_col not in per_site:
            continue
        est = per_site[col].to_numpy(dtype=float)
        se = per_site[se_col].to_numpy(dtype=float)
        ok = np.isfinite(est) & np.isfinite(se) & (se > 0) & (est > 0)
        if scale == "logit":
            ok &= est < 1
        if ok.sum() >= 2:
            out[metric] = (random_effects(_to(scale, est[ok]), se[ok] ** 2), scale)
    return out


def site_meta_metrics(meta: dict[str, tuple[MetaResult, str]]) -> dict[str, float]:
    """The ``site_meta_*`` MLflow metrics (finite values only)."""
    out: dict[str, float] = {}
    for metric, (r, scale) in meta.items():
        k = f"site_meta_{metric}"
        values = {
            k: back_transform(scale, r.estimate),
            f"{k}_lo": back_transform(scale, r.lo),
            f"{k}_hi": back_transform(scale, r.hi),
            f"{k}_pi_lo": back_transform(scale, r.pi_lo),
            f"{k}_pi_hi": back_transform(scale, r.pi_hi),
            f"{k}_tau2": r.tau2,
            f"{k}_i2": r.i2,
        }
        out |= {name: v for name, v in values.items() if math.isfinite(v)}
        out["site_meta_sites"] = float(max(out.get("site_meta_sites", 0.0), r.k))
    return out


def site_meta_table(
    meta: dict[str, tuple[MetaResult, str]], pooled: dict[str, float], horizon: float
) -> pd.DataFrame:
    """One row per metric: sites, the random-effects average with its CI, the prediction
    interval, tau^2, I^2 and, as a secondary line, the value on all sites' patients pooled."""
    rows = []
    labels = {"cindex_harrell": "Harrell C", f"oe_ratio_{horizon_label(horizon)}": "O/E"}
    for metric, (r, scale) in meta.items():

        def fmt(x: float) -> str:
            return f"{x:.3f}" if math.isfinite(x) else "n/a (fewer than 3 sites)"

        est, lo, hi = (back_transform(scale, v) for v in (r.estimate, r.lo, r.hi))
        pi_lo, pi_hi = back_transform(scale, r.pi_lo), back_transform(scale, r.pi_hi)
        p_lo, p_hi = pooled.get(f"{metric}_lo", math.nan), pooled.get(f"{metric}_hi", math.nan)
        rows.append(
            {
                "metric": labels.get(metric, metric),
                "sites": r.k,
                "average site (95% CI)": f"{est:.3f} [{lo:.3f}, {hi:.3f}]",
                "95% prediction interval": fmt(pi_lo)
                if not math.isfinite(pi_lo)
                else f"[{pi_lo:.3f}, {pi_hi:.3f}]",
                "tau2 (logit C, log O/E)": f"{r.tau2:.4f}",
                "I2": f"{100 * r.i2:.0f}%",
                "all sites pooled (secondary)": f"{pooled.get(metric, math.nan):.3f}"
                + (f" [{p_lo:.3f}, {p_hi:.3f}]" if math.isfinite(p_lo) else ""),
            }
        )
    return pd.DataFrame(rows)


def plot_site_forest(
    per_site: pd.DataFrame,
    meta: dict[str, tuple[MetaResult, str]],
    path: str | Path,
    *,
    horizon: float = 365.0,
    title: str = "",
) -> Path | None:
    """Forest plot: each site's C and O/E with 95 % CI, the random-effects average (diamond)
    and the 95 % prediction interval (bar); None when no metric could be meta-analysed."""
    import matplotlib.pyplot as plt

    from refracture.validation.plots import save_png

    if not meta:
        return None
    fig, axes = plt.subplots(1, len(meta), figsize=(5.2 * len(meta), 1.0 + 0.45 * len(per_site)))
    axes = np.atleast_1d(axes)
    for ax, (metric, (r, scale)) in zip(axes, meta.items(), strict=True):
        col, se_col, _ = _inputs(horizon)[metric]
        z = 1.959964
        ys = np.arange(len(per_site), 0, -1) + 1.5
        for yv, (_, row) in zip(ys, per_site.iterrows(), strict=True):
            est, se = float(row[col]), float(row[se_col])
            if not (math.isfinite(est) and est > 0):
                continue
            ax.plot([est], [yv], "s", color="C0", ms=5)
            if math.isfinite(se):
                t = _to(scale, np.array([est]))[0]
                ends = [back_transform(scale, t - z * se), back_transform(scale, t + z * se)]
                ax.plot(ends, [yv, yv], "-", c="C0")
            name = f"{row['site']} (n={int(row['n'])})"
            ax.text(1.02, yv, name, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
        m, lo, hi = (back_transform(scale, v) for v in (r.estimate, r.lo, r.hi))
        ax.fill([lo, m, hi, m], [1.0, 1.25, 1.0, 0.75], color="C3", label="average site (95% CI)")
        if math.isfinite(r.pi_lo):
            ends = [back_transform(scale, r.pi_lo), back_transform(scale, r.pi_hi)]
            ax.plot(ends, [0.35] * 2, "-", c="C3", lw=3, alpha=0.5, label="95% prediction interval")
        ax.axvline(1.0 if scale == "log" else 0.5, color="grey", ls="--", lw=1)
        if scale == "log":
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            lo_x, hi_x = ax.get_xlim()
            ticks = [t for t in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0) if lo_x <= t <= hi_x]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_yticks([])
        ax.set_ylim(0, ys[0] + 1 if len(ys) else 2)
        label = "Harrell C" if metric == "cindex_harrell" else f"O/E at {int(round(horizon))} d"
        ax.set_xlabel(f"{label}; tau2 {r.tau2:.3g}, I2 {100 * r.i2:.0f}%")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title or "Performance per site, random-effects meta-analysis", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
