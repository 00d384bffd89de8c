"""Multiple imputation of missing covariates by chained equations, with the outcome in the
imputation model (``imputation: multiple``).

Single median/mode imputation treats a filled-in value as if it had been measured, and leaves
the outcome out of the imputation, which biases the coefficients of covariates that are
often missing towards zero. The recommended practice (White, Royston & Wood, Stat Med 2011;
van Buuren, Flexible Imputation of Missing Data, 2018) is multiple imputation by chained
equations with the outcome among the predictors: for a survival outcome the event indicator
and the Nelson-Aalen cumulative hazard at the patient's time (White & Royston, Stat Med
2009), for competing risks both causes' indicators and cumulative hazards (Bonneville et al.,
Stat Med 2022).

:class:`MultipleImputer` is the pipeline step: fitted on the development data with their
outcome it returns ``m`` completed copies of them, stacked (the model step,
:class:`refracture.models.imputed.ImputedModels`, fits one model per copy); a new patient has
no outcome, so ``transform`` completes ``m`` copies of new data with chains fitted on the
development covariates alone (Hoogland et al., Stat Med 2020), and the model averages its
predictions over them. The bundle stores the fitted chains, so scoring imputes as training did.

Each chain imputes a numeric or binary column by predictive mean matching (a Bayesian linear
regression draw, then the observed value of one of the 5 development patients with the
nearest predicted mean: values stay plausible and binary ones 0/1) and a categorical column
by a draw from a multinomial logistic model fitted on a bootstrap sample of the observed
rows. These are written here because no Python library has chained equations with
type-specific models that can also impute new patients (scikit-learn's IterativeImputer
imputes every column by one regression model; statsmodels' MICEData cannot impute new data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from refracture.models.outcome import DEATH, EVENT, check_outcome

__all__ = ["MultipleImputer", "outcome_columns"]

_DONORS = 5


def outcome_columns(y: np.ndarray, estimand: str) -> np.ndarray:
    """The outcome as imputation predictors: event indicator(s) and Nelson-Aalen cumulative
    hazard(s) at each patient's time (re-fracture; under ``cif`` death as well)."""
    y = check_outcome(y)
    t, e = y["time"], y["event"]
    causes = [EVENT, DEATH] if estimand == "cif" else [EVENT]
    cols = []
    order = np.argsort(t, kind="mergesort")
    at_risk = len(t) - np.searchsorted(t[order], t[order], side="left")
    for cause in causes:
        d = (e[order] == cause).astype(float)
        inc = np.where(at_risk > 0, d / at_risk, 0.0)
        cum = np.cumsum(inc)
        # tied times share the hazard at the last of them
        last = np.searchsorted(t[order], t[order], side="right") - 1
        h = np.empty(len(t))
        h[order] = cum[last]
        cols += [(e == cause).astype(float), h]
    return np.column_stack(cols)


