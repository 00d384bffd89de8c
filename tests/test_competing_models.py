"""Competing-risk models: cumulative incidence with death competing (estimand cif).

Each combination rule and each library fit is checked against an independent computation
written out here: a hand product-limit on a small table with ties, lifelines' Aalen-Johansen
estimator, and a weighted Cox fit of the expanded Fine-Gray data by Newton's method.
"""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from lifelines import AalenJohansenFitter, CoxPHFitter, KaplanMeierFitter
from scipy.optimize import minimize_scalar
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_score
from sksurv.metrics import concordance_index_censored
from statsmodels.duration.hazard_regression import PHReg

from refracture.errors import ModelError
from refracture.models import (
    MODELS,
    CoxNet,
    CoxPH,
    FineGray,
    RandomSurvivalForest,
    cause_specific_cif,
    coefficients_table,
    make_outcome,
    make_pipeline,
    ph_test,
    resolve_estimand,
)
from refracture.models.ipcw import step_at
from survival_cohort import cohort, config, dataset

H = 365.0
CIF_MODELS = [name for name, cls in MODELS.items() if "cif" in cls.estimands]


@pytest.fixture(scope="module")
def small():
    return dataset(240, 11)


def _pipe(name, ds, estimand="cif", feature_set="clinical+imaging", **kw):
    cols = ds.feature_names(feature_set)
    imaging = [c for c in cols if c in ds.imaging_features]
    pipe = make_pipeline(
        name,
        config().covariates,
        imaging,
        horizon=H,
        random_state=0,
        categories=ds.categories,
        estimand=estimand,
        **kw,
    )
    return pipe.fit(ds.X[cols], ds.y), cols


