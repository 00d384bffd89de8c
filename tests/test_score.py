"""`refracture score` against the real SQLite MLflow store of the `trained` fixture, on real
NIfTI cohorts: nothing lost, same risks as the pyfunc, exit codes, resume after a kill."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.config import load_config
from refracture.errors import InputError
from refracture.features import extract_cohort
from refracture.features.manifest import read_manifest
from refracture.scoring import load_model, score
from refracture.scoring.checkpoint import Checkpoint, checkpoint_dir
from refracture.synth import write_cohort

URI = "models:/refracture-1y@champion"
runner = CliRunner()


def run_cli(trained, *args: str | Path) -> object:
    return runner.invoke(
        app, ["score", "--tracking-uri", trained.tracking_uri, *[str(a) for a in args]]
    )


@pytest.fixture(scope="module")
def model(trained):
    return load_model(URI, trained.tracking_uri)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve new patients; six of them broken in a different way each.

    S0002 pdff file deleted, S0004 labels file corrupt, S0005 label map on a grid that does
    not overlap the maps, S0006 age missing, S0007 sex never seen in training, S0008 age 130
    (implausible: scored with a warning).
    """
    out = tmp_path_factory.mktemp("score_batch")
    write_cohort(out, n=12, n_sites=2, seed=8, id_prefix="S", jobs=2)
    images = out / "images"
    (images / "S0002" / "pdff.nii.gz").unlink()
    (images / "S0004" / "labels.nii.gz").write_bytes(b"this is not a NIfTI file")
    moved = nib.load(images / "S0005" / "labels.nii.gz")
    affine = moved.affine.copy()
    affine[:3, 3] += 5000.0  # 5 m away: no voxel in common with the PDFF map
    nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), affine), images / "S0005" / "labels.nii.gz")
    clinical = pd.read_csv(out / "clinical.csv", dtype={"patient_id": str, "sex": str})
    clinical.loc[clinical.patient_id == "S0006", "age"] = np.nan
    clinical.loc[clinical.patient_id == "S0007", "sex"] = "X"
    clinical.loc[clinical.patient_id == "S0008", "age"] = 130
    clinical.to_csv(out / "clinical.csv", index=False)
    return out


def pyfunc_predictions(trained, frame: pd.DataFrame) -> pd.DataFrame:
    mlflow.set_tracking_uri(trained.tracking_uri)
    mlflow.set_registry_uri(trained.tracking_uri)
    return mlflow.pyfunc.load_model(URI).predict(frame)


def model_frame(model, table: pd.DataFrame) -> pd.DataFrame:
    """The columns the pyfunc signature asks for, typed as it wants them."""
    cols = model.inputs
    frame = table[["patient_id", *cols.names]].copy()
    for c in [*cols.numeric, *cols.binary]:
        frame[c] = frame[c].astype(float)
    return frame.reset_index(drop=True)


