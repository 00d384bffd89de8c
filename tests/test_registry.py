"""The champion alias rule (comparable designs, a margin, deliberate promotion) and its
convergence under concurrent registrations, on a real MLflow SQLite store in tmp."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import mlflow
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from scipy import stats
from typer.testing import CliRunner

from interleave import SCHEDULES, Schedule, race, replay_of
from refracture import registry
from refracture.cli import app
from refracture.config import parse_config
from refracture.errors import InputError
from refracture.registry import Design, Uncertainty, VersionFacts

METRIC = "cindex_harrell_optcorr"
RANDOM = Design("random", None, 365.0, "net", "time_days", "event")


@dataclass(frozen=True)
class Store:
    uri: str
    name: str  # a registered model of its own for each test
    source: str  # what the versions point at (the rule never opens it)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    """One real SQLite registry for the module (creating its tables takes seconds)."""
    folder = tmp_path_factory.mktemp("registry")
    (folder / "model").mkdir()
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture()
def store(database, request, monkeypatch) -> Store:
    """The module's registry as the process-wide MLflow store (restored afterwards)."""
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", database)
    mlflow.set_tracking_uri(database)
    mlflow.set_registry_uri(database)
    name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name.removeprefix("test_"))[:60]
    source = database.removeprefix("sqlite:///").removesuffix("mlflow.db") + "model"
    yield Store(database, name.strip("-"), source)
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def ci(value: float, se: float) -> Uncertainty:
    return Uncertainty(value - stats.norm.ppf(0.975) * se, value + stats.norm.ppf(0.975) * se)


def reg(
    store: Store,
    value: float,
    *,
    name: str | None = None,
    design: Design | None = RANDOM,
    se: float | None = 0.01,
    margin: registry.Margin = "auto",
    metric: str = METRIC,
    checkpoint: Callable[[str], None] | None = None,
) -> registry.AliasDecision:
    return registry.register(
        store.source,
        name=name or store.name,
        alias="champion",
        metric=metric,
        value=value,
        description=f"model with {metric} {value}",
        tags={"refracture.model": "cox"},
        design=design,
        uncertainty=None if se is None else ci(value, se),
        margin=margin,
        checkpoint=checkpoint,
    )


def holder(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, "champion").version)


def check_recorded(name: str, d: registry.AliasDecision) -> None:
    """The decision is in the version's tags and description, as returned."""
    mv = MlflowClient().get_model_version(name, d.version)
    # the terminal also hears when a version registered at the same moment took the alias
    recorded = d.reason.split(f"; then version {d.champion}, registered")[0]
    assert mv.tags[registry.TAG_DECISION] == recorded
    assert f"Champion alias: {recorded}" in mv.description
    assert mv.description.startswith(f"model with {d.metric}")


# --- the rule, without a store -------------------------------------------------------------------


def test_auto_margin_is_the_half_width_of_the_ci_of_an_unpaired_difference() -> None:
    assert registry.margin_for("auto", 0.03, 0.04) == pytest.approx(
        stats.norm.ppf(0.975) * 0.05, rel=1e-12
    )
    assert registry.margin_for(0.02, None, None) == 0.02
    assert registry.margin_for("auto", None, 0.01) is None
    # Its meaning, checked by simulation: two versions of equal true quality, each estimated
    # with its own noise: the challenger takes the alias in ~2.5% of cases (one-sided 95%).
    rng = np.random.default_rng(0)
    se_a, se_b = 0.03, 0.02
    a = 0.75 + rng.normal(0, se_a, 200_000)
    b = 0.75 + rng.normal(0, se_b, 200_000)
    rate = np.mean(a - b > registry.margin_for("auto", se_a, se_b))
    assert rate == pytest.approx(0.025, abs=0.002)


def test_standard_error_from_a_percentile_bootstrap_ci() -> None:
    """SE = CI width / 3.92 recovers the bootstrap SD for a near-normal statistic."""
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, 400)
    boot = np.array([rng.choice(x, x.size).mean() for _ in range(4000)])
    lo, hi = np.percentile(boot, [2.5, 97.5])
    u = Uncertainty.from_metrics({"m_lo": lo, "m_hi": hi}, "m")
    assert u is not None
    assert u.se == pytest.approx(boot.std(ddof=1), rel=0.05)
    assert Uncertainty.from_metrics({"m_lo": math.nan, "m_hi": 0.8}, "m") is None
    assert Uncertainty.from_metrics({}, "m") is None


