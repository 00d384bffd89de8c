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
* Which metrics exist, and how each is computed, is the registry
  :data:`refracture.validation.catalogue.METRICS`: every entry's ``compute`` is a function of
  an :class:`Evaluation` (the predictions, the outcome and what is estimated once from them).

scikit-survival gives Harrell's and Uno's C for the net risk and the Kaplan-Meier and
Aalen-Johansen estimators; the calibration slope and intercept with IPC weights are written
here (no library fits a weighted logistic regression with an offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy.special import expit, logit
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

from refracture.models.ipcw import CensoringWeights, deaths_for, step_at
from refracture.models.outcome import DEATH, EVENT, check_estimand, check_outcome
from refracture.validation.catalogue import (  # horizon_label, metric_names: re-exported
    MetricSpec,
    horizon_label,  # noqa: F401
    metric_names,  # noqa: F401
    metric_specs,
)
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


@dataclass
class Evaluation:
    """One set of predictions with its outcome: what every metric's ``compute`` reads.

    The censoring distribution and the ranking score are computed once, when first asked for,
    and shared by the metrics (a metric estimates G on the patients it is computed on).
    """

    y: np.ndarray
    risk: np.ndarray
    surv: np.ndarray | None = None
    times: np.ndarray | None = None
    horizon: float = 365.0
    estimand: str = "net"
    lp: np.ndarray | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def score(self) -> np.ndarray:
        """What patients are ranked by: the linear predictor when it orders them as the risk
        does, else the risk (:func:`~refracture.validation.concordance.ranking_score`)."""
        return ranking_score(self.risk, self.lp)

    @cached_property
    def censoring(self) -> CensoringWeights:
        return CensoringWeights(self.y, deaths_for(self.estimand))


def harrell_c(ev: Evaluation) -> float:
    return concordance(ev.y, ev.score, ev.horizon, ev.estimand)


def uno_c(ev: Evaluation) -> float:
    return concordance(ev.y, ev.score, ev.horizon, ev.estimand, ipcw=True)


def auc(ev: Evaluation) -> float:
    return cumulative_dynamic_auc(ev.y, ev.score, ev.horizon, ev.estimand, ev.censoring)


def brier(ev: Evaluation) -> float:
    return brier_score(ev.y, ev.risk, ev.horizon, ev.estimand, ev.censoring)


def _curve(ev: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    if ev.surv is None or ev.times is None:
        raise Undefined("the model predicts the risk at the horizon only, not a curve over time")
    return ev.surv, ev.times


def ibs(ev: Evaluation) -> float:
    surv, times = _curve(ev)
    return integrated_brier_score(ev.y, surv, times, ev.estimand, ev.censoring)


def _brier_no_information(y: np.ndarray, risk: np.ndarray, t: float, ev: Evaluation) -> float:
    status, w = ev.censoring.at(y, t)
    return float(np.mean(w * ((status - risk.mean()) ** 2 + risk.var())))


def brier_no_information(ev: Evaluation) -> float:
    """The Brier score expected when each patient's outcome is paired with another patient's
    prediction: the mean over all n x n pairs, (1/n) sum_i w_i ((D_i - mean r)^2 + var r)
    (Efron & Tibshirani 1997's no-information error rate, IPC weights of the outcomes)."""
    if not np.any(check_outcome(ev.y)["time"] >= ev.horizon):
        raise Undefined("no patient was followed to the horizon")
    return _brier_no_information(ev.y, np.asarray(ev.risk, dtype=float), ev.horizon, ev)


def ibs_no_information(ev: Evaluation) -> float:
    """:func:`brier_no_information` integrated over the IBS time grid."""
    surv, times = _curve(ev)
    scores = [_brier_no_information(ev.y, 1.0 - surv[:, k], t, ev) for k, t in enumerate(times)]
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def _horizon_status(ev: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Status at the horizon, IPC weights and logit(risk) of the patients whose status is
    known (the calibration regressions' data), or Undefined with the reason."""
    if "status" in ev.cache:
        return ev.cache["status"]
    y = check_outcome(ev.y)
    if not np.any(y["time"] >= ev.horizon):
        raise Undefined("no patient was followed to the horizon")
    status, w = ev.censoring.at(y, ev.horizon)
    used = w > 0
    d, w = status[used].astype(float), w[used]
    if d.sum() == 0:
        raise Undefined("no re-fracture by the horizon among the patients whose status is known")
    if d.sum() == len(d):
        raise Undefined("every patient whose status at the horizon is known had a re-fracture")
    lp = logit(np.clip(np.asarray(ev.risk, dtype=float)[used], _RISK_EPS, 1 - _RISK_EPS))
    ev.cache["status"] = (d, w, lp)
    return d, w, lp


_NO_CONVERGENCE = (
    "the calibration regression did not converge (the predicted risks separate the outcomes "
    "or are all equal)"
)


def calibration_slope(ev: Evaluation) -> float:
    """Coefficient of logit(risk) in the IPCW logistic regression of the status at the horizon
    (see :func:`calibration_slope_intercept`)."""
    d, w, lp = _horizon_status(ev)
    try:
        X = np.column_stack([np.ones_like(lp), lp])
        return float(_weighted_logit(X, d, w, np.zeros_like(lp))[1])
    except np.linalg.LinAlgError:
        raise Undefined(_NO_CONVERGENCE) from None


def calibration_intercept(ev: Evaluation) -> float:
    """Intercept of that regression with logit(risk) as an offset and no slope."""
    d, w, lp = _horizon_status(ev)
    try:
        return float(_weighted_logit(np.ones((len(lp), 1)), d, w, lp)[0])
    except np.linalg.LinAlgError:
        raise Undefined(_NO_CONVERGENCE) from None


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
    ev = Evaluation(check_outcome(y), np.asarray(risk, dtype=float), horizon=horizon,
                    estimand=estimand)  # fmt: skip
    if censoring is not None:
        ev.censoring = censoring
    return calibration_slope(ev), calibration_intercept(ev)


def oe_ratio(ev: Evaluation) -> float:
    """Observed risk by the horizon (in the estimand) over the mean predicted risk."""
    y = check_outcome(ev.y)
    if not np.any(y["time"] >= ev.horizon):
        raise Undefined("no patient was followed to the horizon")
    mean_risk = float(np.mean(ev.risk))
    if not mean_risk > 0:
        raise Undefined("the mean predicted risk is 0")
    return observed_risk(y, ev.horizon, ev.estimand) / mean_risk


_FAILURES = (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError)


def evaluate(ev: Evaluation, specs: tuple[MetricSpec, ...]) -> tuple[Metrics, Reasons]:
    """Every metric of ``specs`` on one Evaluation, and why any is NaN."""
    out: Metrics = {}
    why: Reasons = {}
    for spec in specs:
        name = spec.name(ev.horizon)
        out[name] = float("nan")
        try:
            value = spec.evaluate(ev)
        except Undefined as err:
            why[name] = str(err)
            continue
        except _FAILURES as err:
            why[name] = f"could not be computed on these data ({err})"
            continue
        if np.isfinite(value):
            out[name] = value
        else:
            why[name] = "undefined on these data"
    return out, why


def compute_metrics(
    y: np.ndarray,
    risk: np.ndarray,
    surv: np.ndarray | None = None,
    times: np.ndarray | None = None,
    horizon: float = 365.0,
    *,
    estimand: str = "net",
    lp: np.ndarray | None = None,
    specs: tuple[MetricSpec, ...] | None = None,
) -> tuple[Metrics, Reasons]:
    """Every metric of the registry (or of ``specs``) for one set of predictions, and why any
    is NaN.

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
    specs : the metrics to compute (default: every entry of
        :data:`~refracture.validation.catalogue.METRICS`).

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
    specs = metric_specs() if specs is None else specs
    if not np.all(np.isfinite(risk)):
        names = [s.name(horizon) for s in specs]
        return dict.fromkeys(names, float("nan")), dict.fromkeys(
            names, "the model predicted no finite risk for some patients"
        )
    ev = Evaluation(y, risk, surv, times, float(horizon), estimand, lp)
    return evaluate(ev, specs)
