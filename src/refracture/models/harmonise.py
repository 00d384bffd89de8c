"""ComBat harmonisation of the imaging features: a scikit-learn transformer.

ComBat (Johnson, Li and Rabinovic 2007; for imaging Fortin et al. 2017, 2018) models each
imaging feature as

    y_ij = alpha + x_j' beta + gamma_i + sqrt(delta_i) * sigma * e_ij

for patient j of batch i (a site, a scanner or a field strength), with ``x`` the covariates
whose effects are preserved (age, sex, ...). The batch's additive (gamma_i) and multiplicative
(delta_i) effects are estimated on the development data, shrunk towards their mean across the
features by empirical Bayes, and removed; ``alpha + x' beta`` (the biology) is kept.

The estimator here follows the equations of neuroCombat 0.2.12 (Fortin's Python port of the
sva R package) step by step, and the tests check it against neuroCombat to 1e-8; it is written
out rather than wrapped because neither library fits our pipeline as it is (docs/harmonisation.md
compares them): neuroCombat harmonises one data set at a time, has no transform for new
patients that keeps their own covariate effects, prints, reads a DataFrame as float32 and its
reference-batch path fails on NumPy 2; combatlearn has a scikit-learn API but pools its
empirical-Bayes priors across batches for each feature, not across features for each batch
as in Johnson 2007. Added: missing values (left missing for the imputer), unseen batches
(:mod:`refracture.models.harmonise_unseen`), one-line errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from refracture.errors import ConfigError, InputError
from refracture.ids import PATIENT_ID
from refracture.imaging.metadata import nominal_field
from refracture.models.combat_eb import eb_batch
from refracture.models.harmonise_unseen import UnseenBatchMixin

__all__ = [
    "BATCH_SOURCES",
    "UNSEEN_POLICIES",
    "ComBatHarmoniser",
    "batch_labels",
    "make_harmoniser",
]

#: Columns of the features table each ``harmonisation.batch`` is built from.
BATCH_SOURCES: dict[str, tuple[str, ...]] = {
    "site": ("site",),
    "scanner": ("site", "scanner_id"),
    "field_strength": ("scanner_field_strength_t",),
}
UNSEEN_POLICIES = ("refuse", "reference", "pooled", "estimate")


def batch_labels(X: pd.DataFrame, batch: str) -> pd.Series:
    """The batch of every row as text, missing where unknown.

    ``batch`` is ``site``, ``scanner`` (``site/scanner_id``: a scanner name is only unique
    within its site), ``field_strength`` (the nominal field, e.g. ``3 T``) or the name of any
    other column of ``X``, used as it is.
    """

    def text(col: str) -> pd.Series:
        s = X[col]
        return s.where(s.notna(), "").astype(str).str.strip()

    needed = BATCH_SOURCES.get(batch, (batch,))
    missing = [c for c in needed if c not in X.columns]
    if missing:
        raise ConfigError(
            f"harmonisation by {batch} needs the column(s) {', '.join(missing)} in the data "
            "(features.parquet from refracture extract has site and the scanner_* columns)",
            key="harmonisation.batch",
        )
    if batch == "scanner":
        site, scanner = text("site"), text("scanner_id")
        labels = np.where(site != "", site + "/" + scanner, scanner)
        out = pd.Series(labels, index=X.index, dtype=object).where(scanner != "")
    elif batch == "field_strength":
        field = pd.to_numeric(X["scanner_field_strength_t"], errors="coerce")
        out = field.map(lambda t: nominal_field(t) if pd.notna(t) else "").astype(object)
    else:
        out = text(needed[0]).astype(object)
    return out.where(out != "")


def make_harmoniser(config: Any, features: Sequence[str]) -> ComBatHarmoniser | None:
    """The harmonisation step a ``harmonisation:`` config section asks for (None for none)."""
    if config.method == "none" or not features:
        return None
    if config.method != "combat":
        raise ConfigError(f"unknown method {config.method!r}", key="harmonisation.method")
    return ComBatHarmoniser(
        batch=config.batch,
        features=list(features),
        preserve=list(config.preserve),
        reference_batch=config.reference_batch,
        unseen_batch=config.unseen_batch,
        min_batch_patients=config.min_batch_patients,
    )


class ComBatHarmoniser(UnseenBatchMixin, TransformerMixin, BaseEstimator):
    """ComBat (Johnson 2007; Fortin 2018) on chosen columns of a DataFrame.

    Takes the whole table (batch source columns, preserved covariates and features, other
    columns passed through untouched) and returns it with the feature columns harmonised.

    Parameters
    ----------
    batch : str, default="scanner"
        ``site``, ``scanner``, ``field_strength`` (see :func:`batch_labels`) or a column name.
    features : sequence of str, optional
        Columns to harmonise; default every numeric column that is neither a batch source, a
        preserved covariate nor ``id_column``.
    preserve : sequence of str, default=()
        Covariates whose effects on the features are kept (numeric columns enter linearly,
        text/category/bool columns as indicators against their first level). Missing values
        are filled with the development median or most frequent value, for this step only.
    reference_batch : str, optional
        Fortin's reference-batch ComBat: this batch is left as measured and every other is
        mapped onto its scale (coefficients then read in the reference scanner's units).
        Default: the pooled scale of all batches (the batch-size weighted mean).
    unseen_batch : {"refuse", "reference", "pooled", "estimate"}, default="refuse"
        Rows of a batch the development data did not contain, or of unknown batch:
        ``refuse`` raises an :class:`~refracture.errors.InputError` naming them;
        ``reference`` leaves them as measured (as the reference batch); ``pooled`` applies the
        batch-size weighted mean of the known batches' adjustments; ``estimate`` estimates the
        new batch's location and scale from its own rows (outcome-free) when it has at least
        ``min_batch_patients``, else follows ``unseen_fallback`` (``refuse`` or ``pooled``).
        See :mod:`refracture.models.harmonise_unseen`.
    min_batch_patients : int, default=20; unseen_fallback : {"refuse", "pooled"}, default="refuse"
    eb : bool, default=True
        Empirical-Bayes shrinkage of the batch effects (off, or with one feature: the
        per-batch location/scale estimates as they are).
    mean_only : bool, default=False
        Adjust only the batch means, not the variances.
    min_batch_size : int, default=2
        Fewer development patients in a batch is an error (a variance needs two).
    require_reference : bool, default=True
        Development data without ``reference_batch`` is an error. Validation sets it False:
        a fold that holds out the reference batch's site is then harmonised on the pooled
        scale (``reference_batch_`` is None for that fit).
    id_column : str, default :data:`refracture.ids.PATIENT_ID`
        Named in errors when present (else the row index is).

    Attributes
    ----------
    features_ : list of str
    batches_ : list of str
        Known batches, sorted.
    n_per_batch_ : ndarray of shape (n_batches,)
    grand_mean_, var_pooled_ : ndarray of shape (n_features,)
    beta_preserve_ : ndarray of shape (n_design_columns, n_features)
        Effects of the preserved covariates (design columns in ``design_columns_``).
    gamma_hat_, delta_hat_ : ndarray of shape (n_batches, n_features)
        Location/scale batch effects before shrinkage (standardised scale).
    gamma_star_, delta_star_ : ndarray of shape (n_batches, n_features)
        After empirical Bayes; the reference batch's are 0 and 1.
    reference_batch_ : str or None
        The reference batch of this fit.
    """

    #: The config's name for this method (``harmonisation.method``).
    name: ClassVar[str] = "combat"

    def __init__(
        self,
        batch: str = "scanner",
        features: Sequence[str] | None = None,
        preserve: Sequence[str] = (),
        reference_batch: str | None = None,
        unseen_batch: str = "refuse",
        eb: bool = True,
        mean_only: bool = False,
        min_batch_size: int = 2,
        id_column: str = PATIENT_ID,
        require_reference: bool = True,
        min_batch_patients: int = 20,
        unseen_fallback: str = "refuse",
    ) -> None:
        self.batch = batch
        self.features = features
        self.preserve = preserve
        self.reference_batch = reference_batch
        self.unseen_batch = unseen_batch
        self.eb = eb
        self.mean_only = mean_only
        self.min_batch_size = min_batch_size
        self.id_column = id_column
        self.require_reference = require_reference
        self.min_batch_patients = min_batch_patients
        self.unseen_fallback = unseen_fallback

    # --- fit -------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: Any = None) -> ComBatHarmoniser:
        """Estimate the batch effects on development data ``X`` (a DataFrame)."""
        X = self._check_frame(X)
        if self.unseen_batch not in UNSEEN_POLICIES:
            raise ConfigError(
                f"unseen_batch must be one of {', '.join(UNSEEN_POLICIES)}, not "
                f"{self.unseen_batch!r}",
                key="harmonisation.unseen_batch",
            )
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        labels = batch_labels(X, self.batch)
        if labels.isna().any():
            raise InputError(
                f"harmonisation by {self.batch} needs the batch of every development patient; "
                f"it is unknown for {self._who(X, labels.isna())} (fill the manifest's "
                "scanner columns or choose another harmonisation.batch)",
                key="harmonisation.batch",
            )
        self.features_ = self._feature_list(X)
        self._fit_preserve(X)
        design = self._design(X)

        batches, codes = np.unique(labels.to_numpy(dtype=str), return_inverse=True)
        self.batches_ = [str(b) for b in batches]
        counts = np.bincount(codes, minlength=len(batches))
        small = [f"{b} ({c})" for b, c in zip(self.batches_, counts, strict=True)]
        small = [s for s, c in zip(small, counts, strict=True) if c < self.min_batch_size]
        if small:
            raise InputError(
                f"ComBat needs at least {self.min_batch_size} development patients per batch; "
                f"too few in {', '.join(small)} (merge small batches or choose another "
                "harmonisation.batch)",
                key="harmonisation.batch",
            )
        reference = self.reference_batch
        if reference is not None and reference not in self.batches_ and not self.require_reference:
            reference = None
        if reference is not None and reference not in self.batches_:
            raise ConfigError(
                f"reference batch {self.reference_batch!r} is not among the development "
                f"batches ({', '.join(self.batches_)})",
                key="harmonisation.reference_batch",
            )
        self.n_per_batch_ = counts.astype(int)
        self.reference_batch_ = reference
        ref = self.batches_.index(reference) if reference else None

        Y = X[self.features_].to_numpy(dtype=np.float64)
        onehot = np.eye(len(batches))[codes]
        self._fit_location_scale(Y, onehot, design, ref)
        self._fit_batch_effects(Y, onehot, design, ref)
        return self

    def _fit_location_scale(
        self, Y: np.ndarray, onehot: np.ndarray, design: np.ndarray, ref: int | None
    ) -> None:
        """Per feature: OLS on [batch indicators, covariates], grand mean, pooled variance."""
        n_b, p = onehot.shape[1], Y.shape[1]
        full = np.hstack([onehot, design])
        beta = np.empty((full.shape[1], p))
        grand = np.empty(p)
        var = np.empty(p)
        for j, name in enumerate(self.features_):
            ok = np.isfinite(Y[:, j])
            A = full[ok]
            if np.any(A[:, :n_b].sum(axis=0) < 2):
                empty = [b for b, c in zip(self.batches_, A[:, :n_b].sum(axis=0), strict=True)
                         if c < 2]  # fmt: skip
                raise InputError(
                    f"the imaging feature {name} has fewer than 2 values in batch(es) "
                    f"{', '.join(empty)}: ComBat cannot estimate their effect",
                    key="harmonisation.batch",
                )
            coef, _, rank, _ = np.linalg.lstsq(A, Y[ok, j], rcond=None)
            if rank < A.shape[1]:
                raise InputError(
                    "the preserved covariates "
                    f"({', '.join(map(str, self.preserve))}) are confounded with the batches "
                    f"(for {name}): their effect cannot be told from the scanner's; preserve "
                    "fewer covariates or choose another harmonisation.batch",
                    key="harmonisation.preserve",
                )
            beta[:, j] = coef
            w = A[:, :n_b].sum(axis=0) / ok.sum()
            grand[j] = coef[ref] if ref is not None else float(w @ coef[:n_b])
            rows = ok & (onehot[:, ref] == 1) if ref is not None else ok
            resid = Y[rows, j] - full[rows] @ coef
            var[j] = float(np.mean(resid**2))
        var[var == 0] = 1.0  # a constant feature: nothing to scale
        self.grand_mean_ = grand
        self.var_pooled_ = var
        self.beta_preserve_ = beta[n_b:]

    def _standardise(self, Y: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stand = self.grand_mean_[None, :] + design @ self.beta_preserve_
        return (Y - stand) / np.sqrt(self.var_pooled_)[None, :], stand

    def _fit_batch_effects(
        self, Y: np.ndarray, onehot: np.ndarray, design: np.ndarray, ref: int | None
    ) -> None:
        Z, _ = self._standardise(Y, design)
        k, p = onehot.shape[1], Y.shape[1]
        gamma_hat = np.empty((k, p))
        delta_hat = np.empty((k, p))
        n = np.empty((k, p))
        for i in range(k):
            zi = Z[onehot[:, i] == 1]
            n[i] = np.isfinite(zi).sum(axis=0)
            gamma_hat[i] = np.nanmean(zi, axis=0)
            delta_hat[i] = np.nanvar(zi, axis=0, ddof=1)
        if ref is not None:
            # sva's reference design makes the other batches' gammas relative to the
            # reference's mean, which is zero up to rounding: subtract it as sva does.
            gamma_hat = gamma_hat - gamma_hat[ref]
        if self.mean_only:
            delta_hat = np.ones_like(delta_hat)
        delta_hat[delta_hat == 0] = 1.0  # as sva: a batch without spread is not rescaled
        gamma_star, delta_star = gamma_hat.copy(), delta_hat.copy()
        if self.eb and p >= 2:
            for i in range(k):
                gamma_star[i], delta_star[i] = eb_batch(
                    Z[onehot[:, i] == 1], gamma_hat[i], delta_hat[i], n[i], self.mean_only
                )
        if ref is not None:
            gamma_star[ref] = 0.0
            delta_star[ref] = 1.0
        self.gamma_hat_, self.delta_hat_ = gamma_hat, delta_hat
        self.gamma_star_, self.delta_star_ = gamma_star, delta_star

    # --- transform -------------------------------------------------------------------------

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` with the features harmonised (missing values stay missing)."""
        check_is_fitted(self, "gamma_star_")
        X = self._check_frame(X)
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise InputError(f"the data lack the imaging feature(s) {', '.join(missing)}")
        model = self.with_estimated_batches(X) if self.unseen_batch == "estimate" else self
        labels = batch_labels(X, self.batch)
        index = {b: i for i, b in enumerate(model.batches_)}
        codes = labels.map(index)
        unseen = codes.isna().to_numpy()
        refused = unseen & model._refuses()
        if refused.any():
            names = sorted({str(b) for b in labels[refused].fillna("(unknown)")})
            raise InputError(
                f"scanner batch(es) {', '.join(names)} of {self._who(X, refused)} were not in "
                f"the development data, so harmonisation by {self.batch} cannot adjust them "
                + (
                    f"(fewer than {self.min_batch_patients} of their patients to estimate "
                    "their effects from; lower harmonisation.min_batch_patients or score them "
                    "with more of their scanner's patients)"
                    if self.unseen_batch == "estimate"
                    else "(set harmonisation.unseen_batch to estimate, reference or pooled to "
                    "score them)"
                ),
                key="harmonisation.unseen_batch",
            )
        gamma, delta = model._row_effects(codes.to_numpy(), unseen)
        Y = X[self.features_].to_numpy(dtype=np.float64)
        Z, stand = self._standardise(Y, self._design(X))
        sd = np.sqrt(self.var_pooled_)[None, :]
        adjusted = (Z - gamma) / np.sqrt(delta) * sd + stand
        if self.reference_batch_ is not None:
            keep = (codes == index[self.reference_batch_]).to_numpy()
            if self.unseen_batch == "reference":
                keep |= unseen
            adjusted[keep] = Y[keep]  # the reference batch is left exactly as measured
        out = X.copy()
        out[self.features_] = adjusted
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)

    # --- helpers ---------------------------------------------------------------------------

    def _check_frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ComBatHarmoniser needs a DataFrame (it finds columns by name)")
        return X

    def _feature_list(self, X: pd.DataFrame) -> list[str]:
        if self.features is not None:
            feats = list(self.features)
            missing = [c for c in feats if c not in X.columns]
            if missing:
                raise ConfigError(
                    f"the imaging feature(s) {', '.join(missing)} are not in the data",
                    key="imaging.features",
                )
            return feats
        skip = {*BATCH_SOURCES.get(self.batch, (self.batch,)), *self.preserve, self.id_column}
        return [c for c in X.columns if c not in skip and pd.api.types.is_numeric_dtype(X[c])]

    def _fit_preserve(self, X: pd.DataFrame) -> None:
        missing = [c for c in self.preserve if c not in X.columns]
        if missing:
            raise ConfigError(
                f"the covariate(s) {', '.join(missing)} to preserve are not in the data",
                key="harmonisation.preserve",
            )
        self.categories_: dict[str, list[str]] = {}
        self.fill_values_: dict[str, Any] = {}
        columns: list[str] = []
        for col in self.preserve:
            s = X[col]
            if _is_categorical(s):
                levels = sorted({str(v) for v in s.dropna()})
                self.categories_[col] = levels
                mode = s.dropna().astype(str).mode()
                self.fill_values_[col] = mode.iloc[0] if len(mode) else (levels or [""])[0]
                columns += [f"{col}[{lv}]" for lv in levels[1:]]
            else:
                med = pd.to_numeric(s, errors="coerce").median()
                self.fill_values_[col] = 0.0 if pd.isna(med) else float(med)
                columns.append(col)
        self.design_columns_ = columns

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        """The preserved covariates' design matrix (n, len(design_columns_))."""
        parts = []
        for col in self.preserve:
            if col not in X.columns:
                raise InputError(f"the data lack the covariate {col} that harmonisation keeps")
            s = X[col]
            if col in self.categories_:
                values = s.astype(object).where(s.notna(), self.fill_values_[col]).astype(str)
                for lv in self.categories_[col][1:]:
                    parts.append((values == lv).to_numpy(dtype=np.float64))
            else:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                parts.append(np.where(np.isfinite(v), v, self.fill_values_[col]))
        if not parts:
            return np.zeros((len(X), 0))
        return np.column_stack(parts)

    def _who(self, X: pd.DataFrame, mask: np.ndarray | pd.Series) -> str:
        mask = np.asarray(mask, dtype=bool)
        ids = X[self.id_column] if self.id_column in X.columns else X.index.to_series()
        shown = [str(v) for v in ids[mask][:5]]
        more = int(mask.sum()) - len(shown)
        text = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
        return f"patient(s) {text}"


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