def test_orientation_makes_larger_better() -> None:
    assert registry.orient("brier_365d", 0.10) > registry.orient("brier_365d", 0.20)
    assert registry.orient("calibration_slope_optcorr", 0.95) > registry.orient(
        "calibration_slope_optcorr", 1.2
    )
    assert registry.orient("calibration_intercept", -0.1) > registry.orient(
        "calibration_intercept", 0.3
    )
    assert registry.orient("cindex_uno", 0.8) == 0.8


def test_design_from_config() -> None:
    raw = {
        "data": {"clinical": "c.csv"},
        "covariates": {"numeric": ["age"]},
        "outcome": {"horizon_days": 730, "time": "days", "event": "refx"},
        "validation": {"split": "site", "test_site": "H2"},
    }
    d = Design.from_config(parse_config(raw), estimand="cif")
    assert d == Design("site", "H2", 730.0, "cif", "days", "refx")
    assert Design.from_tags(d.tags()) == d
    raw["validation"] = {"split": "kfold", "test_site": "H2"}  # test site ignored off 'site'
    raw["outcome"]["estimand"] = "net"
    d = Design.from_config(parse_config(raw), estimand="cif")
    assert (d.split, d.test_site, d.estimand) == ("kfold", None, "net")


def facts(v: int, value: float, design: Design = RANDOM, se: float = 0.01, **kw) -> VersionFacts:
    return VersionFacts(v, True, METRIC, value, value, se, design, "auto", summary="", **kw)


def test_each_design_difference_is_named() -> None:
    base = facts(1, 0.70)
    cases = {
        "validated under leave_one_site_out, the champion under random split": replace(
            RANDOM, split="leave_one_site_out"
        ),
        "site split (test site H1), the champion under site split (test site H2)": replace(
            RANDOM, split="site", test_site="H1"
        ),
        "horizon 730 days, the champion's 365 days": replace(RANDOM, horizon_days=730.0),
        "estimand cif, the champion's net": replace(RANDOM, estimand="cif"),
        "outcome columns t/event, the champion's time_days/event": replace(RANDOM, time="t"),
    }
    for text, design in cases.items():
        champ = (
            base if "test site H1" not in text else facts(1, 0.7, replace(design, test_site="H2"))
        )
        step = registry.decide(facts(2, 0.99, design), champ, name="m", alias="champion")
        assert not step.promoted and text in step.reason, step.reason
        assert "not comparable" in step.reason and "refracture promote m 2" in step.reason
    other = replace(facts(2, 0.99), metric="brier_365d")
    step = registry.decide(other, base, name="m", alias="champion")
    assert "selected on brier_365d, the champion on cindex_harrell_optcorr" in step.reason


def naive_champion(seq: list[tuple[int, float, float]]) -> int | None:
    """An independent statement of the rule: the champion after registering one by one."""
    champ = None
    for i, (design, value, se) in enumerate(seq, 1):
        if champ is None:
            champ = (i, design, value, se)
            continue
        gain, noise = value - champ[2], 1.959964 * math.sqrt(se**2 + champ[3] ** 2)
        if design == champ[1] and gain > noise:
            champ = (i, design, value, se)
    return None if champ is None else champ[0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),
            st.floats(0.5, 0.9, allow_nan=False),
            st.floats(0.001, 0.05, allow_nan=False),
        ),
        max_size=12,
    )
)
def test_replay_equals_registering_one_by_one(seq: list[tuple[int, float, float]]) -> None:
    designs = [RANDOM, replace(RANDOM, split="leave_one_site_out")]
    versions = [facts(i, v, designs[d], se) for i, (d, v, se) in enumerate(seq, 1)]
    result = registry.replay(versions, None, name="m", alias="champion")
    assert result.champion == naive_champion(seq)
    assert set(result.steps) == set(range(1, len(seq) + 1))


def test_replay_restarts_at_the_latest_deliberate_promotion() -> None:
    versions = [facts(1, 0.70), facts(2, 0.60), facts(3, 0.80), facts(4, 0.81), facts(5, 0.95)]
    p = registry.Promotion(2, 4, "t", "ann", "rollback")
    result = registry.replay(versions, p, name="m", alias="champion")
    assert result.champion == 5 and set(result.steps) == {5}
    result = registry.replay(versions[:4], p, name="m", alias="champion")
    assert result.champion == 2 and not result.steps  # 3 and 4 were there when 2 was chosen


