"""The biomarker analysis (``refracture analyse``): how marrow fat (PDFF) and R2* relate to
bone mass, age, sex and BMI, per patient and per vertebra.

:func:`run_analysis` takes the clinical table, ``features.parquet`` and optionally
``vertebrae.parquet`` and returns an :class:`AnalysisResult`; with ``out_dir`` it writes
``associations.csv``, ``plots/*.png`` and ``biomarkers.html``. :func:`analysis_section` gives
the same content as plain data for the study report. The statistics are in
:mod:`.correlation`, :mod:`.roc` and :mod:`.mixed`; docs/analysis.md defines each one.
"""

from __future__ import annotations

from refracture.analysis.association import COLUMNS, Association, Estimate, association_frame
from refracture.analysis.correlation import (
    covariate_design,
    mean_difference,
    partial_pearson,
    pearson,
    point_biserial,
    spearman,
)
from refracture.analysis.mixed import MixedModelResult, fit_random_intercept
from refracture.analysis.page import analysis_section, render_page, write_outputs
from refracture.analysis.roc import AucResult, delong_auc, roc_points
from refracture.analysis.runner import (
    DEFAULT_DIRECTIONS,
    AnalysisResult,
    default_markers,
    run_analysis,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_DIRECTIONS",
    "AnalysisResult",
    "Association",
    "AucResult",
    "Estimate",
    "MixedModelResult",
    "analysis_section",
    "association_frame",
    "covariate_design",
    "default_markers",
    "delong_auc",
    "fit_random_intercept",
    "mean_difference",
    "partial_pearson",
    "pearson",
    "point_biserial",
    "render_page",
    "roc_points",
    "run_analysis",
    "spearman",
    "write_outputs",
]
