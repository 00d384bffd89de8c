"""Survival and 1-year risk models (issue 4).

Every model is a scikit-learn estimator inside a :class:`RiskPipeline` (``prep`` then
``model``) and predicts the absolute risk of re-fracture by the horizon. The outcome is the
structured array of :func:`make_outcome`; death (event 2) is censored by the models
(:data:`COMPETING_RISK_NOTE`).
"""

from refracture.models.cox import CoxPH
from refracture.models.coxnet import CoxNet
from refracture.models.ipcw import censoring_survival, horizon_weights
from refracture.models.logistic import IPCWLogistic
from refracture.models.outcome import (
    COMPETING_RISK_NOTE,
    OUTCOME_DTYPE,
    check_outcome,
    make_outcome,
    status_at,
    to_sksurv,
)
from refracture.models.pipeline import (
    MODEL_NAMES,
    MODELS,
    RiskPipeline,
    fix_categories,
    make_pipeline,
    make_preprocessor,
)
from refracture.models.tables import coefficients_table, ph_test
from refracture.models.trees import GradientBoostedSurvival, RandomSurvivalForest

__all__ = [
    "COMPETING_RISK_NOTE",
    "MODELS",
    "MODEL_NAMES",
    "OUTCOME_DTYPE",
    "CoxNet",
    "CoxPH",
    "GradientBoostedSurvival",
    "IPCWLogistic",
    "RandomSurvivalForest",
    "RiskPipeline",
    "censoring_survival",
    "check_outcome",
    "coefficients_table",
    "fix_categories",
    "horizon_weights",
    "make_outcome",
    "make_pipeline",
    "make_preprocessor",
    "ph_test",
    "status_at",
    "to_sksurv",
]
