"""The models of death under estimand ``cif``: shrunk, so their risks hold on new patients.

Under ``cif`` every model also predicts the risk of death before re-fracture by the horizon
(``risk_death_365d`` of a score). The death model is fitted on the same columns as the
re-fracture model, and deaths are few: 16 deaths for 18 model terms in a 200-patient
development set is common. Fitted by maximum likelihood such a model nearly separates the
patients who died: on new patients its risks run from 1e-20 to 0.98 with a median of 0.012
while 7.5 % die (the synthetic cohort; a user's model showed 3.5e-13 to 0.054, mean 0.0024,
with about 9 % dying), and its mean drifts from the observed death rate.

The fix is the uniform shrinkage of van Houwelingen & le Cessie (Stat Med 1990), as in
Steyerberg's Clinical Prediction Models (2019, ch. 13): every coefficient of the death model
is multiplied by the heuristic factor

    S = (LR - df) / LR,

LR the likelihood-ratio chi-square of the death model against one without covariates and df
its number of terms, and the baseline is re-estimated at the shrunk linear predictor, so that
the expected deaths of the development patients still add up to the observed ones. A death
model with no more signal than noise (LR <= df) gets S = 0: no covariates, every patient the
overall death hazard. The re-fracture model is left as fitted (its calibration is measured).

The shrinkage and the Breslow baseline at given coefficients are written here because no
library re-estimates a baseline hazard at fixed, shrunk coefficients (lifelines and
comprisk fit the coefficients and the baseline together); the tests check the baseline
against lifelines' at S = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, log_expit

from refracture.models.design import design_problem
from refracture.models.outcome import DEATH

__all__ = [
    "DeathHazard",
    "breslow",
    "coherent_death_cif",
    "firth_cox",
    "firth_logistic",
    "fit_death_hazard",
    "heuristic_shrinkage",
    "shrink_logistic",
]


def heuristic_shrinkage(lr: float, df: int) -> float:
    """van Houwelingen & le Cessie's S = (LR - df) / LR, at least 0 (0 when LR <= 0)."""
    if not np.isfinite(lr) or lr <= 0 or df <= 0:
        return 0.0 if df > 0 else 1.0
    return float(max(0.0, (lr - df) / lr))