class _Chain:
    """One chain of equations: fitted models per incomplete column, and a replay for new rows."""

    def __init__(self, kinds: Mapping[str, str], levels: Mapping[str, Sequence[str]]):
        self.kinds = dict(kinds)
        self.levels = {k: list(v) for k, v in levels.items()}

    def _design(self, X: pd.DataFrame, skip: str, extra: np.ndarray | None) -> np.ndarray:
        parts = [np.ones((len(X), 1))]
        for col, kind in self.kinds.items():
            if col == skip:
                continue
            if kind == "categorical":
                for lv in self.levels[col][1:]:
                    parts.append((X[col] == lv).to_numpy(float)[:, None])
            else:
                v = X[col].to_numpy(float)
                parts.append(((v - self.centre[col]) / self.scale[col])[:, None])
        if extra is not None:
            parts.append((extra - self.extra_centre) / self.extra_scale)
        return np.hstack(parts)

    def _start(self, X: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        out = X.copy()
        for col in self.kinds:
            miss = out[col].isna().to_numpy()
            if miss.any():
                pool = self.observed[col]
                out.loc[miss, col] = rng.choice(pool, int(miss.sum()))
        return out

    def fit_transform(
        self,
        X: pd.DataFrame,
        extra: np.ndarray | None,
        rng: np.random.Generator,
        n_iter: int,
        every: bool = False,
    ) -> pd.DataFrame:
        """Complete X; with ``every`` also fit an equation for each complete column (a new
        patient may miss what no development patient did)."""
        self.missing = [c for c in self.kinds if X[c].isna().any()]
        self.observed = {c: X[c].dropna().to_numpy() for c in self.kinds}
        num = [c for c, k in self.kinds.items() if k != "categorical"]
        self.centre = {c: float(np.mean(self.observed[c])) for c in num}
        self.scale = {c: float(np.std(self.observed[c])) or 1.0 for c in num}
        if extra is not None:
            self.extra_centre = extra.mean(axis=0)
            self.extra_scale = np.where(extra.std(axis=0) > 0, extra.std(axis=0), 1.0)
        miss = {c: X[c].isna().to_numpy() for c in self.missing}
        cur = self._start(X, rng)
        self.models: dict[str, Any] = {}
        for _ in range(n_iter if self.missing else 0):
            for col in self.missing:
                D = self._design(cur, col, extra)
                obs = ~miss[col]
                model = self._fit_one(col, D[obs], X.loc[obs, col].to_numpy(), rng)
                self.models[col] = model
                cur.loc[miss[col], col] = self._draw(col, model, D[miss[col]], rng)
        for col in self.kinds if every else []:
            if col not in self.models:
                D = self._design(cur, col, extra)
                self.models[col] = self._fit_one(col, D, cur[col].to_numpy(), rng)
        return cur

    def _fit_one(self, col: str, D: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> Any:
        if self.kinds[col] == "categorical":
            rows = rng.integers(0, len(v), len(v))  # approximate Bayesian bootstrap
            if len(set(v[rows])) < 2:
                return ("constant", v[rows][0])
            lr = LogisticRegression(C=1.0, max_iter=500).fit(D[rows][:, 1:], v[rows])
            return ("multinomial", lr)
        beta, *_ = np.linalg.lstsq(D, v.astype(float), rcond=None)
        resid = v - D @ beta
        dof = max(len(v) - D.shape[1], 1)
        sigma2 = float(resid @ resid) / rng.chisquare(dof)
        cov = sigma2 * np.linalg.pinv(D.T @ D)
        draw = rng.multivariate_normal(beta, cov, method="svd")
        return ("pmm", draw, D @ beta, v.astype(float))

    def _draw(self, col: str, model: Any, D: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kind = model[0]
        if kind == "constant":
            return np.full(len(D), model[1], dtype=object)
        if kind == "multinomial":
            p = model[1].predict_proba(D[:, 1:])
            u = rng.random(len(D))[:, None]
            pick = (np.cumsum(p, axis=1) < u).sum(axis=1)
            return model[1].classes_[np.minimum(pick, p.shape[1] - 1)]
        _, draw, fitted, values = model
        pred = D @ draw
        k = min(_DONORS, len(values))
        dist = np.abs(fitted[None, :] - pred[:, None])
        near = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < len(values) else np.argsort(dist)
        return values[near[np.arange(len(D)), rng.integers(0, k, len(D))]]

    def transform(self, X: pd.DataFrame, rng: np.random.Generator, n_iter: int) -> pd.DataFrame:
        """Complete new rows with the fitted equations (outcome-free chains only)."""
        miss = {c: X[c].isna().to_numpy() for c in self.kinds if X[c].isna().any()}
        cur = self._start(X, rng)
        for _ in range(n_iter if miss else 0):
            for col in miss:
                model = self.models[col]
                D = self._design(cur, col, None)
                cur.loc[miss[col], col] = self._draw(col, model, D[miss[col]], rng)
        return cur


class MultipleImputer(TransformerMixin, BaseEstimator):
    """Multiple imputation step of a model pipeline (see the module docstring).

    Parameters
    ----------
    numeric, binary : column names; categorical : name -> levels (reference first; None: the
        observed ones).
    m : number of imputations.
    n_iter : passes of the chained equations.
    estimand : ``net`` or ``cif``: which outcome columns enter the imputation model.
    random_state : seed; imputation k uses the k-th child of ``SeedSequence(random_state)``.

    Attributes
    ----------
    n_imputations_ : m; ``predict_chains_`` the outcome-free chains for new data.
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        binary: Sequence[str] = (),
        categorical: Mapping[str, Sequence[str]] | None = None,
        m: int = 10,
        n_iter: int = 5,
        estimand: str = "net",
        random_state: int = 0,
    ) -> None:
        self.numeric = numeric
        self.binary = binary
        self.categorical = categorical
        self.m = m
        self.n_iter = n_iter
        self.estimand = estimand
        self.random_state = random_state

    def _kinds(self, X: pd.DataFrame | None = None) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Each column's kind, and each categorical column's levels (reference first; the
        observed levels of ``X`` where none were given)."""
        kinds = {c: "numeric" for c in self.numeric} | {c: "binary" for c in self.binary}
        cats = {}
        for c, levels in (self.categorical or {}).items():
            if levels is None and X is not None and c in X.columns:
                levels = sorted(str(v) for v in X[c].dropna().unique())
            cats[c] = [str(v) for v in (levels or [])]
        return kinds | dict.fromkeys(cats, "categorical"), cats

    def _seeds(self, stream: int) -> list[np.random.Generator]:
        seq = np.random.SeedSequence([int(self.random_state), stream])
        return [np.random.default_rng(s) for s in seq.spawn(int(self.m))]

    def fit(self, X: pd.DataFrame, y: np.ndarray | None = None) -> MultipleImputer:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: np.ndarray | None = None, **_: Any) -> pd.DataFrame:
        """``m`` completed copies of the development data, stacked (imputation k in rows
        k n .. (k+1) n - 1), imputed with the outcome ``y`` among the predictors."""
        if y is None:
            raise ValueError("multiple imputation needs the outcome when fitted")
        if int(self.m) < 2:
            raise ValueError("multiple imputation needs m >= 2")
        kinds, cats = self._kinds(X)
        self.columns_ = [c for c in kinds if c in X.columns]
        kinds = {c: kinds[c] for c in self.columns_}
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_imputations_ = int(self.m)
        data = X[self.columns_].copy()
        for c, k in kinds.items():
            data[c] = data[c].astype(object) if k == "categorical" else data[c].astype(float)
        extra = outcome_columns(y, self.estimand)
        train, self.predict_chains_ = [], []
        for rng_fit, rng_pred in zip(self._seeds(1), self._seeds(2), strict=True):
            done = _Chain(kinds, cats).fit_transform(data, extra, rng_fit, int(self.n_iter))
            chain = _Chain(kinds, cats)
            chain.fit_transform(data, None, rng_pred, int(self.n_iter), every=True)
            self.predict_chains_.append(chain)
            train.append(X.assign(**{c: done[c].to_numpy() for c in self.columns_}))
        return pd.concat(train, ignore_index=False)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """``m`` completed copies of new data (no outcome), stacked as in fit_transform."""
        check_is_fitted(self, "predict_chains_")
        kinds, _ = self._kinds()
        data = X[self.columns_].copy()
        for c in self.columns_:
            data[c] = data[c].astype(object) if kinds[c] == "categorical" else data[c].astype(float)
        out = []
        for chain, rng in zip(self.predict_chains_, self._seeds(3), strict=True):
            done = chain.transform(data, rng, int(self.n_iter))
            out.append(X.assign(**{c: done[c].to_numpy() for c in self.columns_}))
        return pd.concat(out, ignore_index=False)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)
