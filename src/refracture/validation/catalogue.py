"""The metric catalogue: every reported metric's name, label, direction and format.

The terminal, the study report, the model card, the registry description and model selection
all read these specs, so a metric is named, oriented and rounded the same way everywhere.
Names carry the horizon where the metric is taken at it (``auc_365d``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ADDED_VALUE",
    "METRICS",
    "MetricSpec",
    "horizon_label",
    "metric_names",
    "metric_spec",
    "selection_score",
]


def horizon_label(horizon: float) -> str:
    """``365d``: the suffix metric names carry."""
    return f"{int(round(float(horizon)))}d"


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``key`` has ``{h}`` where the horizon label goes (``auc_{h}``).

    ``higher_is_better`` orients discrimination (True) and losses (False); a metric with an
    ``ideal`` value (calibration slope 1, intercept 0, O/E 1) is better the closer it is.
    """

    key: str
    label: str
    higher_is_better: bool | None = True
    ideal: float | None = None
    digits: int = 3
    headline: bool = True

    def name(self, horizon: float) -> str:
        return self.key.format(h=horizon_label(horizon))

    def label_at(self, horizon: float) -> str:
        return self.label.format(h=int(round(float(horizon))))

    def orient(self, value: float) -> float:
        """``value`` turned so that larger is better (for selection and the registry)."""
        if value is None or not math.isfinite(value):
            return float("nan")
        if self.ideal is not None:
            return -abs(value - self.ideal)
        return value if self.higher_is_better else -value


#: The performance metrics of every model, in report order.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("cindex_harrell", "Harrell C"),
    MetricSpec("cindex_uno", "Uno C"),
    MetricSpec("auc_{h}", "AUC {h} d"),
    MetricSpec("brier_{h}", "Brier {h} d", higher_is_better=False),
    MetricSpec("ibs_{h}", "IBS to {h} d", higher_is_better=False),
    MetricSpec(
        "calibration_slope", "calibration slope", higher_is_better=None, ideal=1.0, digits=2
    ),
    MetricSpec(
        "calibration_intercept", "calibration intercept", higher_is_better=None, ideal=0.0, digits=2
    ),
    MetricSpec("oe_ratio_{h}", "O/E {h} d", higher_is_better=None, ideal=1.0, digits=2),
)

#: What imaging adds to a clinical model (clinical+imaging versus clinical).
ADDED_VALUE: tuple[MetricSpec, ...] = (
    MetricSpec("delta_cindex", "delta C"),
    MetricSpec("nri_{h}", "NRI {h} d"),
    MetricSpec("idi_{h}", "IDI {h} d"),
    MetricSpec("lrt_p", "LRT p", higher_is_better=False, headline=False),
)


def metric_names(horizon: float = 365.0) -> list[str]:
    """The performance metric names at a horizon, in report order."""
    return [m.name(horizon) for m in METRICS]


def metric_spec(name: str, horizon: float = 365.0) -> MetricSpec:
    """The spec of a metric name (``auc_365d``, ``cindex_harrell_optcorr``)."""
    base = name.removesuffix("_optcorr")
    for spec in (*METRICS, *ADDED_VALUE):
        if spec.name(horizon) == base:
            return spec
    raise KeyError(f"unknown metric '{name}'")


def selection_score(metric: str, value: float, horizon: float = 365.0) -> float:
    """``value`` of ``metric`` oriented so that larger is better."""
    return metric_spec(metric, horizon).orient(value)
