"""What a training run produced: one :class:`Candidate` per model and feature set, and the
:class:`TrainResult` of the whole run (what the terminal summary and the study report read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.dataset import Dataset
from refracture.registry import AliasDecision
from refracture.validation import ValidationResult

__all__ = ["Candidate", "TrainResult", "selection_pool"]


@dataclass
class Candidate:
    """One model fitted and validated on one feature set."""

    model: str
    feature_set: str
    result: ValidationResult
    added: dict[str, float] | None = None
    run_id: str | None = None
    folder: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    #: Leave-one-site-out metrics without and with scanner harmonisation, side by side
    #: (:func:`refracture.study.harmonisation.per_site_harmonisation`); None when not run.
    per_site_harmonisation: pd.DataFrame | None = None
    #: Why each added-value measure or figure that is missing could not be computed
    #: (the metrics' own reasons are in ``result.reasons``).
    reasons: dict[str, str] = field(default_factory=dict)
    #: Per-site metrics of the validation predictions (:func:`refracture.report.per_site
    #: .per_site_metrics`), computed once; their random-effects meta-analysis
    #: (:func:`refracture.report.site_meta.site_meta`).
    per_site_metrics: pd.DataFrame | None = None
    site_meta: dict[str, Any] | None = None
    #: Run-level metrics logged with this candidate (``samplesize_*``, ``site_meta_*``).
    extra_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.feature_set})"


def selection_pool(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates the registered model is chosen from: the clinical+imaging ones (all of
    them when no candidate has imaging)."""
    return [c for c in candidates if c.feature_set == "clinical+imaging"] or candidates


@dataclass
class TrainResult:
    """A whole ``refracture train`` run."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    run_dir: Path
    candidates: list[Candidate]
    selected: Candidate
    selection_metric: str
    decision: AliasDecision
    model_uri: str
    dataset: Dataset
    flow: dict[str, Any]
    report: Path | None = None
    warnings: list[str] = field(default_factory=list)
    #: The marrow-fat / bone-mass analysis as a report section
    #: (:func:`refracture.analysis.analysis_section`); None when the run did not do it.
    biomarkers: dict[str, Any] | None = None
    #: Riley et al.'s minimum sample size per feature set and outcome
    #: (:func:`refracture.report.sample_size.riley_table`); None when not computed.
    sample_size: pd.DataFrame | None = None