# --- a real registry -----------------------------------------------------------------------------


def test_worse_equal_and_differently_validated_versions_keep_the_alias(store) -> None:
    first = reg(store, 0.70)
    assert first.promoted and first.reason.startswith(f"first version of '{store.name}'")
    check_recorded(store.name, first)

    worse = reg(store, 0.65)
    assert not worse.promoted and "0.6500 is not better than 0.7000 of version 1" in worse.reason
    noise = reg(store, 0.71)  # +0.01 with SEs of 0.01: 95% CI of the difference -0.018..0.038
    assert not noise.promoted and "equal within noise" in noise.reason
    assert "within the margin 0.0277" in noise.reason
    loso = reg(store, 0.95, design=replace(RANDOM, split="leave_one_site_out"))
    assert not loso.promoted
    assert loso.reason == (
        "validated under leave_one_site_out, the champion under random split: not comparable; "
        f"alias 'champion' stays on version 1; use `refracture promote {store.name} 4` to move it "
        "deliberately"
    )
    other_metric = reg(store, 0.10, metric="brier_365d")
    assert not other_metric.promoted and "not comparable" in other_metric.reason
    for d in (worse, noise, loso, other_metric):
        check_recorded(store.name, d)
        assert d.champion == "1" and d.previous_version == "1"
        assert holder(store.name) == "1"

    better = reg(store, 0.76)
    assert better.promoted and holder(store.name) == better.version
    assert "better than 0.7000 of version 1 by 0.0600, beyond the margin 0.0277" in better.reason
    check_recorded(store.name, better)
    mv = MlflowClient().get_model_version(store.name, better.version)
    assert mv.tags["refracture.design.split"] == "random"
    assert mv.tags["refracture.design.horizon_days"] == "365"
    assert float(mv.tags[registry.TAG_SELECTION_SE]) == pytest.approx(0.01, rel=1e-9)
    assert mv.tags[registry.TAG_MARGIN] == "auto"


def test_a_numeric_margin_and_a_missing_bootstrap(store) -> None:
    reg(store, 0.70, margin=0.02)
    small = reg(store, 0.71, margin=0.02, se=None)
    assert not small.promoted
    assert "by 0.0100, within the margin 0.0200 (mlflow.promote_margin)" in small.reason
    big = reg(store, 0.73, margin=0.02, se=None)
    assert big.promoted and holder(store.name) == big.version
    blind = reg(store, 0.99, se=None)  # auto, but no CI for this version
    assert not blind.promoted and "cannot tell the gain from noise" in blind.reason
    assert "set mlflow.promote_margin to a number" in blind.reason


def test_promote_moves_the_alias_and_records_who_why_and_when(store) -> None:
    reg(store, 0.70)
    loso = reg(store, 0.80, design=replace(RANDOM, split="leave_one_site_out"))
    assert holder(store.name) == "1"
    d = registry.promote(store.name, loso.version, reason="external validation", by="ann@site")
    assert d.promoted and holder(store.name) == loso.version
    assert "moved by hand to version 2 from version 1 by ann@site" in d.reason
    assert d.reason.endswith(": external validation")
    client = MlflowClient()
    mv = client.get_model_version(store.name, "2")
    (move,) = json.loads(mv.tags[registry.TAG_PROMOTIONS])
    assert move["by"] == "ann@site" and move["reason"] == "external validation"
    assert move["from"] == "1" and move["at"].endswith("Z")
    assert "Promoted by hand: " in mv.description and "external validation" in mv.description
    assert f"Champion alias: {loso.reason.split('; then')[0]}" in mv.description
    record = json.loads(client.get_registered_model(store.name).tags[registry.MODEL_TAG_PROMOTION])
    assert record["version"] == 2 and record["watermark"] == 2

    # the next comparable version is judged against the promoted one, not replayed from 1
    nxt = reg(store, 0.99, design=replace(RANDOM, split="leave_one_site_out"))
    assert nxt.promoted and nxt.previous_version == "2"
    worse = reg(store, 0.50, design=replace(RANDOM, split="leave_one_site_out"))
    assert not worse.promoted and holder(store.name) == nxt.version


