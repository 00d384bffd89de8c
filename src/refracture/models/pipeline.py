"""Preprocessing + model in one scikit-learn ``Pipeline``.

With scanner harmonisation on (``harmonisation.method: combat``) a ``harmonise`` step
(:class:`~refracture.models.harmonise.ComBatHarmoniser`) comes first, on the raw imaging
features before imputation; it reads the batch columns (``site``, ``scanner_id``,
``scanner_field_strength_t``) and the preserved covariates from the same table, and the
``prep`` step drops them afterwards. Cloning the pipeline clones the harmoniser, so every CV
fold and bootstrap replicate refits it on its own development data.

Missing values are imputed inside the pipeline, so imputation is learned on the training data
of each fit (never on the patients it is validated on). Scaling happens only where the model
needs it (the elastic net's penalty); the Cox and logistic models see the covariates in their
original units so their coefficients read per year, per kg/m2, per PDFF point, per 1/s.

Fit parameters of the model go through the pipeline with the ``model__`` prefix, e.g. the
original patient of each row of a bootstrap replicate:
``pipeline.fit(X, y, model__groups=patient_ids)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from refracture.config import CovariatesConfig, HarmonisationConfig, ImputationConfig
from refracture.errors import ConfigError, ModelError
from refracture.model_catalogue import MODELS
from refracture.models.base import SurvivalEstimator, estimand_refusal
from refracture.models.harmonise import ComBatHarmoniser, make_harmoniser
from refracture.models.imputation import MultipleImputer
from refracture.models.imputed import ImputedModels
from refracture.models.outcome import resolve_estimand

#: ``make_pipeline``'s default estimand: resolved from the outcome at the first fit, as
#: ``refracture train`` resolves it from the data (cif when some patients died first).
AUTO = "auto"

MODEL_NAMES = tuple(MODELS)  # the names shipped with refracture, in MODELS' order


def term_name(feature: str, category: object) -> str:
    """One-hot column name: ``cement_leakage[intradiscal]``, as in the coefficient tables."""
    return f"{feature}[{category}]"


def make_preprocessor(
    covariates: CovariatesConfig,
    imaging_features: Sequence[str] = (),
    *,
    scale: bool = False,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> ColumnTransformer:
    """Impute (median / most frequent), one-hot encode against reference levels, optionally scale.

    ``categories`` fixes the levels of each categorical covariate (reference included); pass the
    levels of the whole cohort so a resample or fold lacking a rare level still encodes the
    same terms. Without it the levels are learned from the training data.
    """
    numeric = [*covariates.numeric, *imaging_features]
    binary = list(covariates.binary)
    categorical = list(covariates.categorical)

    def steps(*head: tuple[str, object]) -> Pipeline:
        tail = [("scale", StandardScaler())] if scale else []
        return Pipeline([*head, *tail])

    transformers = []
    if numeric:
        transformers.append(
            ("numeric", steps(("impute", SimpleImputer(strategy="median"))), numeric)
        )
    if binary:
        transformers.append(
            ("binary", steps(("impute", SimpleImputer(strategy="most_frequent"))), binary)
        )
    if categorical:
        if categories is not None:
            cats: list[list[str]] | str = [list(categories[c]) for c in categorical]
        else:
            cats = "auto"
        encoder = OneHotEncoder(
            categories=cats,
            drop=[covariates.categorical[c] for c in categorical],
            handle_unknown="error",
            sparse_output=False,
            feature_name_combiner=term_name,
        )
        transformers.append(
            (
                "categorical",
                steps(("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)),
                categorical,
            )
        )
    if not transformers:
        raise ConfigError("no covariates or imaging features to model", key="covariates")
    ct = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return ct.set_output(transform="pandas")


class RiskPipeline(Pipeline):
    """A fitted ``[harmonise] -> prep -> model`` pipeline that predicts absolute risk by the
    horizon.

    Every method transforms with the preprocessing steps then calls the model, so it takes the
    raw covariate table (columns named as in the config; extra columns are ignored).
    """

    @property
    def model(self) -> SurvivalEstimator:
        return self.steps[-1][1]

    @property
    def harmoniser(self) -> ComBatHarmoniser | None:
        """The scanner harmonisation step, or None when the pipeline has none."""
        step = dict(self.steps).get("harmonise")
        return step if isinstance(step, ComBatHarmoniser) else None

    @property
    def model_name(self) -> str:
        return self.model.name or type(self.model).__name__

    @property
    def horizon(self) -> float:
        return float(self.model.horizon)

    @property
    def supports_survival(self) -> bool:
        return bool(self.model.supports_survival)

    @property
    def estimand(self) -> str:
        """ "net" (death censored) or "cif" (cumulative incidence, death competing); "auto"
        before the first fit of a pipeline made without an estimand."""
        return str(self.model.estimand)

    def resolve_estimand(self, y: np.ndarray) -> RiskPipeline:
        """Set an ``auto`` estimand from the outcome ``y`` (cif when it holds deaths, code 2;
        the model's only estimand when it has one); returns self."""
        model = self.model
        if getattr(model, "estimand", None) == AUTO:
            able = model.estimands  # the instance: an imputed model answers for its estimator
            model.set_params(estimand=able[0] if len(able) == 1 else resolve_estimand(None, y))
        return self

    def fit(self, X: pd.DataFrame, y: np.ndarray | None = None, **params: object) -> RiskPipeline:
        """Fit preprocessing and model; an ``auto`` estimand is resolved from ``y`` first."""
        if y is not None:
            self.resolve_estimand(y)
        return super().fit(X, y, **params)

    @property
    def term_names(self) -> list[str]:
        """Model terms after encoding, e.g. ``age``, ``sex[M]``."""
        return [str(c) for c in self.model.feature_names_in_]

    def transform_features(self, X: pd.DataFrame) -> pd.DataFrame:
        """The design matrix the model sees."""
        return self[:-1].transform(X)

    def predict(self, X: pd.DataFrame, **params: object) -> np.ndarray:
        """Absolute risk of re-fracture by the horizon."""
        return self.predict_risk(X)

    def predict_risk(self, X: pd.DataFrame) -> np.ndarray:
        """Risk of re-fracture by the horizon (n,), in the model's estimand."""
        return self.model.predict_risk(self.transform_features(X))

    def predict_death_risk(self, X: pd.DataFrame) -> np.ndarray:
        """Risk of death before re-fracture by the horizon (n,); estimand cif only."""
        return self.model.predict_death_risk(self.transform_features(X))

    def predict_cif(self, X: pd.DataFrame, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Cumulative incidence (n, 2, len(times)): [:, 0] re-fracture, [:, 1] death (cif)."""
        return self.model.predict_cif(self.transform_features(X), np.asarray(times, dtype=float))

    def predict_survival(self, X: pd.DataFrame, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Free of re-fracture by t, (n patients, len(times)). Not for the logistic model.

        Net: S(t | x) with death censored. Cif: 1 - CIF1(t | x) (alive or dead), so that
        ``1 - predict_survival(X, [h]) == predict_risk(X)`` in both estimands.
        """
        if not self.supports_survival:
            raise ModelError(
                "the logistic model predicts the risk at the horizon only, not a survival curve"
            )
        return self.model.predict_survival(
            self.transform_features(X), np.asarray(times, dtype=float)
        )

    def linear_predictor(self, X: pd.DataFrame) -> np.ndarray:
        """The re-fracture (cause-specific or subdistribution) linear predictor (n,)."""
        return self.model.linear_predictor(self.transform_features(X))

    def death_linear_predictor(self, X: pd.DataFrame) -> np.ndarray:
        """Log relative hazard of death of the cause-specific models under cif (n,)."""
        model = self.model
        if not model.has_death_hazard:
            raise ModelError(f"the {self.model_name} model has no separate death hazard")
        return model.death_linear_predictor(self.transform_features(X))

    def risk_from_lp(self, lp: np.ndarray, lp_death: np.ndarray | None = None) -> np.ndarray:
        """Risk by the horizon from the linear predictor.

        Under cif the cause-specific models (``cif_from_lp`` False) also need ``lp_death``.
        """
        if lp_death is None:
            return self.model.risk_from_lp(lp)
        return self.model.risk_from_lp(lp, lp_death)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-term beta_j (x_j - mean_j); ``contribution_baseline`` + row sum = lp."""
        if not self.model.supports_contributions:
            raise ModelError(f"the {self.model_name} model has no per-term contributions")
        return self.model.contributions(self.transform_features(X))

    @property
    def contribution_baseline(self) -> float:
        if not self.model.supports_contributions:
            raise ModelError(f"the {self.model_name} model has no per-term contributions")
        return float(self.model.contribution_baseline_)


def make_pipeline(
    name: str,
    cfg_covariates: CovariatesConfig | None = None,
    imaging_features: Sequence[str] = (),
    *,
    horizon: float = 365.0,
    random_state: int = 0,
    categories: Mapping[str, Sequence[str]] | None = None,
    numeric: Sequence[str] = (),
    binary: Sequence[str] = (),
    categorical: Mapping[str, str] | None = None,
    harmonisation: HarmonisationConfig | None = None,
    imputation: ImputationConfig | None = None,
    **model_params: object,
) -> RiskPipeline:
    """An unfitted pipeline for model ``name`` (cox, coxnet, rsf, gbsa, logistic, finegray).

    The covariates come from a config section (``cfg_covariates``) or directly as ``numeric``,
    ``binary`` and ``categorical`` (name: reference level). ``imaging_features`` are added to
    the numeric covariates (empty for the clinical set); ``model_params`` override the
    estimator's defaults, e.g. ``estimand="cif"``. Without an estimand the pipeline's is
    ``auto``: resolved from the outcome it is fitted on (cif when some patients died before a
    re-fracture, else net), as ``refracture train`` resolves it from the study's data
    (:func:`refracture.validation.validate` resolves it once from all patients). A model
    that cannot be fitted for the estimand is refused here, before any data is read.

    ``harmonisation`` (the config's ``harmonisation:`` section): with ``method: combat`` and
    imaging features, a ComBat step harmonises those features first; the table given to the
    pipeline must then also hold the batch columns and the preserved covariates.

    ``imputation`` (the config's ``imputation:`` section): with ``method: multiple`` an
    ``impute`` step (:class:`~refracture.models.imputation.MultipleImputer`) completes ``m``
    copies of the data, the outcome in its model, and the model step fits one model per copy
    and averages their predictions (:class:`~refracture.models.imputed.ImputedModels`).
    """
    if cfg_covariates is None:
        cfg_covariates = CovariatesConfig(
            numeric=list(numeric), binary=list(binary), categorical=dict(categorical or {})
        )
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}' (one of {', '.join(MODELS)})", key="models")
    if "estimand" in inspect.signature(MODELS[name]).parameters:  # a net-only model may not
        model_params.setdefault("estimand", AUTO)  # take one (a study's own added model)
    estimand = model_params.get("estimand", AUTO)
    if estimand not in (AUTO, *MODELS[name].estimands):
        raise ModelError(estimand_refusal(MODELS[name], str(estimand)))
    prep = make_preprocessor(
        cfg_covariates,
        list(imaging_features),
        scale=MODELS[name].needs_scaling,
        categories=categories,
    )
    model = MODELS[name](horizon=float(horizon), random_state=int(random_state), **model_params)
    harmoniser = None
    if harmonisation is not None:
        harmoniser = make_harmoniser(harmonisation, list(imaging_features))
    first = [("harmonise", harmoniser)] if harmoniser is not None else []
    if imputation is not None and imputation.method == "multiple":
        first.append(
            (
                "impute",
                MultipleImputer(
                    numeric=[*cfg_covariates.numeric, *imaging_features],
                    binary=list(cfg_covariates.binary),
                    categorical={c: (categories or {}).get(c) for c in cfg_covariates.categorical},
                    m=imputation.m,
                    n_iter=imputation.iterations,
                    estimand=str(model_params.get("estimand") or "net"),
                    random_state=int(random_state),
                ),
            )
        )
        model = ImputedModels(model, m=imputation.m)  # type: ignore[assignment]
    return RiskPipeline([*first, ("prep", prep), ("model", model)])


def fix_categories(pipeline: RiskPipeline, X: pd.DataFrame) -> RiskPipeline:
    """Fix each categorical covariate's levels to those of ``X`` (reference first), so every
    resample or fold encodes the same terms even when it lacks a rare level. A pipeline whose
    levels are already fixed is returned unchanged."""
    prep = pipeline.named_steps["prep"]
    for name, steps, columns in prep.transformers:
        if name != "categorical":
            continue
        encoder = steps.named_steps["onehot"]
        if not isinstance(encoder.categories, str):
            return pipeline
        levels = []
        for col, ref in zip(columns, encoder.drop, strict=True):
            seen = sorted(str(v) for v in pd.Series(X[col]).dropna().unique() if str(v) != ref)
            levels.append([ref, *seen])
        pipeline.set_params(prep__categorical__onehot__categories=levels)
    return pipeline
