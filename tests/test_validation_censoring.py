"""Censoring conventions of real studies (issue 12): follow-up that ends at the horizon.

A patient censored at exactly the horizon was seen event-free at it: a control in every metric
and in the logistic model's target. Two real designs that broke the metrics are reproduced: a
1-year protocol (every event-free patient censored on day 365, horizon 365) and lifelines'
Rossi recidivism data (events in the last week, horizon 52 weeks).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sksurv.metrics import brier_score, concordance_index_ipcw, cumulative_dynamic_auc

from refracture.config import parse_config
from refracture.dataset import assemble
from refracture.models import IPCWLogistic, horizon_weights, make_outcome, to_sksurv
from refracture.validation import compute_metrics, time_grid
from refracture.validation.plots import (
    plot_calibration,
    plot_decision_curve,
    plot_km_risk_groups,
    plot_td_roc,
)
from survival_cohort import SYNTH_COVARIATES, cohort, validate_with

H = 365.0


def _one_year_truth(n: int = 560, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic cohort re-cut to a 1-year protocol with no other censoring: outcome
    from the true (unrounded) times, true CIF and net risk at 365 days."""
    t = cohort(n, seed).truth
    t1, t2 = t["time_refracture_days"].to_numpy(), t["time_death_days"].to_numpy()
    time = np.minimum.reduce([t1, t2, np.full(len(t), H)])
    event = np.select([(time == t1) & (t1 <= H), (time == t2) & (t2 <= H)], [1, 2], 0)
    return make_outcome(event, time), t["cif_365d"].to_numpy(), t["risk_365d"].to_numpy()


def test_censored_at_the_horizon_is_a_control_with_weight_from_g_before_h():
    # censored at 100 (before h), event at 200, censored at h, censored at h, death at 300
    y = make_outcome([0, 1, 0, 0, 2], [100, 200, H, H, 300])
    for deaths in ("censor", "competing"):
        status, w = horizon_weights(y, H, deaths)
        np.testing.assert_array_equal(status, [0, 1, 0, 0, 0])
        # G(t-): one censoring at 100 among 5 at risk; the censorings at h do not count
        assert w[0] == 0 and w[1] == pytest.approx(5 / 4)
        assert w[2] == w[3] > 0
    _, w_net = horizon_weights(y, H, "censor")
    _, w_cif = horizon_weights(y, H, "competing")
    # net: the death at 300 censors (3 at risk) -> G(h-) = 4/5 * 2/3; cif: it is known
    assert w_net[2] == pytest.approx(1 / (4 / 5 * 2 / 3)) and w_net[4] == 0
    assert w_cif[2] == pytest.approx(5 / 4) and w_cif[4] == pytest.approx(5 / 4)


def test_one_year_protocol_is_no_censoring_at_all():
    """Only administrative censoring on day 365: every status at 365 is known, so under cif
    every weight is 1 and each metric is its plain binary form."""
    y, cif, _ = _one_year_truth()
    assert y["time"].max() == H and ((y["event"] == 0) == (y["time"] == H)).all()
    status, w = horizon_weights(y, H, "competing")
    assert np.all(w == 1.0)
    m, why = compute_metrics(y, cif, None, None, H, estimand="cif")
    d = (y["event"] == 1).astype(int)
    assert m["auc_365d"] == pytest.approx(roc_auc_score(d, cif), abs=1e-12)
    assert m["brier_365d"] == pytest.approx(np.mean((d - cif) ** 2), abs=1e-12)
    assert m["oe_ratio_365d"] == pytest.approx(d.mean() / cif.mean(), abs=1e-12)
    lr = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12)
    lr.fit(logit(cif)[:, None], d)
    assert m["calibration_slope"] == pytest.approx(lr.coef_[0, 0], rel=1e-6)
    assert set(why) == {"ibs_365d"}  # no curve given
    # the true CIF is well calibrated (560 patients)
    assert m["calibration_slope"] == pytest.approx(1.0, abs=0.3)
    assert m["oe_ratio_365d"] == pytest.approx(1.0, abs=0.2)


