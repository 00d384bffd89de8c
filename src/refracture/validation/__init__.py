"""Validation of the risk models (issue 4): metrics at the horizon, hold-out / site / k-fold
schemes, Harrell's bootstrap optimism correction, the added value of imaging, and plots."""

from refracture.validation.added_value import added_value, continuous_nri, idi
from refracture.validation.metrics import (
    calibration_slope_intercept,
    compute_metrics,
    horizon_label,
    metric_names,
    observed_risk,
    time_grid,
)
from refracture.validation.validate import ValidationResult, validate

__all__ = [
    "ValidationResult",
    "added_value",
    "continuous_nri",
    "idi",
    "calibration_slope_intercept",
    "compute_metrics",
    "horizon_label",
    "metric_names",
    "observed_risk",
    "time_grid",
    "validate",
]
