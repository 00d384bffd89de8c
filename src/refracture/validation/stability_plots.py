"""Figures of smoothed calibration and of stability (PNG, 150 dpi, like
:mod:`refracture.validation.plots`).

* :func:`plot_smoothed_calibration`: the smoothed calibration curve at the horizon in the run's
  estimand (:mod:`refracture.validation.smooth_calibration`) with ICI, E50 and E90 in the
  legend and the distribution of predictions under the axis; drawn next to the grouped
  (decile) calibration plot.
* :func:`plot_prediction_instability`: every refit's risk for each development patient
  against the final model's (Riley & Collins 2023, figure 2), with the 2.5th and 97.5th
  percentiles of the refits' risks along the final model's, and the risk-group thresholds.
* :func:`plot_mape`: each patient's mean absolute prediction error against the final model's
  risk.
* :func:`plot_calibration_instability`: the smoothed calibration curve of every refit on the
  development patients, over the final model's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.models.outcome import make_outcome
from refracture.validation.plots import _observed_label, _skip, plt, save_png
from refracture.validation.smooth_calibration import SmoothedCalibration, smoothed_calibration
from refracture.validation.stability import per_patient_instability
from refracture.validation.undefined import Undefined

__all__ = [
    "calibration_curves",
    "plot_calibration_instability",
    "plot_mape",
    "plot_prediction_instability",
    "plot_smoothed_calibration",
]

#: Most refits drawn in a figure (the curves and points of more add no information).
MAX_DRAWN = 200


def calibration_curves(
    predictions: Mapping[str, pd.DataFrame], horizon: float, estimand: str
) -> tuple[dict[str, SmoothedCalibration], str | None]:
    """The smoothed calibration of each set of predictions (label -> result), and the reason
    for the last one that could not be fitted."""
    out, why = {}, None
    for label, df in predictions.items():
        y = make_outcome(df["event"].to_numpy(), df["time"].to_numpy())
        try:
            out[label] = smoothed_calibration(y, df["risk"].to_numpy(float), horizon, estimand)
        except Undefined as err:
            why = str(err)
    return out, why


def plot_smoothed_calibration(
    predictions: pd.DataFrame | Mapping[str, pd.DataFrame],
    path: str | Path,
    *,
    horizon: float = 365.0,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Smoothed observed against predicted risk by the horizon, ICI / E50 / E90 per model."""
    preds = {"model": predictions} if isinstance(predictions, pd.DataFrame) else dict(predictions)
    curves, why = calibration_curves(preds, horizon, estimand)
    if not curves:
        return _skip(path, why or "no patients to plot", reasons)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.5, 6.4), sharex=True, gridspec_kw={"height_ratios": [5, 1]}
    )
    top = 0.0
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c.grid, c.grid_observed, color=f"C{i}", lw=1.8,
                label=f"{label} (ICI {c.ici:.3f}, E50 {c.e50:.3f}, E90 {c.e90:.3f})")  # fmt: skip
        hist.hist(c.predicted, bins=40, color=f"C{i}", alpha=0.45)
        top = max(top, float(c.grid.max()), float(np.nanmax(c.grid_observed)))
    lim = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, lim], [0, lim], "--", color="grey", lw=1, label="perfect calibration")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_ylabel(f"Smoothed observed risk by {horizon:g} days\n({_observed_label(estimand)})")
    ax.set_title("Smoothed calibration at the horizon")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    hist.set_xlabel(f"Predicted risk of re-fracture by {horizon:g} days")
    hist.set_ylabel("patients")
    return save_png(fig, path)


