"""The analysis of a configured study: read the clinical table, measure the images, analyse.

:func:`analyse_study` is what ``refracture analyse --config`` runs; the statistics themselves
are in :func:`refracture.analysis.run_analysis`, which takes tables and knows no config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.analysis.runner import AnalysisResult, Progress, run_analysis
from refracture.config import RunConfig
from refracture.errors import InputError
from refracture.files import read_table

__all__ = ["StudyColumns", "analyse_study", "read_clinical_table"]


@dataclass(frozen=True)
class StudyColumns:
    """The clinical columns the analysis needs, by role (a study's own names)."""

    tscore: str = "bmd_tscore"
    age: str | None = "age"
    sex: str | None = "sex"
    bmi: str | None = "bmi"
    site: str | None = "site"


def read_clinical_table(path: str | Path, id_column: str = "patient_id") -> pd.DataFrame:
    """The clinical table (CSV or Parquet); IDs of a CSV are read as text ('0042' stays)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("clinical table not found", file=path, key="data.clinical")
    kwargs: dict[str, Any] = {}
    if path.suffix.lower() != ".parquet":
        kwargs["dtype"] = {id_column: str}
    try:
        return read_table(path, **kwargs)
    except Exception as err:  # noqa: BLE001 - any parser error is a bad input file
        msg = " ".join(str(err).split())[:200]
        raise InputError(f"cannot read the clinical table ({msg})", file=path) from None


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
    from refracture.extract import extract_cohort

    if cfg.data.manifest is None:
        raise InputError(
            "the biomarker analysis measures PDFF/R2* from the images: set data.manifest",
            key="data.manifest",
        )
    if not Path(cfg.data.manifest).is_file():
        raise InputError("manifest not found", file=cfg.data.manifest, key="data.manifest")
    id_column = cfg.data.id_column
    clinical = read_clinical_table(cfg.data.clinical, id_column)
    for role, name in (("id", id_column), ("tscore", columns.tscore)):
        if name not in clinical.columns:
            what = "patient ID (data.id_column)" if role == "id" else "BMD T-score"
            raise InputError(
                f"the clinical table has no '{name}' column (the {what})", file=cfg.data.clinical
            )
    out = Path(out_dir)
    extraction = extract_cohort(
        cfg.data.manifest,
        cfg.extraction,
        out_dir=out / "extraction",
        jobs=cfg.validation.jobs,
        cache_dir=cfg.data.cache_dir,
        progress=(lambda d, t: progress("extracting features", d, t)) if progress else False,
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
        out_dir=out,
        progress=progress,
        notes=notes,
    )
    result.files.update({f"extraction_{k}": Path(v) for k, v in extraction.files.items()})
    return result
