"""What :func:`refracture.validation.validate` returns: :class:`ValidationResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from refracture.models.outcome import estimand_note, make_outcome
from refracture.models.pipeline import RiskPipeline
from refracture.validation.catalogue import ESTIMATORS, metric_names
from refracture.validation.internal import INTERVAL_METHODS
from refracture.validation.metrics import Reasons

__all__ = ["ValidationResult"]


@dataclass
class ValidationResult:
    """Everything one model x feature set validation produced.

    ``metrics`` holds, per metric name ``m``: ``m`` (validation data) with ``m_lo`` / ``m_hi``
    (percentile 95 % CI, bootstrap of the validation patients, left out when it misses the
    estimate); for every resampled metric its internal-validation estimates on the development
    data ``m_optcorr`` (Harrell), ``m_632plus`` (.632+) and ``m_loo`` (leave-one-out
    bootstrap), each with ``_lo`` / ``_hi`` (:mod:`refracture.validation.internal`); for a
    bagged forest ``cindex_oob`` (the final forest's out-of-bag C); ``n_development``; the
    stability measures ``instability_*`` (:mod:`refracture.validation.stability`).
    ``internal`` is the estimator suffix this model's tables show (``validation.internal``,
    ``auto``: Harrell for regression models, .632+ for tree ensembles). ``reasons`` maps
    every NaN entry of ``metrics`` to why the data could not support it; ``estimand`` is
    ``net`` or ``cif``.
    """

    model_name: str
    feature_set: str
    features: list[str]
    horizon: float
    split: str
    split_kind: str
    metrics: dict[str, float]
    apparent: dict[str, float]
    optimism: dict[str, float]
    final_model: RiskPipeline
    predictions: pd.DataFrame
    per_site: pd.DataFrame | None
    per_fold: pd.DataFrame | None
    n_train: int
    n_valid: int
    events_train: int
    events_valid: int
    development_ids: list[str]
    y_development: np.ndarray
    coefficients: pd.DataFrame | None
    ph_test: pd.DataFrame | None
    bootstrap: int
    n_boot_failed: int
    boot_apparent: pd.DataFrame
    boot_test: pd.DataFrame
    times: np.ndarray
    estimand: str = "net"
    competing_risk_note: str = field(default_factory=lambda: estimand_note("net"))
    reasons: Reasons = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    internal: str = "optcorr"
    boot_oob: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: The final model's risk for each development patient, and every refit's risk for them
    #: (one row per successful refit) with how often the refit's resample drew each patient.
    development_risk: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boot_risk: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    boot_drawn: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint16))
    validation_role: str = "test"

    def __repr__(self) -> str:
        c = self.metrics.get("cindex_harrell", float("nan"))
        return (
            f"ValidationResult({self.model_name!r}, {self.feature_set!r}, "
            f"split={self.split_kind!r}, n_train={self.n_train}, n_valid={self.n_valid}, "
            f"cindex_harrell={c:.3f})"
        )

    def metrics_frame(self) -> pd.DataFrame:
        """One row per metric: validation value and 95% CI, apparent value, Harrell's
        optimism, each internal-validation estimate with its 95% CI, and the interval methods
        (a tidy table)."""
        m = self.metrics
        nan = float("nan")
        rows = []
        for name in metric_names(self.horizon):
            row = {
                "metric": name,
                "value": m.get(name, nan),
                "lower95": m.get(f"{name}_lo", nan),
                "upper95": m.get(f"{name}_hi", nan),
                "apparent": self.apparent.get(name, nan),
                "optimism": self.optimism.get(name, nan),
            }
            for s in ESTIMATORS:
                row[s] = m.get(f"{name}_{s}", nan)
                row[f"{s}_lower95"] = m.get(f"{name}_{s}_lo", nan)
                row[f"{s}_upper95"] = m.get(f"{name}_{s}_hi", nan)
            row["internal"] = self.internal
            row["interval_validation"] = INTERVAL_METHODS["validation"]
            row["interval_internal"] = INTERVAL_METHODS["internal"]
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def y_valid(self) -> np.ndarray:
        """Outcome of the validation patients, in ``predictions`` order."""
        return make_outcome(
            self.predictions["event"].to_numpy(), self.predictions["time"].to_numpy()
        )

    def summary(self) -> dict[str, object]:
        """Flat description for logging (parameters, counts, notes)."""
        return {
            "model": self.model_name,
            "feature_set": self.feature_set,
            "split": self.split,
            "n_train": self.n_train,
            "n_valid": self.n_valid,
            "events_train": self.events_train,
            "events_valid": self.events_valid,
            "bootstrap": self.bootstrap,
            "n_boot_failed": self.n_boot_failed,
            "estimand": self.estimand,
            "internal_validation": ESTIMATORS[self.internal].label,
            "competing_risks": self.competing_risk_note,
            "notes": "; ".join(self.notes),
        }
