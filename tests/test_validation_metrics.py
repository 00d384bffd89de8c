"""Metrics equal scikit-survival's and lifelines' own functions; the hand-written ones agree
with their textbook forms where those can be computed directly (net estimand here; the
competing-risk estimand and the censoring conventions have their own test files)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    integrated_brier_score,
)
from sksurv.metrics import cumulative_dynamic_auc as sk_cumulative_dynamic_auc

from refracture.models import horizon_weights, make_outcome, make_pipeline, to_sksurv
from refracture.validation import (
    calibration_slope_intercept,
    compute_metrics,
    observed_risk,
    time_grid,
)
from refracture.validation.added_value import continuous_nri, idi
from refracture.validation.curves import calibration_groups, net_benefit, td_roc_points
from refracture.validation.ipcw_metrics import cumulative_dynamic_auc
from survival_cohort import config, dataset

H = 365.0


def _cox(ds, tr):
    cols = ds.feature_names("clinical+imaging")
    return make_pipeline(
        "cox",
        config().covariates,
        ds.imaging_features,
        horizon=H,
        random_state=0,
        categories=ds.categories,
    ).fit(ds.X[cols].iloc[tr], ds.y[tr])


@pytest.fixture(scope="module")
def fitted():
    """Cox fitted on 400 patients: outcome, risk, survival curve, times and lp of the other 160."""
    ds = dataset()
    cols = ds.feature_names("clinical+imaging")
    pipe = _cox(ds, np.arange(400))
    times = time_grid(H)
    X_te = ds.X[cols].iloc[400:]
    y_te = ds.y[400:]
    curve = pipe.predict_survival(X_te, times)
    return y_te, pipe.predict_risk(X_te), curve, times, pipe.linear_predictor(X_te)


def test_metric_names_carry_the_horizon(fitted):
    y_te, risk, surv, times, lp = fitted
    m, why = compute_metrics(y_te, risk, surv, times, H, lp=lp)
    assert list(m) == [
        "cindex_harrell", "cindex_uno", "auc_365d", "brier_365d", "ibs_365d",
        "calibration_slope", "calibration_intercept", "oe_ratio_365d", "ici_365d", "e50_365d",
        "e90_365d",
    ]  # fmt: skip
    assert all(np.isfinite(v) for v in m.values()) and why == {}
    m200, why200 = compute_metrics(y_te, risk, None, None, 200.0)
    assert "auc_200d" in m200 and np.isnan(m200["ibs_200d"])
    assert why200 == {"ibs_200d": "the model predicts the risk at the horizon only, not a curve "
                      "over time"}  # fmt: skip


def _continuous_cohort(n=3000, seed=8):
    """Continuous times (no censoring tied with an event), deaths, follow-up past h: the data
    on which scikit-survival's IPCW metrics are defined and equal to the hand-written ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t1 = rng.weibull(1.3, n) * 900 * np.exp(-0.8 * x / 1.3)
    t2 = rng.exponential(3000, n)
    c = rng.uniform(100, 900, n)
    time = np.minimum.reduce([t1, t2, c])
    event = np.select([time == t1, time == t2], [1, 2], 0)
    lp = 0.8 * x
    base = (np.arange(1, 21) * H / 20 / 900) ** 1.3
    surv = np.exp(-np.exp(lp)[:, None] * base[None, :])
    return make_outcome(event, time), 1 - surv[:, -1], surv, time_grid(H), lp


def test_hand_written_ipcw_metrics_equal_scikit_survival():
    y, risk, surv, times, lp = _continuous_cohort()
    m, _ = compute_metrics(y, risk, surv, times, H, lp=lp)
    s = to_sksurv(y)
    # censoring distribution estimated on the evaluated data, as these metrics do
    assert m["cindex_harrell"] == concordance_index_censored(s["event"], s["time"], lp)[0]
    assert m["cindex_uno"] == concordance_index_ipcw(s, s, lp, tau=H)[0]
    assert m["auc_365d"] == pytest.approx(
        sk_cumulative_dynamic_auc(s, s, risk, [H])[0][0], abs=1e-12
    )
    assert m["brier_365d"] == pytest.approx(brier_score(s, s, 1 - risk, [H])[1][0], abs=1e-12)
    assert m["ibs_365d"] == pytest.approx(integrated_brier_score(s, s, surv, times), abs=1e-12)
    # the Cox risk is a monotone function of lp: the same ranking
    assert concordance_index_censored(s["event"], s["time"], risk)[0] == m["cindex_harrell"]


