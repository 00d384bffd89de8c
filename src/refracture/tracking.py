"""MLflow: where runs go and how models are logged (the champion alias: :mod:`refracture.registry`).

Embedded default (PRODUCT.md section 5): tracking URI ``sqlite:///mlflow.db`` with artifacts in
``./mlruns`` of the working folder; ``MLFLOW_TRACKING_URI`` or ``mlflow.tracking_uri`` in the config
point elsewhere (for example a tracking server backed by PostgreSQL).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

import refracture
from refracture import registry
from refracture.errors import ModelError
from refracture.files import shipped_file
from refracture.serving import InputColumns, output_columns

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# What a registered model needs at predict time, pinned to the versions it was trained with.
RUNTIME_PACKAGES = [
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "lifelines",
    "joblib",
]
# the registry's alias rule lives in refracture.registry; these names stay importable here
AliasDecision = registry.AliasDecision
TAG_SELECTION_VALUE = registry.TAG_SELECTION_VALUE
TAG_SELECTION_METRIC = registry.TAG_SELECTION_METRIC
TAG_SELECTION_SCORE = registry.TAG_SELECTION_SCORE


def resolve_tracking_uri(configured: str | None) -> str:
    """Config value, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite default."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def store_folder(tracking_uri: str) -> Path:
    """The folder holding a local SQLite store (``sqlite:///mlflow.db``: the working folder);
    artifacts (``mlruns``) and run folders go beside it. Other stores: the working folder."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    return Path.cwd()


def setup(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the store and return the experiment ID (created if needed).

    For a local store the experiment's artifacts go to ``mlruns`` beside the store (``./mlruns``
    for the default ``sqlite:///mlflow.db``), so ``mlflow ui`` started there finds them.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            exp_id = found.experiment_id
        else:
            local = _is_local(tracking_uri)
            location = (store_folder(tracking_uri) / "mlruns").as_uri() if local else None
            exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException as err:
        raise ModelError(f"cannot use the MLflow store {tracking_uri}: {err.message}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str | None:
    """The commit of the refracture source tree, when it is a git checkout."""
    src = Path(refracture.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def run_tags(dataset_digest: str) -> dict[str, str]:
    tags = {
        "refracture.version": refracture.__version__,
        "refracture.dataset_digest": dataset_digest,
    }
    sha = git_commit()
    if sha:
        tags["mlflow.source.git.commit"] = sha
    return tags


TAG_PID, TAG_HOST = "refracture.pid", "refracture.host"


def process_tags() -> dict[str, str]:
    """Which process runs this train, so a later one can tell a run left by a killed process."""
    return {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname()}


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs still RUNNING whose train process (same host) no longer exists.

    A killed ``refracture train`` cannot close its MLflow runs; without this they would show
    as running forever in the UI.
    """
    client = MlflowClient()
    host = socket.gethostname()
    closed = []
    try:
        runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    except MlflowException:
        return closed
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_HOST) != host or not tags.get(TAG_PID, "").isdigit():
            continue
        pid = int(tags[TAG_PID])
        if pid != os.getpid() and not _alive(pid):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def log_dataset(df: pd.DataFrame, *, name: str, source: str, targets: str | None = None) -> str:
    """Log a dataset's digest and schema with mlflow.data (never its rows); return the digest."""
    ds = mlflow.data.from_pandas(df, source=source, name=name, targets=targets)
    mlflow.log_input(ds, context="training")
    return ds.digest


