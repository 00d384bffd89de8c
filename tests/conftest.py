"""Shared fixtures: small synthetic cohorts written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from refracture.synth import write_cohort


@pytest.fixture(scope="session")
def synth_nifti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight patients from four sites as NIfTI (seed 3)."""
    out = tmp_path_factory.mktemp("synth_nifti")
    write_cohort(out, n=8, n_sites=4, seed=3, image_format="nifti", jobs=2)
    return out


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same eight patients as GE-style DICOM series (PDFF stored per mille)."""
    out = tmp_path_factory.mktemp("synth_dicom")
    write_cohort(out, n=8, n_sites=4, seed=3, image_format="dicom", jobs=2)
    return out


#: A smaller scan grid than the sites' for the export (5x fewer voxels; T10-L5 all inside).
EXPORT_GRID = ((64, 128, 14), (2.5, 2.5, 4.0))


@pytest.fixture(scope="session")
def synth_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same eight patients (seed 3) as a PACS export (export/, clinical.csv with procedure
    dates): GE classic and compressed, Siemens enhanced, Philips mixed-type series, DICOM SEG
    labels, two follow-up exams; on :data:`EXPORT_GRID`. Do not write into it."""
    out = tmp_path_factory.mktemp("synth_export")
    write_cohort(out, n=8, n_sites=4, seed=3, image_format="dicom-export", jobs=2, grid=EXPORT_GRID)
    return out


TRAIN_CONFIG = """
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {root}/cache
covariates:
  numeric: [age, bmd_tscore]
  binary: [prior_fracture, anti_osteoporosis]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
models: [cox, logistic]
feature_sets: [clinical, clinical+imaging]
validation:
  split: random
  bootstrap: {bootstrap}
  seed: 0
  jobs: 2
mlflow:
  tracking_uri: sqlite:///{root}/mlflow.db
  experiment: test
analysis:
  tscore: bmd_tscore
  age: age
  sex: sex
  bmi: bmi
  site: site
"""


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A real SQLite MLflow store after one `train` on a 90-patient synthetic cohort.

    Returns a namespace with ``root``, ``cohort``, ``config`` (path), ``tracking_uri`` and
    ``result`` (the TrainResult).
    """
    import contextlib
    from types import SimpleNamespace

    from refracture.config import load_config
    from refracture.study import train
    from refracture.tracking import quiet_mlflow

    root = tmp_path_factory.mktemp("trained")
    cohort = root / "cohort"
    write_cohort(cohort, n=90, n_sites=2, seed=21, jobs=2)
    config = root / "train.yaml"
    config.write_text(TRAIN_CONFIG.format(cohort=cohort, root=root, bootstrap=10))
    quiet_mlflow()
    with contextlib.chdir(root):
        result = train(load_config(config), config_path=config)
    return SimpleNamespace(
        root=root,
        cohort=cohort,
        config=config,
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        result=result,
    )
