"""Commands on images and features: ``synth``, ``extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from refracture.cli.app import (
    ENGINE,
    PSEUDONYMISE,
    SPARK_MASTER,
    app,
    console,
    handle_errors,
    out,
    spark_engine,
)


@app.command()
@handle_errors
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the cohort into."),
    n: int = typer.Option(560, "--n", help="Number of patients."),
    sites: int = typer.Option(4, "--sites", help="Number of hospitals (site 1 scans at 1.5 T)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same cohort."),
    fmt: str = typer.Option(
        "nifti",
        "--format",
        help="Image format: nifti, dicom (one series folder per map), or dicom-export (a PACS "
        "export of every exam's series with DICOM SEG labels, for refracture index).",
    ),
    id_prefix: str = typer.Option("P", "--id-prefix", help="Prefix of the patient IDs."),
    dicom_pdff_scale: str = typer.Option(
        "per_mille",
        "--dicom-pdff-scale",
        help="How DICOM PDFF pixels are stored: per_mille (0-1000, GE style) or percent "
        "(x10 integers with RescaleSlope 0.1).",
    ),
    jobs: int = typer.Option(2, "--jobs", help="Worker processes for writing images."),
    dicomdir: bool = typer.Option(
        False,
        "--dicomdir",
        help="With --format dicom-export: write the export as a DICOMDIR file set (CD layout).",
    ),
) -> None:
    """Write a synthetic multi-centre IDEAL-IQ cohort.

    Writes manifest.csv, clinical.csv, truth.json, truth.csv and
    images/<patient_id>/{pdff,r2star,labels}; with --format dicom-export, export/ (a PACS
    export, no manifest: build it with refracture index) and clinical.csv with procedure
    dates. The generating model is documented in docs/synthetic.md.
    """
    from refracture.cli.terminal import StageProgress
    from refracture.synth import write_cohort

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
            dicomdir=dicomdir,
        )
    images = (
        f"  manifest: {result.manifest}"
        if result.manifest is not None
        else f"  export:   {result.out_dir / 'export'} (build the manifest with: refracture index "
        f"{result.out_dir / 'export'} --out manifest.csv --clinical {result.clinical})"
    )
    out.print(
        f"wrote {result.n_patients} patients from {result.n_sites} sites to {result.out_dir}\n"
        f"{images}\n  clinical: {result.clinical}\n"
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
    from refracture.cli.terminal import StageProgress
    from refracture.config import ExtractionConfig, load_extraction_config
    from refracture.features import extract_cohort
    from refracture.privacy import Pseudonymiser

    spark = spark_engine(engine)
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
