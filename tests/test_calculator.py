"""`refracture calculator` as a user meets it: the real command serving the `trained` model on
127.0.0.1, driven in headless Chromium through Debian's chromedriver (W3C WebDriver): a
patient's row loaded into the form gives the numbers `refracture score` wrote for that row, a
what-if curve is drawn, an out-of-range value is refused with the field named, and the page
loads nothing from anywhere but the calculator's own server."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.features import extract_cohort
from refracture.features.manifest import read_manifest
from refracture.scoring import load_model
from test_report import chromium
from webdriver import Browser, chromedriver

URI = "models:/refracture-1y@champion"
PATIENTS = ["P0002", "P0005", "P0009"]


@pytest.fixture(scope="module")
def features(trained, tmp_path_factory) -> Path:
    """Three patients of the training cohort: clinical columns and measured imaging features."""
    root = tmp_path_factory.mktemp("calculator")
    manifest = read_manifest(trained.cohort / "manifest.csv")
    manifest = manifest[manifest.patient_id.isin(PATIENTS)]
    model = load_model(URI, trained.tracking_uri)
    feats = extract_cohort(manifest, model.bundle.extraction, cache_dir=None).features
    clinical = pd.read_csv(trained.cohort / "clinical.csv", dtype={"patient_id": str})
    table = clinical.merge(feats.drop(columns="site"), on="patient_id")
    path = root / "features.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def scores(trained, features: Path) -> pd.DataFrame:
    out = features.with_name("scores.csv")
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--tracking-uri",
            trained.tracking_uri,
            "--model",
            URI,
            "--features",
            str(features),
            "--out",
            str(out),
            "--explain",
        ],
    )
    assert res.exit_code == 0, res.output
    return pd.read_csv(out, dtype={"patient_id": str}, float_precision="round_trip")


@pytest.fixture(scope="module")
def server(trained, features: Path):
    """`refracture calculator --port 0` in its own process; yields its address."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [
        str(Path(sys.executable).with_name("refracture")),
        "calculator",
        "--model",
        URI,
        "--tracking-uri",
        trained.tracking_uri,
        "--port",
        "0",
        "--features",
        str(features),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # printed once the server listens
    found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    assert found, line + proc.stderr.read()
    yield found.group(1)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "calculator stopped" in rest


