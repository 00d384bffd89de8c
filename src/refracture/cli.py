"""The ``refracture`` command line: parses arguments and calls the stage modules.

Exit codes: 0 success, 1 the work failed, 2 a usage or input error.
Errors print one line; ``--debug`` prints the traceback too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from refracture.errors import RefractureError

app = typer.Typer(
    name="refracture",
    help=(
        "Imaging-biomarker risk models for vertebral re-fracture within one year after "
        "vertebroplasty/kyphoplasty: synthesise a cohort, extract PDFF/R2* features, train, "
        "score, demo."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


PSEUDONYMISE = typer.Option(
    False,
    "--pseudonymise",
    help="Replace every patient_id by a keyed hash in all outputs (key: environment variable "
    "REFRACTURE_PSEUDONYM_KEY, never stored).",
)


ENGINE = typer.Option(
    "local",
    "--engine",
    help="Where the work runs: local (this machine's processes) or spark (Apache Spark; "
    'pip install "refracture\\[spark]" and Java 17+). Same output files.',
)
SPARK_MASTER = typer.Option(
    "local[*]",
    "--spark-master",
    help="Spark master URL with --engine spark: local[*] (every core here), local[N], "
    "spark://HOST:7077, yarn, ...",
)


def _spark_engine(engine: str) -> bool:
    """True for --engine spark, after checking that pyspark and Java are there (exit 2)."""
    from refracture.errors import InputError

    if engine not in ("local", "spark"):
        raise InputError(f"--engine must be local or spark (got '{engine}')")
    if engine == "local":
        return False
    from refracture.engines import require_spark

    require_spark()
    return True


def _version(value: bool) -> None:
    if value:
        from refracture import __version__

        out.print(f"refracture {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Print Python tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


def handle_errors(fn: F) -> F:
    """Turn library errors into one-line messages and the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RefractureError as err:
            if _state["debug"]:
                console.print_exception()
            console.print(
                f"[bold red]error:[/] {escape(err.one_line())}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished outputs were kept; run again to resume")
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - last line of defence for users
            if _state["debug"]:
                console.print_exception()
            msg = " ".join(f"{type(err).__name__}: {err}".split())
            console.print(
                f"[bold red]internal error:[/] {escape(msg)} (run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@handle_errors
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    n: int = typer.Option(560, "--n", help="Number of patients."),
    sites: int = typer.Option(4, "--sites", help="Number of hospitals (site 1 scans at 1.5 T)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same cohort."),
    fmt: str = typer.Option("nifti", "--format", help="Image format: nifti or dicom."),
    id_prefix: str = typer.Option("P", "--id-prefix", help="Prefix of the patient IDs."),
    dicom_pdff_scale: str = typer.Option(
        "per_mille",
        "--dicom-pdff-scale",
        help="How DICOM PDFF pixels are stored: per_mille (0-1000, GE style) or percent "
        "(x10 integers with RescaleSlope 0.1).",
    ),
    jobs: int = typer.Option(2, "--jobs", help="Worker processes for writing images."),
) -> None:
    """Write a synthetic multi-centre IDEAL-IQ cohort.

    Writes manifest.csv, clinical.csv, truth.json, truth.csv and
    images/<patient_id>/{pdff,r2star,labels}. The generating model is documented in
    docs/synthetic.md.
    """
    from refracture.synth import write_cohort
    from refracture.terminal import StageProgress

    with StageProgress(console) as progress:
        result = write_cohort(
            out_dir,
            n=n,
            n_sites=sites,
            seed=seed,
            image_format=fmt,
            id_prefix=id_prefix,
            dicom_pdff_scale=dicom_pdff_scale,
            jobs=jobs,
            progress=progress,
        )
    out.print(
        f"wrote {result.n_patients} patients from {result.n_sites} sites to {result.out_dir}\n"
        f"  manifest: {result.manifest}\n  clinical: {result.clinical}\n"
        f"  truth:    {result.truth_csv}, {result.truth_json}",
        markup=False,
        highlight=False,
    )


