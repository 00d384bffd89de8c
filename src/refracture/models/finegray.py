"""Fine-Gray proportional subdistribution hazards model (estimand ``cif`` only).

The subdistribution hazard of re-fracture keeps a patient who died in the risk set, with a
weight that decays as the censoring survival does (Fine & Gray 1999), so one model gives the
cumulative incidence directly: CIF(t | x) = 1 - exp(-Lambda0(t) exp(lp)), and exp(coef) are
subdistribution hazard ratios (SHR).

The fit is comprisk's ``FineGrayRegression``, a maintained implementation that targets R's
``cmprsk::crr`` (censoring weights from the left-limit Kaplan-Meier of the censoring time,
Breslow ties, Breslow-type baseline) and gives the robust sandwich variance crr reports. We
prefer it to lifelines on a hand-expanded data set because it needs no data expansion and no
weighting code of ours; the tests check its coefficients, robust standard errors and baseline
against lifelines' weighted Cox fit of the expanded counting-process data of Geskus (2011)
(what R's ``survival::finegray`` builds).

The covariates are centred at their training means before the fit, so the linear predictor is
centred as the Cox model's is and the baseline belongs to a patient at the means.

The risk of death comes from the cause-specific hazard of death (a Cox model, shrunk as in
:mod:`refracture.models.death`) acting on the patients the Fine-Gray model leaves free of
re-fracture: dCIF2(s) = S(s-) dLambda2(s | x) with S = 1 - CIF1 - CIF2. A second Fine-Gray
model for death, fitted on its own, would not be constrained by the first: on the synthetic
cohort the two added up to 1.11 for some patients (Austin, Steyerberg & Putter, Stat Med
2021, show this in general and recommend cause-specific hazards for the competing event).
Here CIF1 + CIF2 <= 1 for every patient at every time
(:func:`~refracture.models.death.coherent_death_cif`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from refracture.errors import ModelError
from refracture.models.base import SurvivalEstimator
from refracture.models.death import coherent_death_cif, fit_death_hazard
from refracture.models.ipcw import step_at
from refracture.models.outcome import EVENT

__all__ = ["FineGray", "SubdistributionFit", "fit_subdistribution"]


@dataclass(frozen=True)
class SubdistributionFit:
    """One cause's fitted Fine-Gray model (plain arrays: no comprisk object is kept).

    ``coef`` (p,), robust covariance ``cov`` (p, p), baseline cumulative subdistribution hazard
    ``cumhaz`` at ``times`` (the cause's event times) for lp = 0, the log pseudo-likelihood at
    ``coef`` and the Newton iterations used.
    """

    coef: np.ndarray
    cov: np.ndarray
    times: np.ndarray
    cumhaz: np.ndarray
    log_pseudo_likelihood: float
    n_iter: int


def fit_subdistribution(
    X: np.ndarray, y: np.ndarray, cause: int, max_iter: int = 50, tol: float = 1e-9
) -> SubdistributionFit:
    """Fine-Gray model of ``cause`` on the design X (n, p) and outcome y (n,), by comprisk."""
    from comprisk import FineGrayRegression  # comprisk imports numba (seconds): only here

    time = np.asarray(y["time"], dtype=float)
    event = np.asarray(y["event"], dtype=np.int64)
    fg = FineGrayRegression(cause=cause, max_iter=max_iter, gtol=tol, robust_se=True)
    try:
        fg.fit(X, time=time, event=event)
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
        msg = " ".join(str(err).split())[:200]
        raise ModelError(f"the Fine-Gray model did not converge ({msg})") from None
    if not fg.converged_ or not np.all(np.isfinite(fg.coef_)):
        raise ModelError(
            f"the Fine-Gray model did not converge in {max_iter} iterations "
            "(separated or collinear covariates?)"
        )
    times = np.unique(time[event == cause])
    # comprisk's public prediction at lp = 0 is 1 - exp(-Lambda0(t)): invert it for Lambda0
    f0 = fg.predict_cumulative_incidence(np.zeros((1, X.shape[1])), times)[0]
    return SubdistributionFit(
        coef=np.asarray(fg.coef_, dtype=float).copy(),
        cov=np.asarray(fg.var_, dtype=float).copy(),
        times=times,
        cumhaz=-np.log1p(-f0),
        log_pseudo_likelihood=float(fg.log_likelihood_),
        n_iter=int(fg.n_iter_),
    )


class FineGray(SurvivalEstimator):
    """Fine-Gray model: risk by ``horizon`` = CIF1(h | x) = 1 - exp(-Lambda0(h) exp(lp)).

    Parameters
    ----------
    horizon : days at which ``predict_risk`` gives the cumulative incidence.
    random_state : unused (the fit is deterministic); kept so every model takes it.
    alpha : 1 - level of the confidence intervals of ``coefficient_summary``.
    estimand : "cif" only (the subdistribution hazard is the competing-risk model).
    max_iter, tol : Newton iterations and convergence tolerance of the fit.

    Attributes
    ----------
    coef_ : log subdistribution hazard ratios per unit, in ``feature_names_in_`` order.
    se_ : robust (sandwich) standard errors, as R's ``crr``.
    means_ : training means; lp = (x - means_) . coef_.
    baseline_times_, baseline_cumhaz_ : Lambda0(t) for a patient at the means.
    log_pseudo_likelihood_ : weighted partial log-likelihood at ``coef_``.
    death_model_ : the shrunk cause-specific Cox model of death (a
        :class:`~refracture.models.death.DeathHazard`; None if no patient died).
    """

    name = "finegray"
    has_coefficients = True
    ratio_name = "subdistribution hazard"
    ratio_column = "shr"
    supports_contributions = True
    estimands = ("cif",)
    cif_from_lp = True

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = None,
        alpha: float = 0.05,
        estimand: str = "cif",
        max_iter: int = 50,
        tol: float = 1e-9,
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.alpha = alpha
        self.estimand = estimand
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None = None) -> FineGray:
        """Fit on X (n, p) and the outcome y (n,); ``groups`` is accepted and unused."""
        X, y = self._validate_fit(X, y)
        Xa = X.to_numpy(dtype=float)
        self.means_ = Xa.mean(axis=0)
        Xc = Xa - self.means_
        fit = fit_subdistribution(Xc, y, EVENT, self.max_iter, self.tol)
        self.coef_ = fit.coef
        self.cov_ = fit.cov
        self.se_ = np.sqrt(np.maximum(np.diag(fit.cov), 0.0))
        self.baseline_times_, self.baseline_cumhaz_ = fit.times, fit.cumhaz
        self.baseline_cumhaz_horizon_ = float(
            step_at(fit.times, fit.cumhaz, np.array([float(self.horizon)]), 0.0)[0]
        )
        self.log_pseudo_likelihood_ = fit.log_pseudo_likelihood
        self.n_iter_ = fit.n_iter
        self.contribution_baseline_ = 0.0
        self.death_model_ = fit_death_hazard(X, y)
        return self

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self._design(X) - self.means_) @ self.coef_

    def risk_from_lp(self, lp: np.ndarray) -> np.ndarray:
        """1 - exp(-Lambda0(h) exp(lp)): exact, so a nomogram maps points to the CIF."""
        return -np.expm1(-self.baseline_cumhaz_horizon_ * np.exp(np.asarray(lp, dtype=float)))

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.risk_from_lp(self.linear_predictor(X))

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """1 - CIF1(t | x): free of re-fracture by t, alive or dead (n, len(times))."""
        times = np.atleast_1d(np.asarray(times, dtype=float))
        h0 = step_at(self.baseline_times_, self.baseline_cumhaz_, times, 0.0)
        return np.exp(-np.exp(self.linear_predictor(X))[:, None] * h0[None, :])

    def predict_cif(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """CIF of re-fracture ([:, 0]) and death ([:, 1]) at ``times``: (n, 2, len(times))."""
        self._require_cif("cumulative incidence of death")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        out = np.zeros((len(X), 2, len(times)))
        out[:, 0] = 1.0 - self.predict_survival(X, times)
        d = self.death_model_
        if d is not None:
            grid = np.union1d(self.baseline_times_, d.baseline_times_)
            dh2 = np.diff(step_at(d.baseline_times_, d.baseline_cumhaz_, grid, 0.0), prepend=0.0)
            cif1 = 1.0 - self.predict_survival(X, grid)
            r2 = np.exp(d.linear_predictor(self._design(X)))
            out[:, 1] = coherent_death_cif(grid, cif1, dh2, r2, times)
        return out

    def contributions(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """beta_j (x_j - mean_j) per term; rows sum to the linear predictor."""
        values = (self._design(X) - self.means_) * self.coef_
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=list(self.feature_names_in_), index=index)

    def coefficient_summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """``coef``, ``lower``, ``upper`` (log scale, ``1 - alpha`` Wald CI, robust SE), ``p``."""
        q = stats.norm.ppf(1 - alpha / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = self.coef_ / self.se_
        return pd.DataFrame(
            {
                "coef": self.coef_,
                "lower": self.coef_ - q * self.se_,
                "upper": self.coef_ + q * self.se_,
                "p": 2 * stats.norm.sf(np.abs(z)),
            },
            index=pd.Index([str(t) for t in self.feature_names_in_], name="term"),
        )
