"""Figures of the biomarker analysis: PNG, 150 dpi, labelled axes with units.

Each ``plot_<name>(..., path) -> Path`` writes one figure atomically and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from refracture.analysis.association import Estimate  # noqa: E402
from refracture.analysis.roc import AucResult, roc_points  # noqa: E402
from refracture.validation.plots import save_png

__all__ = ["marker_label", "plot_levels", "plot_roc", "plot_scatter"]

DPI = 150


def marker_label(name: str) -> str:
    """Axis label with the unit of a marker column (PDFF in %, R2* in 1/s)."""
    if name.startswith("pdff"):
        return f"{name} (%)"
    if name.startswith("r2star"):
        return f"{name} (1/s)"
    if name.endswith("_mm"):
        return f"{name} (mm)"
    if name.endswith("_ml"):
        return f"{name} (mL)"
    if name.endswith("_deg_index") or name.endswith("_deg"):
        return f"{name} (degrees)"
    return name


def _grid(n: int, max_cols: int = 3) -> tuple[plt.Figure, np.ndarray]:
    cols = min(max_cols, max(n, 1))
    rows = int(np.ceil(max(n, 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_scatter(
    data: pd.DataFrame,
    markers: Sequence[str],
    versus: str,
    path: str | Path,
    *,
    group: str | None = None,
    estimates: Mapping[str, Estimate] | None = None,
    versus_label: str | None = None,
) -> Path:
    """One panel per marker: marker against ``versus``, points coloured by ``group`` (site),
    with the pooled least-squares line and Pearson's r (95% CI) in the title."""
    fig, axes = _grid(len(markers))
    groups = sorted(data[group].dropna().astype(str).unique()) if group else [None]
    colours = plt.get_cmap("tab10")
    for ax, marker in zip(axes, markers, strict=False):
        sub = data[[versus, marker, *([group] if group else [])]].dropna()
        for i, g in enumerate(groups):
            pts = sub if g is None else sub[sub[group].astype(str) == g]
            ax.scatter(
                pts[versus], pts[marker], s=9, alpha=0.55, color=colours(i % 10),
                label=g, edgecolors="none",
            )  # fmt: skip
        x, y = sub[versus].to_numpy(float), sub[marker].to_numpy(float)
        if len(x) >= 3 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, intercept + slope * xs, color="black", lw=1.5)
        est = (estimates or {}).get(marker)
        if est is not None and np.isfinite(est.estimate):
            ax.set_title(
                f"r = {est.estimate:.2f} ({est.lower95:.2f} to {est.upper95:.2f}), n = {est.n}",
                fontsize=9,
            )
        ax.set_xlabel(versus_label or versus)
        ax.set_ylabel(marker_label(marker))
        ax.grid(alpha=0.3)
    if group and len(groups) > 1:
        axes[0].legend(fontsize=7, title=group, title_fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return save_png(fig, path)


def plot_roc(
    condition: np.ndarray,
    scores: Mapping[str, np.ndarray],
    results: Mapping[str, AucResult],
    path: str | Path,
    *,
    title: str,
) -> Path:
    """ROC curves of several markers for one condition, AUC (DeLong 95% CI) in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    for name, score in scores.items():
        res = results[name]
        fpr, tpr = roc_points(condition, score, res.direction)
        ax.plot(
            fpr, tpr, lw=1.6,
            label=f"{name} ({res.direction} values): AUC {res.auc:.2f} "
            f"({res.lower95:.2f} to {res.upper95:.2f})",
        )  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def plot_levels(
    vertebrae: pd.DataFrame,
    maps: Sequence[str],
    levels: Sequence[str],
    path: str | Path,
    *,
    value: str = "value",
    status: str = "vertebra",
    intact: str = "intact",
) -> Path:
    """Per-level box plots of each map over intact vertebrae, other vertebrae as points."""
    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 4.0), squeeze=False)
    marks = {"treated": ("tab:red", "x"), "fractured_untreated": ("tab:orange", "^")}
    for ax, name in zip(axes.ravel(), maps, strict=True):
        sub = vertebrae[vertebrae["map"] == name]
        ok = sub[sub[status] == intact]
        boxes = [ok.loc[ok["level"] == lv, value].dropna().to_numpy() for lv in levels]
        ax.boxplot(boxes, tick_labels=list(levels), showfliers=False, widths=0.6)
        for st, (colour, mark) in marks.items():
            pts = sub[sub[status] == st]
            if not len(pts):
                continue
            pos = pts["level"].map({lv: i + 1 for i, lv in enumerate(levels)})
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(pts))
            ax.scatter(
                pos + jitter, pts[value], s=10, color=colour, marker=mark, alpha=0.6,
                label=st.replace("_", " "),
            )  # fmt: skip
        ax.set_xlabel("level")
        ax.set_ylabel(marker_label(name))
        ax.set_title(f"{name}: boxes over intact vertebrae", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