def plot_prediction_instability(
    original: np.ndarray,
    boot: np.ndarray,
    path: str | Path,
    *,
    thresholds: Sequence[float] = (),
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Each refit's risk for each development patient against the final model's risk."""
    p, pb = np.asarray(original, dtype=float), np.asarray(boot, dtype=float)[:MAX_DRAWN]
    if pb.ndim != 2 or pb.shape[0] < 2:
        return _skip(path, "fewer than two bootstrap refits", reasons)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    alpha = min(0.5, max(0.05, 8 / len(pb)))  # the cloud stays readable for 10 or 200 refits
    ax.scatter(np.tile(p, len(pb)), pb.ravel(), s=1, alpha=alpha, color="C0", rasterized=True,
               label=f"{len(pb)} refits x {len(p)} patients")  # fmt: skip
    order = np.argsort(p)
    lo, hi = np.percentile(pb, [2.5, 97.5], axis=0)
    ax.plot(p[order], _running(lo[order]), color="C3", lw=1.2, label="2.5th / 97.5th percentile")
    ax.plot(p[order], _running(hi[order]), color="C3", lw=1.2)
    lim = min(1.0, float(max(p.max(), np.percentile(pb, 99.5))) * 1.05 + 0.01)
    ax.plot([0, lim], [0, lim], "--", color="grey", lw=1)
    for t in thresholds:
        ax.axvline(t, color="black", lw=0.6, ls=":")
        ax.axhline(t, color="black", lw=0.6, ls=":")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("Risk from the final model")
    ax.set_ylabel("Risk from the bootstrap refits")
    ax.set_title("Prediction instability")
    ax.legend(loc="upper left", fontsize=8, frameon=False, markerscale=6)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def _running(values: np.ndarray, width: int = 25) -> np.ndarray:
    """A centred running mean (the percentile lines of neighbouring patients, smoothed)."""
    width = max(1, min(width, len(values)))
    kernel = np.ones(width) / width
    padded = np.pad(values, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def plot_mape(
    original: np.ndarray,
    boot: np.ndarray,
    path: str | Path,
    *,
    thresholds: Sequence[float] = (),
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """Each patient's mean absolute prediction error against the final model's risk."""
    pb = np.asarray(boot, dtype=float)
    if pb.ndim != 2 or pb.shape[0] < 2:
        return _skip(path, "fewer than two bootstrap refits", reasons)
    p = np.asarray(original, dtype=float)
    per = per_patient_instability(p, pb, thresholds)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(p, per["mape"], s=6, alpha=0.5, color="C0")
    for t in thresholds:
        ax.axvline(t, color="black", lw=0.6, ls=":")
    ax.set_xlabel("Risk from the final model")
    ax.set_ylabel("Mean absolute prediction error\n(bootstrap refits vs final model)")
    ax.set_title(f"Instability per patient (MAPE {per['mape'].mean():.3f})")
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_calibration_instability(
    y: np.ndarray,
    original: np.ndarray,
    boot: np.ndarray,
    path: str | Path,
    *,
    horizon: float = 365.0,
    estimand: str = "net",
    reasons: dict[str, str] | None = None,
) -> Path | None:
    """The smoothed calibration curve of every refit on the development patients (grey) over
    the final model's (black)."""
    pb = np.asarray(boot, dtype=float)[:MAX_DRAWN]
    try:
        main = smoothed_calibration(y, np.asarray(original, dtype=float), horizon, estimand)
    except Undefined as err:
        return _skip(path, str(err), reasons)
    if pb.ndim != 2 or pb.shape[0] < 2:
        return _skip(path, "fewer than two bootstrap refits", reasons)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    top, drawn = float(main.grid.max()), 0
    for risk in pb:
        try:
            c = smoothed_calibration(y, risk, horizon, estimand)
        except Undefined:
            continue
        ax.plot(c.grid, c.grid_observed, color="grey", lw=0.5, alpha=0.25)
        top, drawn = max(top, float(c.grid.max())), drawn + 1
    ax.plot(main.grid, main.grid_observed, color="black", lw=2, label="final model")
    ax.plot([], [], color="grey", lw=0.8, label=f"{drawn} bootstrap refits")
    lim = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, lim], [0, lim], "--", color="C3", lw=1, label="perfect calibration")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel(f"Predicted risk by {horizon:g} days")
    ax.set_ylabel(f"Smoothed observed risk by {horizon:g} days\n({_observed_label(estimand)})")
    ax.set_title("Calibration instability (development patients)")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
