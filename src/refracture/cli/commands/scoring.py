"""Commands of a hospital data team: ``score``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from refracture.cli.app import (
    ENGINE,
    PSEUDONYMISE,
    RESUME_HINTS,
    SPARK_MASTER,
    app,
    console,
    handle_errors,
    out,
    spark_engine,
)


@app.command()
@handle_errors
def score(
    model: str = typer.Option(
        ...,
        "--model",
        help="MLflow model URI: models:/refracture-1y@champion, models:/NAME/VERSION, "
        "runs:/RUN_ID/model or a local model folder.",
    ),
    out_file: Path = typer.Option(..., "--out", help="Scores file: .csv or .parquet."),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest CSV: images are measured with the model's settings."
    ),
    clinical: Path | None = typer.Option(
        None, "--clinical", help="Clinical table (CSV/Parquet) with the covariates, by patient_id."
    ),
    features: Path | None = typer.Option(
        None,
        "--features",
        help="Features file (CSV/Parquet): patient_id, covariates and imaging features.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Keep finished rows of an earlier run of the same model version."
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Patients measured in parallel."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Add each term's contribution to the linear predictor (cox, logistic).",
    ),
    cache_dir: Path = typer.Option(
        Path(".refracture-cache"), "--cache-dir", help="Per-patient feature cache."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help="Rows per chunk, the unit of checkpointing and resuming (default 16 patients from "
        "images, 2048 rows otherwise).",
    ),
    id_column: str | None = typer.Option(
        None,
        "--id-column",
        help="Patient ID column of --clinical and --features (default: the one the model was "
        "trained with, data.id_column); the output calls it patient_id.",
    ),
    pseudonymise: bool = PSEUDONYMISE,
    engine: str = ENGINE,
    spark_master: str = SPARK_MASTER,
    dicom_sr: Path | None = typer.Option(
        None,
        "--dicom-sr",
        help="Folder for a DICOM SR (TID 1500) + SEG per patient whose maps are DICOM series, "
        "to send to the PACS.",
    ),
    fhir: Path | None = typer.Option(
        None, "--fhir", help="Folder for a FHIR R4 RiskAssessment (JSON) per patient."
    ),
    cards: Path | None = typer.Option(
        None, "--cards", help="Folder for a one-page risk card (HTML and PDF) per patient."
    ),
    fhir_system: str = typer.Option(
        "urn:refracture:patient_id",
        "--fhir-system",
        help="Identifier system (URI) of the FHIR subject: your hospital's patient ID namespace.",
    ),
) -> None:
    """Risk for new patients, one output row per input patient.

    From a manifest (plus --clinical) the images are measured with the extraction settings
    stored in the model; from --features the rows are scored directly. A patient who cannot be
    scored gets status=error and the reason; the others are scored. Exit code 0 when all were
    scored, 1 when some failed, 2 when nothing could start (bad model URI, input columns that do
    not match the model). See docs/scoring.md.

    --engine spark measures the images and scores on Spark executors (no --resume; see
    docs/deploy.md).

    --dicom-sr, --fhir and --cards write, after the scores, a DICOM SR + SEG, a FHIR
    RiskAssessment and a risk card per scored patient, with an index.csv in each folder.
    """
    if manifest is not None and jobs > 1 and engine == "local":
        from refracture.features.pool import warm

        warm()  # the workers' imports run on another core while the model loads
    from refracture.cli.terminal import StageProgress
    from refracture.errors import InputError
    from refracture.outputs import OutputOptions
    from refracture.scoring import score as run_score

    spark = spark_engine(engine)
    if spark:
        local_only = {"--resume": resume, "--explain": explain, "--chunk-size": chunk_size}
        for flag, value in local_only.items():
            if value:
                raise InputError(
                    f"{flag} is not available with --engine spark (Spark keeps no checkpoint "
                    "and scores through the registered model's predict); use --engine local"
                )
    outputs = OutputOptions(dicom_sr, fhir, cards, fhir_system)
    if outputs:  # refused before any patient when they cannot be written
        model = _outputs_model(model, outputs, tracking_uri, manifest, pseudonymise, out_file)
    options: dict[str, Any] = {
        "out": out_file,
        "manifest": manifest,
        "clinical": clinical,
        "features": features,
        "cache_dir": None if no_cache else cache_dir,
        "tracking_uri": tracking_uri,
        "pseudonymise": pseudonymise,
        "id_column": id_column,
    }
    with StageProgress(console) as progress:
        if spark:
            from refracture.engines import score_spark

            result = score_spark(model, progress=progress, master=spark_master, **options)
        else:
            result = run_score(
                model,
                resume=resume,
                jobs=jobs,
                explain=explain,
                chunk_size=chunk_size,
                progress=progress,
                **options,
            )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    n = len(result.scores)
    reused = f" ({result.n_reused} reused from an earlier run)" if result.n_reused else ""
    out.print(
        f"scored {n} patients with {result.model.uri} (version {result.model.version}, "
        f"{result.model.label}){reused}: {result.n_ok} ok / {result.n_error} error / "
        f"{result.n_warnings} with warnings\n  scores: {result.out}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    exit_code = result.exit_code
    if outputs:
        exit_code = max(exit_code, _write_outputs(result, outputs, jobs))
    if exit_code:
        failed = result.scores[result.scores["status"] == "error"]
        for row in failed.head(5).itertuples():
            console.print(
                f"[red]error[/] {escape(str(row.patient_id))}: {escape(str(row.error))}",
                highlight=False,
                soft_wrap=True,
            )
        if len(failed) > 5:
            console.print(
                f"... and {len(failed) - 5} more (status=error rows of {result.out.name})",
                highlight=False,
            )
        raise typer.Exit(exit_code)


def _outputs_model(
    uri: str,
    outputs: Any,
    tracking_uri: str | None,
    manifest: Path | None,
    pseudonymise: bool,
    out_file: Path,
) -> Any:
    """The model loaded once the outputs asked for are possible with it (exit 2 if not)."""
    from refracture.outputs import check_options
    from refracture.scoring import load_model

    check = {"manifest": manifest, "pseudonymise": pseudonymise, "out": out_file}
    check_options(outputs, None, **check)  # before the seconds of loading the model
    loaded = load_model(uri, tracking_uri)
    check_options(outputs, loaded, **check)
    return loaded


def _write_outputs(result: Any, outputs: Any, jobs: int) -> int:
    """Write the outputs of a finished scoring run and say where they went; the exit code."""
    from refracture.cli.terminal import StageProgress
    from refracture.outputs import write_outputs

    with StageProgress(console) as progress:
        done = write_outputs(result, result.data, outputs, jobs=jobs, progress=progress)
    names = {"dicom_sr": "DICOM SR + SEG", "fhir": "FHIR RiskAssessment", "cards": "risk cards"}
    for kind, folder in outputs.folders().items():
        counts = ", ".join(
            f"{done.count(kind, s)} {s}"
            for s in ("written", "skipped", "error")
            if done.count(kind, s)
        )
        out.print(
            f"  {names[kind]}: {folder}/ ({counts or 'nothing to write'})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    for note in done.notes:
        console.print(f"[red]error[/] {escape(note)}", highlight=False, soft_wrap=True)
    return done.exit_code


def _score_resume(command: Callable[..., str]) -> str:
    return f"the finished chunks are kept; resume with `{command('--resume')}`"


RESUME_HINTS["score"] = _score_resume
