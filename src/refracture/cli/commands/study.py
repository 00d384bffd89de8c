"""Commands of a study team: ``init``, ``train``, ``analyse``, ``promote``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from refracture.cli.app import (
    PSEUDONYMISE,
    RESUME_HINTS,
    app,
    console,
    handle_errors,
    out,
)


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
        None,
        "--event",
        help="The re-fracture event column, 0/1 or 0/1/2 with 2 death (default: chosen by the "
        "names: re-fracture is the event, death competes).",
    ),
    death: str | None = typer.Option(
        None,
        "--death",
        help="A 0/1 death column to combine with a 0/1 event column into 0/1/2 (default: "
        "detected from the names).",
    ),
) -> None:
    """Draft a commented run config from the study's own clinical table.

    Detects the ID and outcome columns (the event by meaning: re-fracture is the event, death
    competes; every candidate is explained), guesses each other column's kind, meaning and
    plausible range from its name and values, lists every cell that is not a plain number,
    and chooses a horizon the follow-up reaches. Each guess is a commented line of the config;
    what it cannot tell is a required edit. Check them, then run `refracture check --config
    study.yaml` and `refracture train --config study.yaml`. See docs/training.md.
    """
    from refracture.study.drafting import draft_config, write_draft

    draft = draft_config(
        clinical, manifest, id_column=id_column, time=time, event=event, death=death
    )
    path = write_draft(draft, out_file)
    show = [
        ("patient ID", draft.id_column),
        ("time", draft.time),
        ("event", draft.event),
        *([("death", f"{draft.choice.death} (combined with the event into 0/1/2)")]
          if draft.choice.death else []),
        ("horizon", f"{draft.horizon:g} ({draft.horizon_why})"),
    ]  # fmt: skip
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
        + f"\ncheck every guessed line of {path}, then: refracture check --config {path}"
        + f" and refracture train --config {path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for note in draft.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def train(
    config: Path = typer.Option(
        ..., "--config", help="Run config (YAML); start from configs/template.yaml."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the study report."),
    register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Register the selected model (--no-register: log it in its run only, for "
        "exploratory runs).",
    ),
    exclude_invalid: bool = typer.Option(
        False,
        "--exclude-invalid",
        help="Leave out every patient with an input problem (each listed with the reason in "
        "the cohort flow) instead of refusing the run.",
    ),
    pseudonymise: bool = PSEUDONYMISE,
) -> None:
    """Train, validate, log to MLflow and register the best model of a study.

    Checks every input first (as refracture check does) and refuses with the whole list of
    problems: nothing is measured, logged or registered for a refused run. Then extracts
    features (or reuses the cache), trains and validates every configured model on every
    feature set, logs all to MLflow, registers the best and moves the alias if it is better.

    Prints the validation table, the added value of imaging, the registry decision and the
    parent run ID. Default MLflow store: sqlite:///mlflow.db with artifacts in ./mlruns.
    """
    from refracture.cli.terminal import StageProgress, print_train_summary
    from refracture.config import load_config
    from refracture.study import train as run_training
    from refracture.tracking import quiet_mlflow

    cfg = load_config(config)
    quiet_mlflow()
    with StageProgress(console) as progress:
        result = run_training(
            cfg,
            config_path=config,
            progress=progress,
            report=report,
            pseudonymise=pseudonymise,
            register=register,
            exclude_invalid=exclude_invalid,
        )
    print_train_summary(out, result, cfg.outcome.horizon_days)
    if result.tracking_uri.startswith("sqlite:") and register:
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


def _train_resume(command: Callable[..., str]) -> str:
    return (
        "the MLflow run is marked KILLED; start again with "
        f"`{command()}`: it reuses the feature cache (data.cache_dir), so the "
        "patients already measured are not measured again"
    )


RESUME_HINTS["train"] = _train_resume


@app.command()
@handle_errors
def analyse(
    config: Path = typer.Option(..., "--config", help="Run config (YAML) of the study."),
    out_dir: Path = typer.Option(
        Path("refracture-analysis"), "--out", help="Folder for the tables, plots and page."
    ),
    tscore: str | None = typer.Option(
        None,
        "--tscore",
        help="Clinical column with the BMD T-score (default: covariates.roles.tscore).",
    ),
    age: str | None = typer.Option(
        None, "--age", help="Clinical column with age in years (default: covariates.roles.age)."
    ),
    sex: str | None = typer.Option(
        None, "--sex", help="Clinical column with sex (default: covariates.roles.sex)."
    ),
    bmi: str | None = typer.Option(
        None, "--bmi", help="Clinical column with BMI in kg/m2 (default: covariates.roles.bmi)."
    ),
    site: str | None = typer.Option(
        None, "--site", help="Column naming the site (default: analysis.site, else 'site')."
    ),
) -> None:
    """The biomarker analysis: PDFF, R2* and morphometry versus bone mass.

    PDFF, R2* and morphometry versus BMD T-score, age, sex, BMI and level, per patient and per
    vertebra (see docs/analysis.md).

    Measures the images of the config's manifest (reusing the feature cache), then writes
    associations.csv, plots/ and biomarkers.html to --out. An optional column (age, sex, bmi,
    site) that the table lacks is skipped with a note.
    """
    from refracture.analysis.study import StudyColumns, analyse_study
    from refracture.cli.terminal import StageProgress
    from refracture.config import load_config

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
