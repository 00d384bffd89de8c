"""The numbers behind the plots: grouped calibration, time-dependent ROC points, net benefit.

These are written here because no library in the stack provides them for censored data:

* time-dependent ROC (cumulative/dynamic, Heagerty, Lumley & Pepe 2000 definitions with the
  IPCW estimator of Uno et al. 2007): cases have the event by the horizon and are weighted by
  1 / G(T_i) (scikit-survival's ``CensoringDistributionEstimator.predict_ipcw``, the same
  weights its ``cumulative_dynamic_auc`` uses, so the area under these points equals it);
  controls are followed event-free past the horizon.
* net benefit for survival outcomes (Vickers, Cronin, Elkin & Gonen, BMC Med Inform Decis
  Mak 2008): at threshold p_t, NB = F * q - (1 - F) * q * p_t / (1 - p_t) with q the share of
  patients at or above the threshold and F their observed cumulative incidence by h (here
  Aalen-Johansen when deaths are present, else Kaplan-Meier).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sksurv.nonparametric import CensoringDistributionEstimator

from refracture.models.outcome import check_outcome, to_sksurv
from refracture.validation.metrics import observed_risk, observed_risk_ci


def calibration_groups(
    y: np.ndarray, risk: np.ndarray, horizon: float, n_groups: int = 10
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
        est, lo, hi = observed_risk_ci(y[m], horizon)
        rows.append({"group": int(g) + 1, "n": int(m.sum()), "predicted": float(risk[m].mean()),
                     "observed": est, "lower": lo, "upper": hi})  # fmt: skip
    return pd.DataFrame(rows)


def td_roc_points(
    y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the cumulative/dynamic ROC at the horizon."""
    s_tr, s_te = to_sksurv(y_train), to_sksurv(y_test)
    risk = np.asarray(risk, dtype=float)
    case = s_te["event"] & (s_te["time"] <= horizon)
    control = s_te["time"] > horizon
    # IPCW only matters for cases; evaluate it on them alone (a later event could lie beyond
    # the training follow-up, where G is undefined).
    w = np.zeros(len(s_te))
    w[case] = CensoringDistributionEstimator().fit(s_tr).predict_ipcw(s_te[case])
    thresholds = np.unique(risk)[::-1]
    order = np.argsort(-risk, kind="mergesort")
    r_sorted = risk[order]
    tp_cum = np.cumsum((w * case)[order])
    fp_cum = np.cumsum(control[order].astype(float))
    # for each threshold c, positives are risk >= c: the last index with r_sorted >= c
    last = np.searchsorted(-r_sorted, -thresholds, side="right") - 1
    tpr = np.r_[0.0, tp_cum[last] / tp_cum[-1]]
    fpr = np.r_[0.0, fp_cum[last] / max(fp_cum[-1], 1.0)]
    return fpr, tpr


def net_benefit(
    y: np.ndarray, risk: np.ndarray, horizon: float, thresholds: np.ndarray
) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none at each threshold."""
    y = check_outcome(y)
    risk = np.asarray(risk, dtype=float)
    f_all = observed_risk(y, horizon)
    rows = []
    for pt in np.asarray(thresholds, dtype=float):
        odds = pt / (1 - pt)
        above = risk >= pt
        q = above.mean()
        f = observed_risk(y[above], horizon) if above.any() else 0.0
        rows.append({"threshold": pt, "model": f * q - (1 - f) * q * odds,
                     "treat_all": f_all - (1 - f_all) * odds, "treat_none": 0.0})  # fmt: skip
    return pd.DataFrame(rows)
