"""Riley et al.'s minimum sample size against pmsampsize's published examples, and the
random-effects meta-analysis of sites against statsmodels, metafor's published values and an
independent maximisation of the restricted likelihood."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.stats.meta_analysis as smm
from scipy.optimize import minimize_scalar

from refracture.models import make_outcome
from refracture.report.riley import binary_criteria, expected_shrinkage, survival_criteria
from refracture.report.sample_size import riley_metrics, riley_table, riley_warnings
from refracture.report.site_meta import plot_site_forest, site_meta, site_meta_metrics
from refracture.validation.meta_analysis import log_oe_se, random_effects, tau2_pm, tau2_reml
from survival_cohort import dataset

# --- Riley et al.: pmsampsize 1.1.3's own test cases (tests/testthat/test_bin.R, test_surv.R) ---


@pytest.mark.parametrize(
    ("r2", "p", "prevalence", "n", "epp"),
    [
        (0.288, 24, 0.174, (623, 662, 221), 4.8),  # the package's worked example
        (0.55, 24, 0.174, (255, 532, 221), 3.86),
        (0.288, 36, 0.174, (934, 992, 221), 4.79),
        (0.288, 24, 0.25, (623, 590, 289), 6.49),
    ],
)
def test_binary_criteria_equal_pmsampsize(r2, p, prevalence, n, epp):
    c = binary_criteria(r2, p, prevalence)
    assert c.n == n and c.final_n == max(n)
    assert round(c.epp, 2) == epp


@pytest.mark.parametrize(
    ("r2", "p", "rate", "timepoint", "meanfup", "n12", "epp"),
    [
        (0.051, 25, 0.065, 2, 2.07, (4286, 866), 23.07),
        (0.065, 25, 0.065, 2, 2.07, (3335, 859), 17.95),
        (0.051, 50, 0.065, 2, 2.07, (8572, 1731), 23.07),
        (0.051, 25, 0.1, 2, 2.07, (4286, 731), 35.49),
        (0.051, 25, 0.065, 2, 4, (4286, 679), 44.57),
        (0.06, 40, 0.08, 3, 5, (5798, 969), 57.98),
        (0.03, 10, 0.09, 3, 3, (2950, 272), 79.65),
        (0.3, 80, 0.03, 1, 5, (1974, 2272), 4.26),
    ],
)
def test_survival_criteria_equal_pmsampsize(r2, p, rate, timepoint, meanfup, n12, epp):
    c = survival_criteria(r2, p, rate, timepoint, meanfup)
    assert c.n[:2] == n12 and c.n[2] == c.final_n == max(n12)
    assert round(c.epp, 2) == epp


def test_survival_worked_example_and_expected_shrinkage():
    """pmsampsize's survival example (30 parameters): 5143 patients; at the criterion-1 size
    the expected shrinkage is the 0.9 target, below it less."""
    c = survival_criteria(0.051, 30, 0.065, 2, 2.07)
    assert c.final_n == 5143
    assert round(c.extra["risk"], 3) == 0.122
    assert expected_shrinkage(0.051, 30, 5143) == pytest.approx(0.9, abs=1e-4)
    assert expected_shrinkage(0.051, 30, 2000) < 0.8


def test_sample_size_of_the_synthetic_cohort_is_reported_and_warned():
    ds = dataset(560, 0)
    table = riley_table(ds, np.arange(len(ds)), ["clinical", "clinical+imaging"])
    assert list(table["outcome"]) == ["survival", "binary"] * 2
    img = table[table["feature_set"] == "clinical+imaging"].iloc[0]
    assert img["parameters"] == ds.n_parameters("clinical+imaging") == 18
    # the anticipated R2 is the clinical model's, shrunk: one value for both feature sets
    assert table.groupby("outcome")["r2_cs"].nunique().eq(1).all()
    again = survival_criteria(img["r2_cs"], 18, 101 / ds.y["time"].sum(), 365, ds.y["time"].mean())
    assert img["required_n"] == again.final_n
    assert img["available_n"] == 560 and not img["met"] and img["expected_shrinkage"] < 0.9
    warnings = riley_warnings(table, 365)
    assert any("clinical+imaging" in w and "expected shrinkage" in w for w in warnings)
    metrics = riley_metrics(table, "clinical+imaging")
    assert metrics["samplesize_survival_required_n"] == img["required_n"]
    assert metrics["samplesize_parameters"] == 18


# --- random-effects meta-analysis --------------------------------------------------------------

# BCG vaccine trials (Colditz et al. 1994; metafor's dat.bcg): log risk ratios
_BCG = np.array(
    [[4, 119, 11, 128], [6, 300, 29, 274], [3, 228, 11, 209], [62, 13536, 248, 12619],
     [33, 5036, 47, 5761], [180, 1361, 372, 1079], [8, 2537, 10, 619],
     [505, 87886, 499, 87892], [29, 7470, 45, 7232], [17, 1699, 65, 1600],
     [186, 50448, 141, 27197], [5, 2493, 3, 2338], [27, 16886, 29, 17825]],
    dtype=float,
)  # fmt: skip
# Teacher expectancy studies (Raudenbush 1984; metafor's dat.raudenbush1985): d and its SE
_RAUD_Y = [0.03, 0.12, -0.14, 1.18, 0.26, -0.06, -0.02, -0.32, 0.27, 0.80, 0.54, 0.18, -0.02,
           0.23, -0.18, -0.06, 0.30, 0.07, -0.07]  # fmt: skip
_RAUD_SE = [0.125, 0.147, 0.167, 0.373, 0.369, 0.103, 0.103, 0.220, 0.164, 0.251, 0.302, 0.223,
            0.289, 0.290, 0.159, 0.167, 0.139, 0.094, 0.174]  # fmt: skip


def _bcg():
    a, b, c, d = _BCG.T
    return np.log(a / (a + b) / (c / (c + d))), 1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)


def test_reml_equals_metafor_published_values():
    y, v = _bcg()
    r = random_effects(y, v)
    # metafor tests: tau2 0.313243325980895 (to its convergence threshold), QE 152.233008082373,
    # estimate -0.714532
    assert r.tau2 == pytest.approx(0.313243325980895, abs=1e-6)
    assert r.q == pytest.approx(152.233008082373, abs=1e-9)
    assert r.estimate == pytest.approx(-0.714532, abs=1e-6)
    # Raudenbush (2009) Table 16.3 as metafor reproduces it, with test = "knha"
    k = random_effects(np.array(_RAUD_Y), np.array(_RAUD_SE) ** 2)
    assert (round(k.tau2, 4), round(k.estimate, 4), round(k.se, 4)) == (0.0188, 0.0837, 0.0616)
    assert (round(k.lo, 4), round(k.hi, 4)) == (-0.0457, 0.2131)
    dl = random_effects(np.array(_RAUD_Y), np.array(_RAUD_SE) ** 2, method="dl")
    assert (round(dl.tau2, 4), round(dl.se, 4), round(dl.lo, 4)) == (0.0259, 0.0636, -0.0443)


def test_reml_maximises_the_restricted_likelihood():
    y, v = _bcg()

    def neg_restricted(tau2):
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        return 0.5 * (np.sum(np.log(v + tau2)) + np.log(np.sum(w)) + np.sum(w * (y - mu) ** 2))

    ref = minimize_scalar(neg_restricted, bounds=(0, 5), method="bounded", options={"xatol": 1e-12})
    assert tau2_reml(y, v) == pytest.approx(ref.x, abs=1e-7)
    assert tau2_reml(np.array([0.1, 0.1, 0.1]), np.array([0.01, 0.02, 0.03])) == 0.0


@pytest.mark.parametrize("method", ["dl", "pm"])
def test_dl_and_pm_equal_statsmodels_combine_effects(method):
    y, v = _bcg()
    ref = smm.combine_effects(y, v, method_re=method, use_t=True)
    frame = ref.summary_frame()
    r = random_effects(y, v, method=method)
    assert r.tau2 == pytest.approx(ref.tau2, rel=1e-9)
    wls = frame.loc["random effect wls"]  # statsmodels' HKSJ scale
    assert r.estimate == pytest.approx(wls["eff"], abs=1e-10)
    assert r.se == pytest.approx(wls["sd_eff"], abs=1e-10)
    assert (r.lo, r.hi) == pytest.approx((wls["ci_low"], wls["ci_upp"]), abs=1e-10)
    if method == "pm":
        assert tau2_pm(y, v) == pytest.approx(ref.tau2, rel=1e-9)
    # prediction interval: t with k - 2 df around the estimate, tau2 + SE^2
    from scipy import stats

    half = stats.t.ppf(0.975, len(y) - 2) * np.sqrt(r.tau2 + r.se**2)
    assert (r.pi_lo, r.pi_hi) == pytest.approx((r.estimate - half, r.estimate + half))


def test_sites_meta_analysed_with_forest_plot(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for i, (c, oe) in enumerate([(0.78, 0.9), (0.70, 1.3), (0.83, 1.0), (0.74, 0.8)]):
        n = 150
        t = rng.uniform(30, 700, n)
        e = rng.choice([0, 1, 2], n, p=[0.7, 0.2, 0.1])
        se_oe = log_oe_se(make_outcome(e, t), 365.0, "cif")
        assert 0 < se_oe < 1
        rows.append({"site": f"S{i}", "n": n, "cindex_harrell": c, "oe_ratio_365d": oe,
                     "cindex_harrell_logit_se": 0.15, "oe_ratio_365d_log_se": se_oe})  # fmt: skip
    ps = pd.DataFrame(rows)
    meta = site_meta(ps, 365.0)
    assert set(meta) == {"cindex_harrell", "oe_ratio_365d"}
    r, scale = meta["cindex_harrell"]
    assert scale == "logit" and r.k == 4
    ref = random_effects(
        np.log(ps["cindex_harrell"] / (1 - ps["cindex_harrell"])), np.full(4, 0.0225)
    )
    assert r.estimate == pytest.approx(ref.estimate)
    m = site_meta_metrics(meta)
    assert m["site_meta_cindex_harrell_pi_lo"] < m["site_meta_cindex_harrell_lo"]
    assert m["site_meta_cindex_harrell_lo"] < m["site_meta_cindex_harrell"] < 0.83
    assert m["site_meta_oe_ratio_365d"] == pytest.approx(np.exp(meta["oe_ratio_365d"][0].estimate))
    assert m["site_meta_sites"] == 4
    path = plot_site_forest(ps, meta, tmp_path / "forest.png")
    assert path is not None and path.stat().st_size > 5000
    assert site_meta(ps.iloc[:1], 365.0) == {}
