"""One model per imputed data set, pooled: the model step of ``imputation: multiple``.

The :class:`~refracture.models.imputation.MultipleImputer` step hands the model ``m`` completed
copies of the data, stacked. :class:`ImputedModels` fits one copy of the configured model on
each (the same outcome each time) and

* predicts by averaging over the imputations: the risk, the curves, the cumulative
  incidences, the linear predictor and the per-term contributions of a new patient are the
  means of the ``m`` models' on the patient's ``m`` completed copies, one row per patient
  (Wood, Royston & White, Biom J 2015; Hoogland et al., Stat Med 2020);
* reports coefficients by Rubin's rules: the mean of the ``m`` estimates, total variance
  W + (1 + 1/m) B (within- plus between-imputation), a t interval with Barnard & Rubin's
  (1999) degrees of freedom.

Everything else (the name, what the model can do, its estimand and horizon) is the
configured model's.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from refracture.models.base import SurvivalEstimator
from refracture.models.outcome import check_outcome

__all__ = ["ImputedModels", "rubin"]

#: What the configured model says about itself (class attributes, parameters), read through.
_DELEGATED = (
    "name", "has_coefficients", "ratio_name", "ratio_column", "needs_scaling",
    "supports_survival", "supports_contributions", "estimands", "horizon", "estimand",
    "random_state",
)  # fmt: skip


def _delegate(name: str) -> property:
    return property(lambda self: getattr(self.estimator, name), doc=f"The model's {name}.")


def rubin(coefs: np.ndarray, variances: np.ndarray, n: int, alpha: float = 0.05) -> pd.DataFrame:
    """Rubin's rules for (m, p) estimates and their within-imputation variances.

    Returns ``coef``, ``se``, ``lower``, ``upper``, ``p``, ``df`` and ``fmi`` (fraction of
    missing information) per column; ``n`` patients give Barnard & Rubin's small-sample df.
    """
    m = coefs.shape[0]
    q = coefs.mean(axis=0)
    w = variances.mean(axis=0)
    b = coefs.var(axis=0, ddof=1)
    t = w + (1 + 1 / m) * b
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(t > 0, (1 + 1 / m) * b / t, 0.0)
        df_old = np.where(lam > 0, (m - 1) / lam**2, np.inf)
        k = coefs.shape[1]
        df_obs = (n - k + 1) / (n - k + 3) * (n - k) * (1 - lam)
        df = np.where(np.isfinite(df_old), 1 / (1 / df_old + 1 / df_obs), df_obs)
    se = np.sqrt(t)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return pd.DataFrame(
        {
            "coef": q,
            "se": se,
            "lower": q - crit * se,
            "upper": q + crit * se,
            "p": 2 * stats.t.sf(np.abs(q / se), df),
            "df": df,
            "fmi": lam,
        }
    )


class ImputedModels(SurvivalEstimator):
    """``m`` fits of ``estimator``, one per stacked imputed copy (see the module docstring).

    Parameters
    ----------
    estimator : an unfitted refracture model (cox, logistic, ...).
    m : the number of stacked copies :meth:`fit` and the predictions expect.
    """

    has_ph_test = False
    has_likelihood = False
    cif_from_lp = False

    def __init__(self, estimator: SurvivalEstimator, m: int = 10) -> None:
        self.estimator = estimator
        self.m = m

    def set_params(self, **params: Any) -> ImputedModels:
        """``estimator`` and ``m`` are this class's; any other parameter (``random_state``,
        ``estimand``, ...) is the configured model's, as in a pipeline without imputation."""
        own = {k: v for k, v in params.items() if k in ("estimator", "m") or "__" in k}
        rest = {k: v for k, v in params.items() if k not in own}
        if own:
            super().set_params(**own)
        if rest:
            self.estimator.set_params(**rest)
        return self

    def _blocks(self, X: pd.DataFrame | np.ndarray) -> list[Any]:
        n = len(X) // int(self.m)
        if n * int(self.m) != len(X):
            raise ValueError(f"expected {self.m} stacked imputed copies, got {len(X)} rows")
        if isinstance(X, pd.DataFrame):
            return [X.iloc[k * n : (k + 1) * n] for k in range(int(self.m))]
        return [X[k * n : (k + 1) * n] for k in range(int(self.m))]

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        inference: bool = True,
    ) -> Any:
        """One fit of the model per stacked copy; ``groups`` and ``inference`` (a bootstrap
        refit skips what only inference reads) go to each fit that takes them."""
        y = check_outcome(y)
        accepts = inspect.signature(self.estimator.fit).parameters
        kw: dict[str, Any] = {"groups": groups} if groups is not None else {}
        if "inference" in accepts:
            kw["inference"] = inference
        self.estimators_ = []
        for block in self._blocks(X):
            est = clone(self.estimator)
            self.estimators_.append(est.fit(block.reset_index(drop=True), y, **kw))
        first = self.estimators_[0]
        self.feature_names_in_ = first.feature_names_in_
        self.n_features_in_ = first.n_features_in_
        self.n_train_ = len(y)
        if getattr(first, "supports_contributions", False):
            self.contribution_baseline_ = float(
                np.mean([e.contribution_baseline_ for e in self.estimators_])
            )
        return self

    def _mean(self, method: str, X: Any, *args: Any) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        out = [
            np.asarray(getattr(e, method)(b.reset_index(drop=True), *args), dtype=float)
            for e, b in zip(self.estimators_, self._blocks(X), strict=True)
        ]
        return np.mean(out, axis=0)

    def predict_risk(self, X: Any) -> np.ndarray:
        return self._mean("predict_risk", X)

    def linear_predictor(self, X: Any) -> np.ndarray:
        return self._mean("linear_predictor", X)

    def predict_survival(self, X: Any, times: np.ndarray) -> np.ndarray:
        return self._mean("predict_survival", X, times)

    def predict_cif(self, X: Any, times: np.ndarray) -> np.ndarray:
        return self._mean("predict_cif", X, times)

    def predict_death_risk(self, X: Any) -> np.ndarray:
        return self._mean("predict_death_risk", X)

    def risk_from_lp(self, lp: np.ndarray, lp_death: np.ndarray | None = None) -> np.ndarray:
        """The mean of the imputation models' risks at ``lp`` (an approximation: each model's
        own linear predictor differs a little)."""
        args = () if lp_death is None else (lp_death,)
        return np.mean([e.risk_from_lp(lp, *args) for e in self.estimators_], axis=0)

    def contributions(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "estimators_")
        parts = [
            e.contributions(b.reset_index(drop=True))
            for e, b in zip(self.estimators_, self._blocks(X), strict=True)
        ]
        mean = sum(p.to_numpy() for p in parts) / len(parts)
        index = self._blocks(X)[0].index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(mean, columns=parts[0].columns, index=index)

    def coefficient_summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """``coef``, ``lower``, ``upper``, ``p`` by Rubin's rules over the imputations."""
        z = stats.norm.ppf(1 - alpha / 2)
        coefs, variances = [], []
        for e in self.estimators_:
            s = e.coefficient_summary(alpha=alpha)
            coefs.append(s["coef"].to_numpy())
            variances.append(((s["upper"] - s["lower"]).to_numpy() / (2 * z)) ** 2)
        pooled = rubin(np.array(coefs), np.array(variances), self.n_train_, alpha)
        pooled.index = pd.Index([str(t) for t in self.feature_names_in_], name="term")
        return pooled[["coef", "lower", "upper", "p"]]

    @property
    def coef_(self) -> np.ndarray:
        return np.mean([e.coef_ for e in self.estimators_], axis=0)

    @property
    def means_(self) -> np.ndarray:
        return np.mean([e.means_ for e in self.estimators_], axis=0)


for _name in _DELEGATED:
    setattr(ImputedModels, _name, _delegate(_name))
