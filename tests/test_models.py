"""Models: absolute risk at the horizon, units of the coefficients, recovery of the truth."""

from __future__ import annotations

import math

import joblib
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import proportional_hazard_test
from sklearn.base import clone

from refracture.dataset import assemble
from refracture.errors import ModelError
from refracture.models import (
    COMPETING_RISK_NOTE,
    MODEL_NAMES,
    MODELS,
    IPCWLogistic,
    coefficients_table,
    horizon_weights,
    make_outcome,
    make_pipeline,
    ph_test,
)
from refracture.synth.cohort import LOG_HR
from survival_cohort import cohort, config, dataset, imaging_features

H = 365.0


@pytest.fixture(scope="module")
def small():
    return dataset(240, 11)


def _pipe(name, ds, feature_set="clinical+imaging", **kw):
    # these tests read the models' net risk (death censored) where a model has one; the
    # default, the estimand resolved from the data (cif here), is tested in test_api_defaults
    if "net" in MODELS[name].estimands:
        kw.setdefault("estimand", "net")
    cols = ds.feature_names(feature_set)
    imaging = [c for c in cols if c in ds.imaging_features]
    pipe = make_pipeline(
        name,
        config().covariates,
        imaging,
        horizon=H,
        random_state=0,
        categories=ds.categories,
        **kw,
    )
    return pipe.fit(ds.X[cols], ds.y), cols


