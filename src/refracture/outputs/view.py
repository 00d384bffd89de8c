"""What every output says about one scored patient, gathered once: :class:`PatientView`.

The DICOM SR, the FHIR RiskAssessment and the risk card are three renderings of the same
numbers: the score row (exactly as in the scores file), the model inputs it was computed from,
the per-term contributions, and, when the images were measured, every vertebra's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from refracture.features.schema import MAPS
from refracture.ids import PATIENT_ID
from refracture.imaging.morphometry import MEASURES
from refracture.outputs.measure import Remeasured
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import death_risk_column, risk_column

__all__ = ["PatientView", "Vertebra", "cohort_range", "make_view"]


@dataclass(frozen=True)
class Vertebra:
    """One measured vertebra: the mean of each map over the voxels measured (``mean``, in %
    and 1/s), how many voxels that was (``n``), and its morphometry (``morph``, by measure of
    :data:`refracture.imaging.morphometry.MEASURES`; NaN when not measured)."""

    level: str
    treated: bool
    fractured: bool
    mean: dict[str, float]
    n: dict[str, int]
    morph: dict[str, float]


@dataclass
class PatientView:
    """One scored patient as the outputs show it.

    ``row``: the patient's row of the scores file; ``inputs``: the model inputs it was
    computed from; ``contributions``: term -> contribution to the linear predictor relative
    to the average training patient (empty for a model without terms); ``measured``: the
    images measured again (None when scored from a features file or by a clinical-only
    model).
    """

    model: ScoringModel
    row: pd.Series
    inputs: dict[str, Any]
    contributions: dict[str, float] = field(default_factory=dict)
    lp_reference: float = math.nan
    vertebrae: list[Vertebra] = field(default_factory=list)
    measured: Remeasured | None = None

    @property
    def patient_id(self) -> str:
        return str(self.row[PATIENT_ID])

    @property
    def risk(self) -> float:
        return float(self.row[risk_column(self.model.bundle.horizon_days)])

    @property
    def death_risk(self) -> float | None:
        """Risk of death before re-fracture by the horizon (models of estimand ``cif``)."""
        col = death_risk_column(self.model.bundle.horizon_days)
        return float(self.row[col]) if col in self.row.index else None

    @property
    def group(self) -> str:
        return str(self.row["risk_group"])

    @property
    def horizon_days(self) -> int:
        return int(round(self.model.bundle.horizon_days))

    @property
    def warnings(self) -> list[str]:
        text = str(self.row.get("warnings") or "")
        return [w.strip() for w in text.split(";") if w.strip()]

    @property
    def registered_name(self) -> str:
        """``refracture-1y version 3``, or the model URI when it is not from the registry."""
        name = self.model.bundle.registered_model
        if self.model.uri.startswith("models:/") and name:
            return f"{name} version {self.model.version}"
        return f"{self.model.uri} (run {self.model.version})"


def make_view(
    model: ScoringModel,
    row: pd.Series,
    again: pd.Series,
    inputs: pd.Series,
    measured: Remeasured | None,
) -> PatientView:
    """The view of a scored patient: ``row`` from the scores file, ``again`` the same row
    recomputed with contributions (:func:`refracture.outputs.measure.rescore`), ``inputs``
    the model inputs."""
    bundle = model.bundle
    contributions = {
        t: float(again[f"contrib_{t}"]) for t in bundle.terms if f"contrib_{t}" in again.index
    }
    reference = float(bundle.pipeline.contribution_baseline) if contributions else math.nan
    names = [*bundle.covariates.input_columns, *bundle.covariates.imaging]
    values = {c: inputs[c] for c in dict.fromkeys(names) if c in inputs.index}
    vertebrae = _vertebrae(measured) if measured is not None else []
    return PatientView(model, row, values, contributions, reference, vertebrae, measured)


def _vertebrae(measured: Remeasured) -> list[Vertebra]:
    result = measured.result
    by_level: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in result.vertebrae:
        by_level.setdefault(rec["level"], {})[rec["map"]] = rec
    out = []
    for level, maps in by_level.items():
        first = next(iter(maps.values()))
        out.append(
            Vertebra(
                level=level,
                treated=bool(first["treated"]),
                fractured=bool(first["fractured"]),
                mean={m: float(maps[m]["mean"]) for m in MAPS if m in maps},
                n={m: int(maps[m]["n"]) for m in MAPS if m in maps},
                morph={
                    k: float(result.features.get(f"morph_{k}_{level}", math.nan)) for k in MEASURES
                },
            )
        )
    return out


def cohort_range(model: ScoringModel, column: str) -> tuple[float, float] | None:
    """The 1st-99th percentile of ``column`` among the model's development patients, or None.

    The bundle keeps that range widened by a tenth of its span on each side (the range beyond
    which scoring warns of extrapolation, :func:`refracture.study.packaging.training_ranges`):
    with the span s, the stored range is (lo - s/10, hi + s/10), so s is the stored span / 1.2.
    Written by hand: nothing else stores the cohort's own range.
    """
    stored = model.bundle.training_range.get(column)
    if stored is None:
        return None
    lo, hi = stored
    pad = (hi - lo) / 12.0
    return lo + pad, hi - pad