def breslow(time: np.ndarray, died: np.ndarray, lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's cumulative baseline hazard at the event times, for given linear predictors.

    dH0(t) = d(t) / sum over patients with T_j >= t of exp(lp_j). Returns (times, H0).
    """
    time = np.asarray(time, dtype=float)
    died = np.asarray(died, dtype=bool)
    r = np.exp(np.asarray(lp, dtype=float))
    times = np.unique(time[died])
    if times.size == 0:
        return times, times.copy()
    order = np.argsort(time, kind="mergesort")
    t_sorted = time[order]
    at_risk = np.cumsum(r[order][::-1])[::-1]  # sum of r over T_j >= t_sorted[i]
    first = np.searchsorted(t_sorted, times, side="left")
    deaths = np.bincount(np.searchsorted(times, time[died]), minlength=times.size)
    return times, np.cumsum(deaths / at_risk[first])


@dataclass(frozen=True)
class DeathHazard:
    """A cause-specific Cox model of death, shrunk (see the module docstring).

    ``coef_`` the shrunk log hazard ratios (``shrinkage_`` times the fitted ones, in the
    columns' order), ``means_`` the centring, ``baseline_times_`` / ``baseline_cumhaz_``
    Breslow's H0(t) at the shrunk linear predictor, ``lr_`` and ``df_`` the likelihood-ratio
    chi-square and terms of the unshrunk fit (NaN when it could not be fitted).
    """

    coef_: np.ndarray
    means_: np.ndarray
    baseline_times_: np.ndarray
    baseline_cumhaz_: np.ndarray
    shrinkage_: float
    lr_: float
    df_: int

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        values = X.to_numpy(dtype=float) if isinstance(X, pd.DataFrame) else np.asarray(X, float)
        return (values - self.means_) @ self.coef_


def _risk_set_sums(X: np.ndarray, time: np.ndarray, died: np.ndarray, beta: np.ndarray):
    """Per unique death time: deaths d, sum of x over the deaths, and the risk-set sums
    S0 = sum w, S1 = sum w x, S2 = sum w x x' (w = exp(x'beta), scaled for stability)."""
    order = np.argsort(time, kind="mergesort")
    t, x = time[order], X[order]
    lp = x @ beta
    w = np.exp(lp - lp.max())
    times, inverse = np.unique(time[died], return_inverse=True)
    first = np.searchsorted(t, times, side="left")

    def tail(a: np.ndarray) -> np.ndarray:  # sum over T_j >= t_k, for each death time k
        return np.cumsum(a[::-1], axis=0)[::-1][first]

    d = np.bincount(inverse, minlength=times.size).astype(float)
    xd = np.zeros((times.size, X.shape[1]))
    np.add.at(xd, inverse, X[died])
    s0 = tail(w)
    s1 = tail(w[:, None] * x)
    s2 = tail(w[:, None, None] * x[:, :, None] * x[:, None, :])
    return d, xd, s0, s1, s2, (w, x, first, lp.max())


def _partial_likelihood(X: np.ndarray, time: np.ndarray, died: np.ndarray, beta: np.ndarray):
    """Breslow log partial likelihood, score, information and the sums behind them."""
    d, xd, s0, s1, s2, extra = _risk_set_sums(X, time, died, beta)
    mu = s1 / s0[:, None]
    ll = float(np.sum(xd @ beta) - np.sum(d * (np.log(s0) + extra[3])))
    score = np.sum(xd - d[:, None] * mu, axis=0)
    info = np.einsum("k,kab->ab", d, s2 / s0[:, None, None] - mu[:, :, None] * mu[:, None, :])
    return ll, score, info, (d, s0, mu, s2, extra)


def firth_cox(
    X: np.ndarray, time: np.ndarray, died: np.ndarray, max_iter: int = 100, tol: float = 1e-8
) -> tuple[np.ndarray, float, float]:
    """Cox regression with Firth's penalty, Breslow ties (Heinze & Schemper, Biometrics 2001).

    Maximises log L(beta) + 1/2 log |I(beta)|, which keeps the estimates finite when a
    covariate separates the patients who died (a category nobody in it died in), as R's
    coxphf does. The penalty's gradient is 1/2 tr(I^-1 dI/dbeta_r), a sum over death times of
    risk-set third central moments E[(c' I^-1 c) c_r], c = x - E[x]. Newton steps of at most
    0.5 (coxphf's maxstep) with step halving. Written here because no Python library has
    Firth's Cox regression. Returns (beta, log L(beta), log L(0)) of the unpenalised partial
    likelihood, for the likelihood-ratio chi-square.
    """
    X = np.asarray(X, dtype=float)
    X = X - X.mean(axis=0)
    beta = np.zeros(X.shape[1])

    def penalised(b: np.ndarray):
        ll, score, info, parts = _partial_likelihood(X, time, died, b)
        sign, logdet = np.linalg.slogdet(info)
        return (ll + 0.5 * logdet if sign > 0 else -np.inf), ll, score, info, parts

    value, ll0, score, info, parts = penalised(beta)
    ll = ll0
    for _ in range(max_iter):
        inv = np.linalg.pinv(info)
        d, s0, mu, s2, (w, x, first, _) = parts
        q = np.einsum("ja,ab,jb->j", x, inv, x)
        sq = np.cumsum((w * q)[::-1])[::-1][first]
        sqx = np.cumsum((w * q)[:, None][::-1] * x[::-1], axis=0)[::-1][first]
        a_mu = mu @ inv  # rows: A mu_k (A symmetric)
        v = (
            sqx / s0[:, None]
            - (sq / s0)[:, None] * mu
            - 2 * (np.einsum("kab,kb->ka", s2, a_mu) / s0[:, None])
            + 2 * mu * np.sum(mu * a_mu, axis=1)[:, None]
        )
        step = inv @ (score + 0.5 * np.sum(d[:, None] * v, axis=0))
        step *= min(1.0, 0.5 / max(np.max(np.abs(step)), 1e-300))
        for _half in range(30):
            new = penalised(beta + step)
            if new[0] >= value - 1e-10:
                break
            step = step / 2
        beta = beta + step
        value, ll, score, info, parts = new
        if np.max(np.abs(step)) < tol:
            break
    return beta, ll, ll0


def _cox_lr(X: pd.DataFrame, time: np.ndarray, died: np.ndarray) -> tuple[np.ndarray, float]:
    """Firth-penalised Cox fit of death: coefficients and the likelihood-ratio chi-square.

    A design that cannot be fitted (a constant column in these data, fewer than two deaths)
    gives LR NaN, which :func:`heuristic_shrinkage` turns into a model without covariates.
    """
    zero = np.zeros(X.shape[1])
    if design_problem(X) or died.sum() < 2:
        return zero, float("nan")
    try:
        coef, ll, ll0 = firth_cox(X.to_numpy(dtype=float), time, died)
    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
        return zero, float("nan")
    if not np.all(np.isfinite(coef)):
        return zero, float("nan")
    return coef, 2.0 * (ll - ll0)


def fit_death_hazard(X: pd.DataFrame, y: np.ndarray) -> DeathHazard | None:
    """The shrunk cause-specific Cox model of death on X (None when no patient died)."""
    died = np.asarray(y["event"]) == DEATH
    if not died.any():
        return None
    time = np.asarray(y["time"], dtype=float)
    values = X.to_numpy(dtype=float)
    means = values.mean(axis=0)
    coef, lr = _cox_lr(X, time, died)
    shrink = heuristic_shrinkage(lr, X.shape[1])
    coef = shrink * coef
    times, cumhaz = breslow(time, died, (values - means) @ coef)
    return DeathHazard(coef, means, times, cumhaz, shrink, lr, int(X.shape[1]))


def coherent_death_cif(
    grid: np.ndarray, cif1: np.ndarray, dh2: np.ndarray, r2: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Cumulative incidence of death from its cause-specific hazard and a given CIF of
    re-fracture, so that the two never add up to more than 1.

    On the sorted ``grid`` (every time either curve jumps) the event-free probability just
    before s is S(s-) = 1 - CIF1(s-) - CIF2(s-), and death takes its share of it:
    CIF2(s) = CIF2(s-) + S(s-) min(r2 dH2(s), 1) (the identity dCIF2 = S(s-) dLambda2 of any
    competing-risks model). Where CIF1 itself climbs above 1 - CIF2 (a re-fracture model
    fitted on its own, such as Fine-Gray's, for an extreme patient) CIF2 is scaled down so
    that CIF1 + CIF2 = 1 at the last grid time, which keeps it monotone and the pair coherent
    at every time.

    Parameters
    ----------
    grid : (T,) sorted jump times; cif1 : (n, T) CIF of re-fracture at them;
    dh2 : (T,) baseline death-hazard increments; r2 : (n,) relative death hazards;
    times : (m,) times to evaluate CIF2 at. Returns (n, m).
    """
    n, T = cif1.shape
    c2 = np.zeros((n, T))
    share = np.minimum(r2[:, None] * dh2[None, :], 1.0)
    prev1, prev2 = np.zeros(n), np.zeros(n)
    for k in range(T):
        c2[:, k] = prev2 + np.maximum(1.0 - prev1 - prev2, 0.0) * share[:, k]
        prev1, prev2 = cif1[:, k], c2[:, k]
    if T:
        over = cif1[:, -1] + c2[:, -1] > 1.0
        if over.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(c2[over, -1] > 0, (1.0 - cif1[over, -1]) / c2[over, -1], 0.0)
            c2[over] *= np.clip(factor, 0.0, 1.0)[:, None]
    idx = np.searchsorted(grid, np.asarray(times, dtype=float), side="right") - 1
    out = np.zeros((n, len(idx)))
    seen = idx >= 0
    out[:, seen] = c2[:, idx[seen]]
    return out


def firth_logistic(
    X: np.ndarray, d: np.ndarray, w: np.ndarray, max_iter: int = 100, tol: float = 1e-8
) -> np.ndarray:
    """Weighted logistic regression with Firth's penalty (intercept first).

    Firth's modified score X'[w (d - p) + h (1/2 - p)], h the diagonal of the weighted hat
    matrix, keeps the estimates finite when the events are separated (Heinze & Schemper, Stat
    Med 2002), as R's logistf does with weights. Newton steps with step halving on the
    penalised log-likelihood. Written here because scikit-learn and statsmodels have no
    Firth-penalised logistic regression.
    """
    X1 = np.column_stack([np.ones(len(X)), X])
    beta = np.zeros(X1.shape[1])

    def penalised(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        lp = X1 @ b
        p = expit(lp)
        info = (X1 * (w * p * (1 - p))[:, None]).T @ X1
        sign, logdet = np.linalg.slogdet(info)
        ll = np.sum(w * (d * log_expit(lp) + (1 - d) * log_expit(-lp)))
        return float(ll + 0.5 * logdet) if sign > 0 else -np.inf, p, info

    value, p, info = penalised(beta)
    for _ in range(max_iter):
        inv = np.linalg.pinv(info)
        h = w * p * (1 - p) * np.einsum("ij,jk,ik->i", X1, inv, X1)
        step = inv @ (X1.T @ (w * (d - p) + h * (0.5 - p)))
        for _half in range(30):
            new_value, new_p, new_info = penalised(beta + step)
            if new_value >= value - 1e-12:
                break
            step = step / 2
        beta = beta + step
        value, p, info = new_value, new_p, new_info
        if np.max(np.abs(step)) < tol:
            break
    return beta


def shrink_logistic(X: np.ndarray, d: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """A weighted logistic model (intercept first), fitted and shrunk for prediction.

    Firth's penalty (:func:`firth_logistic`) keeps a model of few deaths finite; its slopes
    are then multiplied by the heuristic S of the (weighted) likelihood-ratio chi-square
    against the intercept-only model, and the intercept is re-estimated at them so that the
    weighted mean prediction equals the weighted observed rate (Puhr et al., Stat Med 2017:
    Firth's logistic regression with intercept correction). Returns (beta, S).
    """
    d = np.asarray(d, dtype=float)
    w = np.asarray(w, dtype=float)
    beta = firth_logistic(X, d, w)
    lp = beta[0] + X @ beta[1:]
    ll = float(np.sum(w * (d * log_expit(lp) + (1 - d) * log_expit(-lp))))
    p0 = float(np.sum(w * d) / np.sum(w))
    ll0 = float(np.sum(w * (d * np.log(p0) + (1 - d) * np.log1p(-p0)))) if 0 < p0 < 1 else 0.0
    shrink = heuristic_shrinkage(2.0 * (ll - ll0), X.shape[1])
    slopes = shrink * beta[1:]
    offset = X @ slopes

    def score(a: float) -> float:
        return float(np.sum(w * (d - expit(a + offset))))

    lo, hi = -60.0, 60.0
    intercept = brentq(score, lo, hi) if score(lo) > 0 > score(hi) else float(beta[0])
    return np.r_[intercept, slopes], shrink
