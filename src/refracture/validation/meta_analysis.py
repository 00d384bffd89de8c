"""Random-effects meta-analysis of per-site performance (Debray et al., BMJ 2017).

A model validated in several hospitals has one C-index and one O/E ratio per hospital; how
much they vary matters as much as their average. Each site's estimate ``y_i`` (on a scale
where it is roughly normal: logit C, log O/E) with its within-site variance ``v_i`` is
combined by the random-effects model y_i ~ N(mu, v_i + tau^2):

* tau^2 by restricted maximum likelihood (REML, Fisher scoring as in metafor; Viechtbauer,
  J Educ Behav Stat 2005), or DerSimonian-Laird / Paule-Mandel on request;
* the 95 % CI of mu by Hartung-Knapp-Sidik-Jonkman (HKSJ): SE^2 = sum w (y - mu)^2 /
  ((k - 1) sum w), t with k - 1 degrees of freedom (IntHout et al., BMC Med Res Methodol
  2014: better coverage than the normal interval with few studies);
* the 95 % prediction interval for a new site's value, mu +- t(k - 2) sqrt(tau^2 + SE^2)
  (Riley, Higgins & Deeks, BMJ 2011; IntHout et al., BMJ Open 2016), from k >= 3 sites;
* I^2 from Cochran's Q (Higgins & Thompson 2002).

statsmodels' ``combine_effects`` has the DL and PM estimators and the HKSJ ("wls") interval
but no REML, so REML is written here; the tests check DL/PM against statsmodels and REML
against metafor's published BCG example and an independent maximisation of the restricted
likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import brentq

from refracture.validation.metrics import observed_risk_ci

__all__ = ["MetaResult", "log_oe_se", "random_effects", "tau2_dl", "tau2_pm", "tau2_reml"]


@dataclass(frozen=True)
class MetaResult:
    """One random-effects meta-analysis, on the scale of the inputs.

    ``estimate`` (mu), ``se`` (HKSJ), ``lo`` / ``hi`` (95 % CI), ``pi_lo`` / ``pi_hi`` (95 %
    prediction interval; NaN with fewer than 3 sites), ``tau2``, ``i2``, ``q`` (Cochran's Q),
    ``k`` (sites) and the tau^2 ``method``.
    """

    estimate: float
    se: float
    lo: float
    hi: float
    pi_lo: float
    pi_hi: float
    tau2: float
    i2: float
    q: float
    k: int
    method: str


def _check(y: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float)
    if y.shape != v.shape or y.ndim != 1:
        raise ValueError("effects and variances must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("effects must be finite and variances finite and positive")
    return y, v


def _q(y: np.ndarray, v: np.ndarray, tau2: float) -> float:
    w = 1.0 / (v + tau2)
    mu = np.sum(w * y) / np.sum(w)
    return float(np.sum(w * (y - mu) ** 2))


def tau2_dl(y: np.ndarray, v: np.ndarray) -> float:
    """DerSimonian-Laird moment estimator of tau^2 (truncated at 0)."""
    y, v = _check(y, v)
    w = 1.0 / v
    denom = np.sum(w) - np.sum(w**2) / np.sum(w)
    return float(max(0.0, (_q(y, v, 0.0) - (len(y) - 1)) / denom))


def tau2_pm(y: np.ndarray, v: np.ndarray) -> float:
    """Paule-Mandel estimator: the tau^2 >= 0 at which the generalised Q equals k - 1."""
    y, v = _check(y, v)
    k = len(y)
    if _q(y, v, 0.0) <= k - 1:
        return 0.0
    hi = max(float(np.var(y, ddof=1)), 1e-12)
    while _q(y, v, hi) > k - 1:
        hi *= 2
    return float(brentq(lambda t: _q(y, v, t) - (k - 1), 0.0, hi, xtol=1e-14, rtol=1e-14))


def tau2_reml(y: np.ndarray, v: np.ndarray, max_iter: int = 200, tol: float = 1e-12) -> float:
    """REML estimate of tau^2 by Fisher scoring, as metafor's ``rma(method = "REML")``.

    With w = 1 / (v + tau^2) and P = W - w w' / sum w, the restricted score is
    (y'PPy - tr P) / 2 and the expected information tr(PP) / 2; steps are halved to stay at
    tau^2 >= 0, and the estimate is truncated at 0. Starts from the DL estimate.
    """
    y, v = _check(y, v)
    tau2 = tau2_dl(y, v)
    for _ in range(max_iter):
        w = 1.0 / (v + tau2)
        sw, sw2, sw3 = np.sum(w), np.sum(w**2), np.sum(w**3)
        mu = np.sum(w * y) / sw
        ypp = np.sum(w**2 * (y - mu) ** 2)
        tr_p = sw - sw2 / sw
        tr_pp = sw2 - 2 * sw3 / sw + (sw2 / sw) ** 2
        step = (ypp - tr_p) / tr_pp
        new = tau2 + step
        while new < 0 and abs(step) > tol:
            step /= 2
            new = tau2 + step
        new = max(new, 0.0)
        if abs(new - tau2) < tol * max(1.0, tau2):
            return float(new)
        tau2 = new
    return float(tau2)


_TAU2 = {"reml": tau2_reml, "dl": tau2_dl, "pm": tau2_pm}


def random_effects(
    y: np.ndarray, v: np.ndarray, method: str = "reml", level: float = 0.95
) -> MetaResult:
    """Random-effects pooled estimate with HKSJ CI and prediction interval (module docstring).

    Parameters
    ----------
    y : (k,) per-site estimates on a normal scale (logit C, log O/E).
    v : (k,) their within-site variances.
    method : ``reml`` (default), ``dl`` or ``pm``: the tau^2 estimator.
    level : interval level.
    """
    if method not in _TAU2:
        raise ValueError(f"method must be one of {', '.join(_TAU2)}, not {method!r}")
    y, v = _check(y, v)
    k = len(y)
    if k < 2:
        raise ValueError("a meta-analysis needs at least two sites")
    tau2 = _TAU2[method](y, v)
    w = 1.0 / (v + tau2)
    mu = float(np.sum(w * y) / np.sum(w))
    se = math.sqrt(float(np.sum(w * (y - mu) ** 2)) / ((k - 1) * float(np.sum(w))))
    alpha = 1 - level
    t1 = stats.t.ppf(1 - alpha / 2, k - 1)
    pi_lo = pi_hi = float("nan")
    if k >= 3:
        half = stats.t.ppf(1 - alpha / 2, k - 2) * math.sqrt(tau2 + se**2)
        pi_lo, pi_hi = mu - half, mu + half
    q = _q(y, v, 0.0)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return MetaResult(
        estimate=mu,
        se=se,
        lo=mu - t1 * se,
        hi=mu + t1 * se,
        pi_lo=pi_lo,
        pi_hi=pi_hi,
        tau2=float(tau2),
        i2=float(i2),
        q=q,
        k=k,
        method=method,
    )


def log_oe_se(y: np.ndarray, horizon: float, estimand: str, level: float = 0.95) -> float:
    """Standard error of log(O/E) of one site: the width of the log-log interval of its
    observed risk (Aalen-Johansen under ``cif``, 1 - Kaplan-Meier under ``net``) on the log
    scale, divided by 2 z; the mean prediction E is held fixed (Debray et al., BMJ 2017).
    NaN without a re-fracture by the horizon."""
    est, lo, hi = observed_risk_ci(y, horizon, estimand=estimand)
    if not (est > 0 and lo > 0 and np.isfinite(hi) and hi > lo):
        return float("nan")
    z = stats.norm.ppf(1 - (1 - level) / 2)
    return float((math.log(hi) - math.log(lo)) / (2 * z))