def _competing_data(n: int, seed: int, ties: bool = False):
    """Two covariates, exponential cause-specific hazards, uniform censoring."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.binomial(1, 0.4, n).astype(float)})
    lp1 = 0.5 * X["a"] - 0.4 * X["b"]
    lp2 = -0.3 * X["a"] + 0.6 * X["b"]
    t1 = rng.exponential(400 * np.exp(-lp1))
    t2 = rng.exponential(800 * np.exp(-lp2))
    c = rng.uniform(50, 900, n)
    if ties:
        t1, t2, c = np.ceil(t1 / 20) * 20, np.ceil(t2 / 20) * 20, np.ceil(c / 20) * 20
    t = np.minimum.reduce([t1, t2, c])
    e = np.select([t == t1, t == t2], [1, 2], 0)
    return X, make_outcome(e, t)


# --- cause-specific Cox: the combination rule -------------------------------------------------

# Eighteen patients, one covariate; ties within and between causes and with censoring (days
# 30, 60, 90, 150); six followed event-free to 300-400 days.
TINY = pd.DataFrame(
    {
        "x": [0.0, 1.0, 0.5, 2.0, 1.5, 0.0, 1.0, 2.5, 0.3, 1.8, 0.7, 1.2]
        + [0.2, 1.1, 0.9, 1.6, 0.4, 2.1],
        "time": [30, 30, 30, 60, 60, 90, 90, 120, 150, 150, 150, 250]
        + [300, 320, 340, 360, 380, 400],
        "event": [1, 2, 0, 1, 1, 2, 1, 0, 2, 1, 0, 1] + [0] * 6,
    }
)


def _hand_csc(x_new: float, at: list[float]) -> np.ndarray:
    """The cause-specific CIF by hand: Breslow hazards, product-limit event-free survival.

    The re-fracture coefficient comes from lifelines' Cox fit (deaths censored). The death
    model is Firth's penalised Cox model shrunk by van Houwelingen's (LR - df) / LR
    (refracture.models.death): its coefficient maximises the Breslow log partial likelihood
    plus half the log information, found here by a scalar search. Everything after them is
    written out: H0_k(s) jumps by d_k(s) / sum_{T_i >= s} exp(b_k (x_i - mean)),
    S(s-) = prod_{u<s} (1 - dH1(u) - dH2(u)) and CIF_k(t) = sum_{s<=t} S(s-) dH_k(s).
    """
    x, t, e = TINY["x"].to_numpy(), TINY["time"].to_numpy(float), TINY["event"].to_numpy()
    df = pd.DataFrame({"x": x, "T": t, "E": (e == 1).astype(int)})
    betas = [float(CoxPHFitter().fit(df, "T", "E").params_["x"])]
    xc = x - x.mean()

    def breslow_pl(b: float) -> tuple[float, float]:  # log partial likelihood, information
        ll, info = 0.0, 0.0
        for s in np.unique(t[e == 2]):
            risk = t >= s
            w = np.exp(b * xc[risk])
            m1, m2 = np.sum(w * xc[risk]) / w.sum(), np.sum(w * xc[risk] ** 2) / w.sum()
            d = np.sum((t == s) & (e == 2))
            ll += b * np.sum(xc[(t == s) & (e == 2)]) - d * np.log(w.sum())
            info += d * (m2 - m1**2)
        return ll, info

    firth = minimize_scalar(
        lambda b: -(breslow_pl(b)[0] + 0.5 * np.log(breslow_pl(b)[1])), tol=1e-13
    )
    lr = 2 * (breslow_pl(firth.x)[0] - breslow_pl(0.0)[0])
    betas.append(max(0.0, (lr - 1) / lr) * firth.x)
    mean = x.mean()
    surv, cif = 1.0, np.zeros(2)
    out = []
    times = np.unique(t)
    for horizon in at:
        surv, cif = 1.0, np.zeros(2)
        for s in times[times <= horizon]:
            at_risk = t >= s
            dh = np.zeros(2)
            for k, b in enumerate(betas):
                d = np.sum((t == s) & (e == k + 1))
                dh[k] = d / np.sum(np.exp(b * (x[at_risk] - mean))) * np.exp(b * (x_new - mean))
            cif += surv * dh
            surv *= 1 - dh.sum()
        out.append(cif.copy())
    return np.array(out).T  # (2 causes, len(at))


def test_cause_specific_cox_cif_equals_hand_computation_with_ties():
    X, y = TINY[["x"]], make_outcome(TINY["event"], TINY["time"])
    model = CoxPH(horizon=100.0, estimand="cif").fit(X, y)
    at = [20.0, 30.0, 59.0, 60.0, 90.0, 100.0, 150.0, 300.0]
    assert np.all(model.predict_cif(TINY[["x"]], at).sum(axis=1) < 1)  # no jump above 1
    new = pd.DataFrame({"x": [0.0, 1.0, 2.2]})
    got = model.predict_cif(new, at)
    assert got.shape == (3, 2, len(at))
    for i, xv in enumerate(new["x"]):
        # the hand's scalar search finds the Firth coefficient to about 1e-8
        np.testing.assert_allclose(got[i], _hand_csc(xv, at), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(model.predict_risk(new), got[:, 0, 5], rtol=1e-12)
    np.testing.assert_allclose(model.predict_death_risk(new), got[:, 1, 5], rtol=1e-12)
    np.testing.assert_allclose(1 - model.predict_survival(new, at), got[:, 0], rtol=1e-12)
    # the re-fracture model is the same under both estimands; only the risk differs
    net = CoxPH(horizon=100.0).fit(X, y)
    np.testing.assert_allclose(model.coef_, net.coef_)
    np.testing.assert_allclose(model.linear_predictor(new), net.linear_predictor(new))
    assert not np.allclose(model.predict_risk(new), net.predict_risk(new))
    # risk_from_lp needs the death linear predictor under cif
    lp, lp2 = model.linear_predictor(new), model.death_linear_predictor(new)
    np.testing.assert_allclose(model.risk_from_lp(lp, lp2), got[:, 0, 5], rtol=1e-12)
    with pytest.raises(ModelError, match="lp_death"):
        model.risk_from_lp(lp)


def test_product_limit_with_nelson_aalen_hazards_is_aalen_johansen():
    """No covariates: the combination rule must reduce to the Aalen-Johansen estimator."""
    _, y = _competing_data(200, 5)
    t, e = y["time"], y["event"]
    jumps = np.unique(t[e > 0])
    at_risk = np.array([np.sum(t >= s) for s in jumps])
    dh1 = np.array([np.sum((t == s) & (e == 1)) for s in jumps]) / at_risk
    dh2 = np.array([np.sum((t == s) & (e == 2)) for s in jumps]) / at_risk
    grid = np.array([10.0, 100.0, 250.0, 365.0, 600.0])
    got = cause_specific_cif(jumps, dh1, dh2, np.ones(1), np.ones(1), grid)[0]
    for k in (1, 2):
        aj = AalenJohansenFitter(calculate_variance=False).fit(t, e, event_of_interest=k)
        ref = aj.cumulative_density_.iloc[:, 0]
        expected = step_at(ref.index.to_numpy(float), ref.to_numpy(float), grid, 0.0)
        np.testing.assert_allclose(got[k - 1], expected, atol=1e-12)


def test_extreme_hazards_stay_probabilities():
    """A jump of r1 dH1 + r2 dH2 > 1 empties the event-free state, split by the hazards."""
    cif = cause_specific_cif(
        np.array([1.0, 2.0]), np.array([0.5, 0.5]), np.array([0.1, 0.1]),
        np.array([1.0, 3.0]), np.array([1.0, 3.0]), np.array([1.0, 2.0]),
    )  # fmt: skip
    np.testing.assert_allclose(cif[0, :, 0], [0.5, 0.1])
    np.testing.assert_allclose(cif[0, :, 1], [0.5 + 0.4 * 0.5, 0.1 + 0.4 * 0.1])
    np.testing.assert_allclose(cif[1, :, 0], [1.5 / 1.8, 0.3 / 1.8])  # 1.8 > 1: all leave
    np.testing.assert_allclose(cif[1].sum(axis=0), [1.0, 1.0])


# --- Fine-Gray: comprisk against a weighted Cox fit of the expanded data ------------------------


def _expanded_fine_gray(X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Geskus (2011) counting-process data: a patient who died stays in the risk set after
    death, on intervals ending at later re-fracture times, weighted G(s-) / G(T-), with G the
    Kaplan-Meier censoring survival (continuous times: no ties, so left limits are values
    just before)."""
    t, e = y["time"], y["event"]
    km = KaplanMeierFitter().fit(t, (e == 0).astype(int))

    def g_left(s):
        return km.survival_function_at_times(np.asarray(s, dtype=float) - 1e-9).to_numpy()

    refractures = np.unique(t[e == 1])
    rows = []
    for i in range(len(y)):
        base = {**X.iloc[i].to_dict(), "id": i}
        rows.append({**base, "start": 0.0, "stop": t[i], "event": int(e[i] == 1), "w": 1.0})
        if e[i] == 2:
            later = refractures[refractures > t[i]]
            starts = np.r_[t[i], later[:-1]]
            weights = g_left(later) / g_left([t[i]])[0]
            rows += [
                {**base, "start": a, "stop": b, "event": 0, "w": w}
                for a, b, w in zip(starts, later, weights, strict=True)
            ]
    return pd.DataFrame(rows)


