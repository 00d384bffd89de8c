"""Validation of the risk models: the metric registry (:data:`METRICS`) at the horizon in the
run's estimand, internal (bootstrap: Harrell, .632+, leave-one-out) and internal-external,
hold-out, site and k-fold schemes, stability, smoothed calibration, the added value of imaging,
and plots."""

from refracture.validation.added_value import added_value, continuous_nri, idi
from refracture.validation.catalogue import METRICS, MetricSpec, metric_specs
from refracture.validation.concordance import competing_concordance, concordance, ranking_score
from refracture.validation.ipcw_metrics import (
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from refracture.validation.metrics import (
    Evaluation,
    calibration_slope_intercept,
    compute_metrics,
    horizon_label,
    metric_names,
    observed_risk,
    time_grid,
)
from refracture.validation.result import ValidationResult
from refracture.validation.smooth_calibration import smoothed_calibration
from refracture.validation.stability import stability_metrics
from refracture.validation.undefined import Undefined
from refracture.validation.validate import validate

__all__ = [
    "METRICS",
    "Evaluation",
    "MetricSpec",
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
    "metric_specs",
    "integrated_brier_score",
    "metric_names",
    "observed_risk",
    "ranking_score",
    "smoothed_calibration",
    "stability_metrics",
    "time_grid",
    "validate",
]
