"""Real study data, not only the synthetic cohort (issue 12, items 1-3).

Public survival data sets that ship inside lifelines and scikit-survival are written as a
study's clinical table under their own column names (tests/public_survival.py); a new user's
path is followed at the command line: ``refracture init --clinical`` drafts the config,
``refracture train`` trains it unchanged but for a quick bootstrap and fewer models. The
outputs are then checked against the libraries computed here: the Cox coefficients against
lifelines' CoxPHFitter on the same development rows, Harrell's and Uno's C against
scikit-survival on the same validation predictions. All data sets, with every model, are in
scripts/bench_realdata.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from public_survival import (
    DATASETS,
    administrative_cut,
    agreement,
    edit_draft,
    one_year_protocol,
    run_folder,
    study_table,
)
from refracture.cli import app
from refracture.config import load_config

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating a SQLite store takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def init(folder: Path, table: pd.DataFrame, *args: str) -> tuple[str, Path]:
    """`refracture init` on ``table`` written as clinical.csv; returns its output and config."""
    table.to_csv(folder / "clinical.csv", index=False)
    out = folder / "study.yaml"
    clinical = str(folder / "clinical.csv")
    res = runner.invoke(app, ["init", "--clinical", clinical, "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    assert "internal error" not in res.output
    return res.output, out


# --- init: what it detects on each data set -----------------------------------------------------

EXPECTED = {  # id column, horizon: one year in the time column's unit, else the median follow-up
    "rossi": ("id", 52.0),  # weeks; every event-free patient is followed to week 52
    "veterans": ("subject", 365.0),
    "lung": ("id", 365.0),
    "whas500": ("id", 365.0),
    "gbsg2": ("patient", 365.0),
    "aids": ("id", 257.0),  # the follow-up ends at 364 days: the median follow-up
    "flchain": ("id", 365.0),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_init_detects_the_outcome_id_and_horizon(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = study_table(name)
    output, path = init(tmp_path, table)
    cfg = load_config(path)  # the draft validates as it is
    _, time, event = DATASETS[name]
    id_column, horizon = EXPECTED[name]
    assert (cfg.outcome.time, cfg.outcome.event) == (time, event)
    assert cfg.data.id_column == id_column
    assert cfg.outcome.horizon_days == horizon
    assert cfg.outcome.horizon_days <= table[time].max()
    assert cfg.feature_sets == ["clinical"] and cfg.data.manifest is None
    declared = set(cfg.covariates.names)
    assert declared and not declared & {id_column, time, event}
    assert declared <= set(table.columns)
    # every guess is shown on its own line of the config, with what it was guessed from
    text = path.read_text()
    for c in declared:
        assert any(c in line and "# guessed" in line for line in text.splitlines()), c
    # categorical reference levels are the most frequent level
    for c, ref in cfg.covariates.categorical.items():
        counts = table[c].dropna().astype(str).value_counts()
        assert counts[ref] == counts.max(), (c, ref)
    assert "drafted" in output and event in output


def test_init_guesses_kinds_from_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = study_table("gbsg2")
    _, path = init(tmp_path, table)
    cov = load_config(path).covariates
    # text with two or three levels -> categorical; numbers with many values -> numeric
    assert cov.categorical == {"horTh": "no", "menostat": "Post", "tgrade": "II"}
    assert set(cov.numeric) == {"age", "tsize", "pnodes", "progrec", "estrec"}
    text = path.read_text()
    age = table["age"]
    assert f"# guessed numeric: {age.nunique()} distinct values {age.min()}..{age.max()}" in text
    assert "1 is read as the event" in text  # 'cens' is a name that could mean either

    (tmp_path / "lung").mkdir()
    _, path = init(tmp_path / "lung", study_table("lung"))
    cfg = load_config(path)
    assert cfg.covariates.categorical == {"sex": "1"}  # coded 1/2: two levels, not 0/1
    assert "inst" not in cfg.covariates.names  # an institution is a site, not a covariate
    assert "ph.ecog" in cfg.covariates.numeric
    assert "move it to categorical" in path.read_text()  # ph.ecog 0..3 could be codes


def test_init_leaves_out_mostly_missing_and_constant_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = study_table("flchain")  # chapter, the cause of death, is missing for the living
    table["cohort"] = "1995"
    _, path = init(tmp_path, table)
    cfg = load_config(path)
    assert "chapter" not in cfg.covariates.names and "cohort" not in cfg.covariates.names
    text = path.read_text()
    assert "#   chapter: missing for 5705 of 7874 patients" in text
    assert "#   cohort: a single value (1995)" in text


def test_init_writes_ranges_it_recognises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges by meaning (an adult's age, a BMI); values outside are listed, not widened."""
    monkeypatch.chdir(tmp_path)
    output, path = init(tmp_path, study_table("rossi"))  # ages from 17: outside 18-110
    cfg = load_config(path)
    assert cfg.covariates.ranges == {"age": (18.0, 110.0)}
    assert cfg.covariates.roles == {"age": "age"}
    text = path.read_text()
    n17 = int((study_table("rossi")["age"] == 17).sum())
    assert text.count("17 is outside the plausible 18 to 110: check and train refuse it") == n17
    assert "refracture train would stop:" in " ".join(output.split())
    (tmp_path / "w").mkdir()
    _, path = init(tmp_path / "w", study_table("whas500"))
    cfg = load_config(path)
    assert cfg.covariates.ranges == {"age": (18.0, 110.0), "bmi": (10.0, 70.0)}
    assert "# hr: [low, high]   # not recognised" in path.read_text()


def test_init_sets_id_column_only_when_it_is_not_patient_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = study_table("rossi").rename(columns={"id": "patient_id"})
    _, path = init(tmp_path, table)
    assert "  id_column:" not in path.read_text()
    assert load_config(path).data.id_column == "patient_id"


