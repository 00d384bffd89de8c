"""One patient measured again for its outputs, by the functions ``score`` measured it with.

A scoring run keeps only the score rows. The outputs need more of a patient: every vertebra's
values, the QC picture and, for a DICOM SEG, the voxels each value came from. So the patient's
images are read and measured again here with the model's extraction settings, the units the
model pins for its site and the same scanner key (:func:`remeasure`), and the score row is
recomputed from the new measurement (:func:`rescore`). Measurement is deterministic, so the
risk equals the batch's; when it does not (an image changed after scoring), the patient's
outputs are refused rather than written beside a score they do not explain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.features.measured import MeasuredVoxels, measured_voxels
from refracture.features.patient import Prepared, decide_alone, finish_patient, prepare_patient
from refracture.features.schema import PatientResult
from refracture.imaging.metadata import scanner_key_from_env
from refracture.scoring.batch import fill_measured, measured_row
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import predict_frame, risk_column

__all__ = ["Remeasured", "remeasure", "rescore", "same_risk"]


@dataclass
class Remeasured:
    """A patient measured again: the prepared images (grids, ROIs), the voxels measured per
    map, the extraction result (features, per-vertebra rows, QC) and the QC picture's path."""

    prep: Prepared
    voxels: MeasuredVoxels
    result: PatientResult
    qc_png: Path | None


def remeasure(record: dict[str, Any], model: ScoringModel, *, qc_png: Path | None) -> Remeasured:
    """Measure one validated manifest record as ``score`` did (raises the extraction's
    :class:`~refracture.errors.RefractureError` naming the patient and file)."""
    config = model.bundle.extraction
    if config is None:
        raise ValueError("a clinical-only model measures no images")
    prep = prepare_patient(record, config)
    units = decide_alone(prep.evidence, config, model.bundle.site_units, row=record)
    result = finish_patient(prep, units, config, qc_png=qc_png, device_key=scanner_key_from_env())
    return Remeasured(prep, measured_voxels(prep, units, config), result, qc_png)


def rescore(
    model: ScoringModel,
    inputs: pd.DataFrame,
    record: dict[str, Any] | None,
    measured: Remeasured | None,
    manifest_dir: Path | None,
) -> tuple[pd.Series, pd.Series]:
    """The patient's score row recomputed, with per-term contributions when the model has
    them, and the model inputs it was computed from.

    ``inputs``: the patient's input row (one row of the scoring input); for an imaging model
    scored from a manifest, its imaging features come from ``measured`` exactly as
    :func:`refracture.scoring.batch.measured_row` and :func:`~.fill_measured` fill them in.
    """
    bundle = model.bundle
    rows = inputs
    if measured is not None and record is not None:
        imaging = list(model.inputs.imaging)
        scanner = [c for c in model.inputs.batch if c != "site"]
        config = bundle.extraction
        qc_errors = [str(k) for k in config.qc_errors] if config is not None else []
        m = measured_row(
            (0, measured.result, None),
            record,
            imaging,
            scanner=scanner,
            qc_errors=qc_errors,
            manifest_dir=manifest_dir,
        )
        rows = fill_measured(inputs, [m], imaging, scanner)
    explain = bool(bundle.estimator.supports_contributions)
    pred = predict_frame(bundle, rows.reset_index(drop=True), explain=explain)
    return pred.iloc[0], rows.iloc[0]


def same_risk(row: pd.Series, again: pd.Series, horizon_days: float) -> bool:
    """Whether a recomputed row gives the score row's risk (to 1e-9: the same arithmetic on
    the same numbers, in a batch of one row instead of a chunk)."""
    col = risk_column(horizon_days)
    a, b = float(row[col]), float(again[col])
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12))
