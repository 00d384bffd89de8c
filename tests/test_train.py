"""`refracture train` against a real SQLite MLflow store: runs, registry, pyfunc, serving."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from refracture.cli import app
from refracture.cli.terminal import WIDE
from refracture.validation.metrics import metric_names


@pytest.fixture()
def client(trained) -> MlflowClient:
    mlflow.set_tracking_uri(trained.tracking_uri)
    mlflow.set_registry_uri(trained.tracking_uri)
    return MlflowClient()


def _runs(client: MlflowClient, trained) -> pd.DataFrame:
    exp = client.get_experiment_by_name("test")
    return mlflow.search_runs([exp.experiment_id], output_format="pandas")


def model_input(trained, n: int = 12) -> pd.DataFrame:
    """Covariates and imaging features of some patients, as a registry consumer sends them."""
    ds = trained.result.dataset
    x = ds.X.reset_index().head(n).copy()
    return x[["patient_id", *ds.covariates.names, *ds.imaging_features]]


def test_one_parent_and_a_nested_run_per_model_and_feature_set(trained, client) -> None:
    runs = _runs(client, trained)
    parent_id = trained.result.parent_run_id
    children = runs[runs["tags.mlflow.parentRunId"] == parent_id]
    models, sets = children["tags.refracture.model"], children["tags.refracture.feature_set"]
    pairs = set(zip(models, sets, strict=True))
    assert pairs == {(m, f) for m in ("cox", "logistic") for f in ("clinical", "clinical+imaging")}

    parent = client.get_run(parent_id)
    # params: the flattened config
    assert parent.data.params["validation.bootstrap"] == "10"
    assert parent.data.params["outcome.horizon_days"] == "365.0"
    assert "covariates.numeric" in parent.data.params
    # tags: version, dataset digest, registry decision, competing-risk note
    tags = parent.data.tags
    assert tags["refracture.version"]
    assert tags["refracture.dataset_digest"]
    assert "censoring" in tags["refracture.competing_risk"]
    assert tags["refracture.registered_version"] == trained.result.decision.version
    # input data logged with mlflow.data: digest and schema, never patient rows
    inputs = parent.inputs.dataset_inputs
    names = {d.dataset.name for d in inputs}
    assert {"clinical", "imaging-features", "modelling-data"} <= names
    for d in inputs:
        assert d.dataset.digest and json.loads(d.dataset.schema)
        assert "P0001" not in d.dataset.profile and "P0001" not in d.dataset.schema
    modelling = next(d.dataset for d in inputs if d.dataset.name == "modelling-data")
    assert modelling.digest == tags["refracture.dataset_digest"]
    arts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"config.yaml", "summary.csv", "cohort_flow.json", "report.html"} <= arts


def test_nested_runs_carry_metrics_and_artifacts(trained, client) -> None:
    runs = _runs(client, trained)
    children = runs[runs["tags.mlflow.parentRunId"] == trained.result.parent_run_id]
    for _, row in children.iterrows():
        run = client.get_run(row["run_id"])
        m = run.data.metrics
        for name in metric_names(365):
            if row["tags.refracture.model"] == "logistic" and name.startswith("ibs"):
                continue  # the logistic model has no survival curve
            for suffix in ("", "_lo", "_hi", "_optcorr", "_optcorr_lo", "_optcorr_hi"):
                assert np.isfinite(m[name + suffix]), (row["tags.mlflow.runName"], name + suffix)
        if row["tags.refracture.feature_set"] == "clinical+imaging":
            for key in ("delta_cindex", "nri_365d", "idi_365d"):
                assert key in m
            if row["tags.refracture.model"] == "cox":
                assert 0 <= m["lrt_p"] <= 1
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"coefficients.csv", "metrics.csv", "model_card.md", "plots"} <= arts
        plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
        assert {"calibration.png", "km_risk_groups.png", "td_roc.png", "decision_curve.png",
                "forest.png"} <= plots  # fmt: skip
        assert row["tags.refracture.estimand"] == "cif"  # the synthetic cohort has deaths
        if row["tags.refracture.model"] == "cox":  # two cause-specific models: no points scale
            assert "nomogram.png" not in plots
            why = json.loads(
                Path(
                    mlflow.artifacts.download_artifacts(
                        run_id=run.info.run_id, artifact_path="undefined.json"
                    )
                ).read_text()
            )
            assert "cause-specific" in why["nomogram"]
        else:
            assert "nomogram.png" in plots
        card = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="model_card.md"
            )
        ).read_text()
        for heading in (
            "## Intended use",
            "## Data",
            "## Performance",
            "## Limitations",
            "TRIPOD+AI",
        ):
            assert heading in card
        coef = pd.read_csv(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="coefficients.csv"
            )
        )
        ratio = "hr" if row["tags.refracture.model"] == "cox" else "or"
        assert list(coef.columns) == ["term", "coef", ratio, "lower95", "upper95", "p"]
        assert "sex[M]" in set(coef["term"])
        np.testing.assert_allclose(np.exp(coef["coef"]), coef[ratio], rtol=1e-9)


def test_registered_version_with_alias_description_and_model(trained, client) -> None:
    d = trained.result.decision
    mv = client.get_model_version_by_alias("refracture-1y", "champion")
    assert str(mv.version) == d.version and d.promoted
    assert "Harrell C" in mv.description and "calibration slope" in mv.description
    assert mv.tags["refracture.selection_metric"] == "cindex_harrell_optcorr"
    assert mv.tags["refracture.feature_set"] == "clinical+imaging"
    info = mlflow.models.get_model_info("models:/refracture-1y@champion")
    inputs = {c.name for c in info.signature.inputs.inputs}
    assert {"age", "sex", "pdff_mean_normal", "r2star_mean_normal"} <= inputs
    outputs = [c.name for c in info.signature.outputs.inputs]
    assert outputs[:2] == ["patient_id", "risk_365d"] and "status" in outputs
    local = Path(mlflow.artifacts.download_artifacts("models:/refracture-1y@champion"))
    reqs = (local / "requirements.txt").read_text()
    assert "scikit-survival==" in reqs and "lifelines==" in reqs
    example = json.loads((local / "input_example.json").read_text())
    assert example["data"][0][0] == "example-1"  # made up, not a patient's row
    bundle = json.loads((local / "artifacts" / "bundle" / "bundle.json").read_text())
    assert bundle["extraction"]["erosion_mm"] == 2.0  # training-time ROI settings inside
    assert "misregistration" in bundle["extraction"]["qc_errors"]  # and the QC policy
    # no unit config: the synthetic cohort declares its units, pinned per training site
    assert bundle["site_units"] == {
        s: {"pdff": "percent", "r2star": "per_s"} for s in ("site_1", "site_2")
    }
    assert bundle["bundle_version"] == 3
    assert (local / "code" / "refracture" / "scoring" / "pyfunc.py").is_file()  # no cloudpickle


def test_pyfunc_in_a_fresh_process_gives_the_in_memory_risks(trained, tmp_path) -> None:
    df = model_input(trained)
    expected = trained.result.selected.result.final_model.predict_risk(df)
    df.to_parquet(tmp_path / "in.parquet")
    code = (
        "import mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/refracture-1y@champion')\n"
        "df = pd.read_parquet('in.parquet')\n"
        "m.predict(df).to_parquet('out.parquet')\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=180)
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert list(got["patient_id"]) == list(df["patient_id"])
    assert (got["status"] == "ok").all()
    np.testing.assert_allclose(got["risk_365d"], expected, rtol=1e-12)
    assert set(got["risk_group"]) <= {"low", "intermediate", "high"}


def _no_nan(token: str) -> float:
    raise AssertionError(f"the server answered with a bare {token}, which is not JSON")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_the_same_risks(trained, tmp_path) -> None:
    df = model_input(trained, 5)
    expected = trained.result.selected.result.final_model.predict_risk(df)
    bad = df.iloc[[0]].assign(patient_id="BAD-1", sex="X")  # a category never seen: error row
    df = pd.concat([df, bad], ignore_index=True)
    port = _free_port()
    bindir = str(Path(sys.executable).parent)
    path = bindir + os.pathsep + os.environ.get("PATH", "")  # uvicorn is found on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained.tracking_uri, "PATH": path}
    uri = "models:/refracture-1y@champion"
    cmd = [os.path.join(bindir, "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port)]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        else:
            pytest.fail(
                "mlflow models serve did not start: " + (tmp_path / "serve.log").read_text()[-2000:]
            )
        # json.dumps writes Python floats exactly (pandas' to_json rounds to 10 digits)
        split = df.to_dict(orient="split", index=False)
        payload = json.dumps({"dataframe_split": split})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=payload.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read(), parse_constant=_no_nan)  # strict JSON
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    preds = pd.DataFrame(answer["predictions"])
    assert list(preds["patient_id"]) == list(df["patient_id"])
    np.testing.assert_allclose(preds["risk_365d"][:5].astype(float), expected, rtol=1e-12)
    assert preds["status"].iloc[5] == "error" and answer["predictions"][5]["risk_365d"] is None
    assert "not seen in training" in preds["error"].iloc[5]


def test_a_worse_run_registers_a_version_but_does_not_move_the_alias(
    trained, client, tmp_path
) -> None:
    import contextlib

    from refracture.config import load_config
    from refracture.study import train

    first = trained.result.decision
    worse = tmp_path / "worse.yaml"
    text = trained.config.read_text()
    text = text.replace("numeric: [age, bmd_tscore]", "numeric: [bmi]")
    text = text.replace("binary: [prior_fracture, anti_osteoporosis]", "binary: [diabetes]")
    text = text.replace(
        "features: [pdff_mean_normal, r2star_mean_normal]", "features: [pdff_n_normal]"
    )
    text = text.replace("models: [cox, logistic]", "models: [cox]")
    worse.write_text(text)
    with contextlib.chdir(trained.root):
        result = train(load_config(worse), config_path=worse, report=False)
    d = result.decision
    assert int(d.version) > int(first.version)
    assert d.value < first.value
    assert not d.promoted and "not better" in d.reason
    assert (
        str(client.get_model_version_by_alias("refracture-1y", "champion").version) == first.version
    )
    tags = client.get_run(result.parent_run_id).data.tags
    assert tags["refracture.alias_decision"] == d.reason


def test_alias_moves_only_on_a_better_score(trained, client) -> None:
    from refracture.registry import register

    source = client.get_model_version_by_alias("refracture-1y", "champion").source
    # margin 0: this checks the orientation of the metric, not the noise rule (test_registry)
    kw = {"alias": "best", "metric": "brier_365d", "description": "t", "tags": {}, "margin": 0.0}
    a = register(source, name="alias-test", value=0.20, score=-0.20, **kw)
    b = register(source, name="alias-test", value=0.25, score=-0.25, **kw)  # worse Brier
    c = register(source, name="alias-test", value=0.10, score=-0.10, **kw)  # better Brier
    assert a.promoted and not b.promoted and c.promoted
    assert str(client.get_model_version_by_alias("alias-test", "best").version) == c.version


def test_train_is_deterministic(trained, tmp_path) -> None:
    """Same config and seed: identical metrics and coefficients (issue 8, item 5)."""
    import contextlib

    from refracture.config import load_config
    from refracture.study import train

    text = trained.config.read_text().replace(
        f"sqlite:///{trained.root}/mlflow.db", f"sqlite:///{tmp_path}/mlflow.db"
    )
    cfg_path = tmp_path / "again.yaml"
    cfg_path.write_text(text)
    with contextlib.chdir(tmp_path):
        again = train(load_config(cfg_path), report=False)
    for a, b in zip(trained.result.candidates, again.candidates, strict=True):
        assert pd.Series(a.result.metrics).equals(pd.Series(b.result.metrics))  # NaN == NaN
        if a.result.coefficients is not None:
            pd.testing.assert_frame_equal(a.result.coefficients, b.result.coefficients)


def test_train_cli_bad_config_exits_2_naming_the_key(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {clinical: x.csv}\nvalidation: {bootstrap: many, foo: 1}\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert "validation.bootstrap" in result.output and "validation.foo" in result.output
    assert "Traceback" not in result.output
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        f"data: {{clinical: {tmp_path}/none.csv}}\ncovariates: {{numeric: [age]}}\n"
        "feature_sets: [clinical]\n"
    )
    result = CliRunner().invoke(app, ["train", "--config", str(missing)])
    assert result.exit_code == 2 and "clinical table not found" in result.output


def test_pyfunc_takes_integers_imputes_unmeasurable_imaging_and_answers_json_safe(trained) -> None:
    """A registry consumer's table as read from CSV: integer ages, one patient whose adjacent
    vertebrae could not be measured, one with a missing covariate."""
    mlflow.set_tracking_uri(trained.tracking_uri)
    mlflow.set_registry_uri(trained.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/refracture-1y@champion")
    df = model_input(trained, 4)
    df["age"] = df["age"].round().astype("int64")
    df.loc[1, "pdff_mean_normal"] = np.nan  # not measurable: imputed, scored, warned
    df.loc[2, "bmd_tscore"] = np.nan  # missing covariate: an error for this patient only
    out = model.predict(df)
    assert list(out["status"]) == ["ok", "ok", "error", "ok"]
    assert "imputed" in out.loc[1, "warnings"] and "missing bmd_tscore" in out.loc[2, "error"]
    assert out.loc[2, "risk_365d"] is None  # null in JSON, not a bare NaN
    json.dumps(out.to_dict(orient="records"), allow_nan=False)
    assert set(out["model_version"]) == {trained.result.decision.version}


def test_selection_on_optimism_corrected_metric_needs_the_bootstrap(trained) -> None:
    from refracture.config import load_config
    from refracture.errors import ConfigError
    from refracture.study import train

    cfg = load_config(trained.config)
    cfg.validation.bootstrap = 0
    with pytest.raises(ConfigError) as err:
        train(cfg, report=False)
    assert err.value.key == "selection_metric" and "bootstrap" in err.value.message


@pytest.mark.parametrize("width", [80, 140, 200])
def test_summary_tables_fit_the_terminal_with_cis_on_one_line(trained, width) -> None:
    """At 80 columns the tables take a compact form; no CI is wrapped or cut."""
    import io

    from rich.console import Console

    from refracture.cli.terminal import print_train_summary

    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    print_train_summary(console, trained.result, 365)
    text = buf.getvalue()
    table_lines = [ln for ln in text.splitlines() if "[" in ln and "]" in ln]
    assert table_lines, text
    assert all(len(ln) <= width for ln in table_lines), text
    assert "…" not in text
    for line in table_lines:  # every opened CI closes on its own line
        assert line.count("[") == line.count("]"), line
    assert ("+img" in text) == (width < WIDE)


def test_the_report_carries_the_marrow_fat_and_bone_mass_analysis(trained, client) -> None:
    """With ``analysis.tscore`` set, train analyses the patients it measured: associations.csv
    in the run folder and MLflow, the section in the study report; each Pearson correlation
    is scipy's on the measured features and the clinical table."""
    import scipy.stats

    r = trained.result
    folder = r.run_dir / "biomarkers"
    assoc = pd.read_csv(folder / "associations.csv")
    features = pd.read_parquet(r.run_dir / "extraction" / "features.parquet")
    clinical = pd.read_csv(trained.cohort / "clinical.csv", dtype={"patient_id": str})
    both = features.merge(clinical, on="patient_id")
    for marker in ("pdff_mean_normal", "r2star_mean_normal"):
        row = assoc[
            (assoc["marker"] == marker)
            & (assoc["versus"] == "bmd_tscore")
            & (assoc["method"] == "pearson")
            & assoc["adjusted_for"].isna()
        ].iloc[0]
        expected = scipy.stats.pearsonr(both[marker], both["bmd_tscore"])
        assert row["estimate"] == pytest.approx(expected.statistic, abs=1e-12)
        assert row["n"] == len(both)
    html = r.report.read_text(encoding="utf-8")
    assert 'id="biomarkers"' in html and 'href="#biomarkers"' in html
    logged = [f.path for f in client.list_artifacts(r.parent_run_id, "biomarkers")]
    assert "biomarkers/associations.csv" in logged


def test_train_and_load_model_leave_mlflow_settings_as_found(trained, tmp_path) -> None:
    """No process-wide MLflow state: after train or load_model, MLflow's tracking/registry URIs
    and MLFLOW_TRACKING_URI are what the caller had, so a notebook's next call goes where the
    notebook said, not to the last store refracture used."""
    from refracture.scoring import load_model

    before, after = trained.mlflow_state
    assert after == before
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mine.db")
    mine = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    model = load_model("models:/refracture-1y/1", tracking_uri=trained.tracking_uri)
    assert model.version == "1"
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == mine
