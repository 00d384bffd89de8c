"""Commands start fast: ``--help`` and the light commands import no heavy package they do not
use (MLflow, scikit-survival, lifelines, PySpark, matplotlib, scikit-learn, SciPy, pandas for
help). Checked structurally, from what a fresh process has imported, not by timing;
scripts/bench_startup.py measures the times."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from refracture.cli import app

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "sksurv", "lifelines", "pyspark", "matplotlib", "sklearn", "scipy", "pandas")
# Runs the console script's code for each argument list in one fresh process, then reports
# what it imported.
PROBE = """
import json, sys
from refracture.cli import main
argsets, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for args in argsets:
    sys.argv = ["refracture", *args]
    try:
        main()
    except SystemExit as exc:
        codes.append(exc.code)
loaded = [m for m in heavy if m in sys.modules]
print(json.dumps({"codes": [c or 0 for c in codes], "loaded": loaded}))
"""


def _probe(argsets: list[list[str]], cwd: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argsets), json.dumps(HEAVY)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_no_heavy_package(tmp_path: Path) -> None:
    commands = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"check", "extract", "init", "promote", "score", "train"} <= set(commands)
    got = _probe([["--help"], *([c, "--help"] for c in commands)], tmp_path)
    assert got["codes"] == [0] * (len(commands) + 1)
    assert got["loaded"] == [], got["loaded"]


def test_init_and_check_import_no_model_library(synth_nifti: Path, tmp_path: Path) -> None:
    clinical = str(synth_nifti / "clinical.csv")
    got = _probe([["init", "--clinical", clinical]], tmp_path)
    assert got["codes"] == [0] and (tmp_path / "study.yaml").is_file()
    assert got["loaded"] == ["pandas"], got["loaded"]  # reading the table needs pandas
    check = ["check", "--config", "study.yaml", "--clinical", clinical, "--out", "check.csv"]
    got = _probe([check], tmp_path)
    assert got["codes"][0] in (0, 1) and (tmp_path / "check.csv").is_file()
    # nibabel reads the headers and imports SciPy's top level itself; no model library
    assert set(got["loaded"]) <= {"pandas", "scipy"}, got["loaded"]


def test_promote_imports_mlflow_but_no_model_library(trained, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    shutil.copyfile(trained.root / "mlflow.db", store)  # the session's store stays as it is
    uri = f"sqlite:///{store}"
    got = _probe(
        [["promote", "refracture-1y", "1", "--reason", "t", "--tracking-uri", uri]], tmp_path
    )
    assert got["codes"] == [0]
    assert "mlflow" in got["loaded"]
    assert not {"sksurv", "lifelines", "matplotlib", "sklearn"} & set(got["loaded"]), got
