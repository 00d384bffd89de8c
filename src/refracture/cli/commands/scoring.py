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
) -> None:
    """Risk for new patients, one output row per input patient.

    From a manifest (plus --clinical) the images are measured with the extraction settings
    stored in the model; from --features the rows are scored directly. A patient who cannot be
    scored gets status=error and the reason; the others are scored. Exit code 0 when all were
    scored, 1 when some failed, 2 when nothing could start (bad model URI, input columns that do
    not match the model). See docs/scoring.md.

    --engine spark measures the images and scores on Spark executors (no --resume; see
    docs/deploy.md).
    """
    if manifest is not None and jobs > 1 and engine == "local":
        from refracture.features.pool import warm

        warm()  # the workers' imports run on another core while the model loads
    from refracture.cli.terminal import StageProgress
    from refracture.errors import InputError
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
    if result.exit_code:
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
        raise typer.Exit(result.exit_code)


def _score_resume(command: Callable[..., str]) -> str:
    return f"the finished chunks are kept; resume with `{command('--resume')}`"


RESUME_HINTS["score"] = _score_resume
