"""The risk of death under estimand cif: shrunk death models, coherent cumulative incidences and
the calibration of the death risk (O/E at the horizon).

Each piece is checked against an independent computation: lifelines' Breslow baseline and
Nelson-Aalen estimator, a direct numerical maximisation of Firth's penalised likelihood, the
cause-specific product-limit formula, and the Aalen-Johansen estimator on the synthetic
cohort and on a public competing-risk data set (scikit-survival's bone-marrow transplant
data: relapse against transplant-related death).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, NelsonAalenFitter
from scipy.optimize import minimize
from scipy.special import log_expit

from refracture.models import cause_specific_cif, make_outcome, make_pipeline
from refracture.models.death import (
    breslow,
    coherent_death_cif,
    firth_logistic,
    fit_death_hazard,
    heuristic_shrinkage,
)
from refracture.models.finegray import fit_subdistribution
from refracture.validation.death import death_metrics, observed_incidence
from survival_cohort import config, dataset, validate_with

H = 365.0


def _design(ds, feature_set="clinical+imaging"):
    imaging = ds.imaging_features if feature_set != "clinical" else []
    pipe = make_pipeline("cox", ds.covariates, imaging, categories=ds.categories)
    return pipe[:-1].fit_transform(ds.model_input(feature_set), ds.y)


def test_breslow_at_the_fitted_coefficients_is_lifelines_baseline():
    ds = dataset(240, 11)
    X = _design(ds, "clinical").reset_index(drop=True)
    died = (ds.y["event"] == 2).astype(int)
    cph = CoxPHFitter().fit(X.assign(T=ds.y["time"], E=died), "T", "E")
    lp = (X - X.mean()).to_numpy() @ cph.params_.to_numpy()
    times, cumhaz = breslow(ds.y["time"], died == 1, lp)
    ref = cph.baseline_cumulative_hazard_.iloc[:, 0]
    np.testing.assert_allclose(cumhaz, ref.loc[times].to_numpy(), rtol=1e-10)


def test_a_death_model_without_signal_is_the_nelson_aalen_hazard():
    """Noise covariates only: LR <= df gives S = 0, a death model without covariates."""
    rng = np.random.default_rng(9)
    n = 150
    X = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"x{i}" for i in range(12)])
    t = np.round(rng.exponential(500, n)) + 1
    e = rng.choice([0, 1, 2], n, p=[0.6, 0.25, 0.15])
    y = make_outcome(e, t)
    death = fit_death_hazard(X, y)
    assert death.lr_ <= death.df_ and death.shrinkage_ == 0.0
    np.testing.assert_array_equal(death.coef_, 0.0)
    na = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(t, e == 2)
    ref = na.cumulative_hazard_.iloc[:, 0].loc[death.baseline_times_].to_numpy()
    np.testing.assert_allclose(death.baseline_cumhaz_, ref, rtol=1e-10)
    assert heuristic_shrinkage(40.0, 10) == pytest.approx(0.75)


def test_firth_logistic_maximises_the_penalised_likelihood_and_survives_separation():
    rng = np.random.default_rng(7)
    n = 60
    X = rng.normal(size=(n, 3))
    d = (X[:, 0] + 0.3 * rng.normal(size=n) > 1.0).astype(float)
    w = rng.uniform(0.8, 1.5, n)

    def neg_penalised(b):
        X1 = np.column_stack([np.ones(n), X])
        lp = X1 @ b
        p = 1 / (1 + np.exp(-lp))
        info = (X1 * (w * p * (1 - p))[:, None]).T @ X1
        ll = np.sum(w * (d * log_expit(lp) + (1 - d) * log_expit(-lp)))
        return -(ll + 0.5 * np.linalg.slogdet(info)[1])

    got = firth_logistic(X, d, w)
    ref = minimize(neg_penalised, np.zeros(4), method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(got, ref, atol=1e-5)
    separated = (X[:, 0] > 0.5).astype(float)  # maximum likelihood diverges here
    beta = firth_logistic(X, separated, w)
    assert np.all(np.isfinite(beta)) and abs(beta[1]) < 20


def test_coherent_death_cif_is_the_cause_specific_product_limit():
    """Given the re-fracture CIF of a cause-specific pair, the identity
    dCIF2 = (1 - CIF1 - CIF2)(s-) r2 dH2 gives back the pair's own death CIF."""
    rng = np.random.default_rng(2)
    grid = np.sort(rng.uniform(1, 700, 60))
    dh1, dh2 = rng.uniform(0, 0.01, 60), rng.uniform(0, 0.006, 60)
    r1, r2 = np.exp(rng.normal(0, 1, 25)), np.exp(rng.normal(0, 1, 25))
    pair = cause_specific_cif(grid, dh1, dh2, r1, r2, grid)
    at = np.array([0.5, 30.0, 365.0, 800.0])
    got = coherent_death_cif(grid, pair[:, 0, :], dh2, r2, at)
    want = cause_specific_cif(grid, dh1, dh2, r1, r2, at)[:, 1, :]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # a re-fracture CIF that leaves no room: death is scaled so the pair adds up to 1
    steep = np.minimum(np.cumsum(np.full(60, 0.03)), 1.0)[None, :].repeat(2, axis=0)
    capped = coherent_death_cif(grid, steep, np.full(60, 0.05), np.ones(2), grid)
    assert np.all(steep + capped <= 1 + 1e-12) and np.all(np.diff(capped, axis=1) >= -1e-15)


