"""Shared fixtures: small synthetic cohorts written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from refracture.synth import write_cohort


def pytest_configure(config: pytest.Config) -> None:
    from cpu_meter import register

    register(config)


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


def _mlflow_uri_state() -> tuple[object, ...]:
    """MLflow's process-wide tracking/registry URIs and their environment variables."""
    import os

    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
        *(
            os.environ.get(n)
            for n in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
        ),
    )


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
    before = _mlflow_uri_state()
    with contextlib.chdir(root):
        result = train(load_config(config), config_path=config)
    return SimpleNamespace(
        mlflow_state=(before, _mlflow_uri_state()),
        root=root,
        cohort=cohort,
        config=config,
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        result=result,
    )


@pytest.fixture(autouse=True)
def _mlflow_settings_as_found():
    """Every test leaves MLflow's process-wide URIs and their environment variables as it found
    them (refracture itself never leaves them changed; some tests set them on purpose). MLflow
    is not imported for a test that does not import it."""
    import os
    import sys

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    settings = (
        ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
        ("mlflow.tracking._model_registry.utils", "_registry_uri"),
        ("mlflow.tracking.fluent", "_active_experiment_id"),
    )
    env = {name: os.environ.get(name) for name in names}
    saved = [getattr(sys.modules.get(m), f, None) for m, f in settings]
    yield
    for (module, field), value in zip(settings, saved, strict=True):
        if module in sys.modules:
            setattr(sys.modules[module], field, value)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
