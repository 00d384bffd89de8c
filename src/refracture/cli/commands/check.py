"""``refracture check``: every problem of a study's inputs at once, before any work."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape

from refracture.cli.app import app, console, handle_errors, out, print_problems


@app.command()
@handle_errors
def check(
    config: Path = typer.Option(
        ..., "--config", help="Run config (YAML) of the study: its rules, files and exclusions."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest to check instead of data.manifest (e.g. a new batch)."
    ),
    clinical: Path | None = typer.Option(
        None, "--clinical", help="Clinical table to check instead of data.clinical."
    ),
    out_file: Path = typer.Option(
        Path("check.csv"), "--out", help="Where the table of problems goes (CSV)."
    ),
    headers: bool = typer.Option(
        True, "--headers/--no-headers", help="Read every image's header (no voxel is decoded)."
    ),
) -> None:
    """Check the config, clinical table, manifest and image headers, every problem at once.

    Lists each problem as one row (patient, file, column, value, problem, what to do) on the
    terminal and in check.csv, in seconds and before any extraction or fitting: what `train`
    would refuse. Exit code 0 when nothing is wrong, 1 when problems were found, 2 when the
    check itself cannot run (config file not found). See docs/data.md.
    """
    from refracture.checks import check_study
    from refracture.cli.terminal import StageProgress
    from refracture.errors import InputError

    if not Path(config).is_file():
        from refracture.config import packaged_config

        if packaged_config(str(config)) is None:
            raise InputError("config file not found", file=config)
    for what, path in (("manifest", manifest), ("clinical table", clinical)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} not found", file=path)
    start = time.perf_counter()
    with StageProgress(console) as progress:
        report = check_study(
            config, manifest=manifest, clinical=clinical, headers=headers, progress=progress
        )
    seconds = time.perf_counter() - start
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    written = report.write(out_file)
    counts = report.counts
    what = f"{counts.get('clinical', 0)} clinical rows, {counts.get('manifest', 0)} manifest rows"
    what += f", {counts['images']} image headers" if "images" in counts else ""
    if not report.problems:
        out.print(
            f"checked {what} in {seconds:.1f} s: no problem\n  check table: {written}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    rows = [p.row() for p in report.problems]
    print_problems(out, rows)
    n_patients = len(report.patients)
    out.print(
        f"checked {what} in {seconds:.1f} s: {len(rows)} problem(s)"
        + (f" of {n_patients} patient(s)" if n_patients else "")
        + f"\n  check table: {written}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)
