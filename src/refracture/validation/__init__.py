"""Validation of the risk models (issues 4, 12, 14): metrics at the horizon in the run's
estimand, hold-out / site / k-fold schemes, Harrell's bootstrap optimism correction with Noma's
interval, the added value of imaging, and plots."""

from refracture.validation.added_value import added_value, continuous_nri, idi
from refracture.validation.concordance import competing_concordance, concordance, ranking_score
from refracture.validation.ipcw_metrics import (
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from refracture.validation.metrics import (
    calibration_slope_intercept,
    compute_metrics,
    horizon_label,
    metric_names,
    observed_risk,
    time_grid,
)
from refracture.validation.undefined import Undefined
from refracture.validation.validate import ValidationResult, validate

__all__ = [
    "Undefined",
    "ValidationResult",
    "added_value",
    "brier_score",
    "calibration_slope_intercept",
    "competing_concordance",
    "compute_metrics",
    "concordance",
    "continuous_nri",
    "cumulative_dynamic_auc",
    "horizon_label",
    "idi",
    "integrated_brier_score",
    "metric_names",
    "observed_risk",
    "ranking_score",
    "time_grid",
    "validate",
]