def test_observed_risk_equals_lifelines(fitted):
    y_te, risk, surv, times, _ = fitted
    assert (y_te["event"] == 2).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj = AalenJohansenFitter(seed=0, calculate_variance=False).fit(
            y_te["time"], y_te["event"], event_of_interest=1
        )
    ref = float(aj.cumulative_density_.loc[:H].iloc[-1, 0])
    cif = observed_risk(y_te, H, "cif")
    assert cif == pytest.approx(ref, abs=2e-3)  # lifelines jitters ties
    # net: deaths censor, 1 - Kaplan-Meier; at least the cumulative incidence
    km = KaplanMeierFitter().fit(y_te["time"], y_te["event"] == 1)
    assert observed_risk(y_te, H, "net") == pytest.approx(1 - float(km.predict(H)), abs=1e-12)
    assert observed_risk(y_te, H, "net") > cif
    for estimand in ("net", "cif"):
        m, _ = compute_metrics(y_te, risk, surv, times, H, estimand=estimand)
        expected = observed_risk(y_te, H, estimand) / risk.mean()
        assert m["oe_ratio_365d"] == pytest.approx(expected)


def _simulated(n=6000, seed=3, censor=True):
    rng = np.random.default_rng(seed)
    true_risk = expit(rng.normal(-1.8, 1.0, n))
    case = rng.random(n) < true_risk
    t_event = np.where(case, rng.uniform(1, H, n), rng.uniform(H + 1, 2 * H, n))
    t_cens = rng.uniform(50, 2 * H, n) if censor else np.full(n, np.inf)
    time = np.minimum(t_event, t_cens)
    event = np.where(t_event <= t_cens, 1, 0)
    return make_outcome(event, time), true_risk


def test_calibration_of_true_risks_is_perfect():
    y, risk = _simulated()
    slope, intercept = calibration_slope_intercept(y, risk, H)
    assert slope == pytest.approx(1.0, abs=0.1)
    assert intercept == pytest.approx(0.0, abs=0.07)
    # over-confident predictions (logit doubled) have slope ~0.5; a shift of -0.5 on the
    # logit gives intercept ~+0.5 (under-prediction)
    slope2, _ = calibration_slope_intercept(y, expit(2 * logit(risk)), H)
    assert slope2 == pytest.approx(0.5, abs=0.06)
    _, intercept3 = calibration_slope_intercept(y, expit(logit(risk) - 0.5), H)
    assert intercept3 == pytest.approx(0.5, abs=0.08)


def test_calibration_slope_equals_weighted_logistic_regression():
    y, risk = _simulated(2000, 4)
    status, w = horizon_weights(y, H, deaths="competing")
    used = w > 0
    lr = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12).fit(
        logit(risk[used])[:, None], status[used], sample_weight=w[used]
    )
    slope, _ = calibration_slope_intercept(y, risk, H)
    assert slope == pytest.approx(lr.coef_[0, 0], rel=1e-6)


@pytest.mark.parametrize("estimand", ["net", "cif"])
def test_td_roc_area_is_the_auc(fitted, estimand):
    y_te, risk, _, _, _ = fitted
    # rounded risks make ties: the trapezoid gives them half credit, as the AUC does
    for score in (risk, np.round(risk, 2)):
        fpr, tpr = td_roc_points(y_te, score, H, estimand)
        assert fpr[0] == 0 and tpr[0] == 0
        assert fpr[-1] == pytest.approx(1) and tpr[-1] == pytest.approx(1)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        auc = cumulative_dynamic_auc(y_te, score, H, estimand)
        assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)
    y, risk_c, *_ = _continuous_cohort(800, 2)
    s = to_sksurv(y)
    fpr, tpr = td_roc_points(y, risk_c, H)
    assert np.trapezoid(tpr, fpr) == pytest.approx(
        sk_cumulative_dynamic_auc(s, s, risk_c, [H])[0][0], abs=1e-12
    )


