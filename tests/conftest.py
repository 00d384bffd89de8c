"""Shared fixtures: small synthetic cohorts written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from refracture.synth import write_cohort
from shared_build import built_once


def pytest_configure(config: pytest.Config) -> None:
    from cpu_meter import register

    register(config)


#: Test files that run first because they take longest (CPU seconds, scripts/test_cpu_report.py):
#: with two workers, a long file started last would leave the other worker idle at the end.
LONG_FIRST = (
    "test_docs.py",
    "test_demo.py",
    "test_score.py",
    "test_report.py",
    "test_privacy.py",
    "test_spark.py",
    "test_server.py",
    "test_interrupt.py",
    "test_harmonisation_e2e.py",
    "test_train.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first. Each file runs on one xdist worker (``--dist loadfile``), so
    its module fixtures are built once; what several files share is built once per session
    by :func:`shared_build.built_once`. (``--dist loadgroup`` with per-file groups did not group
    anything under pytest 9: xdist 3.8 renames the node IDs through an attribute pytest 9 no
    longer reads.)"""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def synth_nifti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight patients from four sites as NIfTI (seed 3), written once per session."""
    out, _ = built_once(
        tmp_path_factory,
        "synth_nifti",
        lambda out: write_cohort(out, n=8, n_sites=4, seed=3, image_format="nifti", jobs=1),
    )
    return out


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same eight patients as GE-style DICOM series (PDFF stored per mille)."""
    out, _ = built_once(
        tmp_path_factory,
        "synth_dicom",
        lambda out: write_cohort(out, n=8, n_sites=4, seed=3, image_format="dicom", jobs=1),
    )
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
# an explicit choice (the default is auto, .632+): the model it registers has a nomogram and a
# full specification for the report tests
selection_metric: cindex_harrell_optcorr
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


def _train_once(root: Path):  # type: ignore[no-untyped-def]
    import contextlib

    from refracture.config import load_config
    from refracture.study import train
    from refracture.tracking import quiet_mlflow

    cohort = root / "cohort"
    write_cohort(cohort, n=90, n_sites=2, seed=21, jobs=2)
    config = root / "train.yaml"
    config.write_text(TRAIN_CONFIG.format(cohort=cohort, root=root, bootstrap=10))
    quiet_mlflow()
    before = _mlflow_uri_state()
    with contextlib.chdir(root):
        result = train(load_config(config), config_path=config)
    return result, (before, _mlflow_uri_state())


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A real SQLite MLflow store after one `train` on a 90-patient synthetic cohort, trained
    once per session and shared by every worker (tests that change the store copy it first).

    Returns a namespace with ``root``, ``cohort``, ``config`` (path), ``tracking_uri``,
    ``result`` (the TrainResult) and ``mlflow_state`` (MLflow's URIs before and after train).
    """
    from types import SimpleNamespace

    root, (result, state) = built_once(tmp_path_factory, "trained", _train_once)
    return SimpleNamespace(
        mlflow_state=state,
        root=root,
        cohort=root / "cohort",
        config=root / "train.yaml",
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