def test_broken_patients_keep_every_row_and_good_risks_match_the_pyfunc(
    trained, model, broken: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    res = run_cli(
        trained,
        *("--model", URI, "--manifest", broken / "manifest.csv"),
        *("--clinical", broken / "clinical.csv", "--out", out),
        *("--jobs", "2", "--cache-dir", tmp_path / "cache"),
    )
    assert res.exit_code == 1, res.output
    assert "12 patients" in res.stdout and "7 ok / 5 error" in res.stdout
    scores = pd.read_csv(out, dtype=str, keep_default_na=False)
    ids = [f"S{i:04d}" for i in range(1, 13)]
    assert list(scores.patient_id) == ids  # every patient, in input order
    by_id = scores.set_index("patient_id")
    bad = {"S0002", "S0004", "S0005", "S0006", "S0007"}
    assert set(by_id.index[by_id.status == "error"]) == bad
    assert "pdff image not found" in by_id.loc["S0002", "error"]
    assert "labels" in by_id.loc["S0004", "error"]
    assert "overlap" in by_id.loc["S0005", "error"]
    assert "missing age" in by_id.loc["S0006", "error"]
    assert "sex 'X' was not seen in training" in by_id.loc["S0007", "error"]
    assert "age=130 outside plausible 18-110" in by_id.loc["S0008", "warnings"]
    assert str(broken) not in " ".join(scores.error)  # paths as the manifest wrote them
    for pid in bad:
        assert by_id.loc[pid, "risk_365d"] == "" and by_id.loc[pid, "risk_group"] == ""
    assert set(scores.model_version) == {trained.result.decision.version}
    assert not list(tmp_path.glob(".*"))  # no checkpoint or temporary file left behind

    # The good rows: the registry's own pyfunc on the same features gives the same risks.
    manifest = read_manifest(broken / "manifest.csv")
    good = manifest[~manifest.patient_id.isin(bad)]
    feats = extract_cohort(good, model.bundle.extraction, cache_dir=None).features
    clinical = pd.read_csv(broken / "clinical.csv", dtype={"patient_id": str, "sex": str})
    frame = model_frame(model, good[["patient_id"]].merge(clinical).merge(feats))
    expected = pyfunc_predictions(trained, frame).set_index("patient_id")
    ok = scores[scores.status == "ok"].set_index("patient_id")
    assert list(ok.index) == list(expected.index)
    for col in ("risk_365d", "linear_predictor"):
        np.testing.assert_allclose(ok[col].astype(float), expected[col], rtol=1e-12, atol=0)
    assert list(ok.risk_group) == list(expected.risk_group)


def test_features_file_to_parquet_with_explain(trained, model, tmp_path: Path) -> None:
    ds = trained.result.dataset
    frame = model_frame(model, ds.X.reset_index()).dropna().head(60)
    features = tmp_path / "features.parquet"
    frame.assign(site="site_1", qc_levels="L1").to_parquet(features)  # extra columns are fine
    out = tmp_path / "scores.parquet"
    res = run_cli(trained, "--model", URI, "--features", features, "--out", out, "--explain")
    assert res.exit_code == 0, res.output
    scores = pd.read_parquet(out)
    assert list(scores.patient_id) == list(frame.patient_id)
    assert (scores.status == "ok").all()
    terms = [c for c in scores.columns if c.startswith("contrib_")]
    assert terms == [f"contrib_{t}" for t in model.bundle.terms]
    np.testing.assert_allclose(
        scores[terms].sum(axis=1), scores.linear_predictor - scores.lp_reference, atol=1e-10
    )
    expected = pyfunc_predictions(trained, frame)
    np.testing.assert_allclose(scores.risk_365d, expected.risk_365d, rtol=1e-12, atol=0)


def test_input_columns_that_do_not_match_the_model_exit_2_with_the_list(
    trained, model, tmp_path: Path
) -> None:
    frame = model_frame(model, trained.result.dataset.X.reset_index()).head(5)
    features = tmp_path / "features.csv"
    frame.rename(columns={"age": "Age"}).drop(columns="bmd_tscore").to_csv(features, index=False)
    out = tmp_path / "scores.csv"
    res = run_cli(trained, "--model", URI, "--features", features, "--out", out)
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "missing from the features file: age, bmd_tscore" in message
    assert "unexpected column(s): Age" in message and "'Age' for 'age'" in message
    assert not out.exists()


@pytest.mark.parametrize(
    "uri", ["models:/refracture-1y@no-such-alias", "models:/no-such-model/1", "not/a/model"]
)
def test_a_model_uri_that_cannot_be_loaded_exits_2(trained, broken: Path, tmp_path, uri) -> None:
    res = run_cli(
        trained, "--model", uri, "--features", broken / "clinical.csv", "--out", tmp_path / "s.csv"
    )
    assert res.exit_code == 2, res.output
    assert "cannot load the model" in res.output


def test_duplicate_ids_and_explain_on_a_tree_model_are_input_errors(
    trained, model, tmp_path
) -> None:
    features = tmp_path / "features.csv"
    pd.DataFrame({"patient_id": ["A", "B", "A"], "age": [70.0, 71.0, 72.0]}).to_csv(features)
    with pytest.raises(InputError, match="duplicated patient IDs in the features file"):
        score(model, features=features, out=tmp_path / "s.csv")
    from refracture.models import make_pipeline

    cov = model.bundle.covariates
    forest = make_pipeline(
        "rsf",
        numeric=cov.numbers,
        binary=cov.binary,
        categorical=cov.reference_levels,
        horizon=model.bundle.horizon_days,
        n_estimators=5,
    )
    ds = trained.result.dataset
    forest.fit(ds.X[cov.names], ds.y)
    rsf = dataclasses.replace(
        model, bundle=dataclasses.replace(model.bundle, pipeline=forest, model="rsf")
    )
    with pytest.raises(InputError, match="explain needs a model with per-term contributions"):
        score(rsf, features=features, out=tmp_path / "s.csv", explain=True)


def test_clinical_only_model_needs_no_images(trained, broken: Path, tmp_path: Path) -> None:
    from refracture.scoring import ScoringModel
    from refracture.study.packaging import make_bundle

    cand = next(
        c
        for c in trained.result.candidates
        if c.feature_set == "clinical" and c.model == "logistic"
    )
    bundle = make_bundle(cand, load_config(trained.config), trained.result.dataset)
    clinical_only = ScoringModel("local", "test", bundle)
    out = tmp_path / "scores.csv"
    # The broken images do not matter: no image is opened.
    result = score(
        clinical_only,
        manifest=broken / "manifest.csv",
        clinical=broken / "clinical.csv",
        out=out,
    )
    assert len(result.scores) == 12
    assert set(result.scores.patient_id[result.scores.status == "error"]) == {"S0006", "S0007"}
    with pytest.raises(InputError, match="give the covariates with --clinical"):
        score(clinical_only, manifest=broken / "manifest.csv", out=out)


def test_resume_reuses_an_earlier_output_and_ignores_another_versions_checkpoint(
    trained, model, tmp_path: Path
) -> None:
    frame = model_frame(model, trained.result.dataset.X.reset_index()).dropna().head(30)
    features = tmp_path / "features.csv"
    frame.to_csv(features, index=False)
    out = tmp_path / "scores.csv"
    first = score(model, features=features, out=out, chunk_size=8)
    clean = out.read_bytes()
    again = score(model, features=features, out=out, chunk_size=8, resume=True)
    assert again.n_reused == 30 and out.read_bytes() == clean

    # A checkpoint left by another model version is not trusted.
    out.unlink()
    stale = Checkpoint(checkpoint_dir(out), {"model_name": first.model.label, "model_version": "0"})
    stale.start(keep=False)
    bogus = first.scores.head(8).assign(risk_365d=0.5)
    stale.write([(0, bogus)])
    resumed = score(model, features=features, out=out, chunk_size=8, resume=True)
    assert resumed.n_reused == 0
    assert any("model version 0" in n for n in resumed.notes)
    assert out.read_bytes() == clean
    assert not checkpoint_dir(out).exists()


def _start_killable(trained, manifest: Path, clinical: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri}
    code = "from refracture.cli import main; main()"
    args = [
        *("score", "--model", URI, "--manifest", str(manifest), "--clinical", str(clinical)),
        *("--out", str(out), "--jobs", "1", "--no-cache", "--chunk-size", "2"),
    ]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches only this run
    )


