"""--pseudonymise: keyed pseudonyms replace the site's own patient IDs in every output."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.errors import InputError
from refracture.privacy import ENV_KEY, Pseudonymiser

KEY = "a long secret kept at the site"


def test_pseudonyms_are_keyed_deterministic_and_scrub_whole_ids(monkeypatch) -> None:
    a, b = Pseudonymiser(KEY.encode()), Pseudonymiser(b"another long secret key")
    assert a("P0001") == Pseudonymiser(KEY.encode())("P0001") != b("P0001")
    assert a("P0001").startswith("PS-") and len(a("P0001")) == 19
    assert a("P1") != a("P10")
    text = "patient P1: file images/P1/pdff.nii.gz: broken; P10 and SP1 are others"
    scrubbed = a.scrub(text, ["P1"])
    assert "P1:" not in scrubbed and "/P1/" not in scrubbed
    assert "P10" in scrubbed and "SP1" in scrubbed  # only whole IDs
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(InputError, match=ENV_KEY):
        Pseudonymiser.from_env()
    with pytest.raises(InputError, match="at least 16"):
        Pseudonymiser(b"short")


_EMBEDDED = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


def _all_text(folder: Path) -> str:
    """Every file's bytes and name, except the refracture source each model ships (its
    docstrings use example IDs such as P0001)."""
    files = [p for p in folder.rglob("*") if p.is_file() and "/artifacts/code/" not in str(p)]
    text = "\n".join(p.read_bytes().decode("latin-1") + "\n" + p.name for p in files)
    # Figures embedded in the report are base64 text, where any five characters such as
    # "P0008" turn up by chance in megabytes of image data: they are not text anyone reads.
    return _EMBEDDED.sub("data:;base64,", text)


def test_extract_writes_no_original_id(synth_nifti, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY)
    work = tmp_path / "cohort"
    shutil.copytree(synth_nifti, work)
    manifest = pd.read_csv(work / "manifest.csv")
    (work / manifest.loc[1, "pdff"]).unlink()  # its error message names the image path
    out = tmp_path / "out"
    args = ["extract", "--manifest", str(work / "manifest.csv"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--qc-png", "--no-cache", "--pseudonymise"])
    assert result.exit_code == 1, result.output
    ps = Pseudonymiser(KEY.encode())
    features = pd.read_parquet(out / "features.parquet")
    assert set(features["patient_id"]) == {ps(p) for p in manifest["patient_id"]} - {ps("P0002")}
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors["patient_id"]) == [ps("P0002")]
    assert f"images/{ps('P0002')}/pdff.nii.gz" in errors["message"].iloc[0]
    text = _all_text(out) + result.output
    for pid in manifest["patient_id"]:
        assert pid not in text, pid


def test_score_writes_no_original_id(trained, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY)
    ids = pd.read_csv(trained.cohort / "manifest.csv")["patient_id"].head(10)
    features = trained.result.dataset.X.reset_index()
    features = features[features["patient_id"].isin(ids)]
    features.to_csv(tmp_path / "features.csv", index=False)
    out = tmp_path / "scores.csv"
    args = ["score", "--model", "models:/refracture-1y@champion", "--features",
            str(tmp_path / "features.csv"), "--out", str(out), "--pseudonymise",
            "--tracking-uri", trained.tracking_uri]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    ps = Pseudonymiser(KEY.encode())
    assert list(scores["patient_id"]) == [ps(p) for p in features["patient_id"]]
    assert not any(p in out.read_text() + result.output for p in ids)


def test_train_logs_no_original_id(trained, tmp_path, monkeypatch) -> None:
    from refracture.config import load_config
    from refracture.study import train

    monkeypatch.setenv(ENV_KEY, KEY)
    text = trained.config.read_text().replace(
        str(trained.root / "mlflow.db"), str(tmp_path / "mlflow.db")
    )
    text = text.replace("models: [cox, logistic]", "models: [cox]").replace(
        "bootstrap: 10", "bootstrap: 3"
    )
    cfg = tmp_path / "train.yaml"
    cfg.write_text(text)
    with contextlib.chdir(tmp_path):
        result = train(load_config(cfg), pseudonymise=True)
    ids = pd.read_csv(trained.cohort / "clinical.csv")["patient_id"]
    assert result.dataset.ids.str.startswith("PS-").all()
    written = _all_text(tmp_path / "refracture-runs") + _all_text(tmp_path / "mlruns")
    written += (tmp_path / "mlflow.db").read_bytes().decode("latin-1")
    leaked = [p for p in ids if p in written]
    assert not leaked, leaked[:5]
    assert os.environ[ENV_KEY] not in written  # nor the key