@app.command()
@handle_errors
def extract(
    manifest: Path = typer.Option(
        ...,
        "--manifest",
        help="Manifest CSV: patient_id, site, pdff, r2star, labels[, treated_levels, "
        "fractured_levels] (see docs/data.md).",
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the feature tables."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML with an 'extraction:' section (a full run config works)."
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Patients processed in parallel."),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Per-patient feature cache (default: data.cache_dir of the config, else "
        ".refracture-cache).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the cache."),
    qc_png: bool = typer.Option(
        False, "--qc-png", help="Write a mid-sagittal QC picture per patient and contact sheets."
    ),
    pseudonymise: bool = PSEUDONYMISE,
    engine: str = ENGINE,
    spark_master: str = SPARK_MASTER,
) -> None:
    """Per-vertebra PDFF/R2* features for every patient of a manifest.

    Writes features.parquet, vertebrae.parquet, qc.csv (and errors.csv if any failed).
    Exit code 1 when some patients failed (the others are written), 2 on a bad manifest.

    --engine spark measures the patients on Spark executors (see docs/deploy.md).
    """
    if jobs > 1 and engine == "local":
        from refracture.features.pool import warm

        warm()  # the workers' imports run on another core while this process starts
    from refracture.config import ExtractionConfig, load_extraction_config
    from refracture.features import extract_cohort
    from refracture.privacy import Pseudonymiser
    from refracture.terminal import StageProgress

    spark = _spark_engine(engine)
    extraction, config_cache = (
        load_extraction_config(config) if config is not None else (ExtractionConfig(), None)
    )
    cache = None if no_cache else (cache_dir or config_cache or Path(".refracture-cache"))
    options: dict[str, Any] = {
        "out_dir": out_dir,
        "cache_dir": cache,
        "qc_png": qc_png,
        "pseudonymiser": Pseudonymiser.from_env() if pseudonymise else None,
    }
    with StageProgress(console) as progress:
        if spark:
            from refracture.engines import extract_spark

            result = extract_spark(
                manifest, extraction, progress=progress, master=spark_master, **options
            )
        else:
            result = extract_cohort(manifest, extraction, jobs=jobs, progress=progress, **options)
    n_ok = len(result.features)
    out.print(
        f"extracted {n_ok} patients ({result.n_computed} computed, {result.n_cached} from the "
        f"cache), {result.n_failed} failed\n"
        + "\n".join(f"  {name}: {path}" for name, path in result.files.items()),
        markup=False,
        highlight=False,
    )
    if result.n_failed:
        for row in result.errors.head(5).itertuples():
            console.print(
                f"[red]failed[/] ({escape(row.stage)}) {escape(row.message)}",
                highlight=False,
                soft_wrap=True,
            )
        if result.n_failed > 5:
            console.print(f"... and {result.n_failed - 5} more in errors.csv", highlight=False)
        raise typer.Exit(1)