def test_promote_refuses_what_does_not_exist(store, tmp_path) -> None:
    reg(store, 0.70)
    with pytest.raises(InputError, match=rf"model '{store.name}' has no version 7 \(versions 1-1"):
        registry.promote(store.name, 7)
    with pytest.raises(InputError, match="no registered model 'nope'"):
        registry.promote("nope", 1)
    with pytest.raises(InputError, match="version must be a version number"):
        registry.promote(store.name, "latest")
    missing = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    with pytest.raises(InputError, match="no MLflow store"):
        registry.promote(store.name, 1, tracking_uri=missing)
    assert not (tmp_path / "elsewhere").exists()  # nothing created by looking


def test_promote_command(store) -> None:
    reg(store, 0.70)
    reg(store, 0.60)
    runner = CliRunner()
    res = runner.invoke(app, ["promote", store.name, "9", "--tracking-uri", store.uri])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "has no version 9" in res.output
    res = runner.invoke(
        app, ["promote", store.name, "2", "--reason", "rollback", "--tracking-uri", store.uri]
    )
    assert res.exit_code == 0, res.output
    assert "moved by hand to version 2 from version 1" in res.output and "rollback" in res.output
    assert holder(store.name) == "2"


def test_a_registry_from_before_the_rules_keeps_its_champion(store) -> None:
    """Old versions have no design: the alias they hold is adopted, not replayed away."""
    client = MlflowClient()
    client.create_registered_model(store.name)
    for value in (0.70, 0.80, 0.75):
        tags = {registry.TAG_SELECTION_METRIC: METRIC, registry.TAG_SELECTION_VALUE: str(value)}
        client.create_model_version(
            store.name, "file:///old", tags=tags, description=f"old {value}"
        )
    client.set_registered_model_alias(store.name, "champion", "2")
    d = reg(store, 0.99)
    assert not d.promoted and holder(store.name) == "2"
    assert "version 2 was registered before validation designs were recorded" in d.reason
    record = json.loads(client.get_registered_model(store.name).tags[registry.MODEL_TAG_PROMOTION])
    assert record["version"] == 2 and record["watermark"] == 3 and record["by"] == "refracture"
    assert client.get_model_version(store.name, "1").description == "old 0.7"  # history untouched
    registry.promote(store.name, d.version, reason="first model with a recorded design")
    assert holder(store.name) == d.version
    assert reg(store, 0.999).promoted is False  # within noise of 0.99


# --- concurrent registrations ------------------------------------------------------------------


@pytest.mark.parametrize("better", ["A", "B"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_concurrent_registrations_leave_the_alias_on_the_better_model(
    store, schedule, better
) -> None:
    """The champion 0.70 is challenged at once by 0.80 and 0.76 (both beat it beyond noise,
    0.80 beats 0.76 beyond noise): the alias must end on 0.80 whatever the interleaving."""
    name = f"race-{schedule.replace(' ', '-')}-{better}"
    reg(store, 0.70, name=name)
    values = {"A": 0.80, "B": 0.76} if better == "A" else {"A": 0.76, "B": 0.80}
    client = MlflowClient()
    s = Schedule(SCHEDULES[schedule], client=client, name=name)
    results = race(s, lambda w, hook: reg(store, values[w], name=name, checkpoint=hook), values)
    assert holder(name) == results[better].version
    assert holder(name) == str(replay_of(client, name).champion)
    for d in results.values():
        check_recorded(name, d)
    assert results[better].champion == results[better].version
    if schedule.endswith("stale") and schedule[0] != better:
        stale = schedule[0]
        # the interleaving really happened: the stale writer wrote its own version first...
        assert (stale, "written1", results[stale].version) in s.seen
        assert results[stale].rounds >= 2  # ...and its re-check put it right


def test_many_random_interleavings_converge(store) -> None:
    rng = random.Random(7)
    client = MlflowClient()
    values = {"A": 0.80, "B": 0.76, "C": 0.60}
    for i in range(8):
        name = f"jitter-{i}"
        reg(store, 0.70, name=name)
        s = Schedule({}, client=client, name=name, jitter=random.Random(rng.random()))
        results = race(
            s, lambda w, hook, n=name: reg(store, values[w], name=n, checkpoint=hook), values
        )
        assert holder(name) == results["A"].version == str(replay_of(client, name).champion)
        for d in results.values():
            check_recorded(name, d)
