"""The metric registry: every reported metric's name, label, computation, direction and format.

:data:`METRICS` is the one list the product is built from: :func:`compute_metrics` computes
its entries, the bootstrap estimates the internal-validation value of every ``resampled`` one,
the config check derives the allowed ``selection_metric`` names from it, and the terminal, the
study report, the model card, the registry description, MLflow logging and the docs tables loop
over it. A new metric is one :class:`MetricSpec` appended here (its ``compute`` a function of
an :class:`~refracture.validation.metrics.Evaluation`). Names carry the horizon where the metric
is taken at it (``auc_365d``).

This module imports nothing heavy: a spec names its computation as ``"module:function"``, imported
when first evaluated, so reading labels and names costs no scientific imports.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADDED_VALUE",
    "ESTIMATORS",
    "INTERNAL_AUTO",
    "METRICS",
    "MetricSpec",
    "SELECTION_AUTO",
    "estimator_of",
    "headline_specs",
    "horizon_label",
    "metric_names",
    "metric_spec",
    "metric_specs",
    "resolve_selection_metric",
    "selection_choices",
    "selection_score",
]


def horizon_label(horizon: float) -> str:
    """``365d``: the suffix metric names carry."""
    return f"{int(round(float(horizon)))}d"


def _resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``key`` has ``{h}`` where the horizon label goes (``auc_{h}``).

    Parameters
    ----------
    key : name pattern, ``{h}`` for the horizon label.
    label : short label for table headers (``{h}``: the horizon in days).
    compute : function of an :class:`~refracture.validation.metrics.Evaluation` returning the
        value, raising :class:`~refracture.validation.undefined.Undefined` with the reason
        when the data cannot support it; or ``"module:function"`` naming one.
    description : what the metric is, in words (model card, docs).
    higher_is_better : True for discrimination, False for losses, None with an ``ideal``.
    ideal : the perfect value of a calibration measure (slope 1, intercept 0, O/E 1); the
        closer the better.
    digits : decimals shown.
    headline : shown in the summary tables (terminal, report summary, registry description,
        per-site tables); every metric is in the full tables, the CSVs and MLflow.
    no_information : the value when predictions are unrelated to the outcomes (Efron &
        Tibshirani's no-information rate of the .632+ estimator): a number, or a function (or
        ``"module:function"``) of the apparent Evaluation; None when pairing predictions with
        other patients' outcomes does not change the metric (calibration-in-the-large), so
        .632+ reduces to .632.
    resampled : computed in every bootstrap replicate, so it has internal-validation
        estimates (``_optcorr``, ``_632plus``, ``_loo``) and CIs; False for a metric fitted
        once on the validation data (smoothed calibration).
    """

    key: str
    label: str
    compute: str | Callable[..., float]
    description: str = ""
    higher_is_better: bool | None = True
    ideal: float | None = None
    digits: int = 3
    headline: bool = True
    no_information: float | str | Callable[..., float] | None = None
    resampled: bool = True

    def name(self, horizon: float) -> str:
        return self.key.format(h=horizon_label(horizon))

    def label_at(self, horizon: float) -> str:
        return self.label.format(h=int(round(float(horizon))))

    def evaluate(self, evaluation: Any) -> float:
        """The metric's value for an Evaluation (raises Undefined with the reason)."""
        return float(_resolve(self.compute)(evaluation))

    def no_information_value(self, evaluation: Any) -> float | None:
        """The no-information value for the apparent Evaluation (None: see the class text)."""
        ni = self.no_information
        if ni is None or isinstance(ni, int | float):
            return None if ni is None else float(ni)
        return float(_resolve(ni)(evaluation))

    def orient(self, value: float) -> float:
        """``value`` turned so that larger is better (for selection and the registry)."""
        if value is None or not math.isfinite(value):
            return float("nan")
        if self.ideal is not None:
            return -abs(value - self.ideal)
        return value if self.higher_is_better else -value

    def direction(self) -> str:
        """``higher``, ``lower`` or ``closest to <ideal>``: for tables and docs."""
        if self.ideal is not None:
            return f"closest to {self.ideal:g}"
        return "higher" if self.higher_is_better else "lower"


_M = "refracture.validation.metrics:"
_S = "refracture.validation.smooth_calibration:"

