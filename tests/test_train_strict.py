"""`train` is at least as strict as `score` (issue 22, items 2, 6 and 9).

A hospital's study as a new user would bring it: the manifest holds only the required
columns, the images declare no unit (so each site's unit is decided from its patients), one
patient's PDFF map is stored as a fraction, one age is 400, and the clinical table is keyed by
the hospital's own ID column. `train` must refuse what `score` would refuse, before anything
reaches MLflow; exclusions on purpose and `--exclude-invalid` go through with their reasons;
the model scores by the study's ID column; Ctrl-C leaves a KILLED run and the command that
resumes. Everything shares one 22-patient cohort and one feature cache.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from refracture.cli import app
from refracture.config import load_config
from refracture.study import train
from refracture.synth import write_cohort

runner = CliRunner()
FRACTION, WRONG_AGE = "P0003", "P0005"

CONFIG = """\
data:
  manifest: {root}/manifest.csv
  clinical: {root}/clinical.csv
  id_column: Fallnummer
  cache_dir: {root}/cache
{exclude}
covariates:
  numeric: [age]
  binary: [prior_fracture]
  categorical: {{}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
extraction:
  r2star_units: per_s
models: [cox]
validation:
  split: random
  bootstrap: {bootstrap}
  seed: 0
  jobs: 1
mlflow:
  tracking_uri: sqlite:///{root}/mlflow.db
  experiment: strict
"""


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospital")
    cohort = root / "synth"
    write_cohort(cohort, n=22, n_sites=1, seed=16, jobs=2)  # 8 re-fractures by a year
    shutil.copytree(cohort / "images", root / "images")
    for sidecar in (root / "images").rglob("*.json"):
        sidecar.unlink()  # nothing declares a unit: each site's is decided from its patients
    man = pd.read_csv(cohort / "manifest.csv", dtype=str)
    man[["patient_id", "site", "pdff", "r2star", "labels"]].to_csv(
        root / "manifest.csv", index=False
    )
    pdff = root / "images" / FRACTION / "pdff.nii.gz"
    img = nib.load(pdff)
    data = np.asarray(img.dataobj, dtype=np.float32) / 100.0  # stored as a fraction
    nib.save(nib.Nifti1Image(data, img.affine), pdff)
    clin = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str})
    clin.loc[clin["patient_id"] == WRONG_AGE, "age"] = 400
    clin.rename(columns={"patient_id": "Fallnummer"}).to_csv(root / "clinical.csv", index=False)
    return root


def config(root: Path, name: str, exclude: str = "", bootstrap: int = 2) -> Path:
    path = root / name
    path.write_text(CONFIG.format(root=root, exclude=exclude, bootstrap=bootstrap))
    return path


def runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("strict")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_train_refuses_what_score_would_and_excludes_only_on_purpose(
    hospital: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(hospital)
    # 1. the check: the impossible age, before any image is measured
    res = runner.invoke(app, ["train", "--config", str(config(hospital, "a.yaml"))])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"error: patient {WRONG_AGE}: file ") and "'age'" in line
    assert not (hospital / "mlflow.db").exists() and not (hospital / "cache").exists()

    # 2. the age excluded on purpose: the images are measured, and the fraction read as
    # percent (the site's unit) is refused as scoring would refuse it
    exclude = f"  exclude:\n    {WRONG_AGE}: age not recorded"
    res = runner.invoke(app, ["train", "--config", str(config(hospital, "b.yaml", exclude))])
    assert res.exit_code == 2, res.output
    listed = pd.read_csv(hospital / "refracture-runs" / "check.csv", dtype=str)
    assert set(listed["patient_id"]) == {FRACTION}, listed
    problems = " ".join(listed["problem"])
    assert "PDFF looks like a fraction (0-1), not percent" in problems
    assert "contradict the unit decided for the site" in problems
    assert not (hospital / "mlflow.db").exists()  # still nothing logged
    assert [p.name for p in (hospital / "refracture-runs").iterdir()] == ["check.csv"]

    # 3. --exclude-invalid --no-register: trained on the others, both reasons in the flow
    res = runner.invoke(app, ["train", "--config", str(hospital / "b.yaml"), "--no-report",
                              "--exclude-invalid", "--no-register"])  # fmt: skip
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "not registered (train --no-register)" in said
    (run,) = [r for r in runs(hospital) if "mlflow.parentRunId" not in r.data.tags]
    folder = hospital / "refracture-runs" / run.info.run_id
    excluded = pd.read_csv(folder / "excluded.csv", dtype=str).set_index("patient_id")["reason"]
    assert excluded[WRONG_AGE] == "excluded on purpose: age not recorded"
    assert "PDFF looks like a fraction" in excluded[FRACTION]
    flow = MlflowClient(f"sqlite:///{hospital}/mlflow.db").download_artifacts(
        run.info.run_id, "cohort_flow.json", str(hospital)
    )
    assert '"n_excluded": 2' in Path(flow).read_text()
    assert not MlflowClient(f"sqlite:///{hospital}/mlflow.db").search_registered_models()

    # 4. score: by the study's own ID column, and the fraction patient is an error row
    uri = said.split("the model is logged in its run as ")[1].split()[0]
    res = runner.invoke(app, ["score", "--model", uri, "--tracking-uri",
                              f"sqlite:///{hospital}/mlflow.db", "--manifest",
                              str(hospital / "manifest.csv"), "--clinical",
                              str(hospital / "clinical.csv"), "--out", "scores.csv",
                              "--jobs", "1", "--cache-dir", str(hospital / "cache")])  # fmt: skip
    assert res.exit_code == 1, res.output
    scores = pd.read_csv("scores.csv").set_index("patient_id")
    assert len(scores) == 22 and "risk_death_365d" in scores
    assert scores.loc[FRACTION, "status"] == "error"
    assert "PDFF looks like a fraction" in scores.loc[FRACTION, "error"]
    assert "age=400 outside plausible" in scores.loc[WRONG_AGE, "warnings"]
    assert (scores.drop([FRACTION])["status"] == "ok").all()


def test_ctrl_c_marks_the_run_killed_and_says_how_to_resume(
    hospital: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT (what Ctrl-C sends) while the models are validated, in this process."""
    monkeypatch.chdir(hospital)
    exclude = f"  exclude:\n    {WRONG_AGE}: age\n    {FRACTION}: fraction"
    path = config(hospital, "c.yaml", exclude)
    before = {r.info.run_id for r in runs(hospital)}

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("validating"):
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(load_config(path), progress=progress, report=False)
    (killed,) = [r for r in runs(hospital) if r.info.run_id not in before]
    assert killed.info.status == "KILLED"
    assert (hospital / "refracture-runs" / killed.info.run_id).is_dir()
    # what the terminal says then: the command that starts again, and that the cache is kept
    cli = sys.modules["refracture.cli.app"]
    command = sys.modules["refracture.cli.commands.study"].train.__wrapped__
    said = cli._interrupted(command, {"config": path, "report": False, "register": True})
    assert said == (
        "the MLflow run is marked KILLED; start again with "
        f"`refracture train --config {path} --no-report`: it reuses the feature cache "
        "(data.cache_dir), so the patients already measured are not measured again"
    )


def test_the_score_resume_command_is_the_command_typed_with_resume() -> None:
    cli = sys.modules["refracture.cli.app"]
    score = sys.modules["refracture.cli.commands.scoring"].score.__wrapped__
    typed = {
        "model": "models:/refracture-1y@champion",
        "out_file": Path("s.csv"),
        "manifest": Path("new dir/m.csv"),
        "jobs": 1,
        "resume": False,
        "explain": False,
    }
    line = cli.command_line(score, typed, ("--resume",))  # fmt: skip
    assert line == (
        "refracture score --model models:/refracture-1y@champion --out s.csv "
        "--manifest 'new dir/m.csv' --jobs 1 --resume"
    )
