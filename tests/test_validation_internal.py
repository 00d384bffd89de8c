"""Internal validation from one set of bootstrap refits (.632+, leave-one-out bootstrap, a
forest's out-of-bag C) against plain implementations written here, on the synthetic cohort
(competing risks) and on a public survival data set (Rossi's recidivism data, net risk);
stability, smoothed calibration and the interval rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.base import clone
from sksurv.ensemble import RandomSurvivalForest as SksurvRSF
from sksurv.metrics import concordance_index_censored

from public_survival import rossi
from refracture.models import horizon_weights, make_outcome, make_pipeline, to_sksurv
from refracture.validation import validate
from refracture.validation.bootstrap import model_seed, replicate_seeds
from refracture.validation.internal import centred_interval, plus632
from refracture.validation.metrics import Evaluation, brier_no_information
from refracture.validation.smooth_calibration import rcs_basis, smoothed_calibration
from refracture.validation.stability import stability_metrics
from survival_cohort import dataset

B = 6


def _harrell_type_c(y: np.ndarray, score: np.ndarray, horizon: float, competing: bool) -> float:
    """Harrell's C (net: over the whole follow-up) or Wolbers' truncated C (competing), as a
    plain double loop over case i and comparable j."""
    num = den = 0.0
    for i in range(len(y)):
        ti, ei = y["time"][i], y["event"][i]
        if ei != 1 or (competing and ti > horizon):
            continue
        for j in range(len(y)):
            tj, ej = y["time"][j], y["event"][j]
            later = tj > ti or (tj == ti and ej == 0)
            if later or (competing and ej == 2 and tj <= ti):
                d = score[i] - score[j]
                num += 0.5 if abs(d) <= 1e-8 else float(d > 0)
                den += 1.0
    return num / den


def _efron_632plus(c_app: float, c_loo: float) -> float:
    """Efron & Tibshirani (1997), eqs. 32-34, on the error scale 1 - C with gamma = 0.5."""
    err, err1, gamma = 1 - c_app, 1 - c_loo, 0.5
    err1p = min(err1, gamma)
    r = (err1p - err) / (gamma - err) if err1 > err and gamma > err else 0.0
    w = 0.632 / (1 - 0.368 * r)
    return 1 - ((1 - w) * err + w * err1p)


def _plain_internal(template, X, y, horizon, competing, seed=0):
    """The same B refits as validate draws (seed streams), each tested on its out-of-bag
    patients; returns the LOO bootstrap C and .632+ C computed by hand."""
    final = clone(template).fit(X, y)
    score = np.asarray(final.predict_risk(X), dtype=float)
    c_app = _harrell_type_c(y, score, horizon, competing)
    oob_c = []
    for ss in replicate_seeds(seed, B):
        idx = np.random.default_rng(ss).integers(0, len(y), len(y))
        model = clone(template).set_params(model__random_state=model_seed(ss))
        model.fit(X.iloc[idx], y[idx])
        out = np.setdiff1d(np.arange(len(y)), idx)
        risk = np.asarray(model.predict_risk(X.iloc[out]), dtype=float)
        oob_c.append(_harrell_type_c(y[out], risk, horizon, competing))
    c_loo = float(np.mean(oob_c))
    return c_loo, _efron_632plus(c_app, c_loo)


def _tree_oob_risk(forest, Xt: np.ndarray, y: np.ndarray, horizon: float, what: str):
    """Per patient, per tree whose sample left it out: the tree's prediction, averaged (a plain
    loop over patients). ``what``: "risk" at the horizon, or "chf" (the packages' own OOB
    score, to check the in-bag bookkeeping against them)."""
    n = len(Xt)
    if hasattr(forest, "oob_indices_"):  # comprisk (cif): trees fitted on the used rows
        first = y["time"][y["event"] != 0].min()
        used = np.flatnonzero(~((y["event"] == 0) & (y["time"] < first)))
        from comprisk._hist_tree import predict_tree_hist
        from comprisk._tree import predict_tree

        Xin, fn = forest._prepare_predict_inputs(Xt[used], predict_tree, predict_tree_hist)
        grid = forest.unique_times_
        h = np.searchsorted(grid, horizon, side="right") - 1
        per_tree = []
        for tree, oob in zip(forest.trees_, forest.oob_indices_, strict=True):
            values = {}
            for k in oob:
                cif = fn(tree, Xin[k : k + 1])[0, 0]
                # comprisk's OOB "mortality": the left-Riemann integral of the CIF
                values[used[k]] = cif[h] if what == "risk" else np.sum(cif[:-1] * np.diff(grid))
            per_tree.append(values)
    else:  # scikit-survival (net)
        h = np.searchsorted(forest.unique_times_, horizon, side="right") - 1
        per_tree = []
        for tree, drawn in zip(forest.estimators_, forest.estimators_samples_, strict=True):
            values = {}
            for i in sorted(set(range(n)) - set(drawn.tolist())):
                if what == "risk":
                    values[i] = (
                        1 - tree.predict_survival_function(Xt[i : i + 1], return_array=True)[0, h]
                    )
                else:
                    values[i] = tree.predict_cumulative_hazard_function(
                        Xt[i : i + 1], return_array=True
                    )[0].sum()
            per_tree.append(values)
    out = np.full(n, np.nan)
    for i in range(n):
        vals = [t[i] for t in per_tree if i in t]
        if vals:
            out[i] = np.mean(vals)
    return out


def _synthetic():
    ds = dataset(200, 11)
    cols = ["age", "bmd_tscore", "prior_fracture", "pdff_mean_normal", "r2star_mean_normal"]
    X = ds.X[cols].astype(float)
    return X, ds.y, 365.0, "cif", np.asarray(ds.site)


def _rossi():
    t = rossi()
    X = t[["fin", "age", "wexp", "mar", "paro", "prio"]].astype(float)
    X.index = t["id"].astype(str)
    y = make_outcome(t["arrest"].to_numpy(), t["week"].to_numpy(float))
    return X, y, 52.0, "net", None


@pytest.mark.parametrize("data", [_synthetic, _rossi], ids=["synthetic", "rossi"])
def test_632plus_loo_and_oob_equal_plain_implementations(data):
    X, y, horizon, estimand, site = data()
    template = make_pipeline(
        "rsf", numeric=list(X.columns), horizon=horizon, estimand=estimand, random_state=0
    ).set_params(model__n_estimators=25, model__min_samples_leaf=10)
    r = validate(template, X, y, site=site, bootstrap=B, jobs=1, split="none")
    assert r.internal == "632plus" and r.boot_oob.shape[0] == B
    c_loo, c_632 = _plain_internal(template, X, y, horizon, estimand == "cif")
    assert r.metrics["cindex_harrell_loo"] == pytest.approx(c_loo, abs=1e-10)
    assert r.metrics["cindex_harrell_632plus"] == pytest.approx(c_632, abs=1e-10)
    # the forest's out-of-bag C: each patient scored by the trees that did not see it
    forest = r.final_model.model.forest_
    Xt = r.final_model.transform_features(X).to_numpy(float)
    risk = _tree_oob_risk(forest, Xt, y, horizon, "risk")
    whole = r.final_model.predict_risk(X)
    risk = np.where(np.isnan(risk), whole, risk)
    assert r.metrics["cindex_oob"] == pytest.approx(
        _harrell_type_c(y, risk, horizon, estimand == "cif"), abs=1e-10
    )
    # the loop's bookkeeping of in-bag patients agrees with the packages' own OOB scores
    if estimand == "cif":
        own = forest.predict_oob_risk(cause=1)
        mine = _tree_oob_risk(forest, Xt, y, horizon, "chf")
        first = y["time"][y["event"] != 0].min()
        used = ~((y["event"] == 0) & (y["time"] < first))
        np.testing.assert_allclose(mine[used], own, rtol=1e-10)
    else:
        fitted = SksurvRSF(n_estimators=25, min_samples_leaf=10, max_features="sqrt",
                           random_state=forest.random_state, oob_score=True, n_jobs=1)  # fmt: skip
        fitted.fit(Xt, to_sksurv(y))
        np.testing.assert_allclose(
            _tree_oob_risk(fitted, Xt, y, horizon, "chf"), fitted.oob_prediction_, rtol=1e-10
        )
        s = to_sksurv(y)
        assert fitted.oob_score_ == pytest.approx(
            concordance_index_censored(s["event"], s["time"], fitted.oob_prediction_)[0]
        )


def test_632plus_follows_efron_and_tibshirani():
    # no overfitting (LOO = apparent): .632+ is the apparent value
    assert plus632(0.80, 0.80, 0.5) == pytest.approx(0.80)
    # complete overfitting (LOO at no-information): R = 1, w = 1, the LOO value
    assert plus632(0.90, 0.50, 0.5) == pytest.approx(0.50)
    # LOO beyond no-information is capped there
    assert plus632(0.90, 0.40, 0.5) == pytest.approx(0.50)
    # LOO better than apparent: R = 0, the .632 estimate
    assert plus632(0.70, 0.75, 0.5) == pytest.approx(0.368 * 0.70 + 0.632 * 0.75)
    # a loss (Brier): no-information above apparent
    assert plus632(0.10, 0.12, 0.15) == pytest.approx(_loss_632plus(0.10, 0.12, 0.15))
    # no no-information value (calibration-in-the-large): .632
    assert plus632(1.02, 0.95, None) == pytest.approx(0.368 * 1.02 + 0.632 * 0.95)


def _loss_632plus(err, err1, gamma):
    err1p = min(err1, gamma)
    r = (err1p - err) / (gamma - err) if err1 > err and gamma > err else 0.0
    w = 0.632 / (1 - 0.368 * r)
    return (1 - w) * err + w * err1p


def test_brier_no_information_is_the_mean_over_all_pairings():
    X, y, horizon, estimand, _ = _synthetic()
    risk = np.random.default_rng(3).beta(2, 10, len(y))
    status, w = horizon_weights(y, horizon, deaths="competing")
    brute = np.mean([np.mean(w * (status - np.roll(risk, k)) ** 2) for k in range(len(y))])
    ev = Evaluation(y, risk, horizon=horizon, estimand=estimand)
    assert brier_no_information(ev) == pytest.approx(brute, rel=1e-12)


def test_intervals_contain_their_estimate_or_are_not_given():
    rng = np.random.default_rng(0)
    values = rng.normal(0.8, 0.02, 200) + 0.05  # resamples' apparent values far above
    lo, hi, why = centred_interval(values, 0.78)
    assert lo < 0.78 < hi and why is None
    assert hi - lo == pytest.approx(np.ptp(np.percentile(values, [2.5, 97.5])))
    lo, hi, why = centred_interval(np.full(50, 1.0), 1.0)  # every refit reproduces it
    assert np.isnan(lo) and np.isnan(hi) and "no width" in why


def test_stability_measures_equal_their_definitions():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.4, 50)
    boot = np.clip(p + rng.normal(0, 0.05, (30, 50)), 0, 1)
    m = stability_metrics(p, boot, (0.10, 0.20))
    mape = np.mean([[abs(boot[b, i] - p[i]) for i in range(50)] for b in range(30)])
    assert m["instability_mape"] == pytest.approx(mape)
    for t in (0.10, 0.20):
        flips = np.mean([[(boot[b, i] >= t) != (p[i] >= t) for i in range(50)] for b in range(30)])
        assert m[f"instability_class_{t * 100:g}pct"] == pytest.approx(flips)
    group = lambda v: 0 if v < 0.10 else (1 if v < 0.20 else 2)  # noqa: E731
    changed = np.mean([[group(boot[b, i]) != group(p[i]) for i in range(50)] for b in range(30)])
    assert m["instability_group"] == pytest.approx(changed)


def test_restricted_cubic_spline_is_harrells():
    x = np.linspace(-3, 2, 101)
    knots = np.array([-2.0, 0.0, 1.5])
    basis = rcs_basis(x, knots)
    # rms::rcspline.eval(norm=2): (x-t1)+^3 - (x-t2)+^3 (t3-t1)/(t3-t2) + (x-t3)+^3 (t2-t1)/(t3-t2)
    p = lambda v: np.maximum(v, 0) ** 3  # noqa: E731
    expected = (p(x + 2) - p(x) * 3.5 / 1.5 + p(x - 1.5) * 2.0 / 1.5) / 3.5**2
    np.testing.assert_allclose(basis[:, 1], expected, atol=1e-12)
    # linear beyond the outer knots
    right = x > 1.5
    assert np.allclose(np.diff(basis[right, 1], 2), 0, atol=1e-12)


def _competing_cohort(n: int, seed: int):
    """Two exponential cause-specific hazards with a covariate; the true CIF by 1 year is
    known in closed form: CIF1(h) = l1 / (l1 + l2) (1 - exp(-(l1 + l2) h))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    l1, l2 = 0.0005 * np.exp(0.8 * x), 0.0002 * np.ones(n)
    t1, t2, c = rng.exponential(1 / l1), rng.exponential(1 / l2), rng.uniform(200, 900, n)
    time = np.minimum.reduce([t1, t2, c])
    event = np.where(time == t1, 1, np.where(time == t2, 2, 0))
    cif = l1 / (l1 + l2) * (1 - np.exp(-(l1 + l2) * 365.0))
    return make_outcome(event, time), cif


