"""Stability of the predictions, from the bootstrap refits already fitted (Riley & Collins,
"Stability of clinical prediction models developed using statistical or machine learning
methods", Biom J 2023).

Every refit of the internal validation predicts every development patient; how far those
predictions stray from the final model's says how much the model depends on the particular
sample it was developed on:

* ``instability_mape``: the mean absolute prediction error, (1 / (B n)) sum_b sum_i
  |p_bi - p_i|, p_i the final model's risk and p_bi refit b's;
* ``instability_class_<t>pct``: the classification instability index at each risk-group
  threshold t: the share of (refit, patient) pairs in which the refit puts the patient on the
  other side of t than the final model does;
* ``instability_group``: the share of (refit, patient) pairs whose risk group (low /
  intermediate / high) differs from the final model's.

The per-patient values (MAPE_i, CII_i) are what the prediction instability plot and the
MAPE plot draw; calibration instability is drawn by
:func:`refracture.validation.stability_plots.plot_calibration_instability`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["STABILITY_METRICS", "per_patient_instability", "stability_metrics", "threshold_key"]

#: Names of the stability measures, as logged (``{t}``: a risk-group threshold in percent).
STABILITY_METRICS = ("instability_mape", "instability_class_{t}pct", "instability_group")


def threshold_key(threshold: float) -> str:
    """``instability_class_10pct`` for 0.10."""
    return f"instability_class_{threshold * 100:g}pct"


def _groups(risk: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(sorted(thresholds), dtype=float), risk, side="right")


def per_patient_instability(
    original: np.ndarray, boot: np.ndarray, thresholds: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per development patient: ``mape`` (mean |p_bi - p_i| over refits) and, per threshold,
    the share of refits classifying the patient differently (``cii_<t>``)."""
    p = np.asarray(original, dtype=float)
    pb = np.asarray(boot, dtype=float)
    out = {"mape": np.abs(pb - p).mean(axis=0)}
    for t in thresholds:
        out[f"cii_{t:g}"] = ((pb >= t) != (p >= t)).mean(axis=0)
    return out


def stability_metrics(
    original: np.ndarray, boot: np.ndarray, thresholds: Sequence[float]
) -> dict[str, float]:
    """The stability measures of the module text; empty when no refit succeeded."""
    pb = np.asarray(boot, dtype=float)
    if pb.ndim != 2 or pb.shape[0] == 0:
        return {}
    p = np.asarray(original, dtype=float)
    out = {"instability_mape": float(np.abs(pb - p).mean())}
    for t in thresholds:
        out[threshold_key(t)] = float(((pb >= t) != (p >= t)).mean())
    out["instability_group"] = float((_groups(pb, thresholds) != _groups(p, thresholds)).mean())
    return out