#: The performance metrics of every model, in report order (the registry).
METRICS: list[MetricSpec] = [
    MetricSpec(
        "cindex_harrell", "Harrell C", _M + "harrell_c",
        "Harrell's C-index (net); Wolbers' C truncated at the horizon (cif)",
        no_information=0.5,
    ),
    MetricSpec(
        "cindex_uno", "Uno C", _M + "uno_c",
        "Uno's IPCW C-index truncated at the horizon (net); Wolbers' IPCW C (cif)",
        headline=False, no_information=0.5,
    ),
    MetricSpec(
        "auc_{h}", "AUC {h} d", _M + "auc", "cumulative/dynamic AUC at the horizon",
        no_information=0.5,
    ),
    MetricSpec(
        "brier_{h}", "Brier {h} d", _M + "brier", "IPCW Brier score at the horizon",
        higher_is_better=False, no_information=_M + "brier_no_information",
    ),
    MetricSpec(
        "ibs_{h}", "IBS to {h} d", _M + "ibs", "integrated Brier score up to the horizon",
        higher_is_better=False, headline=False, no_information=_M + "ibs_no_information",
    ),
    MetricSpec(
        "calibration_slope", "calibration slope", _M + "calibration_slope",
        "calibration slope (IPCW logistic recalibration at the horizon)",
        higher_is_better=None, ideal=1.0, digits=2, no_information=0.0,
    ),
    MetricSpec(
        "calibration_intercept", "calibration intercept", _M + "calibration_intercept",
        "calibration intercept (calibration-in-the-large, logit scale)",
        higher_is_better=None, ideal=0.0, digits=2, headline=False,
    ),
    MetricSpec(
        "oe_ratio_{h}", "O/E {h} d", _M + "oe_ratio",
        "observed (Aalen-Johansen or 1 - Kaplan-Meier) over mean predicted risk",
        higher_is_better=None, ideal=1.0, digits=2,
    ),
    MetricSpec(
        "ici_{h}", "ICI {h} d", _S + "ici",
        "integrated calibration index: mean absolute difference, smoothed observed vs predicted",
        higher_is_better=False, headline=False, resampled=False,
    ),
    MetricSpec(
        "e50_{h}", "E50 {h} d", _S + "e50",
        "median absolute difference, smoothed observed vs predicted",
        higher_is_better=False, headline=False, resampled=False,
    ),
    MetricSpec(
        "e90_{h}", "E90 {h} d", _S + "e90",
        "90th percentile of the absolute difference, smoothed observed vs predicted",
        higher_is_better=False, headline=False, resampled=False,
    ),
]  # fmt: skip

#: What imaging adds to a clinical model (clinical+imaging versus clinical).
ADDED_VALUE: tuple[MetricSpec, ...] = (
    MetricSpec("delta_cindex", "delta C", "", "Harrell C with imaging minus without"),
    MetricSpec("nri_{h}", "NRI {h} d", "", "continuous NRI at the horizon", digits=2),
    MetricSpec("idi_{h}", "IDI {h} d", "", "IDI at the horizon"),
    MetricSpec("lrt_p", "LRT p", "", "likelihood-ratio test p (nested Cox)",
               higher_is_better=False, headline=False),
)  # fmt: skip


@dataclass(frozen=True)
class Estimator:
    """An internal-validation estimate from the bootstrap replicates (metric name suffix)."""

    suffix: str
    label: str
    description: str


#: The internal-validation estimates every resampled metric gets, from the same B refits.
ESTIMATORS: dict[str, Estimator] = {
    "optcorr": Estimator(
        "optcorr", "Harrell", "Harrell's bootstrap optimism correction (apparent minus the "
        "mean optimism of the refits tested on the original data)",
    ),
    "632plus": Estimator(
        "632plus", ".632+", "Efron & Tibshirani's .632+ bootstrap (apparent and out-of-bag "
        "performance weighted by the relative overfitting rate)",
    ),
    "loo": Estimator(
        "loo", "LOO bootstrap", "leave-one-out bootstrap (each refit tested on the patients "
        "its resample left out, averaged over refits)",
    ),
}  # fmt: skip

#: ``validation.internal: auto``: the estimator of a model that memorises its training
#: patients (tree ensembles) and of the others (regression models).
INTERNAL_AUTO = {"tree_ensemble": "632plus", "regression": "optcorr"}
#: ``selection_metric: auto``: the run's C-index by .632+, valid for every learner.
SELECTION_AUTO = "cindex_harrell_632plus"


def metric_specs(resampled: bool | None = None) -> tuple[MetricSpec, ...]:
    """A snapshot of the registry (only the resampled, or only the fitted-once, metrics)."""
    return tuple(s for s in METRICS if resampled is None or s.resampled == resampled)


def headline_specs() -> tuple[MetricSpec, ...]:
    """The metrics summary tables show."""
    return tuple(s for s in METRICS if s.headline)


def metric_names(horizon: float = 365.0, resampled: bool | None = None) -> list[str]:
    """The performance metric names at a horizon, in report order."""
    return [m.name(horizon) for m in metric_specs(resampled)]


def estimator_of(name: str) -> str | None:
    """The internal-validation suffix a metric name carries (``optcorr``), or None."""
    for suffix in ESTIMATORS:
        if name.endswith("_" + suffix):
            return suffix
    return None


def metric_spec(name: str, horizon: float = 365.0) -> MetricSpec:
    """The spec of a metric name (``auc_365d``, ``cindex_harrell_632plus``)."""
    suffix = estimator_of(name)
    base = name.removesuffix("_" + suffix) if suffix else name
    for spec in (*METRICS, *ADDED_VALUE):
        if spec.name(horizon) == base:
            return spec
    raise KeyError(f"unknown metric '{name}'")


def selection_choices(horizon: float = 365.0, bootstrap: bool = True) -> list[str]:
    """Every allowed ``selection_metric``: ``auto``, each metric on the validation data, and
    with the bootstrap each resampled metric's internal-validation estimates."""
    out = ["auto"]
    for spec in METRICS:
        out.append(spec.name(horizon))
        if spec.resampled and bootstrap:
            out += [f"{spec.name(horizon)}_{s}" for s in ESTIMATORS]
    return out


def resolve_selection_metric(metric: str) -> str:
    """``auto`` -> :data:`SELECTION_AUTO`; any other name unchanged."""
    return SELECTION_AUTO if metric == "auto" else metric


def selection_score(metric: str, value: float, horizon: float = 365.0) -> float:
    """``value`` of ``metric`` oriented so that larger is better."""
    return metric_spec(metric, horizon).orient(value)