def test_smoothed_calibration_finds_good_and_bad_calibration():
    y, true_cif = _competing_cohort(3000, 4)
    good = smoothed_calibration(y, true_cif, 365.0, "cif")
    assert good.ici < 0.02 and good.e90 < 0.04  # estimation noise only (0.003 at n = 20000)
    halved = smoothed_calibration(y, true_cif / 2, 365.0, "cif")
    # the curve recovers the truth: observed ~ 2 x predicted
    assert halved.ici == pytest.approx(np.mean(true_cif / 2), rel=0.15)
    assert halved.ici > 5 * good.ici
    assert np.median(halved.observed / (true_cif / 2)) == pytest.approx(2.0, rel=0.1)


def test_net_smoother_is_coxs_model_on_the_spline():
    """Without competing events comprisk's subdistribution fit is Cox's partial likelihood:
    the smoothed risks equal lifelines' Cox model on the same spline columns (continuous
    times, no ties, so Breslow = Efron)."""
    y, true_cif = _competing_cohort(800, 7)
    y["event"] = np.where(y["event"] == 2, 0, y["event"])
    risk = np.clip(true_cif * np.exp(np.random.default_rng(2).normal(0, 0.3, len(y))), 0, 0.9)
    ours = smoothed_calibration(y, risk, 365.0, "net")
    x = np.log(-np.log1p(-risk))
    basis = rcs_basis(x, np.quantile(x, [0.1, 0.5, 0.9]))
    df = pd.DataFrame(basis, columns=["a", "b"]).assign(t=y["time"], e=y["event"] == 1)
    cph = CoxPHFitter().fit(df, "t", "e")
    lifelines_risk = 1 - cph.predict_survival_function(df[["a", "b"]], times=[365.0]).to_numpy()[0]
    np.testing.assert_allclose(ours.observed, lifelines_risk, atol=1e-5)
