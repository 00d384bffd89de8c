"""Logistic regression for re-fracture by the horizon, weighted for early censoring.

The outcome is binary (re-fracture by ``h`` or not) but a patient censored before ``h`` has an
unknown status. Dropping such patients biases the risk downwards; instead they get weight 0
and everyone else the inverse probability of having stayed uncensored that long (IPCW, Graf
1999 weights, death counted as censoring so the estimand is the net risk like the survival
models). scikit-learn fits the weighted, unpenalised model; scikit-learn reports no standard
errors, so they are computed here with the robust sandwich (HC0) estimator, the usual choice
for weighted estimating equations (weights treated as known, which is slightly conservative
for IPCW; Robins, Rotnitzky & Zhao 1994).

Under estimand ``cif`` a death before the horizon is a known non-event: outcome 0, weighted
like any outcome known at its time (1 / G(T-), with G the censoring survival in which only
loss to follow-up censors), so the model estimates the cumulative incidence. A second logistic
model with the same weights, of death by the horizon among the patients known to be free of
re-fracture at the horizon, gives the risk of death: (1 - risk) x P(death | no re-fracture),
so the two risks never add up to more than 1. Deaths are few, so that model is shrunk
(:func:`refracture.models.death.shrink_logistic`) for its risks to hold on new patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from refracture.errors import ModelError
from refracture.models.base import SurvivalEstimator
from refracture.models.death import shrink_logistic
from refracture.models.design import design_problem
from refracture.models.ipcw import horizon_weights
from refracture.models.outcome import DEATH


class IPCWLogistic(SurvivalEstimator):
    """Unpenalised logistic model of the event by ``horizon`` with IPC weights.

    Parameters
    ----------
    horizon : days at which the risk is predicted.
    random_state : unused (the fit is deterministic); kept so every model takes it.
    max_iter : iterations of scikit-learn's solver.
    estimand : "net" (death before h: status unknown, weight 0) or "cif" (a known non-event).

    Attributes
    ----------
    coef_, intercept_ : log odds ratios per unit of each column, and the intercept.
    se_, intercept_se_ : robust (sandwich) standard errors.
    cov_ : robust covariance of (intercept, coef_).
    means_ : training means (for contributions).
    n_events_, n_controls_ : patients with the event by h / followed event-free past h.
    n_censored_before_horizon_ : patients with weight 0 (censored, or under net dead, before h).
    n_deaths_before_horizon_ : patients who died before h (weight 0 under net, known
        non-events under cif).
    death_coef_, death_intercept_ : under cif, the logistic model of death by h among patients
        free of re-fracture at h, shrunk by ``death_shrinkage_`` (None if no patient died by h).
    """

    name = "logistic"
    has_coefficients = True
    ratio_name = "odds"
    ratio_column = "or"
    supports_survival = False
    supports_contributions = True
    estimands = ("net", "cif")

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = None,
        max_iter: int = 200,
        estimand: str = "net",
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.max_iter = max_iter
        self.estimand = estimand

    def _fit_binary(self, Xa: np.ndarray, status: np.ndarray, w: np.ndarray) -> tuple:
        lr = LogisticRegression(
            C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=self.max_iter
        )
        lr.fit(Xa, status, sample_weight=w)
        beta = np.r_[lr.intercept_[0], lr.coef_[0]]
        if not np.all(np.isfinite(beta)):
            raise ModelError("the logistic model did not converge (non-finite coefficients)")
        return beta, int(np.max(lr.n_iter_))

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None = None) -> IPCWLogistic:
        """Fit on X (n, p) and the outcome y (n,); ``groups`` is accepted and unused."""
        X, y = self._validate_fit(X, y)
        Xa = X.to_numpy(dtype=float)
        deaths = "competing" if self.estimand == "cif" else "censor"
        status, w = horizon_weights(y, self.horizon, deaths=deaths)
        used = w > 0
        cases = int(status[used].sum())
        if cases == 0 or cases == used.sum():
            raise ModelError(
                "the logistic model needs patients with and without the event by the horizon "
                f"({cases} with, {int(used.sum()) - cases} without, among the {int(used.sum())} "
                f"of {len(y)} patients whose status at the horizon is known)"
            )
        problem = design_problem(X[used])
        if problem:
            raise ModelError(f"the logistic model cannot be fitted: {problem}")
        beta, n_iter = self._fit_binary(Xa[used], status[used], w[used])
        self.intercept_ = float(beta[0])
        self.coef_ = beta[1:].copy()
        self.cov_ = _sandwich(Xa[used], status[used], w[used], beta)
        se = np.sqrt(np.diag(self.cov_))
        self.intercept_se_ = float(se[0])
        self.se_ = se[1:]
        self.means_ = Xa.mean(axis=0)
        self.contribution_baseline_ = float(self.intercept_ + self.means_ @ self.coef_)
        early = ~used
        died = (y["event"] == DEATH) & (y["time"] <= self.horizon)
        self.n_events_ = int(status[used].sum())
        self.n_controls_ = int(used.sum() - status[used].sum())
        self.n_censored_before_horizon_ = int(early.sum())
        self.n_deaths_before_horizon_ = int(died.sum())
        self.weights_max_ = float(w.max())
        self.n_iter_ = n_iter
        self.death_coef_, self.death_intercept_, self.death_shrinkage_ = None, None, None
        if self.estimand == "cif" and died.any():
            free = used & (status == 0)  # known free of re-fracture at h: dead or alive
            if died[free].all():  # every patient free of re-fracture died: P(death | free) = 1
                self.death_intercept_, self.death_coef_ = np.inf, np.zeros(Xa.shape[1])
            else:
                d = died[free].astype(np.int8)
                death_beta, self.death_shrinkage_ = shrink_logistic(Xa[free], d, w[free])
                self.death_intercept_ = float(death_beta[0])
                self.death_coef_ = death_beta[1:].copy()
        return self

    def predict_death_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Risk of death before re-fracture by the horizon (estimand cif)."""
        self._require_cif("risk of death")
        if self.death_coef_ is None:
            return np.zeros(len(X))
        given_free = expit(self.death_intercept_ + self._design(X) @ self.death_coef_)
        return (1.0 - self.predict_risk(X)) * given_free

    def predict_cif(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """Both risks at the horizon, (n, 2, len(times)); ``times`` must all be the horizon."""
        self._require_cif("cumulative incidence of death")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        if not np.all(times == float(self.horizon)):
            raise ModelError(
                "the logistic model predicts the risk at the horizon only, not a survival curve"
            )
        both = np.stack([self.predict_risk(X), self.predict_death_risk(X)], axis=1)
        return np.repeat(both[:, :, None], len(times), axis=2)

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.intercept_ + self._design(X) @ self.coef_

    def risk_from_lp(self, lp: np.ndarray) -> np.ndarray:
        return expit(np.asarray(lp, dtype=float))

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.risk_from_lp(self.linear_predictor(X))

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        raise ModelError(
            "the logistic model predicts the risk at the horizon only, not a survival curve"
        )

    def contributions(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """beta_j (x_j - mean_j) per term; contribution_baseline_ + row sum = lp."""
        values = (self._design(X) - self.means_) * self.coef_
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=list(self.feature_names_in_), index=index)

    def coefficient_summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """``coef``, ``lower``, ``upper`` (log scale, ``1 - alpha`` CI) and ``p`` per term."""
        w = self.wald_table(alpha=alpha)
        return w[["coef", "lower", "upper", "p"]].rename_axis("term")

    def wald_table(self, alpha: float = 0.05) -> pd.DataFrame:
        """coef, se, z, p and the (1 - alpha) Wald interval of each log odds ratio."""
        z = self.coef_ / self.se_
        q = stats.norm.ppf(1 - alpha / 2)
        return pd.DataFrame(
            {
                "coef": self.coef_,
                "se": self.se_,
                "z": z,
                "p": 2 * stats.norm.sf(np.abs(z)),
                "lower": self.coef_ - q * self.se_,
                "upper": self.coef_ + q * self.se_,
            },
            index=pd.Index(self.feature_names_in_, name="term"),
        )


def _sandwich(X: np.ndarray, d: np.ndarray, w: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Robust covariance A^-1 B A^-1 of a weighted logistic fit (intercept first).

    A = sum w p (1-p) x x' (the weighted information), B = sum [w (d - p)]^2 x x' (the
    empirical variance of the weighted scores).
    """
    X1 = np.column_stack([np.ones(len(X)), X])
    p = expit(X1 @ beta)
    A = (X1 * (w * p * (1 - p))[:, None]).T @ X1
    U = X1 * (w * (d - p))[:, None]
    B = U.T @ U
    try:
        A_inv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        raise ModelError(
            "the logistic model's information matrix is singular (collinear covariates)"
        ) from None
    return A_inv @ B @ A_inv