def _weighted_breslow_cox(df: pd.DataFrame, cols: list[str]):
    """Newton's method on the weighted Breslow partial likelihood of counting-process data.

    Returns coefficients, the cluster-robust (by patient) covariance and the Breslow baseline.
    """
    Z = df[cols].to_numpy(float)
    w, start, stop = df["w"].to_numpy(), df["start"].to_numpy(), df["stop"].to_numpy()
    ev, ids = df["event"].to_numpy(), df["id"].to_numpy()
    times = np.unique(stop[ev == 1])
    beta = np.zeros(len(cols))

    def pieces(beta):
        r = w * np.exp(Z @ beta)
        score, info, dlam = np.zeros(len(cols)), np.zeros((len(cols), len(cols))), []
        resid = np.zeros((ids.max() + 1, len(cols)))
        for s in times:
            risk = (start < s) & (stop >= s)
            s0 = r[risk].sum()
            zbar = (r[risk, None] * Z[risk]).sum(axis=0) / s0
            zc = Z[risk] - zbar
            d = (stop == s) & (ev == 1)
            nd = w[d].sum()
            score += (w[d, None] * (Z[d] - zbar)).sum(axis=0)
            info += nd * (r[risk, None] * zc).T @ zc / s0
            dlam.append(nd / s0)
            np.add.at(resid, ids[d], w[d, None] * (Z[d] - zbar))
            np.add.at(resid, ids[risk], -(r[risk] * nd / s0)[:, None] * zc)
        return score, info, np.array(dlam), resid

    for _ in range(50):
        score, info, _, _ = pieces(beta)
        step = np.linalg.solve(info, score)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-12:
            break
    _, info, dlam, resid = pieces(beta)
    inv = np.linalg.inv(info)
    return beta, inv @ resid.T @ resid @ inv, times, np.cumsum(dlam)


