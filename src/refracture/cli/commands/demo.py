"""``refracture demo``: the whole product on synthetic data."""

from __future__ import annotations

from pathlib import Path

import typer

from refracture.cli.app import (
    app,
    console,
    handle_errors,
    out,
)


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
    """Run the whole product on synthetic data, with no data and no server.

    Synthesises a 4-site cohort, trains and validates (configs/synthetic.yaml), registers the
    champion, synthesises new patients and scores them from their images with
    models:/refracture-1y@champion, then prints a summary.

    Everything goes to --workdir, with its own SQLite MLflow store (MLFLOW_TRACKING_URI is not
    used). About 5 minutes on 2 cores with the default --n.
    """
    from refracture.cli.demo import run_demo
    from refracture.cli.terminal import StageProgress, print_demo_summary
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