@app.command()
@handle_errors
def train(
    config: Path = typer.Option(
        ..., "--config", help="Run config (YAML); start from configs/template.yaml."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the study report."),
    pseudonymise: bool = PSEUDONYMISE,
) -> None:
    """Extract features (or reuse the cache), train and validate every configured model on
    every feature set, log all to MLflow, register the best and move the alias if it is better.

    Prints the validation table, the added value of imaging, the registry decision and the
    parent run ID. Default MLflow store: sqlite:///mlflow.db with artifacts in ./mlruns.
    """
    from refracture.config import load_config
    from refracture.study import train as run_training
    from refracture.terminal import StageProgress, print_train_summary
    from refracture.tracking import quiet_mlflow

    cfg = load_config(config)
    quiet_mlflow()
    with StageProgress(console) as progress:
        result = run_training(
            cfg, config_path=config, progress=progress, report=report, pseudonymise=pseudonymise
        )
    print_train_summary(out, result, cfg.outcome.horizon_days)
    if result.tracking_uri.startswith("sqlite:"):
        serve = (
            f"MLFLOW_TRACKING_URI={result.tracking_uri} mlflow models serve "
            f'-m "models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}" --env-manager local '
            "-h 127.0.0.1 -p 5001"
        )
        for line in (
            f"browse the runs:  mlflow ui --backend-store-uri {result.tracking_uri}",
            f"serve the model:  {serve}",
        ):
            out.print(line, soft_wrap=True, highlight=False, markup=False)


@app.command()
@handle_errors
def init(
    clinical: Path = typer.Option(
        ..., "--clinical", help="The study's clinical table (CSV or Parquet), one row per patient."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="The image manifest, if the study has images."
    ),
    out_file: Path = typer.Option(
        Path("study.yaml"), "--out", help="The config to write (never overwritten)."
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="The patient ID column (default: detected from the names)."
    ),
    time: str | None = typer.Option(
        None, "--time", help="The follow-up time column (default: detected from the names)."
    ),
    event: str | None = typer.Option(
        None, "--event", help="The event column, 0/1(/2) (default: detected from the names)."
    ),
) -> None:
    """Draft a commented run config from the study's own clinical table.

    Detects the ID and outcome columns, guesses each other column's kind (numeric, binary,
    categorical with its most frequent level as reference) from its values, and chooses a
    horizon the follow-up reaches. Each guess is a commented line of the config: check them,
    then run `refracture train --config study.yaml`. See docs/training.md.
    """
    from refracture.study.drafting import draft_config, write_draft

    draft = draft_config(clinical, manifest, id_column=id_column, time=time, event=event)
    path = write_draft(draft, out_file)
    show = [
        ("patient ID", draft.id_column),
        ("time", draft.time),
        ("event", draft.event),
        ("horizon", f"{draft.horizon:g} ({draft.horizon_why})"),
    ]
    for kind in ("numeric", "binary", "categorical", "site", "left_out"):
        names = [
            c.name + (f" (reference {c.reference})" if c.reference is not None else "")
            for c in draft.of_kind(kind)
        ]
        if names:
            show.append((kind.replace("_", " "), ", ".join(names)))
    out.print(
        f"drafted {path} from {draft.clinical} ({draft.n_patients} patients, "
        f"{draft.n_events_by_horizon} events by the horizon, {draft.n_parameters} model "
        "parameters)\n"
        + "\n".join(f"  {k + ':':<12} {v}" for k, v in show)
        + f"\ncheck every guessed line of {path}, then: refracture train --config {path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for note in draft.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


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
    from refracture.errors import InputError
    from refracture.scoring import score as run_score
    from refracture.terminal import StageProgress

    spark = _spark_engine(engine)
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


@app.command()
@handle_errors
def demo(
    workdir: Path = typer.Option(
        Path("refracture-demo"),
        "--workdir",
        help="Folder for the cohort, MLflow store and outputs.",
    ),
    n: int = typer.Option(560, "--n", help="Patients in the training cohort."),
    new: int = typer.Option(50, "--new", help="New patients to score after training."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the training cohort (new patients: +1000)."
    ),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Worker processes."),
    bootstrap: int = typer.Option(
        None, "--bootstrap", help="Override the config's bootstrap replicates (default 200)."
    ),
    fmt: str = typer.Option(
        "nifti", "--format", help="Images of the synthetic cohorts: nifti or dicom (GE-style)."
    ),
) -> None:
    """Run the whole product on synthetic data: synthesise a 4-site cohort, train and validate
    (configs/synthetic.yaml), register the champion, synthesise new patients and score them from
    their images with models:/refracture-1y@champion, then print a summary.

    Everything goes to --workdir, with its own SQLite MLflow store (MLFLOW_TRACKING_URI is not
    used). About 5 minutes on 2 cores with the default --n.
    """
    from refracture.demo import run_demo
    from refracture.terminal import StageProgress, print_demo_summary
    from refracture.tracking import quiet_mlflow

    quiet_mlflow()
    with StageProgress(console) as progress:
        result = run_demo(
            workdir,
            n=n,
            n_new=new,
            seed=seed,
            jobs=jobs,
            bootstrap=bootstrap,
            image_format=fmt,
            progress=progress,
        )
    print_demo_summary(out, result)


@app.command()
@handle_errors
def analyse(
    config: Path = typer.Option(..., "--config", help="Run config (YAML) of the study."),
    out_dir: Path = typer.Option(
        Path("refracture-analysis"), "--out", help="Folder for the tables, plots and page."
    ),
    tscore: str | None = typer.Option(
        None, "--tscore", help="Clinical column with the BMD T-score (default: analysis.tscore)."
    ),
    age: str | None = typer.Option(
        None, "--age", help="Clinical column with age in years (default: analysis.age)."
    ),
    sex: str | None = typer.Option(
        None, "--sex", help="Clinical column with sex (default: analysis.sex)."
    ),
    bmi: str | None = typer.Option(
        None, "--bmi", help="Clinical column with BMI in kg/m2 (default: analysis.bmi)."
    ),
    site: str | None = typer.Option(
        None, "--site", help="Column naming the site (default: analysis.site, else 'site')."
    ),
) -> None:
    """The biomarker analysis: PDFF, R2* and morphometry versus BMD T-score, age, sex, BMI
    and level, per patient and per vertebra (see docs/analysis.md).

    Measures the images of the config's manifest (reusing the feature cache), then writes
    associations.csv, plots/ and biomarkers.html to --out. An optional column (age, sex, bmi,
    site) that the table lacks is skipped with a note.
    """
    from refracture.analysis.study import StudyColumns, analyse_study
    from refracture.config import load_config
    from refracture.terminal import StageProgress

    cfg = load_config(config)
    columns = StudyColumns(tscore=tscore, age=age, sex=sex, bmi=bmi, site=site)
    with StageProgress(console) as progress:
        result = analyse_study(cfg, out_dir, columns=columns, progress=progress)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    out.print(
        f"analysed {result.n_patients} patients ({result.n_vertebrae} vertebrae): "
        f"{len(result.associations)} associations\n"
        f"  associations: {result.files['associations']}\n"
        f"  page:         {result.files['html']}\n"
        f"  plots:        {out_dir / 'plots'}\n"
        f"  extraction:   {out_dir / 'extraction'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@handle_errors
def promote(
    model: str = typer.Argument(..., help="Registered model name, e.g. refracture-1y."),
    version: str = typer.Argument(..., help="The version to move the alias to, e.g. 5."),
    reason: str | None = typer.Option(
        None, "--reason", help="Why: recorded with the move in the version's tags and description."
    ),
    alias: str = typer.Option("champion", "--alias", help="The alias to move."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
    ),
) -> None:
    """Move the champion alias to a version on purpose, recording who, why and when.

    Training moves the alias only to a version validated the same way
    (split, horizon, estimand, outcome, selection metric) that is better
    beyond the margin. Use this command to choose a model validated
    differently (say, on an external site) or to roll back. Later trains
    are compared with the version chosen here. See docs/registry.md.
    """
    from refracture.registry import promote as move_alias
    from refracture.tracking import quiet_mlflow

    quiet_mlflow()
    decision = move_alias(model, version, alias=alias, reason=reason, tracking_uri=tracking_uri)
    out.print(
        f"{decision.model_name}: {decision.reason}", soft_wrap=True, highlight=False, markup=False
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:  # keep typer/click exit codes (2 for usage errors)
        sys.exit(exc.code)