def test_net_benefit_without_censoring_is_the_binary_formula():
    y, risk = _simulated(3000, 5, censor=False)
    case = (y["event"] == 1) & (y["time"] <= H)
    pts = np.array([0.05, 0.1, 0.2, 0.3])
    nb = net_benefit(y, risk, H, pts)
    for pt, row in zip(pts, nb.itertuples(), strict=True):
        pos = risk >= pt
        expected = (pos & case).mean() - (pos & ~case).mean() * pt / (1 - pt)
        assert row.model == pytest.approx(expected, abs=1e-12)
        assert row.treat_all == pytest.approx(case.mean() - (1 - case.mean()) * pt / (1 - pt))
        assert row.treat_none == 0


def test_nri_and_idi_without_censoring_match_the_binary_forms():
    y, risk = _simulated(3000, 6, censor=False)
    rng = np.random.default_rng(0)
    old = risk
    new = expit(logit(risk) + rng.normal(0, 0.5, len(risk)))
    case = (y["event"] == 1) & (y["time"] <= H)
    up, down = new > old, new < old
    nri_ev = up[case].mean() - down[case].mean()
    nri_nonev = down[~case].mean() - up[~case].mean()
    nri, ev, nonev = continuous_nri(y, old, new, H)
    assert ev == pytest.approx(nri_ev, abs=1e-12) and nonev == pytest.approx(nri_nonev, abs=1e-12)
    assert nri == pytest.approx(nri_ev + nri_nonev, abs=1e-12)
    expected_idi = (new[case].mean() - old[case].mean()) - (new[~case].mean() - old[~case].mean())
    assert idi(y, old, new, H) == pytest.approx(expected_idi, abs=1e-12)
    # noise moves events and non-events alike (NRI ~ 0; swapping the models flips the sign);
    # going from the average risk to the true risk moves them apart
    assert abs(nri) < 0.1
    assert continuous_nri(y, new, old, H)[0] == pytest.approx(-nri)
    assert continuous_nri(y, np.full(len(risk), risk.mean()), risk, H)[0] > 0.5


def test_calibration_groups(fitted):
    y_te, risk, _, _, _ = fitted
    g = calibration_groups(y_te, risk, H, 4)
    assert len(g) == 4 and g["n"].sum() == len(y_te)
    assert np.all(np.diff(g["predicted"]) > 0)
    assert np.all((g["lower"] <= g["observed"]) & (g["observed"] <= g["upper"]))


def test_metrics_are_nan_with_a_reason_when_data_cannot_support_them(fitted):
    y_te, risk, surv, times, lp = fitted
    no_events = make_outcome(np.zeros(len(y_te), dtype=int), y_te["time"])
    for estimand in ("net", "cif"):
        m, why = compute_metrics(no_events, risk, surv, times, H, estimand=estimand, lp=lp)
        assert m["oe_ratio_365d"] == 0.0 and np.isfinite(m["brier_365d"])
        nan = {k for k, v in m.items() if np.isnan(v)}
        assert nan == set(why) == {
            "cindex_harrell", "cindex_uno", "auc_365d", "calibration_slope",
            "calibration_intercept", "ici_365d", "e50_365d", "e90_365d",
        }  # fmt: skip
        assert "no re-fracture" in why["auc_365d"] and "no re-fracture" in why["cindex_uno"]
    # nobody followed to the horizon: nothing at the horizon can be estimated
    short = make_outcome(y_te["event"], np.minimum(y_te["time"], 200.0))
    m, why = compute_metrics(short, risk, surv, times, H, lp=lp)
    assert "followed" in why["auc_365d"] and "followed" in why["brier_365d"]
    assert "followed" in why["oe_ratio_365d"] and np.isnan(m["oe_ratio_365d"])
    # predictions that are not numbers make every metric NaN, with the reason
    bad = risk.copy()
    bad[0] = np.nan
    m, why = compute_metrics(y_te, bad, surv, times, H)
    assert all(np.isnan(v) for v in m.values()) and set(why) == set(m)