def test_init_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    study_table("veterans").to_csv("clinical.csv", index=False)
    Path("study.yaml").write_text("mine\n")
    res = runner.invoke(app, ["init", "--clinical", "clinical.csv", "--out", "study.yaml"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == (
        "error: file study.yaml: already exists; refracture init never overwrites a config: "
        "choose another --out or remove the file"
    )
    assert Path("study.yaml").read_text() == "mine\n"


def test_init_without_a_recognisable_outcome_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = study_table("rossi").rename(columns={"week": "w", "arrest": "a"})
    table.to_csv("clinical.csv", index=False)
    res = runner.invoke(app, ["init", "--clinical", "clinical.csv"])
    assert res.exit_code == 2
    assert "cannot tell which column holds the time of the outcome" in res.output
    assert "--time COLUMN" in res.output and not Path("study.yaml").exists()
    res = runner.invoke(app, ["init", "--clinical", "clinical.csv", "--time", "w", "--event", "a"])
    assert res.exit_code == 0, res.output
    assert load_config("study.yaml").outcome.time == "w"


def test_init_with_a_manifest_adds_the_imaging_models(
    synth_nifti: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app,
        ["init", "--clinical", str(synth_nifti / "clinical.csv"), "--manifest",
         str(synth_nifti / "manifest.csv"), "--out", "study.yaml"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = load_config("study.yaml")
    assert cfg.feature_sets == ["clinical", "clinical+imaging"]
    assert cfg.imaging.features == ["pdff_mean_normal", "r2star_mean_normal"]
    assert "8 of 8 patients of the clinical table are in the manifest" in res.output


def test_template_starts_from_init() -> None:
    from refracture.config import packaged_config

    path = packaged_config("template")
    text = path.read_text()
    assert "refracture init --clinical" in text
    raw = yaml.safe_load(text)
    # no covariate, imaging feature or range of the synthetic study in the user's template
    synthetic = yaml.safe_load(packaged_config("synthetic").read_text())
    names = {n for kind in ("numeric", "binary") for n in synthetic["covariates"][kind]}
    names |= set(synthetic["covariates"]["categorical"])
    cov = raw.get("covariates") or {}
    used = set(cov.get("numeric") or []) | set(cov.get("binary") or [])
    used |= set(cov.get("categorical") or {}) | set(cov.get("ranges") or {})
    assert not used & names


# --- init then train, checked against lifelines and scikit-survival ------------------------------


def init_and_train(
    folder: Path, table: pd.DataFrame, store: str, name: str, models: list[str], bootstrap=2
) -> tuple[Path, dict[str, float], object]:
    _, path = init(folder, table)
    edited = edit_draft(path.read_text(), models=models, bootstrap=bootstrap, store=store,
                        name=name)  # fmt: skip
    if name == "rossi":  # released prisoners from 17: the user widens the adult age range
        edited = edited.replace("    age: [18, 110]", "    age: [16, 110]")
    path.write_text(edited)
    res = runner.invoke(app, ["train", "--config", str(path), "--no-report"])
    assert res.exit_code == 0, res.output
    assert "internal error" not in res.output
    cfg = load_config(path)
    run_dir = run_folder(res.output)
    return run_dir, agreement(run_dir, folder / "clinical.csv", cfg), res.output


BATTERY = [
    # events in the last follow-up week, horizon 52 weeks = the last follow-up (issue 12)
    pytest.param("rossi", ["cox", "coxnet", "logistic", "rsf"]),
    # the time-dependent ROC plot at times past the development follow-up
    pytest.param("veterans", ["cox", "logistic"]),
    pytest.param("lung", ["cox", "logistic"]),  # missing values, sex coded 1/2
    pytest.param("gbsg2", ["cox", "logistic"]),  # text categories
]


@pytest.mark.parametrize(("name", "models"), BATTERY)
def test_init_then_train_agrees_with_lifelines_and_sksurv(
    name: str, models: list[str], tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir, agree, _ = init_and_train(tmp_path, study_table(name), store, name, models)
    assert agree["n_models"] == len(models)
    assert agree["cox_coef"] < 1e-6
    assert agree["harrell"] < 1e-9
    assert agree["uno"] < 1e-9


def test_follow_up_cut_at_the_horizon_trains(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WHAS500 as if the study had stopped at one year: every event-free patient is censored
    at exactly day 365 and the drafted horizon is 365, the last follow-up."""
    monkeypatch.chdir(tmp_path)
    table = administrative_cut(study_table("whas500"), "lenfol", "fstat", 365.0)
    assert table["lenfol"].max() == 365.0
    run_dir, agree, _ = init_and_train(tmp_path, table, store, "whas500-cut", ["cox", "logistic"])
    assert load_config(tmp_path / "study.yaml").outcome.horizon_days == 365.0
    assert agree["cox_coef"] < 1e-6 and agree["harrell"] < 1e-9 and agree["uno"] < 1e-9


def test_synthetic_cohort_on_a_one_year_protocol_trains(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = one_year_protocol()
    event_free = (table["event"] == 0) & (table["time_days"] == 365.0)
    assert event_free.sum() > 300 and table["time_days"].max() == 365.0
    run_dir, agree, output = init_and_train(
        tmp_path, table, store, "synthetic-1y", ["cox", "logistic"]
    )
    assert load_config(tmp_path / "study.yaml").outcome.horizon_days == 365.0
    assert agree["cox_coef"] < 1e-6  # the re-fracture model of the cause-specific pair
    assert np.isfinite(pd.read_csv(run_dir / "summary.csv").filter(like="cindex").to_numpy(
        dtype=float)).any()  # fmt: skip
