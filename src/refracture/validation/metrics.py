"""Performance at the horizon, in the run's estimand.

Conventions
-----------
* ``estimand="net"``: death before re-fracture censors it (the models' net risk);
  ``estimand="cif"``: death is a competing event and the risk is the cumulative incidence.
  Every metric reads the outcome in the same estimand: concordance
  (:mod:`refracture.validation.concordance`), AUC and Brier
  (:mod:`refracture.validation.ipcw_metrics`), calibration and O/E against 1 - Kaplan-Meier
  (net) or Aalen-Johansen (cif).
* A patient censored at exactly the horizon was seen event-free at it: a control.
* The censoring distribution G of every IPCW metric is estimated on the data being evaluated
  (as R's riskRegression::Score and pec do), so a validation site with more loss to
  follow-up gets its own, larger weights.
* ``risk`` is the predicted absolute risk by the horizon; concordance and the AUC rank by
  the model's linear predictor when it orders patients as the risk does (no artificial ties
  where the risk saturates), else by the risk.
* A metric the data cannot support is NaN, and :func:`compute_metrics` says why.

scikit-survival gives Harrell's and Uno's C for the net risk and the Kaplan-Meier and
Aalen-Johansen estimators; the calibration slope and intercept with IPC weights are written
here (no library fits a weighted logistic regression with an offset).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit, logit
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

from refracture.models.ipcw import CensoringWeights, deaths_for, step_at
from refracture.models.outcome import DEATH, EVENT, check_estimand, check_outcome
from refracture.validation.catalogue import horizon_label, metric_names
from refracture.validation.concordance import concordance, ranking_score
from refracture.validation.ipcw_metrics import (
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from refracture.validation.undefined import Undefined

_RISK_EPS = 1e-8

Metrics = dict[str, float]
Reasons = dict[str, str]


def time_grid(horizon: float, n: int = 20) -> np.ndarray:
    """Time points of the integrated Brier score: ``n`` equal steps from h/n to h."""
    return np.linspace(horizon / n, horizon, n)


def observed_risk(y: np.ndarray, horizon: float, estimand: str = "net") -> float:
    """Observed risk of re-fracture by the horizon in the estimand.

    ``net``: 1 - Kaplan-Meier with deaths censored. ``cif``: the Aalen-Johansen cumulative
    incidence with deaths competing (1 - Kaplan-Meier when there are no deaths). Both from
    scikit-survival, which handles tied times exactly (lifelines' Aalen-Johansen would jitter
    them at random).
    """
    return observed_risk_ci(y, horizon, ci=False, estimand=estimand)[0]


def observed_risk_ci(
    y: np.ndarray, horizon: float, ci: bool = True, estimand: str = "net"
) -> tuple[float, float, float]:
    """Observed risk by the horizon with its pointwise 95 % CI (log-log)."""
    y = check_outcome(y)
    competing = check_estimand(estimand) == "cif"
    ev, t = y["event"], y["time"]
    h = np.array([float(horizon)])
    if not (ev == EVENT).any():
        # No re-fracture at all: the estimate is 0 and the log-log interval undefined; the
        # upper bound is the exact (Clopper-Pearson) one for 0 events among the patients
        # whose status at the horizon is known.
        n_known = int(((t >= horizon) | (competing & (ev == DEATH))).sum())
        upper = 1.0 - 0.025 ** (1.0 / n_known) if n_known else 1.0
        return 0.0, 0.0, (upper if ci else float("nan"))
    if competing and (ev == DEATH).any():
        if ci:
            times, cif, band = cumulative_incidence_competing_risks(
                ev.astype(int), t, conf_type="log-log"
            )
            lo, hi = band[EVENT, 0], band[EVENT, 1]
        else:
            times, cif = cumulative_incidence_competing_risks(ev.astype(int), t)
            lo = hi = None
        est = float(step_at(times, cif[EVENT], h, 0.0)[0])
    else:
        if ci:
            times, surv, band = kaplan_meier_estimator(ev == EVENT, t, conf_type="log-log")
            lo, hi = 1.0 - band[1], 1.0 - band[0]
        else:
            times, surv = kaplan_meier_estimator(ev == EVENT, t)
            lo = hi = None
        est = float(1.0 - step_at(times, surv, h, 1.0)[0])
    if not ci:
        return est, float("nan"), float("nan")
    low = float(step_at(times, np.nan_to_num(lo, nan=0.0), h, 0.0)[0])
    high = float(step_at(times, np.nan_to_num(hi, nan=1.0), h, 0.0)[0])
    return est, low, high


def _weighted_logit(
    X: np.ndarray, d: np.ndarray, w: np.ndarray, offset: np.ndarray, max_iter: int = 50
) -> np.ndarray:
    """Newton-Raphson for a weighted logistic regression with an offset (no library has the
    offset: scikit-learn's LogisticRegression does not take one)."""
    beta = np.zeros(X.shape[1])
    for _ in range(max_iter):
        p = expit(offset + X @ beta)
        grad = X.T @ (w * (d - p))
        info = (X * (w * p * (1 - p))[:, None]).T @ X
        step = np.linalg.solve(info, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            return beta
    if np.max(np.abs(step)) > 1e-6:
        raise np.linalg.LinAlgError("calibration fit did not converge")
    return beta


def calibration_slope_intercept(
    y: np.ndarray, risk: np.ndarray, horizon: float, estimand: str = "net"
) -> tuple[float, float]:
    """Calibration slope and intercept (calibration-in-the-large) at the horizon.

    The status at the horizon (re-fracture by h; for ``cif`` a death before h is a known
    non-event) is regressed on logit(risk) by IPCW-weighted logistic regression: the slope is
    the coefficient of logit(risk); the intercept is that of the model with logit(risk) as an
    offset and no slope (0 is perfect; > 0 means under-prediction). Patients whose status is
    unknown have weight 0. NaN, NaN when the data cannot support it (see
    :func:`calibration_or_reason`).
    """
    try:
        return calibration_or_reason(y, risk, horizon, estimand)
    except Undefined:
        return float("nan"), float("nan")


def calibration_or_reason(
    y: np.ndarray,
    risk: np.ndarray,
    horizon: float,
    estimand: str = "net",
    censoring: CensoringWeights | None = None,
) -> tuple[float, float]:
    """:func:`calibration_slope_intercept`, raising :class:`Undefined` with the reason."""
    y = check_outcome(y)
    if not np.any(y["time"] >= horizon):
        raise Undefined("no patient was followed to the horizon")
    g = CensoringWeights(y, deaths_for(estimand)) if censoring is None else censoring
    status, w = g.at(y, horizon)
    used = w > 0
    d, w = status[used].astype(float), w[used]
    if d.sum() == 0:
        raise Undefined("no re-fracture by the horizon among the patients whose status is known")
    if d.sum() == len(d):
        raise Undefined("every patient whose status at the horizon is known had a re-fracture")
    lp = logit(np.clip(np.asarray(risk, dtype=float)[used], _RISK_EPS, 1 - _RISK_EPS))
    try:
        slope = _weighted_logit(np.column_stack([np.ones_like(lp), lp]), d, w, np.zeros_like(lp))[1]
        intercept = _weighted_logit(np.ones((len(lp), 1)), d, w, lp)[0]
    except np.linalg.LinAlgError:
        raise Undefined(
            "the calibration regression did not converge (the predicted risks separate the "
            "outcomes or are all equal)"
        ) from None
    return float(slope), float(intercept)


def oe_ratio(y: np.ndarray, risk: np.ndarray, horizon: float, estimand: str = "net") -> float:
    """Observed risk by the horizon (in the estimand) over the mean predicted risk."""
    y = check_outcome(y)
    if not np.any(y["time"] >= horizon):
        raise Undefined("no patient was followed to the horizon")
    mean_risk = float(np.mean(risk))
    if not mean_risk > 0:
        raise Undefined("the mean predicted risk is 0")
    return observed_risk(y, horizon, estimand) / mean_risk


def compute_metrics(
    y: np.ndarray,
    risk: np.ndarray,
    surv: np.ndarray | None = None,
    times: np.ndarray | None = None,
    horizon: float = 365.0,
    *,
    estimand: str = "net",
    lp: np.ndarray | None = None,
) -> tuple[Metrics, Reasons]:
    """Every metric of :func:`metric_names` for one set of predictions, and why any is NaN.

    Parameters
    ----------
    y : (n,) outcome of the evaluated patients; the censoring distribution is estimated on it.
    risk : (n,) predicted risk by the horizon (the cumulative incidence under ``cif``).
    surv : (n, len(times)) predicted probability of being free of re-fracture at ``times``
        (1 - cumulative incidence under ``cif``), for the integrated Brier score; None for a
        model that predicts the horizon risk only.
    times : the time grid of ``surv`` (:func:`time_grid`).
    horizon : days.
    estimand : ``net`` or ``cif``.
    lp : (n,) the model's linear predictor, used to rank patients when it orders them as
        ``risk`` does.

    Returns
    -------
    metrics : name -> value (NaN when undefined)
    reasons : name -> why it is NaN, for every NaN metric
    """
    y = check_outcome(y)
    check_estimand(estimand)
    risk = np.asarray(risk, dtype=float)
    if risk.shape != (len(y),):
        raise ValueError("risk must have one value per patient")
    h = horizon_label(horizon)
    names = metric_names(horizon)
    out: Metrics = dict.fromkeys(names, float("nan"))
    why: Reasons = {}
    if not np.all(np.isfinite(risk)):
        return out, dict.fromkeys(names, "the model predicted no finite risk for some patients")
    score = ranking_score(risk, lp)
    g = CensoringWeights(y, deaths_for(estimand))  # estimated once, on the evaluated data

    def put(name: str, fn: Callable[[], float]) -> None:
        try:
            value = float(fn())
        except Undefined as err:
            why[name] = str(err)
            return
        except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError) as err:
            why[name] = f"could not be computed on these data ({err})"
            return
        if np.isfinite(value):
            out[name] = value
        else:
            why[name] = "undefined on these data"

    put("cindex_harrell", lambda: concordance(y, score, horizon, estimand))
    put("cindex_uno", lambda: concordance(y, score, horizon, estimand, ipcw=True))
    put(f"auc_{h}", lambda: cumulative_dynamic_auc(y, score, horizon, estimand, g))
    put(f"brier_{h}", lambda: brier_score(y, risk, horizon, estimand, g))
    if surv is None or times is None:
        why[f"ibs_{h}"] = "the model predicts the risk at the horizon only, not a curve over time"
    else:
        put(f"ibs_{h}", lambda: integrated_brier_score(y, surv, times, estimand, g))
    try:
        slope, intercept = calibration_or_reason(y, risk, horizon, estimand, g)
        out["calibration_slope"], out["calibration_intercept"] = slope, intercept
    except Undefined as err:
        why["calibration_slope"] = why["calibration_intercept"] = str(err)
    put(f"oe_ratio_{h}", lambda: oe_ratio(y, risk, horizon, estimand))
    return out, why
