"""Survival and 1-year risk models.

Every model is a scikit-learn estimator inside a :class:`RiskPipeline` (``prep`` then
``model``) and predicts the absolute risk of re-fracture by the horizon in its ``estimand``:
``"cif"``, the cumulative incidence with death (event 2) as a competing event, or ``"net"``,
death censored (:data:`ESTIMAND_NOTES`). The outcome is the structured array of
:func:`make_outcome`.

The names below are imported on first use: a module that needs one light part (the outcome
array, the design checks) does not import scikit-survival, lifelines and scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "cause_specific_cif": "refracture.models.competing",
    "CoxPH": "refracture.models.cox",
    "CoxNet": "refracture.models.coxnet",
    "FineGray": "refracture.models.finegray",
    "censoring_survival": "refracture.models.ipcw",
    "horizon_weights": "refracture.models.ipcw",
    "IPCWLogistic": "refracture.models.logistic",
    "COMPETING_RISK_NOTE": "refracture.models.outcome",
    "ESTIMAND_NOTES": "refracture.models.outcome",
    "ESTIMANDS": "refracture.models.outcome",
    "OUTCOME_DTYPE": "refracture.models.outcome",
    "cause_outcome": "refracture.models.outcome",
    "check_outcome": "refracture.models.outcome",
    "make_outcome": "refracture.models.outcome",
    "resolve_estimand": "refracture.models.outcome",
    "status_at": "refracture.models.outcome",
    "to_sksurv": "refracture.models.outcome",
    "MODEL_NAMES": "refracture.models.pipeline",
    "MODELS": "refracture.models.pipeline",
    "RiskPipeline": "refracture.models.pipeline",
    "fix_categories": "refracture.models.pipeline",
    "make_pipeline": "refracture.models.pipeline",
    "make_preprocessor": "refracture.models.pipeline",
    "coefficients_table": "refracture.models.tables",
    "ph_test": "refracture.models.tables",
    "GradientBoostedSurvival": "refracture.models.trees",
    "RandomSurvivalForest": "refracture.models.trees",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'refracture.models' has no attribute {name!r}")
