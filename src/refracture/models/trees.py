"""Tree ensembles from scikit-survival: random survival forest and gradient boosting.

Defaults suit a cohort of a few hundred patients refitted in every bootstrap replicate:
moderate numbers of trees, leaves of at least 15 patients, one thread per model (the
bootstrap parallelises across replicates instead).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sksurv.ensemble import GradientBoostingSurvivalAnalysis
from sksurv.ensemble import RandomSurvivalForest as _RSF

from refracture.models.base import ProportionalHazardsMixin, SurvivalEstimator
from refracture.models.outcome import to_sksurv


def _cloglog(risk: np.ndarray) -> np.ndarray:
    """log(-log(1 - risk)): the log cumulative hazard at the horizon."""
    risk = np.clip(risk, 1e-12, 1 - 1e-12)
    return np.log(-np.log1p(-risk))


class RandomSurvivalForest(SurvivalEstimator):
    """Random survival forest; risk by the horizon = 1 - S(h) of the ensemble.

    ``linear_predictor`` has no regression meaning for a forest: it returns the log cumulative
    hazard at the horizon, log(-log(1 - risk)), a monotone transform of the risk.
    """

    name = "rsf"

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = 0,
        n_estimators: int = 100,
        min_samples_leaf: int = 15,
        max_features: str | float | None = "sqrt",
        max_depth: int | None = None,
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_depth = max_depth

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> RandomSurvivalForest:
        X, y = self._validate_fit(X, y)
        self.forest_ = _RSF(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_depth=self.max_depth,
            n_jobs=1,
            random_state=self.random_state,
        ).fit(X.to_numpy(dtype=float), to_sksurv(y))
        return self

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        surv = self.forest_.predict_survival_function(self._design(X), return_array=True)
        grid = self.forest_.unique_times_
        idx = np.searchsorted(grid, np.atleast_1d(np.asarray(times, dtype=float)), side="right") - 1
        out = surv[:, np.clip(idx, 0, None)]
        out[:, idx < 0] = 1.0
        return out

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return 1.0 - self.predict_survival(X, np.array([self.horizon]))[:, 0]

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return _cloglog(self.predict_risk(X))

    def risk_from_lp(self, lp: np.ndarray) -> np.ndarray:
        return -np.expm1(-np.exp(np.asarray(lp, dtype=float)))


class GradientBoostedSurvival(ProportionalHazardsMixin, SurvivalEstimator):
    """Gradient-boosted trees on the Cox partial likelihood (scikit-survival).

    The ensemble's output f(x) is a log relative hazard; scikit-survival's Breslow estimator
    gives H0, so risk by the horizon = 1 - exp(-H0(h) exp(f(x))).
    """

    name = "gbsa"

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = 0,
        n_estimators: int = 150,
        learning_rate: float = 0.05,
        max_depth: int = 2,
        min_samples_leaf: int = 15,
        subsample: float = 0.8,
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> GradientBoostedSurvival:
        X, y = self._validate_fit(X, y)
        Xa = X.to_numpy(dtype=float)
        self.booster_ = GradientBoostingSurvivalAnalysis(
            loss="coxph",
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            subsample=self.subsample,
            random_state=self.random_state,
        ).fit(Xa, to_sksurv(y))
        # H0 recovered from one patient's cumulative hazard (public API only).
        f0 = self.booster_.predict(Xa[:1])
        ch = self.booster_.predict_cumulative_hazard_function(Xa[:1], return_array=True)
        self._set_baseline(self.booster_.unique_times_, ch[0] / np.exp(f0[0]))
        return self

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(self._design(X)), dtype=float)
