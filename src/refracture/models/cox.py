"""Unpenalised Cox proportional hazards model (lifelines ``CoxPHFitter``).

lifelines fits by Newton-Raphson on the Efron partial likelihood (its only tie method), reports
coefficients in the units of the columns it is given, and estimates the baseline cumulative
hazard by Breslow's method at the covariate means. The preprocessing step gives it the
covariates in their original units, so its hazard ratios are per year, per kg/m2, per PDFF
point and so on.

Under estimand ``cif`` the model is a pair of cause-specific Cox models, re-fracture and death,
combined into the cumulative incidence (:mod:`refracture.models.competing`). Coefficients,
contributions, the linear predictor and the proportional-hazards test are those of the
re-fracture model, whose fit is the same under both estimands (a death censors the
re-fracture time in the cause-specific hazard).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.fitters.coxph_fitter import SemiParametricPHFitter

from refracture.errors import ModelError
from refracture.models.base import SurvivalEstimator
from refracture.models.competing import CauseSpecificHazardsMixin
from refracture.models.design import design_problem
from refracture.models.outcome import EVENT

_T, _E = "__time__", "__event__"


class CoxPH(CauseSpecificHazardsMixin, SurvivalEstimator):
    """Cox model: risk by ``horizon`` = 1 - exp(-H0(h) exp(lp)), lp centred at training means.

    Under estimand ``cif`` the risk is the cumulative incidence of re-fracture from the
    cause-specific Cox models of re-fracture and of death (``death_model_``, shrunk:
    :mod:`refracture.models.death`).

    Parameters
    ----------
    horizon : days at which ``predict_risk`` gives the absolute risk.
    random_state : unused (the fit is deterministic); kept so every model takes it.
    alpha : 1 - level of the confidence intervals in ``summary_`` (0.05 -> 95 %).
    estimand : "net" (death censored) or "cif" (death competing).

    Attributes
    ----------
    coef_ : log hazard ratios per unit, in ``feature_names_in_`` order.
    means_ : training means of the columns; lp = (x - means_) . coef_.
    summary_ : lifelines' summary table (coef, exp(coef), se, CIs, z, p); None after
        ``fit(..., inference=False)``, like ``lifelines_``.
    baseline_cumhaz_horizon_ : H0(horizon) for a patient at the means.
    log_likelihood_ : maximised log partial likelihood (for likelihood-ratio tests).
    lifelines_ : the fitted ``CoxPHFitter`` (for the Schoenfeld test).
    death_model_ : under cif, the shrunk Cox model of death (None if no patient died).
    """

    name = "cox"
    has_coefficients = True
    ratio_name = "hazard"
    ratio_column = "hr"
    supports_contributions = True
    has_ph_test = True
    has_likelihood = True
    estimands = ("net", "cif")
    cif_from_lp = False

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = None,
        alpha: float = 0.05,
        estimand: str = "net",
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.alpha = alpha
        self.estimand = estimand

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        inference: bool = True,
    ) -> CoxPH:
        """Fit on X (n, p) and the outcome y (n,); ``groups`` is accepted and unused.

        ``inference=False`` (a bootstrap refit, which only predicts) skips what only
        inference reads: lifelines' summary table, standard errors and fitted
        ``CoxPHFitter`` (``summary_`` and ``lifelines_`` are then None). The coefficients,
        baseline hazard and log-likelihood are the same to the last digit.
        """
        X, y = self._validate_fit(X, y)
        problem = design_problem(X)
        if problem:
            raise ModelError(f"the Cox model cannot be fitted: {problem}")
        data = X.astype(float).reset_index(drop=True)
        data[_T] = y["time"]
        data[_E] = (y["event"] == EVENT).astype(int)
        cph = CoxPHFitter(penalizer=0.0, alpha=self.alpha)
        try:
            with warnings.catch_warnings():
                # lifelines warns on low-variance columns; a failed fit raises below.
                warnings.simplefilter("ignore")
                if inference:
                    cph.fit(data, duration_col=_T, event_col=_E)
                    coef, loglik = cph.params_.to_numpy(dtype=float), cph.log_likelihood_
                    bch = cph.baseline_cumulative_hazard_.iloc[:, 0]
                else:
                    coef, loglik, bch = _newton_raphson(self.alpha, data)
        except (ConvergenceError, np.linalg.LinAlgError) as err:
            msg = " ".join(str(err).split())[:300]
            raise ModelError(f"the Cox model did not converge ({msg})") from None
        if not np.all(np.isfinite(coef)):
            raise ModelError("the Cox model did not converge (non-finite coefficients)")
        self.lifelines_ = cph if inference else None
        self.coef_ = coef
        # lifelines centres the covariates at their (unweighted) means before fitting, and its
        # baseline hazard is that of a patient at those means.
        self.means_ = data[list(self.feature_names_in_)].mean().to_numpy(dtype=float)
        self.summary_ = cph.summary if inference else None
        self.log_likelihood_ = float(loglik)
        self._set_baseline(bch.index.to_numpy(dtype=float), bch.to_numpy(dtype=float))
        self.contribution_baseline_ = 0.0
        self._fit_death(X, y, inference)
        return self

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self._design(X) - self.means_) @ self.coef_

    def coefficient_summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """``coef``, ``lower``, ``upper`` (log scale, ``1 - alpha`` CI) and ``p`` per term."""
        s = self.summary_
        if s is None:
            raise ModelError("the Cox model was fitted without inference (a bootstrap refit)")
        if abs(alpha - self.alpha) > 1e-12:
            raise ValueError(f"the model was fitted with alpha={self.alpha}")
        lower = [c for c in s.columns if c.startswith("coef lower")][0]
        upper = [c for c in s.columns if c.startswith("coef upper")][0]
        return pd.DataFrame(
            {
                "coef": s["coef"].to_numpy(),
                "lower": s[lower].to_numpy(),
                "upper": s[upper].to_numpy(),
                "p": s["p"].to_numpy(),
            },
            index=pd.Index([str(t) for t in s.index], name="term"),
        )

    def contributions(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """beta_j (x_j - mean_j) per term; rows sum to the linear predictor."""
        values = (self._design(X) - self.means_) * self.coef_
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=list(self.feature_names_in_), index=index)


def _newton_raphson(alpha: float, data: pd.DataFrame) -> tuple[np.ndarray, float, pd.Series]:
    """Coefficients, log partial likelihood and Breslow baseline cumulative hazard of
    ``CoxPHFitter(penalizer=0.0, alpha=alpha).fit(data, _T, _E)``, computed by the same
    lifelines code without the rest of ``fit``.

    ``CoxPHFitter.fit`` spends two thirds of a 560-patient fit on what only inference reads
    (a ``describe()`` of the data, the partial hazards of every patient, standard errors,
    confidence intervals). This runs the steps of ``fit`` that make the estimates, in its
    order and with its pandas operations (sort by time then event, standardise by the
    columns' mean and sample SD, ``_fit_model``: Newton-Raphson on the Efron likelihood, then
    the Breslow baseline at the means), so the numbers are the same bit for bit; a test
    compares the two paths. Written here because lifelines has no public fit without
    inference.
    """
    df = data.sort_values(by=[_T, _E])
    T = df.pop(_T).astype(float)
    E = df.pop(_E).astype(bool)
    W = pd.Series(np.ones(len(df)), index=df.index, name="weights")
    X = df.astype(float)
    # the fitter CoxPHFitter(penalizer=0.0) delegates to for the Breslow baseline
    cph = SemiParametricPHFitter(penalizer=0.0, l1_ratio=0.0, strata=None, alpha=alpha)
    cph.duration_col, cph.event_col, cph.weights_col, cph.entry_col = _T, _E, None, None
    cph.strata, cph.durations, cph.event_observed, cph.weights = None, T, E, W
    cph._batch_mode = None
    cph._norm_mean, cph._norm_std = X.mean(0), X.std(0)
    X_norm = pd.DataFrame(
        (X.values - cph._norm_mean.values) / cph._norm_std.values, index=X.index, columns=X.columns
    )
    params, loglik, _, _, bch, _ = cph._fit_model(
        X_norm, T, E, weights=W, entries=None, fit_options={}, show_progress=False
    )
    return np.asarray(params, dtype=float), float(loglik), bch.iloc[:, 0]