def test_resume_after_a_kill_gives_the_same_file_as_a_clean_run(
    trained, synth_nifti: Path, tmp_path: Path
) -> None:
    base = read_manifest(synth_nifti / "manifest.csv")
    clinical = pd.read_csv(synth_nifti / "clinical.csv", dtype={"patient_id": str, "sex": str})
    out = tmp_path / "killed.csv"
    parts_dir = checkpoint_dir(out)
    copies = 5
    for _attempt in range(3):
        # The same eight image sets under new IDs: a batch long enough to be killed mid-way.
        ids = [f"{pid}-{k}" for k in range(copies) for pid in base.patient_id]
        manifest = pd.concat([base] * copies, ignore_index=True).assign(patient_id=ids)
        manifest["treated_levels"] = manifest["treated_levels"].map(";".join)
        manifest["fractured_levels"] = manifest["fractured_levels"].map(";".join)
        manifest.to_csv(tmp_path / "manifest.csv", index=False)
        clin = pd.concat([clinical] * copies, ignore_index=True).assign(patient_id=ids)
        clin.to_csv(tmp_path / "clinical.csv", index=False)

        proc = _start_killable(trained, tmp_path / "manifest.csv", tmp_path / "clinical.csv", out)
        deadline = time.monotonic() + 60
        killed = False
        while proc.poll() is None and time.monotonic() < deadline:
            if list(parts_dir.glob("part-*.parquet")):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
        proc.wait(timeout=30)
        if killed:
            break
        copies *= 3  # the run finished before the first checkpoint was seen: a longer batch
    assert killed, "the scoring run always finished before it could be killed"
    assert not out.exists()  # nothing under the final name until the run is complete
    assert list(parts_dir.glob("part-*.parquet"))

    common = [
        *("--model", URI, "--manifest", tmp_path / "manifest.csv"),
        *("--clinical", tmp_path / "clinical.csv", "--jobs", "1", "--chunk-size", "2"),
        *("--cache-dir", tmp_path / "cache"),
    ]
    resumed = run_cli(trained, *common, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "reused from an earlier run" in resumed.stdout
    assert not parts_dir.exists()
    clean = run_cli(trained, *common, "--out", tmp_path / "clean.csv")
    assert clean.exit_code == 0, clean.output
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert len(pd.read_csv(out)) == len(ids)


def test_a_second_run_on_the_same_output_waits_for_the_first(model, tmp_path: Path) -> None:
    features = tmp_path / "features.csv"
    pd.DataFrame({"patient_id": ["A"], "age": [70.0]}).to_csv(features, index=False)
    out = tmp_path / "scores.csv"
    folder = checkpoint_dir(out)
    folder.mkdir()
    (folder / "pid").write_text(str(os.getppid()))  # a live process that is not this one
    with pytest.raises(InputError, match="another refracture score run"):
        score(model, features=features, out=out)
    assert folder.exists()  # the other run's checkpoint is left alone
