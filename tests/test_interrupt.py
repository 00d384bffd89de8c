"""Killing `refracture extract` or `refracture train` and running it again (issue 8, item 4).

A run killed with SIGKILL (no clean-up handler runs) must leave no half-written file under a
final name, and the next run must finish with the outputs of an uninterrupted run. The kill
moment is found by polling the files the run writes, never by timing. `refracture score` has
its own kill-and-resume test in test_score.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from refracture.cli import app
from refracture.files import STALE_TMP_SECONDS, sweep_stale_tmp, write_text
from refracture.synth import write_cohort

runner = CliRunner()
TMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # files.atomic_path's temporary names
EXTRACT_OUTPUTS = ("features.parquet", "vertebrae.parquet", "qc.csv")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults relative to the working folder (.refracture-cache, mlflow.db) stay in tmp_path.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forty patients: long enough to extract that a poll sees the run mid-way."""
    out = tmp_path_factory.mktemp("interrupt") / "cohort"
    write_cohort(out, n=40, n_sites=2, seed=5, jobs=2)
    return out


def start(*args: str | Path, cwd: Path) -> subprocess.Popen:
    """`refracture ARGS` in its own process group, so the kill reaches its workers too."""
    code = "from refracture.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], limit_s: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it ended first (or never got there)."""
    deadline = time.monotonic() + limit_s  # a safety net for a hung run, not a timing check
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return False


