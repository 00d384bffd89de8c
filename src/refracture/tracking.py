"""MLflow: where runs go, run tags and logged data sets (the champion alias:
:mod:`refracture.registry`; the logged model: :mod:`refracture.scoring.pyfunc`).

Embedded default: tracking URI ``sqlite:///mlflow.db`` with artifacts in
``./mlruns`` of the working folder; ``MLFLOW_TRACKING_URI`` or ``mlflow.tracking_uri`` in the config
point elsewhere (for example a tracking server backed by PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import refracture
from refracture.errors import ModelError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


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


_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


@contextlib.contextmanager
def use_store(tracking_uri: str, experiment_id: str | None = None) -> Iterator[MlflowClient]:
    """Point MLflow at one store (and experiment) for the length of a block, then leave it
    as it was.

    MLflow's fluent API (``mlflow.start_run``, ``log_model``...) reads process-wide settings,
    and ``mlflow.set_tracking_uri``/``set_experiment`` also export ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_EXPERIMENT_ID`` to the environment. Inside the block they point at
    ``tracking_uri`` (tracking and registry) and ``experiment_id``; on exit the module
    settings and the environment variables are restored exactly, so a notebook, a test or a
    second call with another store never follows the last store refracture used.

    Yields
    ------
    MlflowClient
        A client bound to ``tracking_uri`` for tracking and registry calls.
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {name: os.environ.get(name) for name in _VARIABLES}
    # MLflow keeps these in module globals with no public getter that tells "unset" from "the
    # default", so they are saved and put back as they were.
    saved = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if experiment_id is not None:
        fluent._active_experiment_id = experiment_id
    try:
        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry_utils._registry_uri = saved[1]
        fluent._active_experiment_id = saved[2]
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def setup(tracking_uri: str, experiment: str) -> str:
    """Return the ID of the experiment in the store (created if needed), without global state.

    For a local store the experiment's artifacts go to ``mlruns`` beside the store (``./mlruns``
    for the default ``sqlite:///mlflow.db``), so ``mlflow ui`` started there finds them.
    """
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return str(found.experiment_id)
        local = _is_local(tracking_uri)
        location = (store_folder(tracking_uri) / "mlruns").as_uri() if local else None
        return str(client.create_experiment(experiment, artifact_location=location))
    except MlflowException as err:
        raise ModelError(f"cannot use the MLflow store {tracking_uri}: {err.message}") from None


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


def close_orphaned_runs(experiment_id: str, client: MlflowClient) -> list[str]:
    """Mark KILLED the runs still RUNNING whose train process (same host) no longer exists.

    A killed ``refracture train`` cannot close its MLflow runs; without this they would show
    as running forever in the UI.
    """
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