def signature_for(bundle: dict[str, Any]) -> ModelSignature:
    """Input: patient_id (optional), every covariate and imaging feature by name; categorical
    covariates as strings. Numbers are typed ``Any``: MLflow refuses int64 where a double is
    declared ("not safe"), and an age of 73 is an integer; the model checks and types each row
    itself (a non-number is an error for that row only). Output: the score columns."""
    cols = InputColumns.from_bundle(bundle)
    inputs = [ColSpec("string", "patient_id", required=False)]
    inputs += [ColSpec(AnyType(), c) for c in [*cols.numeric, *cols.binary]]
    inputs += [ColSpec("string", c) for c in cols.categorical]
    kinds = {
        "patient_id": "string",
        "risk_group": "string",
        "model_name": "string",
        "model_version": "string",
        "status": "string",
        "error": "string",
        "warnings": "string",
    }
    outputs = [
        ColSpec(kinds.get(c, "double"), c, required=c != "risk_group")
        for c in output_columns(bundle["horizon_days"])
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(bundle: dict[str, Any]) -> pd.DataFrame:
    """A made-up example built from training medians and reference levels: no patient's row."""
    cols = InputColumns.from_bundle(bundle)
    typical = bundle["typical"]
    row: dict[str, Any] = {"patient_id": "example-1"}
    row.update({c: float(typical[c]) for c in [*cols.numeric, *cols.binary]})
    row.update({c: str(typical[c]) for c in cols.categorical})
    return pd.DataFrame([row])


def pinned_requirements() -> list[str]:
    reqs = []
    for pkg in RUNTIME_PACKAGES:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            reqs.append(pkg)
    return reqs


def model_code_path() -> Path:
    """``models/refracture_pyfunc.py`` from a source checkout, or its copy in the wheel."""
    path = shipped_file("models", "refracture_pyfunc.py")
    if path is None:
        raise ModelError(
            "the model entry point refracture_pyfunc.py is missing from the installation"
        )
    return path


def log_model(pipeline: Any, bundle: dict[str, Any], *, name: str = "model") -> Any:
    """Log the pipeline as a models-from-code pyfunc in the active run; return its ModelInfo."""
    import joblib

    package_dir = Path(refracture.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        pipe_path = Path(tmp) / "pipeline.joblib"
        bundle_path = Path(tmp) / "bundle.json"
        joblib.dump(pipeline, pipe_path)
        bundle_path.write_text(json.dumps(bundle, indent=2, default=_plain), encoding="utf-8")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code_path()),
            artifacts={"pipeline": str(pipe_path), "bundle": str(bundle_path)},
            code_paths=[str(package_dir)],
            signature=signature_for(bundle),
            input_example=input_example(bundle),
            pip_requirements=pinned_requirements(),
        )


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def register(
    model_uri: str,
    *,
    name: str,
    alias: str,
    metric: str,
    value: float,
    score: float | None = None,
    description: str,
    tags: dict[str, str],
    design: registry.Design | None = None,
    uncertainty: registry.Uncertainty | None = None,
    margin: registry.Margin | None = None,
) -> registry.AliasDecision:
    """Register a version and settle the alias (:func:`refracture.registry.register`).

    What the caller does not pass is read from what ``train`` logged: the validation design
    and ``mlflow.promote_margin`` from the parent run's parameters (the flattened config, run
    ``tags['refracture.parent_run_id']``), the selection metric's bootstrap CI from the
    metrics of the run that logged the model.
    """
    client = MlflowClient()
    parent = tags.get("refracture.parent_run_id")
    if design is None and parent:
        design = registry.design_from_run(client, parent)
    if margin is None:
        margin = registry.margin_from_run(client, parent) if parent else "auto"
    if uncertainty is None:
        uncertainty = registry.uncertainty_from_run(client, model_uri, metric)
    return registry.register(
        model_uri,
        name=name,
        alias=alias,
        metric=metric,
        value=value,
        score=score,
        description=description,
        tags=tags,
        design=design,
        uncertainty=uncertainty,
        margin=margin,
        client=client,
    )


def quiet_mlflow() -> None:
    """Keep MLflow's informational logging and advisory warnings off the user's terminal."""
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for module in ("mlflow", "mlflow.*"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    warnings.filterwarnings("ignore", message=".*type hint.*")
    warnings.filterwarnings("ignore", message=".*Add type hints.*")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
