"""How often each interval method contained the truth in simulation, for the report's notes.

``coverage.json`` beside this module is written by ``scripts/coverage_optcorr.py --write``:
per model, metric and estimator (``optcorr``, ``632plus``, ``loo``), the share of simulated
development cohorts whose 95 % interval contained the expected performance of the modelling
strategy, with the settings of the simulation. The study report prints the measured coverage
next to an interval whose method covered less than :data:`LOW_COVERAGE` of the time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["LOW_COVERAGE", "coverage_note", "coverage_table", "measured_coverage"]

#: Below this measured coverage of a nominal 95 % interval, the report says so.
LOW_COVERAGE = 0.90
COVERAGE_FILE = Path(__file__).with_name("coverage.json")


@functools.cache
def coverage_table() -> dict[str, Any]:
    """The measured coverage (empty when no simulation has been recorded)."""
    if not COVERAGE_FILE.is_file():
        return {}
    return json.loads(COVERAGE_FILE.read_text(encoding="utf-8"))


def measured_coverage(model: str, metric: str, estimator: str) -> float | None:
    """Coverage of the expected performance by the 95 % interval of ``metric``'s ``estimator``
    for ``model`` in the recorded simulation, or None when not measured (metric names without
    the horizon: ``auc`` for ``auc_365d``)."""
    base = metric.rsplit("_", 1)[0] if metric[-1] == "d" and metric[-2].isdigit() else metric
    entry = coverage_table().get("coverage", {}).get(model, {}).get(base, {}).get(estimator)
    return None if entry is None else float(entry)


def coverage_note(model: str, metric: str, estimator: str) -> str:
    """``"covered 80% in simulation"`` when the measured coverage is below
    :data:`LOW_COVERAGE`, else ``""``."""
    c = measured_coverage(model, metric, estimator)
    if c is None or c >= LOW_COVERAGE:
        return ""
    return f"interval covered the truth in {c:.0%} of simulated cohorts (nominal 95%)"
