"""Metrics with death as a competing risk (issue 14), each against an independent computation:
brute-force double loops over a small table with a hand-written reverse Kaplan-Meier,
scikit-survival where no death makes the two estimands one, lifelines' Aalen-Johansen, and the
binary formulas on uncensored data."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import AalenJohansenFitter
from scipy.special import expit
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw

from refracture.models import make_outcome, make_pipeline, to_sksurv
from refracture.validation import compute_metrics, validate
from refracture.validation.added_value import continuous_nri, idi
from refracture.validation.concordance import competing_concordance, ranking_score
from refracture.validation.curves import net_benefit
from refracture.validation.ipcw_metrics import (
    brier_score,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from survival_cohort import config, dataset, validate_with

H = 365.0


def _small_table(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Integer times (ties between events, deaths and censorings), all three codes, some
    follow-up ending exactly at the horizon, and tied scores."""
    rng = np.random.default_rng(seed)
    time = rng.integers(10, 500, n).astype(float)
    time[:6] = H
    event = rng.choice([0, 1, 2], n, p=[0.4, 0.4, 0.2])
    event[:3] = 0
    score = np.round(rng.normal(size=n) + 0.8 * (event == 1), 1)
    return make_outcome(event, time), score


def _g_hand(y: np.ndarray, t: float, left: bool) -> float:
    """Reverse Kaplan-Meier of censoring (event 0) at t (left: just before t); at tied times
    events and deaths leave the risk set before the censorings."""
    g = 1.0
    for u in np.unique(y["time"]):
        if u > t or (left and u == t):
            break
        at_risk = np.sum(y["time"] >= u) - np.sum((y["time"] == u) & (y["event"] != 0))
        cens = np.sum((y["time"] == u) & (y["event"] == 0))
        if cens:
            g *= 1 - cens / at_risk
    return g


def _wolbers_loop(y, score, tau, ipcw):
    num = den = 0.0
    for i in range(len(y)):
        if not (y["event"][i] == 1 and y["time"][i] <= tau):
            continue
        ti = y["time"][i]
        for j in range(len(y)):
            tj, ej = y["time"][j], y["event"][j]
            if ipcw:
                if tj > ti:
                    w = 1 / (_g_hand(y, ti, True) * _g_hand(y, ti, False))
                elif ej == 2:
                    w = 1 / (_g_hand(y, ti, True) * _g_hand(y, tj, True))
                else:
                    continue
            elif tj > ti or (tj == ti and ej == 0) or (ej == 2 and tj <= ti):
                w = 1.0
            else:
                continue
            d = score[i] - score[j]
            num += w * (0.5 if abs(d) <= 1e-8 else float(d > 0))
            den += w
    return num / den


@pytest.mark.parametrize("ipcw", [False, True])
def test_competing_concordance_equals_the_double_loop(ipcw):
    y, score = _small_table()
    for tau in (H, 200.0):
        ours = competing_concordance(y, score, tau, ipcw=ipcw)
        assert ours == pytest.approx(_wolbers_loop(y, score, tau, ipcw), abs=1e-12)