def test_one_year_protocol_net_equals_scikit_survival_just_before_the_end():
    """scikit-survival refuses t = 365 (G(365) = 0, no follow-up beyond); just before the end
    of follow-up its metrics are defined and equal ours at 365 (no event in between)."""
    y, _, risk = _one_year_truth()
    s = to_sksurv(y)
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(s, s, risk, [H])
    t = H - 1e-6
    assert not ((y["time"] > t) & (y["time"] < H)).any()
    m, why = compute_metrics(y, risk, None, None, H, estimand="net")
    assert m["auc_365d"] == pytest.approx(cumulative_dynamic_auc(s, s, risk, [t])[0][0], abs=1e-12)
    assert m["brier_365d"] == pytest.approx(brier_score(s, s, 1 - risk, [t])[1][0], abs=1e-12)
    assert m["cindex_uno"] == concordance_index_ipcw(s, s, risk, tau=H)[0]
    assert set(why) == {"ibs_365d"}


def test_logistic_target_counts_patients_censored_at_the_horizon_as_controls():
    y, _, _ = _one_year_truth(300, 1)
    x = pd.DataFrame({"a": np.random.default_rng(0).normal(size=len(y))})
    m = IPCWLogistic(horizon=H).fit(x, y)
    n_free = int(((y["event"] != 1) & (y["time"] >= H)).sum())
    assert m.n_controls_ == n_free > 0
    assert m.n_censored_before_horizon_ == int((y["event"] == 2).sum())  # deaths (net risk)


def _recut_one_year(clinical: pd.DataFrame) -> pd.DataFrame:
    """Every patient still followed at day 365 is censored there (a 1-year protocol)."""
    out = clinical.copy()
    late = out["time_days"] > H
    out.loc[late, "time_days"] = int(H)
    out.loc[late, "event"] = 0
    return out


def _validate_at_last_follow_up(clinical: pd.DataFrame, cfg_raw: dict, model: str, horizon):
    """validate() with the horizon at the last follow-up time.

    Data assembly still refuses that horizon (its own check); assembling with a horizon one
    unit shorter and validating at the real one tests the metrics on their own.
    """
    raw_h = {**cfg_raw, "outcome": {**cfg_raw.get("outcome", {}), "horizon_days": horizon - 1}}
    ds = assemble(clinical, None, parse_config(raw_h))
    ds = replace(ds, horizon=horizon)
    cfg = parse_config(
        {**cfg_raw, "outcome": {**cfg_raw.get("outcome", {}), "horizon_days": horizon}}
    )
    return validate_with(model, ds, "clinical", cfg)


@pytest.mark.parametrize("model", ["cox", "logistic"])
def test_a_one_year_protocol_validates(model, tmp_path):
    clinical = _recut_one_year(cohort(560, 0).clinical)
    assert clinical["time_days"].max() == H
    raw = {
        "data": {"clinical": "clinical.csv"},
        "covariates": SYNTH_COVARIATES,
        "feature_sets": ["clinical"],
        "validation": {"bootstrap": 10, "jobs": 1, "seed": 0},
    }
    r = _validate_at_last_follow_up(clinical, raw, model, H)
    assert r.estimand == "cif"
    expected_nan = {"ibs_365d"} if model == "logistic" else set()
    base = [k for k in r.metrics if not k.endswith(("_lo", "_hi", "_optcorr", "_632plus", "_loo"))]
    assert {k for k in base if np.isnan(r.metrics[k])} == expected_nan
    assert set(r.reasons) >= expected_nan
    # besides the IBS, only intervals are missing: the unpenalised logistic model's apparent
    # calibration slope and intercept are exactly 1 and 0 on every refit, no spread to give
    others = {k: v for k, v in r.reasons.items() if not k.startswith("ibs")}
    assert all(k.endswith(("_lo", "_hi")) and "no width" in v for k, v in others.items())
    assert ("calibration_slope_optcorr_lo" in others) == (model == "logistic"), others
    # patients censored on day 365 are controls of the ROC; every figure is drawn
    reasons: dict[str, str] = {}
    paths = [
        plot_td_roc(r.predictions, tmp_path / "roc.png", estimand="cif", reasons=reasons),
        plot_calibration(r.predictions, tmp_path / "cal.png", estimand="cif", reasons=reasons),
        plot_decision_curve(r.predictions, tmp_path / "dca.png", estimand="cif", reasons=reasons),
        plot_km_risk_groups(
            r.predictions, [0.1, 0.2], tmp_path / "km.png", estimand="cif", reasons=reasons
        ),
    ]
    assert reasons == {} and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def _rossi() -> tuple[pd.DataFrame, np.ndarray]:
    d = load_rossi()
    return d, make_outcome(d["arrest"].to_numpy(), d["week"].to_numpy(dtype=float))


