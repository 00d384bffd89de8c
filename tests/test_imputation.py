"""Multiple imputation (``imputation: multiple``): chained equations with the outcome, one
model per imputation, Rubin's rules, predictions averaged, one row per patient at scoring."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
from scipy import stats

from refracture.config import ImputationConfig, parse_config
from refracture.models import coefficients_table, make_outcome, make_pipeline
from refracture.models.imputation import MultipleImputer, outcome_columns
from refracture.models.imputed import rubin
from refracture.study.statistics import imputation_advice
from survival_cohort import config, dataset

MI = ImputationConfig(method="multiple", m=5)


def _cox_data(n: int = 800, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """x1 (log HR 0.5) missing far more often in patients with the event (MAR given the
    outcome), x2 (log HR -0.4) complete, a binary z (log HR 0.5) missing at random; also the
    complete data."""
    rng = np.random.default_rng(seed)
    x2 = rng.normal(size=n)
    x1 = 0.5 * x2 + rng.normal(size=n)
    z = rng.binomial(1, 0.4, n).astype(float)
    t = rng.exponential(1500 * np.exp(-(0.5 * x1 - 0.4 * x2 + 0.5 * z)))
    c = rng.uniform(100, 1000, n)
    time, event = np.minimum(t, c), (t <= c).astype(int)
    full = pd.DataFrame({"x1": x1, "x2": x2, "z": z})
    X = full.copy()
    X.loc[rng.random(n) < np.where(event == 1, 0.6, 0.1), "x1"] = np.nan
    X.loc[rng.random(n) < 0.15, "z"] = np.nan
    return X, full, make_outcome(event, np.round(time) + 1)


def test_multiple_imputation_with_the_outcome_removes_the_bias_of_single_imputation():
    """Over 8 seeds of this design the mean error of x1's log HR against the complete data
    was -0.149 with median imputation and -0.036 with multiple imputation (m = 5)."""
    X, full, y = _cox_data()
    kw = dict(numeric=["x1", "x2"], binary=["z"], horizon=365.0)
    truth = coefficients_table(make_pipeline("cox", **kw).fit(full, y)).set_index("term")
    single = coefficients_table(make_pipeline("cox", **kw).fit(X, y)).set_index("term")
    multi = coefficients_table(make_pipeline("cox", **kw, imputation=MI).fit(X, y))
    multi = multi.set_index("term")
    target = truth.loc["x1", "coef"]
    assert single.loc["x1", "coef"] < target - 0.12  # median imputation: biased to the null
    assert abs(multi.loc["x1", "coef"] - target) < 0.05
    assert multi.loc["x1", "lower95"] < np.exp(target) < multi.loc["x1", "upper95"]
    # x1's interval widens by the information its missing values lack
    width = lambda t, k: np.log(t.loc[k, "upper95"] / t.loc[k, "lower95"])  # noqa: E731
    assert width(multi, "x1") > width(single, "x1")


def test_imputed_values_are_plausible_and_the_outcome_enters_the_model():
    X, _, y = _cox_data(300, 2)
    mi = MultipleImputer(numeric=["x1", "x2"], binary=["z"], m=3, random_state=4)
    stacked = mi.fit_transform(X, y)
    assert len(stacked) == 3 * len(X) and not stacked[["x1", "z"]].isna().any().any()
    assert set(stacked["z"].unique()) <= {0.0, 1.0}  # matched donors' values
    observed = set(X["x1"].dropna())
    assert set(stacked["x1"]) <= observed  # predictive mean matching draws observed values
    # Nelson-Aalen cumulative hazard at each time: lifelines' estimator
    from lifelines import NelsonAalenFitter

    cols = outcome_columns(y, "net")
    na = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(y["time"], y["event"] == 1)
    ref = na.cumulative_hazard_.iloc[:, 0].loc[y["time"]].to_numpy()
    np.testing.assert_allclose(cols[:, 1], ref, rtol=1e-10)
    np.testing.assert_array_equal(cols[:, 0], y["event"] == 1)
    # new patients (no outcome): m completed copies from the outcome-free chains, same seed
    new = X.iloc[:10]
    a, b = mi.transform(new), mi.transform(new)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 30 and not a.isna().any().any()


def test_rubins_rules_by_hand():
    coefs = np.array([[0.50, -1.0], [0.60, -1.1], [0.55, -0.9]])
    variances = np.array([[0.010, 0.04], [0.012, 0.05], [0.011, 0.045]])
    got = rubin(coefs, variances, n=200)
    m = 3
    w, b = variances.mean(axis=0), coefs.var(axis=0, ddof=1)
    total = w + (1 + 1 / m) * b
    lam = (1 + 1 / m) * b / total
    df_old = (m - 1) / lam**2
    df_obs = (200 - 2 + 1) / (200 - 2 + 3) * (200 - 2) * (1 - lam)
    df = 1 / (1 / df_old + 1 / df_obs)  # Barnard & Rubin (1999)
    np.testing.assert_allclose(got["coef"], coefs.mean(axis=0))
    np.testing.assert_allclose(got["se"], np.sqrt(total))
    np.testing.assert_allclose(got["df"], df)
    np.testing.assert_allclose(
        got["upper"], coefs.mean(axis=0) + stats.t.ppf(0.975, df) * np.sqrt(total)
    )


def test_predictions_are_one_row_per_patient_averaged_and_reproducible(tmp_path):
    ds = dataset(240, 11)
    cols = ["age", "bmi", "bmd_tscore", "prior_fracture", "cement_leakage"]
    X = ds.X[cols].copy()
    X.loc[X.index[::5], "bmi"] = np.nan
    X.loc[X.index[::7], "cement_leakage"] = np.nan
    make = lambda: make_pipeline(  # noqa: E731
        "cox", numeric=cols[:3], binary=["prior_fracture"],
        categorical={"cement_leakage": "none"}, categories=ds.categories,
        estimand="cif", imputation=ImputationConfig(method="multiple", m=3), random_state=3,
    )  # fmt: skip
    pipe = make().fit(X, ds.y)
    risk = pipe.predict_risk(X)
    assert risk.shape == (len(X),) and np.all((risk > 0) & (risk < 1))
    # the mean of the three models' risks on the patients' three completed copies
    copies = pipe[:-1].transform(X)
    blocks = pipe.model._blocks(copies)
    each = [e.predict_risk(b) for e, b in zip(pipe.model.estimators_, blocks, strict=True)]
    np.testing.assert_allclose(risk, np.mean(each, axis=0), rtol=1e-12)
    assert np.all(risk + pipe.predict_death_risk(X) <= 1 + 1e-12)
    contrib = pipe.contributions(X.iloc[:4])
    np.testing.assert_allclose(
        contrib.sum(axis=1) + pipe.contribution_baseline, pipe.linear_predictor(X.iloc[:4])
    )
    joblib.dump(pipe, tmp_path / "m.joblib")  # the bundle stores the fitted chains
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_risk(X), risk)
    np.testing.assert_array_equal(make().fit(X, ds.y).predict_risk(X), risk)  # same seed
    assert pipe.model_name == "cox" and pipe.estimand == "cif" and pipe.horizon == 365.0


def test_config_word_and_the_advice_to_impute_multiply():
    raw = {"data": {"clinical": "c.csv"}, "covariates": {"numeric": ["age"]}}
    assert parse_config(raw | {"imputation": "multiple"}).imputation.method == "multiple"
    cfg = parse_config(raw | {"imputation": {"method": "multiple", "m": 20}})
    assert cfg.imputation.m == 20 and cfg.imputation.iterations == 5
    assert parse_config(raw).imputation.method == "single"
    ds = dataset(240, 11)
    ds.n_missing = {**ds.n_missing, "bmi": 30, "age": 3}
    advice = imputation_advice(ds, config())
    assert len(advice) == 1 and "bmi (12%)" in advice[0] and "age" not in advice[0]
    assert "imputation: multiple" in advice[0]
    assert imputation_advice(ds, config(imputation="multiple")) == []


def test_validated_registered_and_scored_with_multiple_imputation(tmp_path):
    """The whole path: validation with bootstrap refits, the bundle written and read back,
    and scoring new patients with missing covariates: one row each, coefficients pooled."""
    import dataclasses

    from refracture.bundle import ModelBundle
    from refracture.results import Candidate
    from refracture.scoring.rows import predict_frame
    from refracture.study import validate_candidate
    from refracture.study.packaging import make_bundle

    ds = dataset(240, 11)
    X = ds.X.copy()
    X.loc[X.index[::6], "bmi"] = np.nan
    ds = dataclasses.replace(ds, X=X, n_missing={**ds.n_missing, "bmi": int(X["bmi"].isna().sum())})
    cfg = config(
        validation={"split": "random", "bootstrap": 2, "jobs": 1},
        imputation={"method": "multiple", "m": 3},
    )
    result = validate_candidate("logistic", "clinical", ds, cfg, None).result
    assert result.n_boot_failed == 0 and np.isfinite(result.metrics["cindex_harrell_optcorr"])
    assert "impute" in result.final_model.named_steps
    assert set(result.coefficients["term"]) >= {"age", "bmi"}  # Rubin's rules
    bundle = make_bundle(Candidate("logistic", "clinical", result), cfg, ds)
    bundle.to_dir(tmp_path / "model")
    bundle = ModelBundle.from_dir(tmp_path / "model")
    rows = ds.model_input("clinical").iloc[:12].reset_index()
    out = predict_frame(bundle, rows)
    assert len(out) == 12 and (out["status"] == "ok").all()
    assert out.loc[0, "risk_365d"] > 0 and rows["bmi"].isna().iloc[0]  # imputed, scored
    assert out.loc[0, "warnings"] == "missing bmi: imputed" and out.loc[1, "warnings"] == ""
    again = predict_frame(bundle, rows)
    pd.testing.assert_frame_equal(out, again)
