"""Per-vertebra PDFF/R2* features: manifest -> volumes -> ROIs -> feature tables.

Modules, in the order data flows: :mod:`~refracture.features.manifest` (the image manifest),
:mod:`~refracture.features.patient` (one patient), :mod:`~refracture.features.cache` (the
per-patient cache), :mod:`~refracture.features.cohort` (a batch, in parallel when asked, units
decided per site), :mod:`~refracture.features.schema` (column names and output tables) and
:mod:`~refracture.features.findings` (the QC findings a score row carries).
"""

from refracture.features.cohort import extract_cohort, iter_extract
from refracture.features.findings import QCFinding, qc_findings, split_findings
from refracture.features.manifest import read_manifest, validate_manifest
from refracture.features.patient import extract_patient, finish_patient, prepare_patient
from refracture.features.schema import (
    FEATURE_VERSION,
    GROUPS,
    MAPS,
    QC_COLUMNS,
    SCANNER_COLUMNS,
    ExtractionResult,
    PatientResult,
)

__all__ = [
    "FEATURE_VERSION",
    "GROUPS",
    "MAPS",
    "QC_COLUMNS",
    "SCANNER_COLUMNS",
    "ExtractionResult",
    "PatientResult",
    "QCFinding",
    "extract_cohort",
    "extract_patient",
    "finish_patient",
    "iter_extract",
    "prepare_patient",
    "qc_findings",
    "split_findings",
    "read_manifest",
    "validate_manifest",
]
