"""Survival and 1-year risk models.

Every model is a scikit-learn estimator inside a :class:`RiskPipeline` (``prep`` then
``model``) and predicts the absolute risk of re-fracture by the horizon in its ``estimand``:
``"cif"``, the cumulative incidence with death (event 2) as a competing event, or ``"net"``,
death censored (:data:`ESTIMAND_NOTES`). The outcome is the structured array of
:func:`make_outcome`.
"""

from refracture.models.competing import cause_specific_cif
from refracture.models.cox import CoxPH
from refracture.models.coxnet import CoxNet
from refracture.models.finegray import FineGray
from refracture.models.ipcw import censoring_survival, horizon_weights
from refracture.models.logistic import IPCWLogistic
from refracture.models.outcome import (
    COMPETING_RISK_NOTE,
    ESTIMAND_NOTES,
    ESTIMANDS,
    OUTCOME_DTYPE,
    cause_outcome,
    check_outcome,
    make_outcome,
    resolve_estimand,
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
    "ESTIMANDS",
    "ESTIMAND_NOTES",
    "MODELS",
    "MODEL_NAMES",
    "OUTCOME_DTYPE",
    "CoxNet",
    "CoxPH",
    "FineGray",
    "GradientBoostedSurvival",
    "IPCWLogistic",
    "RandomSurvivalForest",
    "RiskPipeline",
    "cause_outcome",
    "cause_specific_cif",
    "censoring_survival",
    "check_outcome",
    "coefficients_table",
    "fix_categories",
    "horizon_weights",
    "make_outcome",
    "make_pipeline",
    "make_preprocessor",
    "ph_test",
    "resolve_estimand",
    "status_at",
    "to_sksurv",
]
