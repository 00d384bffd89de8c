"""One check of every input, before any work: config, clinical table, manifest, image headers.

``refracture check`` prints it, ``train`` and ``analyse`` run it first and refuse with every
problem at once (``check.csv``: patient, file, column, value, problem, what to do). Modules:
:mod:`~refracture.checks.problems` (the table), :mod:`~refracture.checks.clinical`,
:mod:`~refracture.checks.manifest` and :mod:`~refracture.checks.images` (header only),
:mod:`~refracture.checks.study` (all of them for a run config) and
:mod:`~refracture.checks.extraction` (what only the measured images tell training).
Nothing here imports the models, MLflow or plotting: a check answers in seconds.
"""

from refracture.checks.extraction import extraction_problems
from refracture.checks.problems import CHECK_COLUMNS, CheckReport, Problem
from refracture.checks.study import check_config_file, check_study

__all__ = [
    "CHECK_COLUMNS",
    "CheckReport",
    "Problem",
    "check_config_file",
    "check_study",
    "extraction_problems",
]
