"""Per-vertebra PDFF/R2* features: manifest -> volumes -> ROIs -> feature tables.

Modules, in the order data flows: :mod:`~refracture.features.manifest` (the image manifest),
:mod:`~refracture.features.patient` (one patient), :mod:`~refracture.features.cache` (the
per-patient cache), :mod:`~refracture.features.cohort` (a batch, in parallel when asked, units
decided per site), :mod:`~refracture.features.schema` (column names and output tables) and
:mod:`~refracture.features.findings` (the QC findings a score row carries).

The names below are imported on first use, so reading a manifest does not import the image
readers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "extract_cohort": "refracture.features.cohort",
    "iter_extract": "refracture.features.cohort",
    "QCFinding": "refracture.features.findings",
    "qc_findings": "refracture.features.findings",
    "split_findings": "refracture.features.findings",
    "read_manifest": "refracture.features.manifest",
    "validate_manifest": "refracture.features.manifest",
    "extract_patient": "refracture.features.patient",
    "finish_patient": "refracture.features.patient",
    "prepare_patient": "refracture.features.patient",
    "FEATURE_VERSION": "refracture.features.schema",
    "GROUPS": "refracture.features.schema",
    "MAPS": "refracture.features.schema",
    "QC_COLUMNS": "refracture.features.schema",
    "SCANNER_COLUMNS": "refracture.features.schema",
    "ExtractionResult": "refracture.features.schema",
    "PatientResult": "refracture.features.schema",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'refracture.features' has no attribute {name!r}")
