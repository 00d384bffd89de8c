"""The numbers behind the plots: grouped calibration, time-dependent ROC points, net benefit.

These are written here because no library in the stack provides them for censored data,
each in the run's estimand (``net``: death censors; ``cif``: death competes):

* time-dependent ROC at the horizon: :func:`refracture.validation.ipcw_metrics.roc_points`
  (cumulative/dynamic, IPCW; with competing risks Blanche 2013 definition 1), whose area is
  the ``auc`` metric.
* net benefit for survival outcomes (Vickers, Cronin, Elkin & Gonen, BMC Med Inform Decis
  Mak 2008): at threshold p_t, NB = F * q - (1 - F) * q * p_t / (1 - p_t) with q the share of
  patients at or above the threshold and F their observed risk by h (``cif``: the
  Aalen-Johansen cumulative incidence, so a patient who died first counts as a false
  positive; ``net``: 1 - Kaplan-Meier with deaths censored).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from refracture.models.outcome import check_outcome
from refracture.validation.ipcw_metrics import roc_points
from refracture.validation.metrics import observed_risk, observed_risk_ci


def calibration_groups(
    y: np.ndarray, risk: np.ndarray, horizon: float, n_groups: int = 10, estimand: str = "net"
) -> pd.DataFrame:
    """Patients grouped by quantiles of predicted risk: mean predicted vs observed risk by h.

    Columns: ``group``, ``n``, ``predicted`` (mean), ``observed`` (cumulative incidence),
    ``lower``, ``upper`` (pointwise 95 % CI, log-log).
    """
    y = check_outcome(y)
    risk = np.asarray(risk, dtype=float)
    groups = pd.qcut(pd.Series(risk).rank(method="first"), q=min(n_groups, len(risk)), labels=False)
    rows = []
    for g in sorted(groups.unique()):
        m = (groups == g).to_numpy()
        est, lo, hi = observed_risk_ci(y[m], horizon, estimand=estimand)
        rows.append({"group": int(g) + 1, "n": int(m.sum()), "predicted": float(risk[m].mean()),
                     "observed": est, "lower": lo, "upper": hi})  # fmt: skip
    return pd.DataFrame(rows)


def td_roc_points(
    y: np.ndarray, score: np.ndarray, horizon: float, estimand: str = "net"
) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the cumulative/dynamic ROC at the horizon.

    The censoring weights are estimated on ``y`` itself; raises
    :class:`~refracture.validation.undefined.Undefined` without cases or controls.
    """
    return roc_points(y, score, horizon, estimand)


def net_benefit(
    y: np.ndarray,
    risk: np.ndarray,
    horizon: float,
    thresholds: np.ndarray,
    estimand: str = "net",
) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none at each threshold."""
    y = check_outcome(y)
    risk = np.asarray(risk, dtype=float)
    f_all = observed_risk(y, horizon, estimand)
    rows = []
    for pt in np.asarray(thresholds, dtype=float):
        odds = pt / (1 - pt)
        above = risk >= pt
        q = above.mean()
        f = observed_risk(y[above], horizon, estimand) if above.any() else 0.0
        rows.append({"threshold": pt, "model": f * q - (1 - f) * q * odds,
                     "treat_all": f_all - (1 - f_all) * odds, "treat_none": 0.0})  # fmt: skip
    return pd.DataFrame(rows)