@pytest.mark.parametrize("estimand", ["net", "cif"])
def test_rossi_metrics_at_the_last_week(estimand, tmp_path):
    """Rossi: arrests up to week 52, everyone else censored at week 52."""
    d, y = _rossi()
    assert ((y["event"] == 1) & (y["time"] == 52)).any() and y["time"].max() == 52
    cph = CoxPHFitter().fit(d, "week", "arrest")
    times = time_grid(52.0)
    surv = cph.predict_survival_function(d, times=times).to_numpy().T
    risk = 1 - surv[:, -1]
    lp = cph.predict_log_partial_hazard(d).to_numpy()
    m, why = compute_metrics(y, risk, surv, times, 52.0, estimand=estimand, lp=lp)
    assert why == {} and all(np.isfinite(v) for v in m.values())
    # only censoring at week 52: every status is known, every weight 1
    arrested = (y["event"] == 1).astype(int)
    assert m["auc_52d"] == pytest.approx(roc_auc_score(arrested, lp), abs=1e-12)
    assert m["brier_52d"] == pytest.approx(np.mean((arrested - risk) ** 2), abs=1e-12)
    frame = pd.DataFrame({"risk": risk, "lp": lp, "time": y["time"], "event": y["event"]})
    path = plot_td_roc(frame, tmp_path / "roc.png", horizon=52.0, estimand=estimand)
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_rossi_validates_at_its_last_week():
    d, _ = _rossi()
    clinical = d.rename(columns={"week": "week_of_arrest", "age": "age_at_release"})
    clinical.insert(0, "patient_id", [f"R{i:03d}" for i in range(len(d))])
    raw = {
        "data": {"clinical": "rossi.csv"},
        "outcome": {"time": "week_of_arrest", "event": "arrest"},
        "covariates": {
            "numeric": ["age_at_release", "prio"],
            "binary": ["fin", "race", "wexp", "mar", "paro"],
        },
        "feature_sets": ["clinical"],
        "validation": {"split": "kfold", "folds": 3, "bootstrap": 10, "jobs": 1, "seed": 0},
    }
    r = _validate_at_last_follow_up(clinical, raw, "cox", 52.0)
    assert r.estimand == "net"
    assert all(np.isfinite(r.metrics[k]) for k in ("auc_52d", "brier_52d", "ibs_52d"))
    assert all(np.isfinite(r.metrics[f"auc_52d{s}"]) for s in ("_lo", "_hi", "_optcorr"))
    assert r.reasons == {}


def test_plots_return_none_with_a_reason(tmp_path):
    y, cif, _ = _one_year_truth(200, 3)
    frame = pd.DataFrame({"risk": cif, "time": y["time"], "event": np.where(y["event"] == 1, 0, 2)})
    reasons: dict[str, str] = {}
    assert plot_td_roc(frame, tmp_path / "roc.png", estimand="cif", reasons=reasons) is None
    assert "no re-fracture" in reasons["roc"] and not (tmp_path / "roc.png").exists()
    assert plot_calibration(frame.iloc[:0], tmp_path / "cal.png", reasons=reasons) is None
    assert reasons["cal"] == "no patients to plot"