@pytest.mark.filterwarnings("ignore:It appears your weights are not integers")
def test_fine_gray_equals_weighted_cox_on_expanded_data():
    X, y = _competing_data(160, 3)
    fg = FineGray(horizon=H).fit(X, y)
    df = _expanded_fine_gray(X - X.mean(), y)
    beta, cov, times, cumhaz = _weighted_breslow_cox(df, ["a", "b"])
    np.testing.assert_allclose(fg.coef_, beta, atol=1e-7)
    np.testing.assert_allclose(fg.se_, np.sqrt(np.diag(cov)), rtol=1e-6)  # crr's robust SE
    got = step_at(fg.baseline_times_, fg.baseline_cumhaz_, times, 0.0)
    np.testing.assert_allclose(got, cumhaz, rtol=1e-6)
    # lifelines' weighted Cox of the same expanded data agrees on the coefficients
    ref = CoxPHFitter().fit(
        df.drop(columns="id"), "stop", "event", entry_col="start", weights_col="w"
    )
    np.testing.assert_allclose(fg.coef_, ref.params_[["a", "b"]].to_numpy(), atol=1e-5)
    # CIF(t | x) = 1 - exp(-Lambda0(t) exp(lp)), coefficients as subdistribution HRs
    lp = fg.linear_predictor(X)
    h0 = step_at(times, cumhaz, np.array([H]), 0.0)[0]
    np.testing.assert_allclose(fg.predict_risk(X), 1 - np.exp(-h0 * np.exp(lp)), rtol=1e-6)
    pipe, _ = _pipe("finegray", dataset(240, 11), feature_set="clinical")
    table = coefficients_table(pipe)
    assert list(table.columns) == ["term", "coef", "shr", "lower95", "upper95", "p"]
    assert pipe.model.ratio_name == "subdistribution hazard"


# --- every cif model --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CIF_MODELS)
def test_cif_curves_are_monotone_bounded_and_coherent(name, small):
    pipe, cols = _pipe(name, small)
    X = small.X[cols]
    risk, death = pipe.predict_risk(X), pipe.predict_death_risk(X)
    assert pipe.estimand == "cif"
    assert np.all((risk > 0) & (risk < 1)) and np.all((death >= 0) & (death < 1))
    assert np.all(risk + death <= 1 + 1e-12)
    if not pipe.supports_survival:  # logistic: the horizon only
        np.testing.assert_allclose(pipe.predict_cif(X, [H])[:, :, 0], np.c_[risk, death])
        with pytest.raises(ModelError, match="horizon only"):
            pipe.predict_cif(X, [30.0, H])
        return
    grid = np.array([1.0, 30.0, 90.0, 180.0, H, 600.0])
    cif = pipe.predict_cif(X, grid)
    assert cif.shape == (len(X), 2, len(grid))
    assert np.all((cif >= 0) & (cif <= 1))
    assert np.all(np.diff(cif, axis=2) >= -1e-12)  # cumulative incidences never decrease
    assert np.all(cif.sum(axis=1) <= 1 + 1e-12)
    np.testing.assert_allclose(cif[:, 0, 4], risk, rtol=1e-10)
    np.testing.assert_allclose(cif[:, 1, 4], death, rtol=1e-10)
    np.testing.assert_allclose(1 - pipe.predict_survival(X, grid), cif[:, 0], atol=1e-12)
    lp = pipe.linear_predictor(X)
    if pipe.model.cif_from_lp:
        np.testing.assert_allclose(pipe.risk_from_lp(lp), risk, rtol=1e-10)
    else:
        lp2 = pipe.death_linear_predictor(X)
        np.testing.assert_allclose(pipe.risk_from_lp(lp, lp2), risk, rtol=1e-10)


