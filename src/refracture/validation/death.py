"""Calibration of the risk of death at the horizon (estimand ``cif``).

Under ``cif`` every score carries the risk of death before re-fracture by the horizon next to
the risk of re-fracture. Its calibration in the large is reported the same way as
re-fracture's O/E: the observed cumulative incidence of death by ``h`` (Aalen-Johansen, with
re-fracture competing; scikit-survival) over the mean predicted risk of death on the same
patients. The 95 % interval is the Aalen-Johansen log-log interval of the observed incidence
divided by the mean prediction (the prediction held fixed, as for a validation set's O/E in
Debray et al., BMJ 2017).

Metric names: ``oe_ratio_death_<h>`` with ``_lo`` / ``_hi``, ``observed_death_<h>`` and
``expected_death_<h>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sksurv.nonparametric import cumulative_incidence_competing_risks

from refracture.models.ipcw import step_at
from refracture.models.outcome import DEATH, check_outcome
from refracture.validation.catalogue import horizon_label

__all__ = ["death_metric_names", "death_metrics", "death_risk", "observed_incidence"]


def death_risk(model: Any, X: pd.DataFrame, estimand: str) -> np.ndarray | None:
    """The model's risk of death by the horizon for ``X``; None unless both the model and the
    evaluation are in estimand ``cif``."""
    if estimand != "cif" or getattr(model, "estimand", "net") != "cif":
        return None
    return np.asarray(model.predict_death_risk(X), dtype=float)


def death_metric_names(horizon: float) -> list[str]:
    """``oe_ratio_death_365d``, its interval, and the observed and expected risks."""
    h = horizon_label(horizon)
    oe = f"oe_ratio_death_{h}"
    return [oe, f"{oe}_lo", f"{oe}_hi", f"observed_death_{h}", f"expected_death_{h}"]


def observed_incidence(y: np.ndarray, horizon: float, cause: int) -> tuple[float, float, float]:
    """Aalen-Johansen cumulative incidence of ``cause`` by ``horizon`` and its 95 % log-log
    interval (0, 0, NaN when no patient had that event)."""
    y = check_outcome(y)
    ev, t = y["event"].astype(int), y["time"]
    if not (ev == cause).any():
        return 0.0, 0.0, float("nan")
    times, cif, band = cumulative_incidence_competing_risks(ev, t, conf_type="log-log")
    h = np.array([float(horizon)])
    est = float(step_at(times, cif[cause], h, 0.0)[0])
    lo = float(step_at(times, np.nan_to_num(band[cause, 0], nan=0.0), h, 0.0)[0])
    hi = float(step_at(times, np.nan_to_num(band[cause, 1], nan=1.0), h, 0.0)[0])
    return est, lo, hi


def death_metrics(
    y: np.ndarray, risk_death: np.ndarray, horizon: float
) -> tuple[dict[str, float], dict[str, str]]:
    """Observed over expected risk of death by the horizon, with its interval.

    Returns (metrics, reasons): every name of :func:`death_metric_names`, NaN with a reason
    where the data cannot support it (no death by the horizon, nobody followed to it).
    """
    names = death_metric_names(horizon)
    oe, lo, hi, obs_name, exp_name = names
    risk = np.asarray(risk_death, dtype=float)
    expected = float(np.mean(risk)) if len(risk) else float("nan")
    out = dict.fromkeys(names, float("nan"))
    reasons: dict[str, str] = {}
    out[exp_name] = expected
    observed, low, high = observed_incidence(y, horizon, DEATH)
    out[obs_name] = observed
    if observed == 0.0:
        for k in (oe, lo, hi):
            reasons[k] = "no death by the horizon among these patients"
        return out, reasons
    if not expected > 0:
        for k in (oe, lo, hi):
            reasons[k] = "the mean predicted risk of death is 0"
        return out, reasons
    out[oe], out[lo], out[hi] = observed / expected, low / expected, high / expected
    return out, reasons
