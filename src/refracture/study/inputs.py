"""A training run's inputs, checked before any MLflow run exists.

:func:`prepare_inputs` runs the input check (:func:`refracture.checks.check_study`), measures
the images into a staging folder, checks what only the measured images tell (images that
could not be measured, QC errors, unit mistakes: what scoring would refuse) and assembles the
data set. Anything wrong stops here with every problem listed (``check.csv`` beside the run
folders), so a refused run leaves no MLflow run, logged artifact or registered version.
Patients are left out only on purpose: ``data.exclude``, or ``exclude_invalid`` (``train
--exclude-invalid``), each with its reason in the cohort flow.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.checks import CheckReport, check_study, extraction_problems
from refracture.config import RunConfig
from refracture.dataset import Dataset, assemble
from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.progress import Progress
from refracture.tables import read_patient_table

__all__ = ["StudyInputs", "prepare_inputs", "read_clinical", "runs_folder"]

STAGING_PREFIX = ".pending-"


def read_clinical(cfg: RunConfig) -> pd.DataFrame:
    """The study's clinical table, its ID column renamed to ``patient_id``."""
    return read_patient_table(
        cfg.data.clinical,
        "clinical table",
        id_column=cfg.data.id_column,
        text_columns=list(cfg.covariates.categorical),
    )


def runs_folder(store: Path) -> Path:
    """``refracture-runs`` beside the MLflow store: run folders and the last ``check.csv``."""
    return store / "refracture-runs"


@dataclass
class StudyInputs:
    """What training fits on, and where the measured images wait for their run folder."""

    clinical: pd.DataFrame
    dataset: Dataset
    features: pd.DataFrame | None = None
    extraction_errors: pd.DataFrame | None = None
    extraction: Any = None
    manifest: pd.DataFrame | None = None
    staging: Path | None = None
    notes: list[str] = field(default_factory=list)

    def discard(self) -> None:
        """Remove the staged extraction (the run did not start); the cache keeps it."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def move_to(self, run_dir: Path) -> None:
        """Move the staged extraction into the run folder (named by the MLflow run)."""
        if self.staging is None:
            return
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging.rename(run_dir)
        if self.extraction is not None:
            self.extraction.files = {
                k: run_dir / Path(v).relative_to(self.staging)
                for k, v in self.extraction.files.items()
            }
        self.staging = None


def _refuse(report: CheckReport, store: Path, pseudonymiser: Any = None) -> None:
    """Write check.csv and refuse; with a pseudonymiser, the IDs that are not already
    pseudonyms are replaced (no site ID reaches a file)."""
    if report.problems:
        if pseudonymiser is not None:
            report = report.pseudonymised(pseudonymiser)
        csv = report.write(runs_folder(store) / "check.csv")
        report.raise_problems("training", csv)


def _checked(
    cfg: RunConfig, exclude_invalid: bool, store: Path, progress, pseudonymiser
) -> CheckReport:
    report = check_study(cfg, progress=progress)
    if exclude_invalid:
        report = report.exclude_patients()
    _refuse(report, store, pseudonymiser)
    return report


def _measure(
    cfg: RunConfig, excluded: dict[str, str], staging: Path, progress, pseudonymiser, pictures
) -> Any:
    from refracture.features import extract_cohort
    from refracture.features.manifest import read_manifest

    manifest = read_manifest(cfg.data.manifest)  # type: ignore[arg-type]
    manifest = manifest[~manifest[PATIENT_ID].isin(list(excluded))]
    if manifest.empty:
        raise InputError("no patient left to measure: every manifest patient is excluded")
    result = extract_cohort(
        manifest,
        cfg.extraction,
        out_dir=staging / "extraction",
        jobs=cfg.validation.jobs,
        cache_dir=cfg.data.cache_dir,
        qc_png=pictures,  # the QC pictures are pages of the report
        progress=progress,
        pseudonymiser=pseudonymiser,
    )
    if result.features.empty:
        first = result.errors["message"].iloc[0] if len(result.errors) else "no patients"
        raise InputError(f"no patient's images could be measured (first error: {first})")
    kept = pseudonymiser.table(manifest) if pseudonymiser is not None else manifest
    return result, kept


def prepare_inputs(
    cfg: RunConfig,
    *,
    store: Path,
    progress: Progress | None = None,
    pseudonymiser: Any = None,
    exclude_invalid: bool = False,
    pictures: bool = True,
) -> StudyInputs:
    """Check, measure and assemble (module docstring); ``pictures``: draw the QC pictures
    (for the report). Raises a :class:`~refracture.errors.CheckError` listing every problem,
    or InputError."""
    report = _checked(cfg, exclude_invalid, store, progress, pseudonymiser)
    excluded = dict(report.excluded)  # original IDs -> reason
    clinical = read_clinical(cfg)

    def hidden(ids: dict[str, str]) -> dict[str, str]:  # pseudonymised IDs and reasons
        if pseudonymiser is None:
            return ids
        return {pseudonymiser(p): pseudonymiser.scrub(r, ids) for p, r in ids.items()}

    if pseudonymiser is not None and PATIENT_ID in clinical:
        clinical = pseudonymiser.table(clinical)
    # Dataset-level refusals (too few events, a constant column) in seconds, before the images.
    assemble(clinical, None, cfg, clinical_source=cfg.data.clinical, exclude=hidden(excluded))
    inputs = StudyInputs(clinical=clinical, dataset=None, notes=list(report.notes))  # type: ignore[arg-type]
    exclude = hidden(excluded)
    if cfg.has_imaging:
        staging = runs_folder(store) / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        inputs.staging = staging
        try:
            extraction, inputs.manifest = _measure(
                cfg, excluded, staging, progress, pseudonymiser, pictures
            )
            found = extraction_problems(
                extraction.features, extraction.errors, cfg, str(cfg.data.manifest)
            )
            if exclude_invalid:
                found = found.exclude_patients()
                exclude |= found.excluded
            _refuse(found, store)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        inputs.extraction = extraction
        inputs.features, inputs.extraction_errors = extraction.features, extraction.errors
    inputs.dataset = assemble(
        clinical,
        inputs.features,
        cfg,
        clinical_source=cfg.data.clinical,
        features_source=cfg.data.manifest,
        manifest=inputs.manifest,
        exclude=exclude,
    )
    return inputs