def test_cif_cox_keeps_the_refracture_model_tables(small):
    """Coefficients and the PH test of the cif cox model are those of its re-fracture model."""
    cols = small.feature_names("clinical")
    cif, _ = _pipe("cox", small, feature_set="clinical")
    net, _ = _pipe("cox", small, estimand="net", feature_set="clinical")
    pd.testing.assert_frame_equal(coefficients_table(cif), coefficients_table(net))
    pd.testing.assert_frame_equal(
        ph_test(cif, small.X[cols], small.y), ph_test(net, small.X[cols], small.y)
    )
    assert cif.model.death_model_.coef_.shape == cif.model.coef_.shape
    assert 0 <= cif.model.death_model_.shrinkage_ <= 1


def _without_deaths(ds):
    y = ds.y.copy()
    y["event"][y["event"] == 2] = 0
    return y


@pytest.mark.parametrize("name", ["cox", "coxnet", "gbsa", "logistic"])
def test_without_deaths_cif_equals_net(name, small):
    cols = small.feature_names("clinical+imaging")
    X, y = small.X[cols], _without_deaths(small)
    cif, _ = _pipe(name, small)
    cif.fit(X, y)
    net = clone(cif).set_params(model__estimand="net").fit(X, y)
    r_cif, r_net = cif.predict_risk(X), net.predict_risk(X)
    np.testing.assert_array_equal(cif.predict_death_risk(X), 0.0)
    if name == "logistic":
        np.testing.assert_allclose(r_cif, r_net, rtol=1e-12)
        return
    m = cif.model
    np.testing.assert_allclose(
        m.linear_predictor(cif.transform_features(X)), net.linear_predictor(X)
    )
    # product-limit 1 - prod(1 - r dH) against 1 - exp(-r H): equal up to sum (r dH)^2 / 2
    r = np.exp(net.linear_predictor(X))
    dh = m.cif_dh1_[m.cif_times_ <= H]
    bound = 0.5 * r**2 * np.sum(dh**2)
    assert np.all(np.abs(r_cif - r_net) <= bound + 1e-12)
    assert np.median(np.abs(r_cif - r_net)) < 1e-3


def test_without_deaths_fine_gray_is_the_cox_model(small):
    cols = small.feature_names("clinical")
    X, y = small.X[cols], _without_deaths(small)
    fg, _ = _pipe("finegray", small, feature_set="clinical")
    fg.fit(X, y)
    design = fg.transform_features(X).to_numpy(float)
    # times in whole days tie: the Fine-Gray fit handles ties as Breslow does (statsmodels)
    breslow = PHReg(y["time"], design, status=(y["event"] == 1), ties="breslow").fit()
    np.testing.assert_allclose(fg.model.coef_, breslow.params, atol=1e-6)
    # and the net Cox model (lifelines, Efron ties) gives nearly the same risks
    cox, _ = _pipe("cox", small, estimand="net", feature_set="clinical")
    cox.fit(X, y)
    np.testing.assert_allclose(fg.predict_risk(X), cox.predict_risk(X), rtol=0.02, atol=1e-3)
    np.testing.assert_array_equal(fg.predict_death_risk(X), 0.0)


def test_without_deaths_the_competing_forest_is_close_to_the_net_forest(small):
    """Two forest implementations: not equal, but close where they estimate the same risk."""
    cols = small.feature_names("clinical+imaging")
    X, y = small.X[cols], _without_deaths(small)
    cif, _ = _pipe("rsf", small)
    cif.fit(X, y)
    net = clone(cif).set_params(model__estimand="net").fit(X, y)
    r_cif, r_net = cif.predict_risk(X), net.predict_risk(X)
    assert abs(r_cif.mean() - r_net.mean()) < 0.01
    assert np.corrcoef(r_cif, r_net)[0, 1] > 0.9