def _request(address: str, method: str, path: str, body: dict | None = None, host=None):
    port = int(address.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_api_refuses_other_hosts_and_out_of_range_values(server: str) -> None:
    status, headers, page = _request(server, "GET", "/")
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert re.findall(rb"(?:src|href)=\"([^\"]+)\"", page) == [
        b"/calculator.css",
        b"/calculator.js",
    ]
    status, _, _ = _request(server, "GET", "/api/model", host="rebinding.example:80")
    assert status == 403
    _, _, body = _request(server, "GET", "/api/model")
    typical = {f["name"]: f["default"] for f in json.loads(body)["fields"]}
    status, _, body = _request(
        server, "POST", "/api/predict", {"values": {**typical, "age": 400, "bmd_tscore": "abc"}}
    )
    assert status == 422
    refused = json.loads(body)["refused"]
    assert refused == {
        "age": "Age: 400 years is outside the plausible range 18-110 years; check the value "
        "and its unit",
        "bmd_tscore": "Bone density T-score: 'abc' is not a number",
    }
    # a PDFF typed as a fraction is inside 0-100 but physics rules it out: the model says why
    _, _, body = _request(
        server, "POST", "/api/predict", {"values": {**typical, "pdff_mean_normal": 0.45}}
    )
    answer = json.loads(body)
    assert answer["status"] == "error" and "looks like a fraction" in answer["error"]
    # an imaging feature left empty could not be measured: imputed and said, as in `score`
    _, _, body = _request(
        server, "POST", "/api/predict", {"values": {**typical, "pdff_mean_normal": ""}}
    )
    answer = json.loads(body)
    assert answer["status"] == "ok"
    assert answer["warnings"] == [
        "no pdff_mean_normal (not measurable): imputed with the training median"
    ]


def test_chromium_form_gives_the_scores_of_score_and_refuses_out_of_range(
    server: str, scores: pd.DataFrame, tmp_path: Path
) -> None:
    binary = chromium()
    if binary is None or chromedriver() is None:
        pytest.skip("no Chromium or chromedriver: install Debian's chromium-driver package")
    row = scores[scores.patient_id == PATIENTS[1]].iloc[0]
    with Browser(binary, tmp_path / "profile") as browser:
        browser.get(server)
        browser.wait("return document.body.dataset.ready === '1'")
        browser.click(f"#patient option[value='{PATIENTS[1]}']")  # the patient's row
        browser.wait("return document.body.dataset.state === 'answered'")
        shown = browser.script(
            "const a = document.getElementById('answer').dataset;return [a.risk, a.lp, a.group];"
        )
        assert float(shown[0]) == pytest.approx(row["risk_365d"], rel=1e-12, abs=0)
        assert float(shown[1]) == pytest.approx(row["linear_predictor"], rel=1e-12, abs=1e-12)
        assert shown[2] == row["risk_group"]
        terms = browser.script(
            "return [...document.querySelectorAll('#contributions tr')]"
            ".map(r => [r.dataset.term, Number(r.dataset.value)]);"
        )
        assert len(terms) == len([c for c in scores.columns if c.startswith("contrib_")])
        for term, value in terms:
            assert value == pytest.approx(row[f"contrib_{term}"], rel=1e-12, abs=1e-12)
        text = browser.script("return document.getElementById('risk-pct').textContent;")
        assert text == f"{100 * row['risk_365d']:.1f} %"

        # what if: the T-score across its range, one model call, drawn
        browser.click("#vary option[value='bmd_tscore']")
        browser.wait(
            "const s = document.querySelector('#curve svg');"
            "return s && s.getAttribute('aria-label').includes('T-score');"
        )
        assert browser.script("return document.querySelector('#curve svg').dataset.points") == "41"

        # an age of 130 is refused, the field named and marked, no risk shown
        browser.type("#in-age", "130")
        browser.click("#calculate")
        browser.wait("return document.body.dataset.state === 'refused'")
        refused = browser.script("return document.getElementById('refused').innerText;")
        assert "Age: 130 years is outside the plausible range 18-110 years" in refused
        assert browser.script("return document.getElementById('field-age').className") == (
            "field bad"
        )
        assert browser.script("return document.getElementById('answer').hidden") is True

        # nothing was fetched from anywhere but the calculator
        urls = browser.script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert urls and all(u.startswith(server) for u in urls), urls


def test_a_model_with_multiple_imputation_imputes_an_empty_covariate_as_score_does(tmp_path):
    """Trained with ``imputation: multiple``, the model scores a patient with a missing
    covariate (imputed, with a warning): the calculator leaves such a field optional and gives
    the risk `score` gives for the same row, instead of refusing it."""
    import dataclasses

    import numpy as np

    from refracture.bundle import ModelBundle
    from refracture.outputs.calculator import Calculator
    from refracture.results import Candidate
    from refracture.scoring.model import ScoringModel
    from refracture.scoring.rows import predict_frame
    from refracture.study import validate_candidate
    from refracture.study.packaging import make_bundle
    from survival_cohort import config, dataset

    ds = dataset(160, 11)
    X = ds.X.copy()
    X.loc[X.index[::6], "bmi"] = np.nan
    ds = dataclasses.replace(ds, X=X, n_missing={**ds.n_missing, "bmi": int(X["bmi"].isna().sum())})
    cfg = config(
        validation={"split": "none", "bootstrap": 0}, imputation={"method": "multiple", "m": 2}
    )
    result = validate_candidate("logistic", "clinical", ds, cfg, None).result
    make_bundle(Candidate("logistic", "clinical", result), cfg, ds).to_dir(tmp_path / "m")
    bundle = ModelBundle.from_dir(tmp_path / "m")
    calc = Calculator(ScoringModel("local", "test", bundle))
    fields = {f.name: f for f in calc.fields}
    assert fields["bmi"].imputed and fields["bmi"].as_json()["imputed"]

    row = ds.model_input("clinical").iloc[[0]].reset_index()
    values = {f: row.loc[0, f] for f in fields} | {"bmi": ""}
    got = calc.predict(values)
    want = predict_frame(bundle, row.assign(bmi=np.nan), explain=True).iloc[0]
    assert got["status"] == "ok" and got["warnings"] == ["missing bmi: imputed"]
    assert got["risk"] == want["risk_365d"] and got["group"] == want["risk_group"]
