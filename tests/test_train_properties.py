""" "internal error" is a bug (issue 12, item 6): property-based tables through `refracture train`.

Hypothesis draws small clinical tables with what real tables have and the synthetic cohort
never does: tied times, events at the last follow-up time, constant or collinear covariates, a
category with one patient, a site with no events, perfect separation, all events of one kind,
zero times, missing values, a horizon at the last follow-up. Each is written to CSV and trained
at the command line (clinical only, cox + logistic, no or a tiny bootstrap). Every run must
end with exit code 0, 1 or 2; a failure must be one line naming the config key, the column or
the patient; "internal error" (an exception refracture did not expect) must never appear.

Each failure this test found is a named regression test at the end of the module.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from refracture.cli import app

runner = CliRunner()
COVARIATES = {"x_num": "numeric", "x_col": "numeric", "x_bin": "binary", "x_cat": "categorical"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "mlflow.db"


@st.composite
def studies(draw: st.DrawFn) -> tuple[pd.DataFrame, dict]:
    """A clinical table and the run settings to train it with."""
    n = draw(st.integers(16, 60))
    pool = draw(st.lists(st.integers(1, 700), min_size=2, max_size=10, unique=True))
    time = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)), float)
    event = np.array(draw(st.lists(st.sampled_from([0, 0, 1, 1, 2]), min_size=n, max_size=n)))
    sometimes = st.sampled_from([False, False, False, True])  # each oddity in 1 table of 4
    flags = draw(
        st.fixed_dictionaries(
            {
                "events_at_last_time": sometimes,
                "one_kind": st.sampled_from([None, None, None, None, 1, 2]),
                "zero_times": sometimes,
                "constant": sometimes,
                "collinear": sometimes,
                "separation": sometimes,
                "rare_level": sometimes,
                "site_without_events": sometimes,
                "missing": sometimes,
                "horizon": st.sampled_from(["365", "last", "median"]),
                "covariates": st.lists(
                    st.sampled_from(list(COVARIATES)), min_size=1, max_size=4, unique=True
                ),
                "bootstrap": st.sampled_from([0, 2]),
                "split": st.sampled_from(["random", "none"]),
            }
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if flags["one_kind"] is not None:
        event = np.where(event > 0, flags["one_kind"], 0)
    if flags["events_at_last_time"]:
        event[time == time.max()] = 1
    if flags["zero_times"]:
        time[rng.choice(n, 2, replace=False)] = 0.0
    x_num = np.full(n, 5.0) if flags["constant"] else rng.normal(60, 10, n).round(1)
    x_col = 2 * x_num + 1 if flags["collinear"] else rng.normal(0, 1, n).round(2)
    x_bin = (event == 1).astype(int) if flags["separation"] else rng.integers(0, 2, n)
    x_cat = rng.choice(["a", "b"], n).astype(object)
    x_cat[0] = "a"
    if flags["rare_level"]:
        x_cat[-1] = "rare"
    site = rng.choice(["S1", "S2"], n).astype(object)
    if flags["site_without_events"]:
        site[event != 1] = rng.choice(["S1", "S2", "S3"], int((event != 1).sum()))
    table = pd.DataFrame(
        {
            "patient_id": [f"H{i + 1:03d}" for i in range(n)],
            "site": site,
            "time_days": time,
            "event": event,
            "x_num": x_num,
            "x_col": x_col,
            "x_bin": x_bin,
            "x_cat": x_cat,
        }
    )
    if flags["missing"]:
        table.loc[rng.choice(n, 2, replace=False), "x_num"] = np.nan
    horizon = {
        "365": 365.0,
        "last": float(time.max()) if time.max() > 0 else 365.0,
        "median": float(max(np.median(time), 1.0)),
    }[flags["horizon"]]
    return table, flags | {"horizon_days": horizon}


def config_text(clinical: Path, store: Path, settings_: dict) -> str:
    chosen = settings_["covariates"]
    kinds = {k: [c for c in chosen if COVARIATES[c] == k] for k in ("numeric", "binary")}
    categorical = "{x_cat: a}" if "x_cat" in chosen else "{}"
    return f"""\