def test_fine_gray_death_risk_is_coherent_where_a_second_fine_gray_model_was_not():
    ds = dataset(560, 0)
    X = ds.model_input("clinical+imaging")
    pipe = make_pipeline(
        "finegray", ds.covariates, ds.imaging_features, categories=ds.categories, estimand="cif"
    ).fit(X, ds.y)
    grid = np.array([30.0, 180.0, H, 600.0])
    cif = pipe.predict_cif(X, grid)
    assert np.all(cif.sum(axis=1) <= 1 + 1e-12)
    assert np.all(np.diff(cif, axis=2) >= -1e-12)
    # what the model did before: a second, separate Fine-Gray model of death
    design = pipe.transform_features(X).to_numpy(float)
    design = design - design.mean(axis=0)
    death = fit_subdistribution(design, ds.y, 2)
    h0 = np.interp(H, death.times, death.cumhaz, left=0.0)  # a step at H: times are days
    separate = -np.expm1(-np.exp(design @ death.coef) * h0)
    assert np.max(pipe.predict_risk(X) + separate) > 1.05


def test_death_risks_of_a_small_development_set_do_not_collapse_on_new_patients():
    """16 deaths for 18 model terms: unshrunk, the logistic death model gave new patients a
    median risk of 0.0005 while 7.5 % died (the user's 3.5e-13 to 0.054); shrunk, every cif
    model's risks centre on the observed death rate."""
    dev, new = dataset(200, 2), dataset(560, 0)
    X_new = new.model_input("clinical+imaging")
    observed = observed_incidence(new.y, H, 2)[0]
    for name in ("cox", "finegray", "logistic", "gbsa"):
        pipe = make_pipeline(
            name, dev.covariates, dev.imaging_features, categories=new.categories, estimand="cif"
        ).fit(dev.model_input("clinical+imaging"), dev.y)
        risk = pipe.predict_death_risk(X_new)
        assert np.mean(risk < 0.001) < 0.05, name
        assert 0.4 * observed < np.median(risk) < 1.5 * observed, name


@pytest.mark.parametrize("name", ["cox", "logistic", "finegray"])
def test_mean_death_risk_is_the_aalen_johansen_risk_on_the_synthetic_cohort(name):
    """Out-of-fold (5-fold) risks of death: O/E of death within 20 %, reported next to
    re-fracture's."""
    cfg = config(validation={"split": "kfold", "folds": 5, "bootstrap": 0, "jobs": 1})
    r = validate_with(name, dataset(560, 0), "clinical+imaging", cfg)
    assert "risk_death" in r.predictions
    expected, observed = r.metrics["expected_death_365d"], r.metrics["observed_death_365d"]
    assert abs(expected - observed) <= 0.2 * observed
    oe = r.metrics["oe_ratio_death_365d"]
    assert r.metrics["oe_ratio_death_365d_lo"] < oe < r.metrics["oe_ratio_death_365d_hi"]
    assert oe == pytest.approx(observed / expected)
    assert np.isfinite(r.metrics["oe_ratio_365d"])


def _bmt():
    import sksurv.datasets as sd

    X, y = sd.load_bmt()
    return pd.DataFrame(
        {"dis": X["dis"].astype(int).to_numpy(), "time": y["ftime"], "event": y["status"]}
    )


@pytest.mark.parametrize("name", ["cox", "finegray", "logistic"])
def test_mean_death_risk_is_the_aalen_johansen_risk_on_public_transplant_data(name):
    """Bone-marrow transplant (35 patients, Scrucca et al. 2007): relapse competes with
    transplant-related death; risks at 12 months from the disease type (ALL / AML)."""
    df = _bmt()
    y = make_outcome(df["event"], df["time"])
    pipe = make_pipeline(name, binary=["dis"], horizon=12.0, estimand="cif").fit(df[["dis"]], y)
    death, risk = pipe.predict_death_risk(df[["dis"]]), pipe.predict_risk(df[["dis"]])
    assert np.all(death + risk <= 1 + 1e-12)
    values, reasons = death_metrics(y, death, 12.0)
    assert not reasons
    assert abs(values["expected_death_12d"] - values["observed_death_12d"]) <= (
        0.2 * values["observed_death_12d"]
    )
