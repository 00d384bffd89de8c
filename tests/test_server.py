"""`refracture train` and `refracture score` against a real `mlflow server` on PostgreSQL.

Starts a throwaway PostgreSQL cluster and an MLflow tracking server on it (tests/servers.py),
trains clinical-only models on a synthetic cohort through the server, scores through it, and
runs two trains at once. Skipped only where PostgreSQL's server binaries are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from interleave import SCHEDULES, Schedule, race, replay_of
from refracture import registry
from refracture.config import load_config
from refracture.study import train
from refracture.synth.cohort import simulate_cohort
from refracture.tracking import quiet_mlflow
from servers import mlflow_server, postgres, postgres_bin

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        postgres_bin() is None, reason="PostgreSQL server binaries (initdb, pg_ctl) not installed"
    ),
]

# Clinical-only covariate sets of increasing strength on the synthetic cohort (seed 5, 400
# patients): optimism-corrected Harrell's C about 0.53, 0.55 and 0.66.
WEAK = {"numeric": ["cement_volume_ml"]}  # a covariate with no effect
FAIR = {"numeric": ["bmi"], "categorical": {"procedure": "PVP"}}
GOOD = {
    "numeric": ["age", "bmd_tscore", "n_fractured", "bmi"],
    "binary": ["prior_fracture", "glucocorticoid", "anti_osteoporosis", "index_tl_junction"],
    "categorical": {"sex": "F", "cement_leakage": "none"},
}

CONFIG = """
data:
  clinical: {root}/clinical.csv
  cache_dir: {root}/cache
covariates: {covariates}
models: [cox]
feature_sets: [clinical]
validation:
  split: random
  bootstrap: 20
  seed: 0
  jobs: 1
mlflow:
  tracking_uri: {uri}
  experiment: server-test
  promote_margin: {margin}
"""


def write_config(root: Path, stem: str, covariates: dict, uri: str, margin: str = "auto") -> Path:
    path = root / f"{stem}.yaml"
    text = CONFIG.format(root=root, covariates=json.dumps(covariates), uri=uri, margin=margin)
    path.write_text(text)
    return path


def refracture(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    """The real command line, in its own process."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-c", "from refracture.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with postgres() as pg, mlflow_server(pg.sqlalchemy_uri, pg.folder) as srv:
        yield SimpleNamespace(url=srv.url, artifacts=srv.artifacts, pg=pg)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("server_study")
    simulate_cohort(400, 2, seed=5).clinical.to_csv(root / "clinical.csv", index=False)
    return root


@pytest.fixture(scope="module")
def served(server, root):
    """One `train` through the server: the registry's first version."""
    quiet_mlflow()
    config = write_config(root, "weak", WEAK, server.url)
    cfg = load_config(config)
    with contextlib.chdir(root):
        result = train(cfg, config_path=config, report=False)
    return SimpleNamespace(config=config, cfg=cfg, result=result)


def server_client(server) -> MlflowClient:
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    return MlflowClient(server.url, server.url)


def test_train_through_the_server_logs_runs_artifacts_and_the_registry(server, served) -> None:
    client = server_client(server)
    result = served.result
    assert result.tracking_uri == server.url
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["validation.bootstrap"] == "20"
    assert parent.data.params["mlflow.promote_margin"] == "auto"
    assert parent.data.tags["refracture.registered_version"] == result.decision.version
    exp = client.get_experiment(result.experiment_id)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    children = client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert [(r.data.tags["refracture.model"], r.data.tags["refracture.feature_set"])
            for r in children] == [("cox", "clinical")]  # fmt: skip
    assert children[0].data.metrics["cindex_harrell_optcorr"] == pytest.approx(
        result.selected.result.metrics["cindex_harrell_optcorr"], rel=1e-12
    )

    # artifacts went through the server into its artifacts destination, and come back intact
    names = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"summary.csv", "config.yaml", "excluded.csv"} <= names
    back = Path(mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path="summary.csv", tracking_uri=server.url
    ))  # fmt: skip
    assert back.read_bytes() == (result.run_dir / "summary.csv").read_bytes()
    stored = list(server.artifacts.rglob("summary.csv"))
    assert len(stored) == 1 and stored[0].read_bytes() == back.read_bytes()

    # the registry: version 1 holds the alias, with its design and bootstrap CI as tags
    d = result.decision
    assert d.version == "1" and d.promoted and "first version" in d.reason
    mv = client.get_model_version_by_alias("refracture-1y", "champion")
    assert mv.version == "1"
    design = registry.Design.from_config(served.cfg, estimand="cif")  # cohort with deaths
    assert {k: mv.tags[k] for k in design.tags()} == design.tags()
    m, sel = result.selected.result.metrics, result.selection_metric
    assert sel == "cindex_harrell_632plus"  # the default: the C-index by .632+
    assert float(mv.tags[registry.TAG_SELECTION_LO]) == m[f"{sel}_lo"]
    assert float(mv.tags[registry.TAG_SELECTION_SE]) == pytest.approx(
        (m[f"{sel}_hi"] - m[f"{sel}_lo"]) / 3.919927969, rel=1e-8
    )
    assert f"Champion alias: {d.reason}" in mv.description

    # ...and all of it lives in PostgreSQL
    import psycopg

    conninfo = f"host=127.0.0.1 port={server.pg.port} user=refracture dbname=mlflow"
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = 'refracture-1y'"
        ).fetchall()
        runs = {r[0] for r in conn.execute("SELECT run_uuid FROM runs")}
    assert rows == [("champion", 1)]
    assert {result.parent_run_id, children[0].info.run_id} <= runs