def _continuous(n=400, seed=1, deaths=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t1 = rng.exponential(600 * np.exp(-0.7 * x))
    t2 = rng.exponential(1500, n) if deaths else np.full(n, np.inf)
    c = rng.uniform(50, 800, n)
    time = np.minimum.reduce([t1, t2, c])
    event = np.select([time == t1, time == t2], [1, 2], 0)
    return make_outcome(event, time), x


def test_without_deaths_competing_concordance_is_harrell_and_uno():
    y, x = _continuous(deaths=False)
    s = to_sksurv(y)
    assert competing_concordance(y, x, H, ipcw=True) == pytest.approx(
        concordance_index_ipcw(s, s, x, tau=H)[0], abs=1e-12
    )
    truncated = s.copy()
    truncated["event"] &= s["time"] <= H
    assert competing_concordance(y, x, H) == pytest.approx(
        concordance_index_censored(truncated["event"], truncated["time"], x)[0], abs=1e-12
    )


def _weights_hand(y, t):
    """Status and weight at t under cif: re-fracture by t (1, 1/G(T-)), death before t
    (0, 1/G(T-)), followed to t (0, 1/G(t-)), censored before t (unknown, 0)."""
    out = []
    for ti, ei in zip(y["time"], y["event"], strict=True):
        if ei == 1 and ti <= t:
            out.append((1, 1 / _g_hand(y, ti, True)))
        elif ei == 2 and ti < t:
            out.append((0, 1 / _g_hand(y, ti, True)))
        elif ti >= t:
            out.append((0, 1 / _g_hand(y, t, True)))
        else:
            out.append((0, 0.0))
    return np.array(out).T


def test_competing_auc_and_brier_equal_their_hand_formulas():
    y, score = _small_table(3)
    risk = expit(score)
    d, w = _weights_hand(y, H)
    num = den = 0.0
    for i in np.flatnonzero((d == 1) & (w > 0)):
        for j in np.flatnonzero((d == 0) & (w > 0)):
            num += w[i] * w[j] * (0.5 if score[i] == score[j] else float(score[i] > score[j]))
            den += w[i] * w[j]
    assert cumulative_dynamic_auc(y, score, H, "cif") == pytest.approx(num / den, abs=1e-12)
    assert brier_score(y, risk, H, "cif") == pytest.approx(np.mean(w * (d - risk) ** 2))
    grid = np.array([100.0, 200.0, H])
    curve = 1 - np.column_stack([risk * g / H for g in grid])
    by_hand = [np.mean(_weights_hand(y, g)[1] * (_weights_hand(y, g)[0] - 1 + curve[:, k]) ** 2)
               for k, g in enumerate(grid)]  # fmt: skip
    expected = np.trapezoid(by_hand, grid) / (grid[-1] - grid[0])
    assert integrated_brier_score(y, curve, grid, "cif") == pytest.approx(expected, abs=1e-12)


def test_oe_ratio_against_lifelines_aalen_johansen():
    y, x = _continuous(600, 4)
    risk = expit(-1.5 + 0.7 * x)
    aj = AalenJohansenFitter(calculate_variance=False).fit(y["time"], y["event"], 1)
    observed = float(aj.cumulative_density_.loc[:H].iloc[-1, 0])
    m, _ = compute_metrics(y, risk, None, None, H, estimand="cif")
    assert m["oe_ratio_365d"] == pytest.approx(observed / risk.mean(), abs=1e-10)


def _exponential_cohort(n=20000, seed=5):
    """Constant cause-specific hazards: closed-form CIF and net risk per patient."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    lam1, lam2 = np.exp(-6.3 + 0.6 * x), np.exp(-6.8 + 0.8 * z)
    t1, t2 = rng.exponential(1 / lam1), rng.exponential(1 / lam2)
    c = rng.uniform(100, 900, n)
    time = np.minimum.reduce([t1, t2, c])
    event = np.select([time == t1, time == t2], [1, 2], 0)
    cif = lam1 / (lam1 + lam2) * -np.expm1(-(lam1 + lam2) * H)
    net = -np.expm1(-lam1 * H)
    return make_outcome(event, time), cif, net


def test_calibration_against_aalen_johansen():
    y, cif, net = _exponential_cohort()
    m_cif, _ = compute_metrics(y, cif, None, None, H, estimand="cif")
    assert m_cif["calibration_slope"] == pytest.approx(1.0, abs=0.06)
    assert m_cif["calibration_intercept"] == pytest.approx(0.0, abs=0.04)
    assert m_cif["oe_ratio_365d"] == pytest.approx(1.0, abs=0.03)
    # the net risk over-predicts the cumulative incidence, by the ratio of their means
    m_net_as_cif, _ = compute_metrics(y, net, None, None, H, estimand="cif")
    assert m_net_as_cif["oe_ratio_365d"] == pytest.approx(cif.mean() / net.mean(), abs=0.03)
    assert m_net_as_cif["calibration_intercept"] < -0.05
    # ... and is calibrated in its own estimand
    m_net, _ = compute_metrics(y, net, None, None, H, estimand="net")
    assert m_net["oe_ratio_365d"] == pytest.approx(1.0, abs=0.03)
    assert m_net["calibration_intercept"] == pytest.approx(0.0, abs=0.04)


def test_without_censoring_decision_curve_nri_idi_count_deaths_as_non_events():
    y, cif, net = _exponential_cohort(4000, 6)
    y = make_outcome(
        np.where(y["event"] == 0, 0, y["event"]), np.where(y["event"] == 0, H + 1, y["time"])
    )  # every censoring moved past the horizon: every status at h known
    case = (y["event"] == 1) & (y["time"] <= H)
    pts = np.array([0.05, 0.1, 0.2])
    nb = net_benefit(y, cif, H, pts, "cif")
    for pt, row in zip(pts, nb.itertuples(), strict=True):
        pos = cif >= pt
        expected = (pos & case).mean() - (pos & ~case).mean() * pt / (1 - pt)
        assert row.model == pytest.approx(expected, abs=1e-12)
    up, down = net > cif, net < cif
    nri, ev, nonev = continuous_nri(y, cif, net, H, "cif")
    assert ev == pytest.approx(up[case].mean() - down[case].mean(), abs=1e-12)
    assert nonev == pytest.approx(down[~case].mean() - up[~case].mean(), abs=1e-12)
    diff = net - cif
    assert idi(y, cif, net, H, "cif") == pytest.approx(diff[case].mean() - diff[~case].mean())


def test_without_deaths_the_estimands_agree():
    y, x = _continuous(500, 7, deaths=False)
    risk = expit(-1 + 0.7 * x)
    net, _ = compute_metrics(y, risk, None, None, H, estimand="net")
    cif, _ = compute_metrics(y, risk, None, None, H, estimand="cif")
    # cindex_harrell differs by design: over the whole follow-up (net) or truncated at h (cif)
    for k in ("cindex_uno", "auc_365d", "brier_365d", "calibration_slope", "oe_ratio_365d"):
        assert cif[k] == pytest.approx(net[k], abs=1e-12), k


def test_ranking_by_the_linear_predictor_removes_saturation_ties():
    """An overfit Cox model: 1 - exp(-H0 exp(lp)) is exactly 1 for the top linear
    predictors, which Harrell's C on the risk counts as ties."""
    y, x = _continuous(300, 8)
    lp = 40 * x
    risk = -np.expm1(-0.5 * np.exp(lp))
    assert (risk == 1.0).sum() > 20
    np.testing.assert_array_equal(ranking_score(risk, lp), lp)
    m, _ = compute_metrics(y, risk, None, None, H, lp=lp)
    s = to_sksurv(y)
    on_lp = concordance_index_censored(s["event"], s["time"], lp)
    on_risk = concordance_index_censored(s["event"], s["time"], risk)
    assert m["cindex_harrell"] == on_lp[0] and on_lp[3] == 0 < on_risk[3]  # tied pairs
    assert m["cindex_harrell"] > on_risk[0]
    # a linear predictor that does not order patients as the risk does is not used
    np.testing.assert_array_equal(ranking_score(risk, -lp), risk)
    np.testing.assert_array_equal(ranking_score(risk, x[::-1]), risk)


@pytest.fixture(scope="module")
def both_estimands():
    """One net-risk Cox pipeline judged in both estimands (estimator-first validate)."""
    ds = dataset(300, 2)
    cols = ds.feature_names("clinical")
    template = make_pipeline(
        "cox", ds.covariates, horizon=H, random_state=0, categories=ds.categories,
        estimand="net",
    )  # fmt: skip
    res = {
        e: validate(template, ds.X[cols], ds.y, site=ds.site.to_numpy(), bootstrap=8,
                    estimand=e)
        for e in ("net", "cif")
    }  # fmt: skip
    return ds, res


def test_validate_reports_in_the_requested_estimand(both_estimands):
    ds, res = both_estimands
    net, cif = res["net"], res["cif"]
    assert (net.estimand, cif.estimand) == ("net", "cif")
    assert "competing" in cif.competing_risk_note and "net risk" in net.competing_risk_note
    assert np.array_equal(net.predictions["risk"], cif.predictions["risk"])  # the same model
    # the same bootstrap structure, every metric defined in both
    for r in (net, cif):
        assert r.reasons == {} and len(r.boot_apparent) == 8
    # a net-risk model looks worse calibrated against the cumulative incidence
    assert cif.metrics["oe_ratio_365d"] < net.metrics["oe_ratio_365d"]
    y = cif.y_valid
    m, _ = compute_metrics(
        y, cif.predictions["risk"].to_numpy(), None, None, H, estimand="cif",
        lp=cif.predictions["lp"].to_numpy(),
    )  # fmt: skip
    assert m["cindex_harrell"] == cif.metrics["cindex_harrell"]
    assert m["calibration_slope"] == cif.metrics["calibration_slope"]


def test_a_run_fits_and_validates_in_the_data_sets_estimand():
    """Unset estimand with deaths in the outcome: cif, the Cox pair, metrics in cif; set to
    net: the net Cox model and net metrics."""
    ds = dataset(300, 2)
    assert ds.estimand == "cif"  # the outcome has deaths
    unset = validate_with("cox", ds, "clinical", config(validation={"bootstrap": 0, "jobs": 1}))
    assert unset.estimand == "cif" and unset.final_model.estimand == "cif"
    assert np.all(unset.final_model.predict_death_risk(ds.X[ds.feature_names("clinical")]) > 0)
    net_ds = dataset(300, 2, estimand="net")
    assert net_ds.estimand == "net"
    net = validate_with("cox", net_ds, "clinical", config(validation={"bootstrap": 0, "jobs": 1}))
    assert net.estimand == "net" and net.final_model.estimand == "net"
    # the net risk is never below the cumulative incidence of the same patients
    assert net.predictions["risk"].mean() > unset.predictions["risk"].mean()