def test_competing_forest_without_splits_is_aalen_johansen():
    """Trees that cannot split, on all patients: the forest is the Aalen-Johansen estimate,
    including patients censored before the first event (left out of comprisk's fit)."""
    X, y = _competing_data(150, 8, ties=True)
    y["time"][:6], y["event"][:6] = [3.0, 5.0, 7.0, 9.0, 11.0, 13.0], 0  # before any event
    assert y["time"][y["event"] > 0].min() > 13.0
    const = pd.DataFrame({"c": np.ones(len(y))})
    forest = RandomSurvivalForest(
        estimand="cif", n_estimators=3, bootstrap=False, max_features=None
    ).fit(const, y)
    grid = np.array([20.0, 100.0, 260.0, H, 700.0])
    got = forest.predict_cif(const.iloc[:1], grid)[0]
    t, e = y["time"], y["event"]
    for j, horizon in enumerate(grid):
        surv, cif = 1.0, np.zeros(2)
        for s in np.unique(t[(e > 0) & (t <= horizon)]):
            n_risk = np.sum(t >= s)
            d = np.array([np.sum((t == s) & (e == k)) for k in (1, 2)])
            cif += surv * d / n_risk
            surv *= 1 - d.sum() / n_risk
        np.testing.assert_allclose(got[:, j], cif, atol=1e-12)


# --- estimands, sklearn protocol --------------------------------------------------------------


def test_unsupported_estimands_are_refused_in_one_line(small):
    with pytest.raises(ModelError, match="finegray cannot model the net risk") as info:
        make_pipeline("finegray", config().covariates, horizon=H, random_state=0, estimand="net")
    assert "estimand: cif" in str(info.value) and "cox" in str(info.value)
    assert "\n" not in str(info.value)
    cols = small.feature_names("clinical")
    with pytest.raises(ModelError, match="finegray cannot model"):
        FineGray(estimand="net").fit(small.X[cols].select_dtypes("number"), small.y)
    with pytest.raises(ModelError, match="estimand must be one of"):
        CoxPH(estimand="crude").fit(small.X[cols].select_dtypes("number"), small.y)
    net, _ = _pipe("cox", small, estimand="net", feature_set="clinical")
    with pytest.raises(ModelError, match="fitted for estimand net"):
        net.predict_death_risk(small.X[cols])
    assert resolve_estimand(None, small.y) == "cif"
    assert resolve_estimand(None, _without_deaths(small)) == "net"
    assert resolve_estimand("net", small.y) == "net"


@pytest.mark.parametrize("name", CIF_MODELS)
def test_cif_models_clone_and_round_trip(name, small, tmp_path):
    pipe, cols = _pipe(name, small)
    X = small.X[cols]
    params = clone(pipe).get_params()
    assert params["model__estimand"] == "cif" and params["model__horizon"] == H
    risk, death = pipe.predict_risk(X), pipe.predict_death_risk(X)
    joblib.dump(pipe, tmp_path / "m.joblib")
    again = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(again.predict_risk(X), risk)
    np.testing.assert_array_equal(again.predict_death_risk(X), death)
    # same seed, same data: same model
    np.testing.assert_array_equal(clone(pipe).fit(X, small.y).predict_risk(X), risk)


def test_score_is_harrell_c_and_works_with_cross_val_score(small):
    pipe, cols = _pipe("cox", small, feature_set="clinical")
    X, y = small.X[cols], small.y
    lp = pipe.linear_predictor(X)
    expected = concordance_index_censored(y["event"] == 1, y["time"], lp)[0]
    assert pipe.score(X, y) == pytest.approx(expected, abs=1e-15)
    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(clone(pipe), X, y, cv=folds)
    assert scores.shape == (3,) and np.all((scores > 0.5) & (scores < 0.9))
    # the same as fitting and scoring each fold by hand
    tr, te = next(folds.split(X))
    by_hand = clone(pipe).fit(X.iloc[tr], y[tr]).score(X.iloc[te], y[te])
    assert scores[0] == pytest.approx(by_hand)


# --- inner cross-validation grouped by patient (bootstrap replicates) ---------------------------


