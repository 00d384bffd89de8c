"""Tree ensembles: random survival forests and gradient boosting.

Defaults suit a cohort of a few hundred patients refitted in every bootstrap replicate:
moderate numbers of trees, leaves of at least 15 patients, one thread per model (the
bootstrap parallelises across replicates instead).

Estimand ``net`` uses scikit-survival's forest and boosting. Under ``cif``:

- ``rsf`` is comprisk's competing-risks forest (Ishwaran et al. 2014, as randomForestSRC):
  each leaf holds the Aalen-Johansen cumulative incidence of both causes and the forest
  averages them; splits maximise the composite competing-risks log-rank statistic. Checked in
  the tests: a forest of trees that cannot split gives the Aalen-Johansen estimate exactly.
  comprisk counts a patient censored before the first event time as at risk at that time;
  such patients never enter an Aalen-Johansen risk set, so they are left out of its fit.
- ``gbsa`` keeps the boosted cause-specific hazard of re-fracture and adds a Cox model of
  death, combined into the cumulative incidence (:mod:`refracture.models.competing`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sksurv.ensemble import GradientBoostingSurvivalAnalysis
from sksurv.ensemble import RandomSurvivalForest as _RSF

from refracture.models.base import SurvivalEstimator
from refracture.models.competing import CauseSpecificHazardsMixin
from refracture.models.outcome import CENSORED, to_sksurv


def _cloglog(risk: np.ndarray) -> np.ndarray:
    """log(-log(1 - risk)): the log cumulative hazard at the horizon."""
    risk = np.clip(risk, 1e-12, 1 - 1e-12)
    return np.log(-np.log1p(-risk))


class RandomSurvivalForest(SurvivalEstimator):
    """Random survival forest; risk by the horizon = 1 - S(h) (net) or CIF1(h) (cif).

    ``linear_predictor`` has no regression meaning for a forest: it returns the log cumulative
    hazard at the horizon, log(-log(1 - risk)), a monotone transform of the risk.

    Parameters
    ----------
    horizon : days at which ``predict_risk`` gives the absolute risk.
    random_state : seed of the bootstrap samples and split candidates.
    n_estimators, min_samples_leaf, max_features, max_depth : as scikit-learn's forests.
    bootstrap : each tree on a bootstrap sample (True) or on all patients (False).
    estimand : "net" (scikit-survival's forest, death censored) or "cif" (comprisk's
        competing-risks forest, death competing).

    Attributes
    ----------
    forest_ : the fitted scikit-survival ``RandomSurvivalForest`` or comprisk
        ``CompetingRiskForest``.
    """

    name = "rsf"
    estimands = ("net", "cif")

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = 0,
        n_estimators: int = 100,
        min_samples_leaf: int = 15,
        max_features: str | float | None = "sqrt",
        max_depth: int | None = None,
        bootstrap: bool = True,
        estimand: str = "net",
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_depth = max_depth
        self.bootstrap = bootstrap
        self.estimand = estimand

    def fit(
        self, X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None = None
    ) -> RandomSurvivalForest:
        """Fit on X (n, p) and the outcome y (n,); ``groups`` is accepted and unused."""
        X, y = self._validate_fit(X, y)
        Xa = X.to_numpy(dtype=float)
        if self.estimand == "cif":
            self.forest_ = self._fit_competing(Xa, y)
            return self
        self.forest_ = _RSF(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_depth=self.max_depth,
            bootstrap=self.bootstrap,
            n_jobs=1,
            random_state=self.random_state,
        ).fit(Xa, to_sksurv(y))
        return self

    def _fit_competing(self, Xa: np.ndarray, y: np.ndarray) -> object:
        # comprisk imports numba (seconds), so only a cif forest pays for it
        from comprisk import CompetingRiskForest

        first_event = y["time"][y["event"] != CENSORED].min()
        used = ~((y["event"] == CENSORED) & (y["time"] < first_event))
        structured = np.empty(int(used.sum()), dtype=[("event", np.int64), ("time", float)])
        structured["event"] = y["event"][used]
        structured["time"] = y["time"][used]
        forest = CompetingRiskForest(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_split=2 * self.min_samples_leaf,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            # bootstrap samples as scikit-survival's forest, or every patient once
            samptype="swr" if self.bootstrap else "swor",
            sampsize=None if self.bootstrap else 1.0,
            random_state=self.random_state,
            n_jobs=1,
            # leaves keep every event time (up to 4096), so their Aalen-Johansen curves are
            # exact; the split search uses comprisk's 10 coarse time bins (a full-grid search
            # is 5-10 times slower for a few hundred patients)
            time_grid=4096,
        )
        return forest.fit(Xa[used], structured)

    def predict_cif(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """CIF of re-fracture ([:, 0]) and death ([:, 1]) at ``times``: (n, 2, len(times))."""
        self._require_cif("cumulative incidence of death")
        times = np.atleast_1d(np.asarray(times, dtype=float))
        cif = self.forest_.predict_cif(self._design(X), times)
        out = np.zeros((cif.shape[0], 2, len(times)))
        out[:, : cif.shape[1]] = cif[:, :2]  # a sample without deaths has one cause
        return out

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """Net: S(t | x). Cif: 1 - CIF1(t | x), free of re-fracture by t (alive or dead)."""
        if self.estimand == "cif":
            return 1.0 - self.predict_cif(X, times)[:, 0, :]
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


class GradientBoostedSurvival(CauseSpecificHazardsMixin, SurvivalEstimator):
    """Gradient-boosted trees on the Cox partial likelihood (scikit-survival).

    The ensemble's output f(x) is a log relative hazard; scikit-survival's Breslow estimator
    gives H0, so risk by the horizon = 1 - exp(-H0(h) exp(f(x))). Under estimand ``cif``, f is
    the cause-specific hazard of re-fracture, combined with a Cox model of death
    (``death_model_``) into the cumulative incidence.

    Parameters
    ----------
    horizon : days at which ``predict_risk`` gives the absolute risk.
    random_state : seed of the subsamples.
    n_estimators, learning_rate, max_depth, min_samples_leaf, subsample : as scikit-survival.
    estimand : "net" (death censored) or "cif" (death competing).
    """

    name = "gbsa"
    estimands = ("net", "cif")
    cif_from_lp = False

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = 0,
        n_estimators: int = 150,
        learning_rate: float = 0.05,
        max_depth: int = 2,
        min_samples_leaf: int = 15,
        subsample: float = 0.8,
        estimand: str = "net",
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.estimand = estimand

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        inference: bool = True,
    ) -> GradientBoostedSurvival:
        """Fit on X (n, p) and the outcome y (n,); ``groups`` is accepted and unused.
        ``inference=False`` (a bootstrap refit): the Cox model of death under cif skips the
        summaries only inference reads (:meth:`refracture.models.cox.CoxPH.fit`)."""
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
        self._fit_death(X, y, inference)
        return self

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(self._design(X)), dtype=float)
