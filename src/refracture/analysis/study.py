"""The analysis of a configured study: read the clinical table, measure the images, analyse.

:func:`analyse_study` is what ``refracture analyse --config`` runs; the statistics themselves
are in :func:`refracture.analysis.run_analysis`, which takes tables and knows no config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from refracture.analysis.runner import AnalysisResult, Progress, run_analysis
from refracture.config import RunConfig
from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.tables import read_patient_table

__all__ = ["StudyColumns", "analyse_study", "read_clinical_table"]


@dataclass(frozen=True)
class StudyColumns:
    """The clinical columns the analysis needs, by role (a study's own names); None: the
    config's ``analysis`` section decides."""

    tscore: str | None = None
    age: str | None = None
    sex: str | None = None
    bmi: str | None = None
    site: str | None = None

    def resolved(self, cfg: RunConfig) -> StudyColumns:
        a = cfg.analysis
        return StudyColumns(
            tscore=self.tscore or a.tscore,
            age=self.age or a.age,
            sex=self.sex or a.sex,
            bmi=self.bmi or a.bmi,
            site=self.site or a.site,
        )


def read_clinical_table(cfg: RunConfig) -> pd.DataFrame:
    """The clinical table, its ID column (``data.id_column``) renamed to ``patient_id``."""
    return read_patient_table(cfg.data.clinical, "clinical table", id_column=cfg.data.id_column)


def analyse_study(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    columns: StudyColumns = StudyColumns(),
    progress: Progress | None = None,
) -> AnalysisResult:
    """Measure the study's images (reusing the feature cache) and run the biomarker analysis.

    Writes the extraction tables to ``out_dir/extraction`` and the analysis (associations.csv,
    plots/, biomarkers.html) to ``out_dir``. Patients whose images failed are left out with a
    note; the run config's ``data.manifest`` is required.
    """
    from refracture.features import extract_cohort

    if cfg.data.manifest is None:
        raise InputError(
            "the biomarker analysis measures PDFF/R2* from the images: set data.manifest",
            key="data.manifest",
        )
    if not Path(cfg.data.manifest).is_file():
        raise InputError("manifest not found", file=cfg.data.manifest, key="data.manifest")
    columns = columns.resolved(cfg)
    if columns.tscore is None:
        raise InputError(
            "the analysis needs the BMD T-score column: set analysis.tscore in the config "
            "(or give --tscore)",
            key="analysis.tscore",
        )
    id_column = PATIENT_ID
    clinical = read_clinical_table(cfg)
    if columns.tscore not in clinical.columns:
        raise InputError(
            f"the clinical table has no '{columns.tscore}' column (the BMD T-score)",
            file=cfg.data.clinical,
            key="analysis.tscore",
        )
    out = Path(out_dir)
    extraction = extract_cohort(
        cfg.data.manifest,
        cfg.extraction,
        out_dir=out / "extraction",
        jobs=cfg.validation.jobs,
        cache_dir=cfg.data.cache_dir,
        progress=progress,
    )
    if extraction.features.empty:
        first = extraction.errors["message"].iloc[0] if len(extraction.errors) else "no patients"
        raise InputError(f"no patient's images could be measured (first error: {first})")
    notes = []
    if extraction.n_failed:
        notes.append(
            f"{extraction.n_failed} patients' images could not be measured and are left out "
            f"(reasons in {out / 'extraction' / 'errors.csv'})"
        )
    result = run_analysis(
        clinical,
        extraction.features,
        extraction.vertebrae,
        id_column=id_column,
        tscore=columns.tscore,
        age=columns.age,
        sex=columns.sex,
        bmi=columns.bmi,
        site=columns.site,
        batch=cfg.analysis.batch,
        osteoporosis_threshold=cfg.analysis.osteoporosis_tscore,
        out_dir=out,
        progress=progress,
        notes=notes,
    )
    result.files.update({f"extraction_{k}": Path(v) for k, v in extraction.files.items()})
    return result
