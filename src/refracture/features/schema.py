"""What extraction produces: column names, per-patient results and the output tables.

Feature names are ``{map}_{stat}_{level|group}``; per (level, map) voxel counts go to
vertebrae.parquet; ``qc_*`` columns describe how each patient was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.ids import PATIENT_ID
from refracture.imaging.stats import PRODUCT_STATS
from refracture.levels import sort_levels

__all__ = [
    "COUNT_COLUMNS",
    "FEATURE_VERSION",
    "GROUPS",
    "MAPS",
    "QC_COLUMNS",
    "ExtractionResult",
    "PatientResult",
    "features_frame",
    "vertebrae_frame",
]

#: Bump when a change alters feature values, so cached results are recomputed.
FEATURE_VERSION = "1"
MAPS = ("pdff", "r2star")
GROUPS = ("index", "adjacent", "l1l4", "normal")
#: Per (level, map) voxel counts stored in vertebrae.parquet beside the statistics.
COUNT_COLUMNS = ("n_labelled", "n_roi", "n_cement", "n_nonfinite", "n_out_of_range")
#: qc columns of every patient, in output order.
QC_COLUMNS = (
    "qc_levels",
    "qc_n_levels",
    "qc_missing_levels",
    "qc_unknown_labels",
    "qc_small_roi",
    "qc_labels_resampled",
    "qc_r2star_resampled",
    "qc_pdff_units",
    "qc_pdff_units_source",
    "qc_pdff_converted",
    "qc_r2star_units",
    "qc_r2star_units_source",
    "qc_r2star_converted",
    "qc_cement_voxels_excluded",
    "qc_cement_levels",
    "qc_nonfinite_voxels",
    "qc_out_of_range_voxels",
    "qc_roi_voxels",
    "qc_vendor",
    "qc_field_strength_t",
)


@dataclass
class PatientResult:
    """Features of one patient: ``features`` maps ``{map}_{stat}_{level|group}`` to values,
    ``vertebrae`` holds one dict per (level, map), ``qc`` the ``qc_*`` columns."""

    patient_id: str
    features: dict[str, float]
    vertebrae: list[dict[str, Any]]
    qc: dict[str, Any]
    cached: bool = False


@dataclass
class ExtractionResult:
    """What :func:`extract_cohort` produced (DataFrames in manifest order)."""

    features: pd.DataFrame
    vertebrae: pd.DataFrame
    qc: pd.DataFrame
    errors: pd.DataFrame
    n_computed: int
    n_cached: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.errors)


def features_frame(results: list[PatientResult], sites: list[str]) -> pd.DataFrame:
    levels = sort_levels(sorted({v["level"] for r in results for v in r.vertebrae}))
    columns = [PATIENT_ID, "site"]
    columns += [f"{m}_{s}_{lv}" for lv in levels for m in MAPS for s in PRODUCT_STATS]
    columns += [f"{m}_{s}_{g}" for g in GROUPS for m in MAPS for s in PRODUCT_STATS]
    columns += list(QC_COLUMNS)
    records = [
        {PATIENT_ID: r.patient_id, "site": site, **r.features, **r.qc}
        for r, site in zip(results, sites, strict=True)
    ]
    df = pd.DataFrame.from_records(records, columns=columns)
    feature_cols = columns[2 : len(columns) - len(QC_COLUMNS)]
    df[feature_cols] = df[feature_cols].astype(np.float64)
    return df


def vertebrae_frame(results: list[PatientResult]) -> pd.DataFrame:
    columns = [
        PATIENT_ID,
        "level",
        "map",
        *PRODUCT_STATS,
        *COUNT_COLUMNS,
        "treated",
        "fractured",
        "small_roi",
    ]
    records = [{PATIENT_ID: r.patient_id, **v} for r in results for v in r.vertebrae]
    df = pd.DataFrame.from_records(records, columns=columns)
    for col in ("n", *COUNT_COLUMNS):
        df[col] = df[col].astype(np.int64)
    for col in ("treated", "fractured", "small_roi"):
        df[col] = df[col].astype(bool)
    return df