def test_grouped_inner_folds_keep_a_patients_copies_together(small):
    cols = small.feature_names("clinical")
    pipe, _ = _pipe("coxnet", small, estimand="net", feature_set="clinical")
    rng = np.random.default_rng(4)
    idx = rng.integers(0, len(small), len(small))
    Xb, yb = small.X[cols].iloc[idx], small.y[idx]
    model = clone(pipe).fit(Xb, yb, model__groups=idx).model
    assert model.grouped_cv_
    for train, test in model.inner_folds(yb, idx):
        assert not set(idx[train]) & set(idx[test])
    assert not clone(pipe).fit(Xb, yb).model.grouped_cv_
    with pytest.raises(ValueError, match="one label per row"):
        clone(pipe).fit(Xb, yb, model__groups=idx[:10])


def test_grouped_inner_cv_stops_bootstrap_copies_from_choosing_no_penalty():
    """Noise covariates: copies of a patient on both sides of an inner fold inflate the
    inner C and pull the penalty towards none; grouped folds behave like the original data."""
    orig, leak, grouped = [], [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n = 120
        X = pd.DataFrame(rng.normal(size=(n, 20)), columns=[f"x{i}" for i in range(20)])
        t, c = rng.exponential(600, n), rng.uniform(200, 700, n)
        y = make_outcome((t <= c).astype(int), np.minimum(t, c))
        idx = rng.integers(0, n, n)
        net = CoxNet(random_state=seed, n_alphas=12)
        fits = (
            (orig, clone(net).fit(X, y)),
            (leak, clone(net).fit(X.iloc[idx], y[idx])),
            (grouped, clone(net).fit(X.iloc[idx], y[idx], groups=idx)),
        )
        for out, m in fits:
            out.append((m.alpha_ / m.alphas_[0], np.nanmax(m.cv_cindex_)))
    orig, leak, grouped = (np.array(v) for v in (orig, leak, grouped))
    assert leak[:, 1].mean() > orig[:, 1].mean() + 0.05  # memorised copies look predictive
    assert abs(grouped[:, 1].mean() - orig[:, 1].mean()) < 0.03
    assert np.median(grouped[:, 0]) > 1.5 * np.median(leak[:, 0])


# --- truth of the synthetic cohort -------------------------------------------------------------

TRUTH_SEEDS = (0, 1, 2, 3)


def _truth_fit(name, seed, estimand):
    ds = dataset(560, seed)
    truth = cohort(560, seed).truth.set_index("patient_id").loc[ds.X.index]
    pipe, cols = _pipe(name, ds, estimand=estimand)
    return pipe.predict_risk(ds.X[cols]), truth


@pytest.mark.parametrize(("name", "min_corr"), [("cox", 0.85), ("finegray", 0.85),
                                               ("logistic", 0.85), ("rsf", 0.8)])  # fmt: skip
def test_cif_models_recover_the_true_cumulative_incidence(name, min_corr):
    """Mean predicted 1-year risk within 5 % of the mean true CIF over four cohorts, and the
    patients' predictions track their true CIF. One cohort alone differs from its truth by
    outcome noise (sd about 6 % relative for ~85 events), hence the pooling."""
    pred, true = [], []
    for seed in TRUTH_SEEDS:
        risk, truth = _truth_fit(name, seed, "cif")
        pred.append(risk.mean())
        true.append(truth["cif_365d"].mean())
        assert np.corrcoef(risk, truth["cif_365d"])[0, 1] > min_corr
    assert abs(np.mean(pred) / np.mean(true) - 1) < 0.05


def test_net_models_over_predict_the_cif_by_the_net_minus_cif_gap():
    """Net minus cif prediction on the same patients matches the true net minus true CIF."""
    for seed in TRUTH_SEEDS[:2]:
        net, truth = _truth_fit("cox", seed, "net")
        cif, _ = _truth_fit("cox", seed, "cif")
        gap = (net - cif).mean()
        true_gap = (truth["risk_365d"] - truth["cif_365d"]).mean()
        assert gap > 0
        assert gap == pytest.approx(true_gap, rel=0.35)