def test_scores_through_the_server_equal_the_embedded_store(server, served, root, tmp_path):
    # the same config trained into the embedded SQLite store gives the same pipeline
    local = tmp_path / "embedded"
    local.mkdir()
    config = write_config(local, "weak", WEAK, f"sqlite:///{local}/mlflow.db")
    (local / "clinical.csv").write_bytes((root / "clinical.csv").read_bytes())
    with contextlib.chdir(local):
        train(load_config(config), config_path=config, report=False)

    features = root / "clinical.csv"
    uri = "models:/refracture-1y@champion"
    procs = {
        name: refracture("score", "--model", uri, "--features", str(features), "--out",
                         str(tmp_path / f"{name}.csv"), "--tracking-uri", store, cwd=tmp_path)
        for name, store in (("served", server.url), ("embedded", f"sqlite:///{local}/mlflow.db"))
    }  # fmt: skip
    for proc in procs.values():
        finish(proc)
    a, b = pd.read_csv(tmp_path / "served.csv"), pd.read_csv(tmp_path / "embedded.csv")
    assert len(a) == 400 and (a["status"] == "ok").all()
    assert list(a["patient_id"]) == list(b["patient_id"])
    assert list(a["model_version"].astype(str)) == ["1"] * 400
    np.testing.assert_allclose(a["risk_365d"], b["risk_365d"], rtol=1e-12, atol=0)
    assert a["risk_group"].equals(b["risk_group"])


def test_two_trains_at_once_leave_the_alias_on_the_better_model(server, served, root) -> None:
    """Both challengers beat the champion (margin 0.01), so both want the alias; whichever
    registers or writes last, it must end on the better one, as the rule's replay says."""
    client = server_client(server)
    before = {mv.version for mv in client.search_model_versions("name = 'refracture-1y'")}
    configs = {
        "fair": write_config(root, "fair", FAIR, server.url, margin="0.01"),
        "good": write_config(root, "good", GOOD, server.url, margin="0.01"),
    }
    procs = {k: refracture("train", "--config", str(c), "--no-report", cwd=root)
             for k, c in configs.items()}  # fmt: skip
    outputs = {k: finish(p) for k, p in procs.items()}
    new = {
        mv.tags["refracture.parent_run_id"]: mv
        for mv in client.search_model_versions("name = 'refracture-1y'")
        if mv.version not in before
    }
    assert len(new) == 2
    by_config = {}
    for run_id, mv in new.items():
        cov = json.loads(client.get_run(run_id).data.params["covariates.numeric"])
        by_config["good" if "age" in cov else "fair"] = mv
    good, fair = by_config["good"], by_config["fair"]
    assert (
        float(good.tags[registry.TAG_SELECTION_VALUE])
        > float(fair.tags[registry.TAG_SELECTION_VALUE]) + 0.01
    )
    champion = client.get_model_version_by_alias("refracture-1y", "champion").version
    assert champion == good.version
    assert str(replay_of(client, "refracture-1y").champion) == champion
    for k, out in outputs.items():
        assert f"registered refracture-1y version {by_config[k].version}" in " ".join(out.split())


def test_forced_interleavings_against_postgresql(server, served) -> None:
    """The registry protocol itself, through the server's REST API and PostgreSQL: a stale
    writer and crossed writes, the better version registered second."""
    client = server_client(server)
    source = client.get_model_version("refracture-1y", "1").source
    design = registry.Design.from_config(served.cfg, estimand="cif")  # cohort with deaths
    values = {"base": 0.70, "A": 0.76, "B": 0.80}
    for schedule in ("A stale", "crossed writes"):
        name = f"race-{schedule.replace(' ', '-')}"

        def reg(who: str, hook=None, name: str = name) -> registry.AliasDecision:
            v = values[who]
            return registry.register(
                source, name=name, alias="champion", metric="cindex_harrell", value=v,
                description="t", tags={}, design=design,
                uncertainty=registry.Uncertainty(v - 0.0196, v + 0.0196), client=client,
                checkpoint=hook,
            )  # fmt: skip

        reg("base")
        s = Schedule(SCHEDULES[schedule], client=client, name=name)
        results = race(s, reg, ["A", "B"])
        assert client.get_model_version_by_alias(name, "champion").version == results["B"].version
        assert str(replay_of(client, name).champion) == results["B"].version
        if schedule == "A stale":
            assert ("A", "written1", results["A"].version) in s.seen and results["A"].rounds >= 2