data:
  clinical: {clinical}
outcome:
  horizon_days: {settings_["horizon_days"]}
covariates:
  numeric: [{", ".join(kinds["numeric"])}]
  binary: [{", ".join(kinds["binary"])}]
  categorical: {categorical}
models: [cox, logistic]
feature_sets: [clinical]
validation:
  split: {settings_["split"]}
  bootstrap: {settings_["bootstrap"]}
  jobs: 1
selection_metric: cindex_harrell
mlflow:
  tracking_uri: sqlite:///{store}
  experiment: properties
  registered_model: properties
"""


def train(table: pd.DataFrame, settings_: dict, store: Path) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as folder:
        clinical = Path(folder) / "clinical.csv"
        table.to_csv(clinical, index=False)
        config = Path(folder) / "run.yaml"
        config.write_text(config_text(clinical, store, settings_))
        res = runner.invoke(app, ["train", "--config", str(config), "--no-report"])
    return res.exit_code, res.output


def assert_well_behaved(code: int, output: str, table: pd.DataFrame) -> None:
    """Exit 0, 1 or 2; never "internal error"; a failure is one line naming what is wrong."""
    assert "internal error" not in output, output
    assert "Traceback" not in output, output
    assert code in (0, 1, 2), output
    if code == 0:
        return
    lines = [line for line in output.splitlines() if line.strip() and "━" not in line]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    names = ["config key '", "patient ", *(f"'{c}'" for c in table.columns)]
    listed = re.match(
        r"error: (\d+) problems? in the inputs: .* and in (\S+check\.csv)$", errors[0]
    )
    if listed:  # the input check: every problem is a row of check.csv, each naming its place
        rows = pd.read_csv(listed.group(2), dtype=str, keep_default_na=False)
        assert len(rows) == int(listed.group(1)) and (rows["problem"] != "").all(), rows
        assert ((rows["patient_id"] != "") | (rows["column"] != "")).all(), rows
        return
    assert any(name in errors[0] for name in names), errors[0]


@settings(
    max_examples=12,  # each example is a whole `refracture train`; found cases are named below
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(study=studies())
def test_train_never_fails_with_an_internal_error(study, store: Path) -> None:
    table, settings_ = study
    code, output = train(table, settings_, store)
    event(f"exit code {code}")  # --hypothesis-show-statistics: how the examples ended
    assert_well_behaved(code, output, table)


# --- the cases the property test found, one named test each (docs/errors.md) -------------------


def table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """A plain table the cases below change one thing in: 60 patients, ~45 % events."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "patient_id": [f"H{i + 1:03d}" for i in range(n)],
            "site": rng.choice(["S1", "S2"], n),
            "time_days": rng.integers(20, 700, n).astype(float),
            "event": (rng.random(n) < 0.45).astype(int),
            "x_num": rng.normal(60, 10, n).round(1),
            "x_col": rng.normal(0, 1, n).round(2),
            "x_bin": rng.integers(0, 2, n),
            "x_cat": rng.choice(["a", "b"], n),
        }
    )


SETTINGS = {
    "horizon_days": 365.0,
    "covariates": ["x_num", "x_bin", "x_cat"],
    "bootstrap": 2,
    "split": "random",
}


def error_line(table_: pd.DataFrame, settings_: dict, store: Path, code: int) -> str:
    got, output = train(table_, settings_, store)
    assert got == code, output
    assert_well_behaved(got, output, table_)
    return [line for line in output.splitlines() if line.startswith("error:")][-1]


def test_constant_covariate_is_refused_naming_it(store: Path) -> None:
    t = table().assign(x_num=5.0)
    line = error_line(t, SETTINGS, store, 2)
    assert line == (
        "error: config key 'covariates': column 'x_num' has the same value (5.0) for every "
        "patient, so it cannot be modelled; leave it out of covariates"
    )


def test_collinear_covariates_are_refused_naming_them(store: Path) -> None:
    t = table()
    t["x_col"] = 2 * t["x_num"] + 1
    line = error_line(t, SETTINGS | {"covariates": ["x_num", "x_col", "x_bin"]}, store, 2)
    assert "config key 'covariates': columns 'x_num', 'x_col' are collinear" in line