def assert_whole(path: Path) -> None:
    """A file under a final name is complete: it parses as what its name says."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pd.read_parquet(path)
    elif suffix == ".csv":
        pd.read_csv(path)
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix in (".yaml", ".yml"):
        yaml.safe_load(path.read_text(encoding="utf-8"))
    elif suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), path
    elif suffix in (".md", ".html"):
        assert path.stat().st_size > 0, path


def final_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not TMP.fullmatch(p.name)]


# --- extract -----------------------------------------------------------------------------------


def test_killed_extract_leaves_whole_files_and_a_rerun_gives_the_clean_outputs(
    cohort: Path, tmp_path: Path
) -> None:
    manifest = cohort / "manifest.csv"
    clean_out = tmp_path / "clean"
    res = runner.invoke(
        app,
        ["extract", "--manifest", str(manifest), "--out", str(clean_out), "--jobs", "1"]
        + ["--cache-dir", str(tmp_path / "clean-cache")],
    )
    assert res.exit_code == 0, res.output

    # An earlier, complete run on the first ten patients: the "previous version" of every output.
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = tmp_path / "first.csv"
    rows = pd.read_csv(manifest).head(10)
    for col in ("pdff", "r2star", "labels"):  # first.csv is elsewhere: absolute image paths
        rows[col] = [str(cohort / p) for p in rows[col]]
    rows.to_csv(first, index=False)
    args = ["--out", out, "--jobs", "1", "--cache-dir", cache]
    res = runner.invoke(app, ["extract", "--manifest", str(first), *map(str, args)])
    assert res.exit_code == 0, res.output
    previous = {name: (out / name).read_bytes() for name in EXTRACT_OUTPUTS}
    assert len(pd.read_parquet(out / "features.parquet")) == 10

    # Killed while measuring patients 11-40 (the cache grows by one entry per patient).
    proc = start("extract", "--manifest", manifest, *args, cwd=tmp_path)
    assert kill_when(proc, lambda: len(list(cache.glob("*.json"))) >= 13), "extract ended first"
    for name, data in previous.items():
        assert (out / name).read_bytes() == data, f"{name} changed by the killed run"
    n_cached = len(list(cache.glob("*.json")))
    assert 13 <= n_cached < 40
    for path in final_files(cache):
        assert_whole(path)

    # Killed again as soon as it starts writing its outputs, if a poll catches that moment
    # (otherwise it finishes): either way every output is the old or the new whole file.
    leftovers = set(out.iterdir())  # a temporary file the first kill left is no signal
    proc = start("extract", "--manifest", manifest, *args, cwd=tmp_path)
    kill_when(proc, lambda: any(TMP.fullmatch(p.name) for p in set(out.iterdir()) - leftovers))
    for path in final_files(out):
        assert_whole(path)
    for name in EXTRACT_OUTPUTS:
        data = (out / name).read_bytes()
        assert data in (previous[name], (clean_out / name).read_bytes()), name

    res = runner.invoke(app, ["extract", "--manifest", str(manifest), *map(str, args)])
    assert res.exit_code == 0, res.output
    assert "0 failed" in res.output
    for name in EXTRACT_OUTPUTS:
        assert (out / name).read_bytes() == (clean_out / name).read_bytes(), name
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "features.parquet"), pd.read_parquet(clean_out / "features.parquet")
    )
    summary = json.loads((out / "extraction.json").read_text())
    clean_summary = json.loads((clean_out / "extraction.json").read_text())
    for key in ("n_computed", "n_cached"):  # how the work was split differs, nothing else
        summary.pop(key), clean_summary.pop(key)
    assert summary == clean_summary
    # The same final files as the clean run. Recent temporary files of the killed runs may
    # stay (they look like a live writer's); a later write sweeps them once stale.
    assert {p.name for p in final_files(out)} == {p.name for p in final_files(clean_out)}


# --- train -------------------------------------------------------------------------------------

TRAIN = """\
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {root}/cache
covariates:  # 5 re-fractures by one year in these 40 patients: 4 model terms with imaging
  numeric: [age]
  binary: [prior_fracture]
  categorical: {{}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
extraction:
  r2star_units: per_s
models: [cox]
feature_sets: [clinical, clinical+imaging]
validation:
  split: random
  bootstrap: 4
  seed: 0
  jobs: 1
mlflow:
  tracking_uri: sqlite:///{root}/mlflow.db
  experiment: interrupt
"""


def finished_children(root: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Metrics of the nested runs of the one finished `train` in ``root``'s store."""
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("interrupt")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [
        r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.status == "FINISHED"
    ]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {
        (r.data.tags["refracture.model"], r.data.tags["refracture.feature_set"]): r.data.metrics
        for r in children
    }


def run_folders(root: Path) -> list[Path]:
    """The run folders (named by their MLflow run; the images are measured in a hidden
    staging folder before the run starts, so a refused run leaves no MLflow run)."""
    runs = (root / "refracture-runs").glob("*")
    return sorted(d for d in runs if d.is_dir() and not d.name.startswith("."))


def test_killed_train_leaves_whole_files_and_a_rerun_gives_the_clean_results(
    cohort: Path, tmp_path: Path
) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for root in (clean, killed):
        root.mkdir()
        (root / "run.yaml").write_text(TRAIN.format(cohort=cohort, root=root))
    res = runner.invoke(app, ["train", "--config", str(clean / "run.yaml"), "--no-report"])
    assert res.exit_code == 0, res.output

    # Killed once its features are in its run folder, i.e. while it validates the models.
    proc = start("train", "--config", killed / "run.yaml", "--no-report", cwd=killed)
    extracted = lambda: any(  # noqa: E731
        (d / "extraction" / "extraction.json").is_file() for d in run_folders(killed)
    )
    assert kill_when(proc, extracted), "train ended before it could be killed"
    (folder,) = run_folders(killed)
    assert not (folder / "summary.csv").exists()  # it was killed before the end
    for path in final_files(folder):
        assert_whole(path)

    res = runner.invoke(app, ["train", "--config", str(killed / "run.yaml"), "--no-report"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    # the killed run no longer shows as running: the rerun marked it KILLED
    client = MlflowClient(f"sqlite:///{killed}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("interrupt").experiment_id])
    statuses = {r.info.run_id: r.info.status for r in runs}
    assert statuses[folder.name] == "KILLED"
    assert "RUNNING" not in statuses.values()

    metrics, clean_metrics = finished_children(killed), finished_children(clean)
    assert set(metrics) == {("cox", "clinical"), ("cox", "clinical+imaging")}
    for key, values in clean_metrics.items():
        assert pd.Series(metrics[key]).equals(pd.Series(values)), key
    done = next(d for d in run_folders(killed) if (d / "summary.csv").is_file())
    (clean_folder,) = run_folders(clean)
    for sub in ("cox_clinical", "cox_clinical_imaging"):
        for name in ("coefficients.csv", "metrics.csv"):
            assert (done / sub / name).read_bytes() == (clean_folder / sub / name).read_bytes()
    for name in EXTRACT_OUTPUTS:
        assert (done / "extraction" / name).read_bytes() == (
            clean_folder / "extraction" / name
        ).read_bytes()
    for path in final_files(killed / "refracture-runs"):
        assert_whole(path)


# --- stale temporary files ---------------------------------------------------------------------


def test_a_write_sweeps_stale_temporary_files_of_the_same_file_only(tmp_path: Path) -> None:
    target = tmp_path / "features.parquet"
    stale = tmp_path / ".features.parquet.k1ll3d_x.tmp"
    recent = tmp_path / ".features.parquet.wr1t1ng_.tmp"  # a live writer's, as far as we know
    other = tmp_path / ".qc.csv.k1ll3d_y.tmp"  # another file's leftover
    lookalike = tmp_path / ".features.parquet.notes.tmp"  # not a name atomic_path makes
    old = time.time() - STALE_TMP_SECONDS - 60
    for path in (stale, recent, other, lookalike):
        path.write_bytes(b"half a table")
    for path in (stale, other, lookalike):
        os.utime(path, (old, old))

    write_text(target, "whole")
    assert target.read_text() == "whole"
    assert not stale.exists()
    assert recent.exists() and other.exists() and lookalike.exists()

    # A killed directory-writing run (e.g. a DICOM series) leaves a folder: swept as well.
    folder = tmp_path / ".series.abcdefgh.tmp"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(b"x")
    os.utime(folder, (old, old))
    assert sweep_stale_tmp(tmp_path / "series", refresh=True) == [folder]
    assert not folder.exists()
