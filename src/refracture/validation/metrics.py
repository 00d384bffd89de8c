"""Performance at the horizon (PRODUCT.md section 5 names).

scikit-survival computes the discrimination and Brier measures; what it lacks is written here
and says so: the observed cumulative incidence (Aalen-Johansen / Kaplan-Meier from
scikit-survival's estimators), the O/E ratio, and the calibration slope and intercept at the
horizon with inverse probability of censoring weights.

Conventions
-----------
* ``risk`` is the predicted absolute risk of re-fracture by the horizon; it is the score for
  the C-indices and the AUC (higher risk, earlier event).
* Discrimination and Brier treat death as censoring (net risk, as the models do).
* Calibration compares predictions with the observed cumulative incidence: a death before
  the horizon is a known non-event, censoring is handled by IPCW (Graf 1999 weights,
  G estimated on the validation data itself).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit, logit
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

from refracture.models.ipcw import horizon_weights, step_at
from refracture.models.outcome import DEATH, EVENT, check_outcome, to_sksurv
from refracture.validation.catalogue import horizon_label, metric_names

_RISK_EPS = 1e-8


def time_grid(horizon: float, n: int = 20) -> np.ndarray:
    """Time points of the integrated Brier score: ``n`` equal steps from h/n to h."""
    return np.linspace(horizon / n, horizon, n)


def observed_risk(y: np.ndarray, horizon: float) -> float:
    """Observed cumulative incidence of re-fracture by the horizon.

    Aalen-Johansen (deaths as a competing event) when the sample has deaths, else
    1 - Kaplan-Meier; both from scikit-survival, which handles tied times exactly (lifelines'
    Aalen-Johansen would jitter them at random).
    """
    return observed_risk_ci(y, horizon, ci=False)[0]


def observed_risk_ci(y: np.ndarray, horizon: float, ci: bool = True) -> tuple[float, float, float]:
    """Observed cumulative incidence by the horizon with its pointwise 95 % CI (log-log)."""
    y = check_outcome(y)
    ev, t = y["event"], y["time"]
    h = np.array([float(horizon)])
    if not (ev == EVENT).any():
        # No re-fracture at all: the estimate is 0 and the log-log interval undefined; the
        # upper bound is the exact (Clopper-Pearson) one for 0 events among the patients
        # whose status at the horizon is known.
        n_known = int(((t > horizon) | (ev == DEATH)).sum())
        upper = 1.0 - 0.025 ** (1.0 / n_known) if n_known else 1.0
        return 0.0, 0.0, (upper if ci else float("nan"))
    if (ev == DEATH).any():
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
    y: np.ndarray, risk: np.ndarray, horizon: float
) -> tuple[float, float]:
    """Calibration slope and intercept (calibration-in-the-large) at the horizon.

    The status at the horizon (re-fracture by h; a death before h is a known non-event) is
    regressed on logit(risk) by IPCW-weighted logistic regression: the slope is the
    coefficient of logit(risk); the intercept is that of the model with logit(risk) as an
    offset and no slope (0 is perfect; > 0 means under-prediction). Patients censored before
    the horizon have weight 0 (Graf 1999 weights; G from these data).
    """
    status, w = horizon_weights(y, horizon, deaths="competing")
    used = w > 0
    d, w = status[used].astype(float), w[used]
    if d.sum() == 0 or d.sum() == len(d):
        return float("nan"), float("nan")
    lp = logit(np.clip(np.asarray(risk, dtype=float)[used], _RISK_EPS, 1 - _RISK_EPS))
    try:
        slope = _weighted_logit(np.column_stack([np.ones_like(lp), lp]), d, w, np.zeros_like(lp))[1]
        intercept = _weighted_logit(np.ones((len(lp), 1)), d, w, lp)[0]
    except np.linalg.LinAlgError:
        return float("nan"), float("nan")
    return float(slope), float(intercept)


def _cap_to_training(y_test: np.ndarray, y_train: np.ndarray, horizon: float) -> np.ndarray:
    """Censor test follow-up at the training data's last time when it runs past it.

    scikit-survival's IPCW cannot evaluate G beyond the training follow-up. Every metric here
    looks at event times up to the horizon only, and a patient followed past the horizon is a
    control whatever happens later, so capping times beyond the horizon changes no value.
    """
    t_max = float(y_train["time"].max())
    if y_test["time"].max() <= t_max or t_max <= horizon:
        return y_test
    capped = y_test.copy()
    late = capped["time"] > t_max
    capped["time"][late] = t_max
    capped["event"][late] = False
    return capped


def compute_metrics(
    y_train: np.ndarray,
    y_test: np.ndarray,
    risk: np.ndarray,
    surv: np.ndarray | None = None,
    times: np.ndarray | None = None,
    horizon: float = 365.0,
) -> dict[str, float]:
    """All PRODUCT.md section 5 metrics at the horizon for one set of predictions.

    ``y_train`` is the data the censoring distribution of the IPCW metrics (Uno's C, AUC,
    Brier, IBS) is estimated from, as scikit-survival defines them (the development data);
    ``risk`` the predicted risk by the horizon for ``y_test``; ``surv`` the predicted survival
    at ``times`` (for the integrated Brier score: NaN without it, e.g. the logistic model).
    """
    y_tr = check_outcome(y_train)
    y_te = check_outcome(y_test)
    risk = np.asarray(risk, dtype=float)
    if risk.shape != (len(y_te),):
        raise ValueError("risk must have one value per test patient")
    h = horizon_label(horizon)
    out = dict.fromkeys(metric_names(horizon), float("nan"))
    s_tr = to_sksurv(y_tr)
    s_te = to_sksurv(y_te)
    events = s_te["event"]
    early = events & (s_te["time"] <= horizon)
    followed_past = s_te["time"].max() > horizon

    if events.any():
        out["cindex_harrell"] = _try(
            lambda: concordance_index_censored(events, s_te["time"], risk)[0]
        )
    if early.any():
        out["cindex_uno"] = _try(lambda: concordance_index_ipcw(s_tr, s_te, risk, tau=horizon)[0])
    if early.any() and followed_past:
        capped = _cap_to_training(s_te, s_tr, horizon)
        out[f"auc_{h}"] = _try(lambda: cumulative_dynamic_auc(s_tr, capped, risk, [horizon])[0][0])
        out[f"brier_{h}"] = _try(lambda: brier_score(s_tr, capped, 1.0 - risk, [horizon])[1][0])
        if surv is not None and times is not None:
            out[f"ibs_{h}"] = _ibs(s_tr, capped, np.asarray(surv, float), np.asarray(times, float))
    slope, intercept = calibration_slope_intercept(y_te, risk, horizon)
    out["calibration_slope"], out["calibration_intercept"] = slope, intercept
    mean_risk = float(np.mean(risk))
    if mean_risk > 0:
        out[f"oe_ratio_{h}"] = observed_risk(y_te, horizon) / mean_risk
    return {k: float(v) for k, v in out.items()}


def _ibs(s_tr: np.ndarray, s_te: np.ndarray, surv: np.ndarray, times: np.ndarray) -> float:
    # scikit-survival needs the grid inside the test follow-up; in a bootstrap resample the
    # first or last grid point can fall outside it, and then the grid is trimmed.
    keep = (times >= s_te["time"].min()) & (times < s_te["time"].max())
    if keep.sum() < 2:
        return float("nan")
    return _try(lambda: integrated_brier_score(s_tr, s_te, surv[:, keep], times[keep]))


def _try(fn: Callable[[], float]) -> float:
    """A metric that scikit-survival refuses for these data (too few events or controls,
    censoring survival reaching zero) is reported as NaN rather than stopping the run."""
    try:
        value = fn()
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return float(value)