def test_binary_that_is_one_minus_another_is_collinear_with_the_intercept(store: Path) -> None:
    t = table()
    t["x_col"] = 1 - t["x_bin"]
    line = error_line(t, SETTINGS | {"covariates": ["x_bin", "x_col"]}, store, 2)
    assert "columns 'x_col', 'x_bin' are collinear" in line or (
        "columns 'x_bin', 'x_col' are collinear" in line
    )


def test_category_with_one_patient_is_refused_naming_it(store: Path) -> None:
    t = table()
    t.loc[7, "x_cat"] = "rare"
    line = error_line(t, SETTINGS, store, 2)
    assert line.startswith(
        "error: config key 'covariates.categorical.x_cat': column 'x_cat' has a level with one "
        "patient (rare)"
    )


def test_model_that_cannot_be_fitted_names_the_models_key(store: Path) -> None:
    """Every patient followed to the horizon had the event (the others were lost before it):
    the logistic model has no control, and says so with the counts."""
    t = table()
    t["event"] = np.where(t["time_days"] <= 365, t["event"], 1)
    t.loc[(t["event"] == 0), "time_days"] = 30.0
    t.loc[t["event"] == 1, "time_days"] = np.minimum(t["time_days"], 360.0)
    line = error_line(t, SETTINGS | {"split": "none", "horizon_days": 360.0}, store, 1)
    assert line.startswith("error: config key 'models': logistic on the development data: the ")
    assert "needs patients with and without the event by the horizon (" in line


def test_ties_and_events_at_the_last_time_train(store: Path) -> None:
    t = table()
    t["time_days"] = t["time_days"] // 100 * 100 + 50  # seven distinct times: ties everywhere
    t.loc[t["time_days"] == t["time_days"].max(), "event"] = 1
    code, output = train(t, SETTINGS, store)
    assert code == 0, output


def test_zero_times_train(store: Path) -> None:
    t = table()
    t.loc[:3, "time_days"] = 0.0  # two events and two losses on the day of surgery
    t.loc[:1, "event"] = 1
    t.loc[2:3, "event"] = 0
    code, output = train(t, SETTINGS, store)
    assert code == 0, output


def test_site_without_events_and_perfect_separation_train(store: Path) -> None:
    t = table()
    t.loc[t["event"] == 0, "site"] = np.where(np.arange((t["event"] == 0).sum()) % 2, "S3", "S1")
    t["x_bin"] = ((t["event"] == 1) & (t["time_days"] <= 365)).astype(int)  # predicts perfectly
    code, output = train(t, SETTINGS, store)
    assert code == 0, output


def test_all_events_deaths_is_refused_with_the_counts(store: Path) -> None:
    t = table().assign(event=lambda d: np.where(d["event"] == 1, 2, 0))
    n0, n2 = int((t["event"] == 0).sum()), int((t["event"] == 2).sum())
    line = error_line(t, SETTINGS, store, 2)
    assert f"no event 1 among 60 patients: {n0} censored, {n2} died" in line


def test_td_roc_with_an_event_and_a_censoring_at_the_last_time(store: Path) -> None:
    """scikit-survival's time-dependent ROC (the td_roc plot) meets a censoring survival of 0
    at the last follow-up time, where one patient has the event and one is censored."""
    t = table()
    t.loc[0, ["time_days", "event"]] = [800.0, 1]
    t.loc[1, ["time_days", "event"]] = [800.0, 0]
    code, output = train(t, SETTINGS | {"split": "none"}, store)
    assert code == 0, output


def test_horizon_at_the_last_follow_up_trains_the_logistic_model(store: Path) -> None:
    """Everyone event-free is censored at the horizon, which is the last follow-up: they are
    controls of the logistic model (issue 12, item 1)."""
    t = table()
    late = t["time_days"] > 365
    t.loc[late, "time_days"] = 365.0
    t.loc[late, "event"] = 0
    code, output = train(t, SETTINGS, store)
    assert code == 0, output