def test_make_outcome_checks_codes_and_times():
    y = make_outcome([0, 1, 2], [10, 20.5, 30])
    assert y.dtype.names == ("event", "time") and y["event"].dtype == np.int8
    with pytest.raises(ValueError, match="event codes"):
        make_outcome([0, 3], [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        make_outcome([0, 1], [1, -2])
    assert make_outcome([1, 0], [0, 2])["time"][0] == 0  # an event on the day of surgery
    assert "censors" in COMPETING_RISK_NOTE  # the net estimand's statement


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_predicts_absolute_risk(name, small, tmp_path):
    pipe, cols = _pipe(name, small)
    risk = pipe.predict_risk(small.X[cols])
    assert risk.shape == (len(small),)
    assert np.all((risk > 0) & (risk < 1))
    # absolute risk, not only a ranking: the mean predicted risk is near the observed 1-year
    # incidence of the training data (~15 %)
    assert 0.08 < risk.mean() < 0.25
    np.testing.assert_array_equal(pipe.predict(small.X[cols]), risk)
    # extra columns are ignored, column order does not matter
    shuffled = small.X[cols[::-1]].assign(unused=1.0)
    np.testing.assert_allclose(pipe.predict_risk(shuffled), risk)
    if pipe.supports_survival:
        s = pipe.predict_survival(small.X[cols], [30.0, 180.0, H])
        assert s.shape == (len(small), 3)
        assert np.all(np.diff(s, axis=1) <= 1e-12)  # survival never increases
        np.testing.assert_allclose(1.0 - s[:, 2], risk, atol=1e-10)
    else:
        with pytest.raises(ModelError, match="horizon only"):
            pipe.predict_survival(small.X[cols], [H])
    np.testing.assert_allclose(
        pipe.risk_from_lp(pipe.linear_predictor(small.X[cols])), risk, atol=1e-10
    )
    # a fitted pipeline round-trips through joblib (the lead stores it inside MLflow)
    joblib.dump(pipe, tmp_path / "m.joblib")
    again = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(again.predict_risk(small.X[cols]), risk)
    assert pipe.model_name == name
    assert clone(pipe).get_params()["model__horizon"] == H


@pytest.mark.parametrize("name", ["cox", "logistic"])
def test_contributions_add_up_to_the_linear_predictor(name, small):
    pipe, cols = _pipe(name, small)
    contrib = pipe.contributions(small.X[cols])
    assert list(contrib.columns) == pipe.term_names
    lp = pipe.linear_predictor(small.X[cols])
    np.testing.assert_allclose(
        pipe.contribution_baseline + contrib.sum(axis=1).to_numpy(), lp, atol=1e-10
    )


def test_contributions_refused_for_forests(small):
    pipe, cols = _pipe("rsf", small, n_estimators=10)
    with pytest.raises(ModelError, match="no per-term contributions"):
        pipe.contributions(small.X[cols])


def test_cox_table_is_lifelines_on_original_units(small):
    pipe, cols = _pipe("cox", small, "clinical")
    table = coefficients_table(pipe)
    assert list(table.columns) == ["term", "coef", "hr", "lower95", "upper95", "p"]
    assert {"sex[M]", "cement_leakage[intradiscal]", "cement_leakage[paravertebral]"} <= set(
        table.term
    )
    # the same model fitted by hand on a one-hot design in the original units
    X = small.X[cols].copy()
    design = X.drop(columns=["sex", "procedure", "cement_leakage"]).astype(float)
    design["sex[M]"] = (X["sex"] == "M").astype(float)
    design["procedure[PKP]"] = (X["procedure"] == "PKP").astype(float)
    for lv in ("intradiscal", "paravertebral"):
        design[f"cement_leakage[{lv}]"] = (X["cement_leakage"] == lv).astype(float)
    design = design.reset_index(drop=True).assign(
        T=small.y["time"], E=(small.y["event"] == 1).astype(int)
    )
    ref = CoxPHFitter().fit(design, "T", "E").summary
    got = table.set_index("term")
    for term in ref.index:
        assert got.loc[term, "coef"] == pytest.approx(ref.loc[term, "coef"], rel=1e-6, abs=1e-9)
        assert got.loc[term, "upper95"] == pytest.approx(
            ref.loc[term, "exp(coef) upper 95%"], rel=1e-6
        )
        assert got.loc[term, "p"] == pytest.approx(ref.loc[term, "p"], rel=1e-5, abs=1e-12)


def test_coefficients_are_per_original_unit(small):
    """Rescaling a covariate rescales its coefficient: no hidden standardisation."""
    pipe, cols = _pipe("logistic", small, "clinical")
    ds10 = dataset(240, 11)
    X10 = ds10.X[cols].copy()
    X10["age"] = X10["age"] * 10  # age in tenths of a year
    pipe10 = clone(pipe).fit(X10, ds10.y)
    a = coefficients_table(pipe).set_index("term")
    b = coefficients_table(pipe10).set_index("term")
    assert b.loc["age", "coef"] == pytest.approx(a.loc["age", "coef"] / 10, rel=1e-4)
    assert b.loc["bmi", "coef"] == pytest.approx(a.loc["bmi", "coef"], rel=1e-4)
    assert b.loc["age", "p"] == pytest.approx(a.loc["age", "p"], rel=1e-3)
    assert list(a.columns) == ["coef", "or", "lower95", "upper95", "p"]


def test_cox_confidence_intervals_cover_the_truth():
    """Cox on the 560-patient cohort: the 95 % CIs cover the generating log HRs of truth.json.

    The imaging terms of the truth are the marrow of the normal vertebrae with R2* on the
    1.5 T scale, so the test harmonises R2* across field strengths before fitting.
    """
    c = cohort(560, 0)
    cfg = config(imaging={"features": ["pdff_mean_normal", "r2star_mean_normal"]})
    ds = assemble(c.clinical, imaging_features(c, harmonise_r2star=True), cfg)
    cols = ds.feature_names("clinical+imaging")
    pipe = make_pipeline("cox", cfg.covariates, ds.imaging_features, horizon=H, random_state=0).fit(
        ds.X[cols], ds.y
    )
    table = coefficients_table(pipe).set_index("term")
    truth = dict(LOG_HR)
    truth["pdff_mean_normal"] = truth.pop("pdff_normal")
    truth["r2star_mean_normal"] = truth.pop("r2star_normal_15t")
    assert set(truth) == set(table.index)
    covered = {
        t: math.log(table.loc[t, "lower95"]) <= b <= math.log(table.loc[t, "upper95"])
        for t, b in truth.items()
    }
    assert sum(covered.values()) >= 14, covered  # 16 terms; 95 % CIs
    # the strong effects are found, in the right direction
    for term in ("prior_fracture", "glucocorticoid", "cement_leakage[intradiscal]"):
        assert table.loc[term, "lower95"] > 1.0
    assert table.loc["anti_osteoporosis", "upper95"] < 1.0


def test_ph_test_is_lifelines(small):
    pipe, cols = _pipe("cox", small, "clinical")
    got = ph_test(pipe, small.X[cols], small.y).set_index("term")
    data = pipe.transform_features(small.X[cols]).reset_index(drop=True)
    data["__time__"] = small.y["time"]
    data["__event__"] = (small.y["event"] == 1).astype(int)
    ref = proportional_hazard_test(pipe.model.lifelines_, data, time_transform="rank").summary
    assert set(got.index) == set(pipe.term_names)
    for term in got.index:
        assert got.loc[term, "p"] == pytest.approx(ref.loc[term, "p"], rel=1e-9)
    with pytest.raises(ValueError, match="fitted on"):
        ph_test(pipe, small.X[cols].iloc[:100], small.y[:100])


def test_unknown_category_at_scoring_is_an_error(small):
    pipe, cols = _pipe("cox", small, "clinical")
    bad = small.X[cols].iloc[:3].copy()
    bad.loc[bad.index[0], "cement_leakage"] = "epidural"
    with pytest.raises(ValueError, match="unknown categor"):
        pipe.predict_risk(bad)


def test_missing_values_are_imputed_inside_the_pipeline(small):
    pipe, cols = _pipe("cox", small, "clinical")
    X = small.X[cols].iloc[:5].copy()
    X.loc[X.index[0], "bmi"] = np.nan
    X.loc[X.index[1], "sex"] = np.nan
    risk = pipe.predict_risk(X)
    assert np.all(np.isfinite(risk))
    median_bmi = np.median(small.X["bmi"])
    filled = X.iloc[[0]].assign(bmi=median_bmi)
    assert risk[0] == pytest.approx(pipe.predict_risk(filled)[0])


def test_coxnet_chooses_penalty_by_inner_cv(small):
    pipe, _ = _pipe("coxnet", small)
    m = pipe.model
    assert m.alpha_ in m.alphas_
    assert m.cv_cindex_[list(m.alphas_).index(m.alpha_)] == pytest.approx(np.nanmax(m.cv_cindex_))
    again, _ = _pipe("coxnet", small)
    np.testing.assert_array_equal(again.model.coef_, m.coef_)  # same seed, same fit
    # standardised inside the pipeline for the penalty
    Xt = pipe.transform_features(small.X[small.feature_names("clinical+imaging")])
    assert abs(Xt["age"].mean()) < 1e-9 and Xt["age"].std(ddof=0) == pytest.approx(1.0)


def test_ipcw_weights_and_early_censoring():
    # event at 100 (case), censored at 50 and 300 (weight 0), censored at 400 and event at
    # 500 (controls at h), death at 200 (censoring for the net risk: weight 0)
    y = make_outcome([1, 0, 0, 2, 1, 0], [100, 50, 400, 200, 500, 300])
    status, w = horizon_weights(y, H)
    np.testing.assert_array_equal(status, [1, 0, 0, 0, 0, 0])
    assert w[1] == 0 and w[3] == 0 and w[5] == 0
    # reverse Kaplan-Meier of censoring (deaths censor): steps at 50 (6 at risk), 200 (4 at
    # risk) and 300 (3 at risk); the event at 100 is not a censoring
    g_100 = 5 / 6
    g_h = 5 / 6 * 3 / 4 * 2 / 3
    assert w[0] == pytest.approx(1 / g_100)
    assert w[2] == pytest.approx(1 / g_h) and w[4] == pytest.approx(1 / g_h)
    # with deaths as competing events the death is a known non-event
    status_c, w_c = horizon_weights(y, H, deaths="competing")
    assert status_c[3] == 0 and w_c[3] > 0


def test_logistic_counts_early_censoring_and_sandwich_se():
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=(n, 2))
    p = 1 / (1 + np.exp(-(-1.5 + 0.8 * x[:, 0] - 0.5 * x[:, 1])))
    case = rng.random(n) < p
    # no censoring before the horizon: every weight is 1 and the robust SE is close to the
    # model-based one of a correctly specified logistic model
    time = np.where(case, rng.uniform(1, H, n), H + 100)
    y = make_outcome(case.astype(int), time)
    X = pd.DataFrame(x, columns=["a", "b"])
    m = IPCWLogistic(horizon=H).fit(X, y)
    assert m.n_censored_before_horizon_ == 0
    np.testing.assert_allclose(m.coef_, [0.8, -0.5], atol=0.12)
    X1 = np.column_stack([np.ones(n), x])
    q = 1 / (1 + np.exp(-(X1 @ np.r_[m.intercept_, m.coef_])))
    model_se = np.sqrt(np.diag(np.linalg.inv((X1 * (q * (1 - q))[:, None]).T @ X1)))[1:]
    np.testing.assert_allclose(m.se_, model_se, rtol=0.1)
    # censor a third of the controls early: they are counted and given weight 0, not dropped
    early = (~case) & (rng.random(n) < 0.33)
    y2 = make_outcome(case.astype(int), np.where(early, rng.uniform(1, H, n), time))
    m2 = IPCWLogistic(horizon=H).fit(X, y2)
    assert m2.n_censored_before_horizon_ == int(early.sum())
    # IPCW restores the intercept that simply dropping them would bias upwards
    assert abs(m2.intercept_ - m.intercept_) < 0.25
