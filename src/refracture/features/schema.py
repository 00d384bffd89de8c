"""What extraction produces: column names, per-patient results and the output tables.

Feature names are ``{map}_{stat}_{level|group}`` and ``morph_{measure}_{level}`` (with the
patient aggregates ``morph_genant_max``, ``morph_n_deformed``, ``morph_wedge_angle_deg_index``);
per (level, map) voxel counts go to vertebrae.parquet; ``scanner_*`` columns say which scanner
made the maps and ``qc_*`` columns how each patient was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.ids import PATIENT_ID
from refracture.imaging.label_qc import QC_FIELDS as LABEL_QC_FIELDS
from refracture.imaging.metadata import SCANNER_COLUMNS
from refracture.imaging.morphometry import AGGREGATES as MORPH_AGGREGATES
from refracture.imaging.morphometry import MEASURES as MORPH_MEASURES
from refracture.imaging.stats import PRODUCT_STATS
from refracture.levels import sort_levels
from refracture.maps import MAPS

__all__ = [
    "COUNT_COLUMNS",
    "FEATURE_VERSION",
    "GROUPS",
    "MAPS",
    "QC_COLUMNS",
    "SCANNER_COLUMNS",
    "ExtractionResult",
    "PatientResult",
    "features_frame",
    "vertebrae_frame",
]

#: Bump when a change alters feature values, so cached results are recomputed.
FEATURE_VERSION = "2"
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
    "qc_pdff_units_note",
    "qc_r2star_units",
    "qc_r2star_units_source",
    "qc_r2star_converted",
    "qc_r2star_units_note",
    "qc_cement_voxels_excluded",
    "qc_cement_levels",
    "qc_treated_no_cement",
    "qc_adjacent_one_sided",
    "qc_nonfinite_voxels",
    "qc_out_of_range_voxels",
    "qc_roi_voxels",
    "qc_misregistration",
    "qc_label_fit_shift_mm",
    "qc_label_fit_gain",
    *LABEL_QC_FIELDS,
    "qc_morph_unmeasured",
    "qc_morph_unmeasured_reason",
    "qc_morph_posterior_elements",
)


@dataclass
class PatientResult:
    """Features of one patient: ``features`` maps ``{map}_{stat}_{level|group}`` and
    ``morph_*`` names to values, ``vertebrae`` holds one dict per (level, map), ``qc`` the
    ``qc_*`` columns, ``scanner`` the ``scanner_*`` columns."""

    patient_id: str
    features: dict[str, float]
    vertebrae: list[dict[str, Any]]
    qc: dict[str, Any]
    scanner: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


@dataclass
class ExtractionResult:
    """What :func:`extract_cohort` produced (DataFrames in manifest order).

    ``site_units``: per site and map, the unit all of the site's patients were read in (what a
    trained model pins for scoring new patients of the site), e.g.
    ``{"site_1": {"pdff": "percent", "r2star": "per_s"}}``.
    """

    features: pd.DataFrame
    vertebrae: pd.DataFrame
    qc: pd.DataFrame
    errors: pd.DataFrame
    n_computed: int
    n_cached: int
    files: dict[str, Path] = field(default_factory=dict)
    site_units: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.errors)


def morph_columns(results: list[PatientResult]) -> list[str]:
    """``morph_{measure}_{level}`` for every level measured in any patient, then the
    aggregates."""
    prefix = {f"morph_{m}_": m for m in MORPH_MEASURES}
    levels = set()
    for r in results:
        for name in r.features:
            for p in prefix:
                if name.startswith(p):
                    levels.add(name[len(p) :])
    ordered = sort_levels(sorted(levels))
    return [f"morph_{m}_{lv}" for lv in ordered for m in MORPH_MEASURES] + list(MORPH_AGGREGATES)


def features_frame(results: list[PatientResult], sites: list[str]) -> pd.DataFrame:
    """features.parquet: patient_id, site, the map features, the morphometry, the scanner
    columns, then the qc columns."""
    levels = sort_levels(sorted({v["level"] for r in results for v in r.vertebrae}))
    columns = [PATIENT_ID, "site"]
    columns += [f"{m}_{s}_{lv}" for lv in levels for m in MAPS for s in PRODUCT_STATS]
    columns += [f"{m}_{s}_{g}" for g in GROUPS for m in MAPS for s in PRODUCT_STATS]
    columns += morph_columns(results)
    feature_cols = columns[2:]
    columns += [*SCANNER_COLUMNS, *QC_COLUMNS]
    records = [
        {PATIENT_ID: r.patient_id, "site": site, **r.features, **r.scanner, **r.qc}
        for r, site in zip(results, sites, strict=True)
    ]
    df = pd.DataFrame.from_records(records, columns=columns)
    df[feature_cols] = df[feature_cols].astype(np.float64)
    df["scanner_field_strength_t"] = df["scanner_field_strength_t"].astype(np.float64)
    for c in ("scanner_vendor", "scanner_id"):
        df[c] = df[c].fillna("").astype(str)
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
