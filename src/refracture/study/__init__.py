"""A study's training run: data set -> candidates -> selection -> MLflow -> registry.

:func:`train` is ``refracture train``; it is a config-driven wrapper of
:func:`refracture.validation.validate`, run for every model and feature set.

The names below are imported on first use, so a light module of this package (drafting a
config for ``refracture init``) does not import the models, MLflow and the validation.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "Candidate": "refracture.results",
    "TrainResult": "refracture.results",
    "train": "refracture.study.run",
    "validate_candidate": "refracture.study.run",
    "select": "refracture.study.selection",
    "selection_score": "refracture.study.selection",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'refracture.study' has no attribute {name!r}")
