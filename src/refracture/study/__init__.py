"""A study's training run: data set -> candidates -> selection -> MLflow -> registry.

:func:`train` is ``refracture train``; it is a config-driven wrapper of
:func:`refracture.validation.validate`, run for every model and feature set.
"""

from refracture.results import Candidate, TrainResult
from refracture.study.run import train, validate_candidate
from refracture.study.selection import select, selection_score

__all__ = ["Candidate", "TrainResult", "select", "selection_score", "train", "validate_candidate"]
