"""refracture: imaging-biomarker risk models for vertebral re-fracture after PVP/PKP.

Data flows one way, one package per stage: manifest -> volumes (:mod:`refracture.imaging`) ->
ROI features (:mod:`refracture.features`) -> data set (:mod:`refracture.dataset`) -> model
(:mod:`refracture.models`) -> metrics (:mod:`refracture.validation`) -> MLflow
(:mod:`refracture.study`) -> scoring (:mod:`refracture.scoring`). The command line
(:mod:`refracture.cli`) only parses arguments and calls these.

The names below are the Python API (docs/api.md); they (and ``__version__``) are imported on
first use, so ``import refracture`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "Volume": "refracture.imaging.volume",
    "load_volume": "refracture.imaging.io",
    "read_manifest": "refracture.features.manifest",
    "extract_patient": "refracture.features.patient",
    "extract_cohort": "refracture.features.cohort",
    "Dataset": "refracture.dataset",
    "assemble": "refracture.dataset",
    "make_outcome": "refracture.models.outcome",
    "make_pipeline": "refracture.models.pipeline",
    "MODELS": "refracture.models.pipeline",
    "RiskPipeline": "refracture.models.pipeline",
    "validate": "refracture.validation.validate",
    "ValidationResult": "refracture.validation.validate",
    "added_value": "refracture.validation.added_value",
    "compute_metrics": "refracture.validation.metrics",
    "ModelBundle": "refracture.bundle",
    "RunConfig": "refracture.config",
    "load_config": "refracture.config",
    "train": "refracture.study.run",
    "load_model": "refracture.scoring.model",
    "predict_frame": "refracture.scoring.rows",
    "score": "refracture.scoring.batch",
    "write_cohort": "refracture.synth",
}

__all__ = ["__version__", *sorted(_API)]


def _version() -> str:
    """The installed distribution's version (importlib.metadata is read only when asked: it
    costs a command's start-up a tenth of a second)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refracture")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = _version()
        return globals()[name]
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'refracture' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
