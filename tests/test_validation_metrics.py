"""Metrics equal scikit-survival's and lifelines' own functions; the hand-written ones agree
with their textbook forms where those can be computed directly."""

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
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from refracture.models import horizon_weights, make_outcome, make_pipeline, to_sksurv
from refracture.validation import (
    calibration_slope_intercept,
    compute_metrics,
    observed_risk,
    time_grid,
)
from refracture.validation.added_value import continuous_nri, idi
from refracture.validation.curves import calibration_groups, net_benefit, td_roc_points
from survival_cohort import config, dataset

H = 365.0


@pytest.fixture(scope="module")
def fitted():
    """Cox fitted on 400 patients, predictions for the other 160."""
    ds = dataset()
    cols = ds.feature_names("clinical+imaging")
    tr, te = np.arange(400), np.arange(400, 560)
    pipe = make_pipeline(
        "cox",
        config().covariates,
        ds.imaging_features,
        horizon=H,
        random_state=0,
        categories=ds.categories,
    ).fit(ds.X[cols].iloc[tr], ds.y[tr])
    times = time_grid(H)
    X_te = ds.X[cols].iloc[te]
    return ds.y[tr], ds.y[te], pipe.predict_risk(X_te), pipe.predict_survival(X_te, times), times


def test_metric_names_carry_the_horizon(fitted):
    y_tr, y_te, risk, surv, times = fitted
    m = compute_metrics(y_tr, y_te, risk, surv, times, H)
    assert list(m) == [
        "cindex_harrell", "cindex_uno", "auc_365d", "brier_365d", "ibs_365d",
        "calibration_slope", "calibration_intercept", "oe_ratio_365d",
    ]  # fmt: skip
    assert all(np.isfinite(v) for v in m.values())
    m730 = compute_metrics(y_tr, y_te, risk, None, None, 200.0)
    assert "auc_200d" in m730 and np.isnan(m730["ibs_200d"])


def test_metrics_equal_scikit_survival(fitted):
    y_tr, y_te, risk, surv, times = fitted
    m = compute_metrics(y_tr, y_te, risk, surv, times, H)
    s_tr, s_te = to_sksurv(y_tr), to_sksurv(y_te)
    assert m["cindex_harrell"] == concordance_index_censored(s_te["event"], s_te["time"], risk)[0]
    assert m["cindex_uno"] == concordance_index_ipcw(s_tr, s_te, risk, tau=H)[0]
    assert m["auc_365d"] == cumulative_dynamic_auc(s_tr, s_te, risk, [H])[0][0]
    assert m["brier_365d"] == brier_score(s_tr, s_te, 1 - risk, [H])[1][0]
    assert m["ibs_365d"] == integrated_brier_score(s_tr, s_te, surv, times)
    # death is censoring for these: only event 1 counts
    assert s_te["event"].sum() == (y_te["event"] == 1).sum()


def test_observed_risk_equals_lifelines(fitted):
    _, y_te, risk, surv, times = fitted
    assert (y_te["event"] == 2).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj = AalenJohansenFitter(seed=0, calculate_variance=False).fit(
            y_te["time"], y_te["event"], event_of_interest=1
        )
    ref = float(aj.cumulative_density_.loc[:H].iloc[-1, 0])
    assert observed_risk(y_te, H) == pytest.approx(ref, abs=2e-3)  # lifelines jitters ties
    no_deaths = make_outcome(np.where(y_te["event"] == 2, 0, y_te["event"]), y_te["time"])
    km = KaplanMeierFitter().fit(no_deaths["time"], no_deaths["event"] == 1)
    assert observed_risk(no_deaths, H) == pytest.approx(1 - float(km.predict(H)), abs=1e-12)
    m = compute_metrics(fitted[0], y_te, risk, surv, times, H)
    assert m["oe_ratio_365d"] == pytest.approx(observed_risk(y_te, H) / risk.mean())


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


def test_td_roc_area_equals_scikit_survival(fitted):
    y_tr, y_te, risk, _, _ = fitted
    fpr, tpr = td_roc_points(y_tr, y_te, risk, H)
    assert (
        fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == pytest.approx(1) and tpr[-1] == pytest.approx(1)
    )
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    auc = cumulative_dynamic_auc(to_sksurv(y_tr), to_sksurv(y_te), risk, [H])[0][0]
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)


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
    _, y_te, risk, _, _ = fitted
    g = calibration_groups(y_te, risk, H, 4)
    assert len(g) == 4 and g["n"].sum() == len(y_te)
    assert np.all(np.diff(g["predicted"]) > 0)
    assert np.all((g["lower"] <= g["observed"]) & (g["observed"] <= g["upper"]))


def test_metrics_are_nan_not_errors_when_data_cannot_support_them(fitted):
    y_tr, y_te, risk, surv, times = fitted
    no_events = make_outcome(np.zeros(len(y_te), dtype=int), y_te["time"])
    m = compute_metrics(y_tr, no_events, risk, surv, times, H)
    assert np.isnan(m["cindex_harrell"]) and np.isnan(m["auc_365d"])
    assert m["oe_ratio_365d"] == 0.0
