"""``refracture index``: a manifest from a PACS or CD export."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from refracture.cli.app import PSEUDONYMISE, app, console, handle_errors, out


@app.command()
@handle_errors
def index(
    dicom_root: Path = typer.Argument(
        ...,
        help="The export: a folder tree of DICOM files (any names, any nesting) or a DICOMDIR.",
        show_default=False,
    ),
    manifest: Path = typer.Option(
        ..., "--out", help="Manifest CSV to write (index.csv goes beside it)."
    ),
    clinical: Path | None = typer.Option(
        None,
        "--clinical",
        help="Clinical table (CSV/Parquet): patient_id and optionally procedure_date (picks "
        "the exam before it), site, treated_levels, fractured_levels, dicom_patient_id (the "
        "export's PatientID of each patient).",
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="Folder of label maps: <patient_id>.nii.gz (or .nrrd/.mha, or <patient_id>/labels.*) "
        "or DICOM SEG files; DICOM SEG inside the export are paired without it.",
    ),
    date_column: str = typer.Option(
        "procedure_date", "--date-column", help="Clinical column with the procedure date."
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Processes reading headers."),
    pseudonymise: bool = PSEUDONYMISE,
) -> None:
    """Build the manifest from a PACS/CD export, reading DICOM headers only.

    Recognises the fat fraction (PDFF) and R2*/T2* map series of each exam by vendor rules (GE
    IDEAL IQ, Siemens q-Dixon/LiverLab, Philips mDIXON Quant, Canon), picks one exam per
    patient, pairs a label map, and writes the manifest and index.csv (every series seen, its
    role, or why it was not used). Run it again after new files arrive: only they are read,
    and rows already in the manifest are kept. Exit code 1 when some patients got no row (see
    index.csv), 2 on a bad input. See docs/data.md.
    """
    from refracture.cli.terminal import StageProgress
    from refracture.imaging.dicom.index import build_index
    from refracture.privacy import Pseudonymiser

    with StageProgress(console) as progress:
        result = build_index(
            dicom_root,
            manifest,
            clinical=clinical,
            labels=labels,
            pseudonymiser=Pseudonymiser.from_env() if pseudonymise else None,
            date_column=date_column,
            jobs=jobs,
            progress=progress,
        )
    reused = f", {result.n_reused} unchanged since the last run" if result.n_reused else ""
    lines = [
        f"indexed {result.n_files} files ({result.n_read} read{reused}, {result.n_not_dicom} "
        "not DICOM images)",
        f"manifest: {result.n_rows_new} new rows, {result.n_rows_kept} kept, "
        f"{len(result.listed)} patients without a row",
        f"  manifest: {result.manifest}",
        f"  index:    {result.index_csv}",
    ]
    if result.n_clinical_without_images:
        lines.append(
            f"  {result.n_clinical_without_images} patients of the clinical table have no images "
            "in the export"
        )
    out.print("\n".join(lines), markup=False, highlight=False)
    if result.listed:
        for pid, reason in list(result.listed.items())[:5]:
            console.print(
                f"[yellow]no row[/] patient {escape(pid)}: {escape(reason)}",
                highlight=False,
                soft_wrap=True,
            )
        if len(result.listed) > 5:
            console.print(f"... and {len(result.listed) - 5} more in index.csv", highlight=False)
        raise typer.Exit(1)
