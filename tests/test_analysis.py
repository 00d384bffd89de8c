"""The biomarker analysis (issue 16, item 4): every statistic against SciPy, statsmodels or
scikit-learn called directly on the same data, DeLong's AUC variance against a hand-computed
example and a bootstrap, the synthetic generator's PDFF/R2* - T-score relations recovered
within their CIs, and ``refracture analyse --config`` end to end on written images.

The cohort-level tests build features from the simulator's truth (the per-level PDFF/R2* the
images show), as tests/survival_cohort.py does, so 560 patients need no images.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from refracture.analysis import (
    COLUMNS,
    analysis_section,
    covariate_design,
    default_markers,
    delong_auc,
    fit_random_intercept,
    mean_difference,
    partial_pearson,
    pearson,
    point_biserial,
    run_analysis,
    spearman,
)
from refracture.analysis.mixed import OPTIMIZERS
from refracture.analysis.roc import delong_components
from refracture.cli import app
from refracture.errors import InputError
from refracture.levels import L1L4, TL_LEVELS
from refracture.synth import write_cohort
from refracture.synth.cohort import P_FEMALE, Cohort, truth_dict
from survival_cohort import cohort

Z = stats.norm.ppf(0.975)


# --- data ---------------------------------------------------------------------------------


def truth_tables(c: Cohort, r2star_15t: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """features (one row per patient) and vertebrae (long) from the simulator's truth.

    ``r2star_15t`` divides R2* by the site's field factor and scanner scale (the 1.5 T scale
    of the generating model).
    """
    truth = c.truth.set_index("patient_id")
    # each patient's scanner: field strength and scale (a site may change scanner)
    scale = truth["r2star_scanner_factor"]
    feats, vert = [], []
    for pid in c.clinical["patient_id"]:
        lv = c.levels[pid]
        fractured, treated = set(lv["fractured"]), set(lv["treated"])
        t = truth.loc[pid]
        row = {"patient_id": pid, "site": t["site"], "scanner_id": t["scanner"],
               "scanner_field_strength_t": t["field_strength_t"]}  # fmt: skip
        for m in ("pdff", "r2star"):
            div = scale[pid] if (m == "r2star" and r2star_15t) else 1.0
            vals = {x: t[f"{m}_mean_{x}"] / div for x in TL_LEVELS}
            normal = [vals[x] for x in TL_LEVELS if x not in fractured]
            l1l4 = [vals[x] for x in L1L4 if x not in fractured]
            row[f"{m}_mean_normal"] = np.mean(normal) if normal else np.nan
            row[f"{m}_mean_l1l4"] = np.mean(l1l4) if l1l4 else np.nan
            for x in TL_LEVELS:
                vert.append(
                    {
                        "patient_id": pid,
                        "level": x,
                        "map": m,
                        "mean": vals[x],
                        "treated": x in treated,
                        "fractured": x in fractured,
                        "small_roi": False,
                    }
                )
        feats.append(row)
    return pd.DataFrame(feats), pd.DataFrame(vert)


@pytest.fixture(scope="module")
def big() -> tuple[Cohort, pd.DataFrame, pd.DataFrame]:
    c = cohort(560, 0)
    features, vertebrae = truth_tables(c)
    return c, features, vertebrae


@pytest.fixture(scope="module")
def merged(big) -> pd.DataFrame:
    c, features, _ = big
    truth = c.truth.set_index("patient_id")
    clinical = c.clinical.assign(
        scanner_batch=c.clinical["patient_id"].map(truth["site"] + "/" + truth["scanner"])
    )
    return clinical.merge(features.drop(columns="site"), on="patient_id")


@pytest.fixture(scope="module")
def analysed(big, tmp_path_factory: pytest.TempPathFactory):
    """run_analysis on the 560-patient cohort with every output written, adjusted for the
    scanner by default (site 1 changes scanner halfway, so adjusting for the site would
    leave a 1.5 T / 3 T mix inside it)."""
    c, features, vertebrae = big
    out = tmp_path_factory.mktemp("analysis")
    return run_analysis(c.clinical, features, vertebrae, out_dir=out), out


def row(a: pd.DataFrame, marker: str, versus: str, method: str) -> pd.Series:
    hit = a[(a["marker"] == marker) & (a["versus"] == versus) & (a["method"] == method)]
    assert len(hit) == 1, (marker, versus, method)
    return hit.iloc[0]


# --- correlations -------------------------------------------------------------------------


def test_pearson_equals_scipy_and_fisher_z(merged):
    x, y = merged["bmd_tscore"].to_numpy(float), merged["pdff_mean_normal"].to_numpy(float)
    est = pearson(x, y)
    ref = stats.pearsonr(x, y)
    assert est.estimate == pytest.approx(ref.statistic, abs=1e-12)
    assert est.p == pytest.approx(ref.pvalue, rel=1e-9)
    # the CI by hand: tanh(atanh(r) -/+ 1.96 / sqrt(n - 3))
    n = len(x)
    z = math.atanh(ref.statistic)
    assert est.lower95 == pytest.approx(math.tanh(z - Z / math.sqrt(n - 3)), abs=1e-9)
    assert est.upper95 == pytest.approx(math.tanh(z + Z / math.sqrt(n - 3)), abs=1e-9)
    assert est.n == n


def test_spearman_equals_scipy_and_its_ci_matches_a_bootstrap(merged):
    x, y = merged["bmd_tscore"].to_numpy(float), merged["r2star_mean_normal"].to_numpy(float)
    est = spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert est.estimate == pytest.approx(ref.statistic, abs=1e-12)
    assert est.p == pytest.approx(ref.pvalue, rel=1e-9)
    boot = stats.bootstrap(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=999,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    ci = boot.confidence_interval
    assert est.lower95 == pytest.approx(ci.low, abs=0.025)
    assert est.upper95 == pytest.approx(ci.high, abs=0.025)
    # Bonett-Wright widens the plain Fisher-z interval
    plain = math.tanh(math.atanh(est.estimate) - Z / math.sqrt(len(x) - 3))
    assert est.lower95 < plain


def test_partial_correlation_equals_ols_and_the_precision_matrix(merged):
    adj = merged[["age", "sex", "site"]]
    z, names = covariate_design(adj, categorical=["sex", "site"])
    assert names == ["age", "sex[M]", "site[site_2]", "site[site_3]", "site[site_4]"]
    x, y = merged["bmd_tscore"].to_numpy(float), merged["pdff_mean_normal"].to_numpy(float)
    est = partial_pearson(x, y, z)
    n, k = len(x), z.shape[1]
    # statsmodels OLS of y on x and the covariates: the t of x gives r and p
    fit = sm.OLS(y, sm.add_constant(np.column_stack([x, z]))).fit()
    t, df = fit.tvalues[1], fit.df_resid
    assert df == n - 2 - k
    assert est.estimate == pytest.approx(t / math.sqrt(t * t + df), abs=1e-10)
    assert est.p == pytest.approx(fit.pvalues[1], rel=1e-8)
    # the same partial correlation from the inverse covariance matrix of (x, y, z)
    prec = np.linalg.inv(np.cov(np.column_stack([x, y, z]), rowvar=False))
    assert est.estimate == pytest.approx(-prec[0, 1] / math.sqrt(prec[0, 0] * prec[1, 1]))
    zr = math.atanh(est.estimate)
    assert est.lower95 == pytest.approx(math.tanh(zr - Z / math.sqrt(n - 3 - k)), abs=1e-10)
    # and it is not the crude correlation
    assert abs(est.estimate - pearson(x, y).estimate) > 0.02


def test_sex_difference_equals_welch_and_point_biserial(merged):
    y = merged["pdff_mean_normal"].to_numpy(float)
    male = (merged["sex"] == "M").to_numpy(float)
    diff = mean_difference(y, male)
    ref = stats.ttest_ind(y[male == 1], y[male == 0], equal_var=False)
    ci = ref.confidence_interval()
    assert diff.estimate == pytest.approx(y[male == 1].mean() - y[male == 0].mean())
    assert (diff.lower95, diff.upper95, diff.p) == pytest.approx((ci.low, ci.high, ref.pvalue))
    pb = point_biserial(y, male)
    ref_pb = stats.pointbiserialr(male, y)
    assert (pb.estimate, pb.p) == pytest.approx((ref_pb.statistic, ref_pb.pvalue))


def test_missing_values_are_dropped_pairwise():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=50), rng.normal(size=50)
    x[[3, 7]] = np.nan
    y[11] = np.nan
    keep = np.isfinite(x) & np.isfinite(y)
    est = pearson(x, y)
    assert est.n == 47
    assert est.estimate == pytest.approx(stats.pearsonr(x[keep], y[keep]).statistic)
    assert math.isnan(pearson(np.ones(10), np.arange(10.0)).estimate)  # constant: no r


# --- ROC / DeLong --------------------------------------------------------------------------


def test_delong_on_a_hand_computed_example():
    # positives 0.8, 0.6, 0.3; negatives 0.5, 0.2. Pairs won: 2 + 2 + 1 of 6, AUC = 5/6.
    # V10 (per positive) = 1, 1, 1/2: S10 = 1/12; V01 (per negative) = 2/3, 1: S01 = 1/18.
    # var = S10 / 3 + S01 / 2 = 1/36 + 1/36 = 1/18.
    res = delong_auc(np.array([1, 1, 1, 0, 0]), np.array([0.8, 0.6, 0.3, 0.5, 0.2]))
    assert res.auc == pytest.approx(5 / 6)
    assert res.se == pytest.approx(math.sqrt(1 / 18))
    assert res.lower95 == pytest.approx(5 / 6 - Z * math.sqrt(1 / 18))
    assert res.upper95 == 1.0  # clipped
    # a tie counts one half: positive 0.5 against negative 0.5
    tied = delong_auc(np.array([1, 1, 0, 0]), np.array([0.5, 0.9, 0.5, 0.1]))
    assert tied.auc == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_delong_components_equal_the_pairwise_definition():
    rng = np.random.default_rng(5)
    pos = rng.integers(0, 6, 23).astype(float)  # integers: many ties
    neg = rng.integers(0, 5, 31).astype(float)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = delong_components(pos, neg)
    np.testing.assert_allclose(v10, psi.mean(axis=1))
    np.testing.assert_allclose(v01, psi.mean(axis=0))


def test_delong_auc_equals_sklearn_mann_whitney_and_bootstrap_se(merged):
    op = (merged["bmd_tscore"] <= -2.5).to_numpy(int)
    for marker, direction in (("pdff_mean_normal", "higher"), ("r2star_mean_normal", "lower")):
        s = merged[marker].to_numpy(float)
        res = delong_auc(op, s, direction)
        signed = s if direction == "higher" else -s
        assert res.auc == pytest.approx(roc_auc_score(op, signed), abs=1e-12)
        u = stats.mannwhitneyu(signed[op == 1], signed[op == 0]).statistic
        assert res.auc == pytest.approx(u / (op.sum() * (1 - op).sum()), abs=1e-12)
        assert res.auc > 0.6  # the stated direction is the informative one
        rng = np.random.default_rng(1)
        boots = []
        for _ in range(1000):
            i = rng.integers(0, len(s), len(s))
            pos, neg = signed[i][op[i] == 1], signed[i][op[i] == 0]
            boots.append(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))
        assert res.se == pytest.approx(np.std(boots, ddof=1), rel=0.12)
    flipped = delong_auc(op, merged["r2star_mean_normal"].to_numpy(float), "higher")
    assert flipped.auc == pytest.approx(1 - res.auc)


# --- mixed models --------------------------------------------------------------------------


def test_mixed_model_equals_statsmodels_formula_fit(big):
    c, _, vertebrae = big
    ids = set(c.clinical["patient_id"].iloc[:150])
    v = vertebrae[(vertebrae["map"] == "pdff") & ~vertebrae["fractured"]]
    v = v[v["patient_id"].isin(ids)].rename(columns={"mean": "value"})
    d = v.merge(c.clinical[["patient_id", "age", "sex", "bmd_tscore"]], on="patient_id")
    d = d[["value", "patient_id", "level", "age", "sex", "bmd_tscore"]]
    mine = fit_random_intercept(
        d, "value", group="patient_id", numeric=["age", "bmd_tscore"],
        categorical={"level": "T10", "sex": "F"}, level_order={"level": TL_LEVELS},
    )  # fmt: skip
    assert mine.converged and mine.optimizer == OPTIMIZERS[0]
    ref = smf.mixedlm(
        "value ~ C(level, Treatment('T10')) + age + C(sex) + bmd_tscore", d, groups=d["patient_id"]
    ).fit(reml=True, method=mine.optimizer)
    names = {f"C(level, Treatment('T10'))[T.{lv}]": f"level[{lv}]" for lv in TL_LEVELS}
    names |= {"C(sex)[T.M]": "sex[M]", "age": "age", "bmd_tscore": "bmd_tscore"}
    terms = mine.terms.set_index("term")
    ci = ref.conf_int()
    for theirs, ours in names.items():
        if theirs not in ref.fe_params.index:
            continue
        assert terms.loc[ours, "estimate"] == pytest.approx(ref.fe_params[theirs], rel=1e-5)
        assert terms.loc[ours, "lower95"] == pytest.approx(ci.loc[theirs, 0], rel=1e-5)
        assert terms.loc[ours, "p"] == pytest.approx(ref.pvalues[theirs], rel=1e-3, abs=1e-12)
    assert mine.group_variance == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=1e-4)
    assert mine.n_obs == len(d) and mine.n_groups == 150


def test_mixed_model_on_the_boundary_says_so_and_equals_ols():
    rng = np.random.default_rng(1)
    n = 60
    d = pd.DataFrame(
        {"patient_id": np.repeat([f"P{i}" for i in range(n)], 4), "x": rng.normal(size=4 * n)}
    )
    d["value"] = 2 * d["x"] + rng.normal(size=len(d))  # no patient effect at all
    res = fit_random_intercept(d, "value", group="patient_id", numeric=["x"])
    assert res.converged and res.on_boundary
    assert any("boundary" in w for w in res.warnings)
    ols = sm.OLS(d["value"], sm.add_constant(d[["x"]])).fit()
    assert res.terms.set_index("term").loc["x", "estimate"] == pytest.approx(
        ols.params["x"], rel=1e-4
    )


# --- the generator's relations recovered --------------------------------------------------


def implied_bone_relations(c: Cohort) -> dict[str, float]:
    """Population correlations and slopes implied by truth.json's bone model.

    Every bone variable is a linear combination of independent unit-variance sources
    (z_age, z_female, z_bmi, the fragility residual, and one noise term each for T-score,
    PDFF and R2*); the covariance matrix follows, and with it marginal and partial
    correlations and regression slopes. R2* is at the 1.5 T scale.
    """
    bone = truth_dict(c, 0)["bone"]
    fl, ml = bone["latent_fragility_loadings"], bone["marker_loadings"]
    explained = fl["age"] ** 2 + fl["female"] ** 2 + fl["bmi"] ** 2
    frag = np.array([fl["age"], fl["female"], fl["bmi"], math.sqrt(1 - explained), 0, 0, 0])

    def marker(loading: float, source: int, sd: float) -> np.ndarray:
        own = np.zeros(7)
        own[source] = math.sqrt(1 - loading**2)
        return sd * (loading * frag + own)

    t = marker(ml["bmd_tscore"], 4, bone["tscore_mean_sd"][1])
    p = marker(ml["pdff"], 5, bone["pdff_mean_sd"][1])
    p[1] -= bone["pdff_male_shift"] * math.sqrt(P_FEMALE * (1 - P_FEMALE))  # male = -sd z_fem
    r = marker(ml["r2star"], 6, bone["r2star_mean_sd_15t"][1])
    loadings = np.vstack([t, p, r, np.eye(7)[0], np.eye(7)[1]])  # T, PDFF, R2*, age, female
    cov = loadings @ loadings.T

    def partial(i: int, j: int) -> float:
        prec = np.linalg.inv(cov[np.ix_([i, j, 3, 4], [i, j, 3, 4])])
        return -prec[0, 1] / math.sqrt(prec[0, 0] * prec[1, 1])

    def slope(y: int) -> float:  # coefficient of T in y ~ T + age + sex
        idx = [0, 3, 4]
        return float(np.linalg.solve(cov[np.ix_(idx, idx)], cov[idx, y])[0])

    # R2* pooled over scanners at different field strengths: the within-scanner correlation
    # is diluted by sum(w c) / sqrt(sum(w c^2)), c a scanner's R2* scale, w its share
    factors = c.truth["r2star_scanner_factor"]
    share = factors.value_counts(normalize=True)
    scale, w = share.index.to_numpy(dtype=float), share.to_numpy()
    dilution = float((w * scale).sum() / math.sqrt((w * scale**2).sum()))
    return {
        "r_pdff": cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]),
        "partial_pdff": partial(0, 1),
        "partial_r2star_pooled": partial(0, 2) * dilution,
        "slope_pdff": slope(1),
        "slope_r2star_15t": slope(2),
    }


def test_generator_relations_recovered_within_their_cis(big, analysed):
    c, _, _ = big
    truth = implied_bone_relations(c)
    assert truth["r_pdff"] == pytest.approx(-0.53, abs=0.01)  # the documented size
    a = analysed[0].associations

    def covers(r: pd.Series, value: float) -> None:
        assert r["lower95"] <= value <= r["upper95"], (r.to_dict(), value)

    covers(row(a, "pdff_mean_normal", "bmd_tscore", "pearson"), truth["r_pdff"])
    covers(row(a, "pdff_mean_normal", "bmd_tscore", "partial_pearson"), truth["partial_pdff"])
    covers(
        row(a, "r2star_mean_normal", "bmd_tscore", "partial_pearson"),
        truth["partial_r2star_pooled"],
    )
    covers(row(a, "pdff_mean", "bmd_tscore", "mixed_model"), truth["slope_pdff"])
    # R2* per vertebra at the 1.5 T scale (field strength divided out)
    _, vert15 = truth_tables(c, r2star_15t=True)
    v = vert15[(vert15["map"] == "r2star") & ~vert15["fractured"]].rename(columns={"mean": "v"})
    d = v.merge(c.clinical[["patient_id", "age", "sex", "bmd_tscore"]], on="patient_id")
    model = fit_random_intercept(
        d[["v", "patient_id", "level", "age", "sex", "bmd_tscore"]], "v", group="patient_id",
        numeric=["age", "bmd_tscore"], categorical={"level": "T10", "sex": "F"},
    )  # fmt: skip
    covers(model.terms.set_index("term").loc["bmd_tscore"], truth["slope_r2star_15t"])


def test_run_analysis_rows_equal_the_direct_statistics(merged, analysed):
    result, _ = analysed
    a = result.associations
    x, y = merged["age"].to_numpy(float), merged["r2star_mean_l1l4"].to_numpy(float)
    r = row(a, "r2star_mean_l1l4", "age", "spearman")
    assert r["estimate"] == pytest.approx(stats.spearmanr(x, y, nan_policy="omit").statistic)
    r = row(a, "pdff_mean_normal", "bmi", "partial_pearson")
    assert r["adjusted_for"] == "age;sex;scanner"
    z, _ = covariate_design(merged[["age", "sex", "scanner_batch"]], ["sex", "scanner_batch"])
    direct = partial_pearson(merged["bmi"], merged["pdff_mean_normal"], z)
    assert r["estimate"] == pytest.approx(direct.estimate)
    r = row(a, "r2star_mean_normal", "bmd_tscore <= -2.5", "auc_delong_lower")
    op = (merged["bmd_tscore"] <= -2.5).astype(int)
    assert r["estimate"] == pytest.approx(roc_auc_score(op, -merged["r2star_mean_normal"]))
    # fractured vertebrae: oedema halves PDFF in the treated (acute) ones, old ones unchanged
    treated = row(a, "pdff_mean", "vertebra[treated]", "mixed_model")
    assert treated["upper95"] < -15
    old = row(a, "pdff_mean", "vertebra[fractured_untreated]", "mixed_model")
    assert old["lower95"] < 0 < old["upper95"]
    paired = row(a, "pdff_mean", "vertebra[treated]", "paired_difference")
    assert paired["n"] == len(merged)
    assert result.n_patients == 560 and not result.notes


def test_outputs_associations_csv_and_a_self_contained_page(analysed):
    result, out = analysed
    table = pd.read_csv(out / "associations.csv")
    assert tuple(table.columns) == COLUMNS
    assert len(table) == len(result.associations) > 50
    assert set(table["method"]) >= {
        "pearson", "spearman", "partial_pearson", "point_biserial", "mean_difference",
        "auc_delong_higher", "auc_delong_lower", "mixed_model", "paired_difference",
    }  # fmt: skip
    html = (out / "biomarkers.html").read_text()
    for sid in ("biomarkers", "biomarkers-correlations", "biomarkers-roc", "biomarkers-mixed",
                "biomarkers-fracture", "biomarkers-methods"):  # fmt: skip
        assert f'id="{sid}"' in html
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) == 3 and all(s.startswith("data:image/png;base64,") for s in images)
    assert not re.search(r'(src|href)="(https?:|/|\.\./)', html)  # nothing outside the page
    assert "DeLong" in html and "Fisher" in html and "Bonett-Wright" in html
    methods = analysis_section(result)["methods"]
    assert "pdff_mean_normal: higher values, r2star_mean_normal: lower values" in methods
    assert "level T10, sex F, scanner site_1/MR1" in methods
    for name in ("scatter_tscore.png", "roc_osteoporosis.png", "levels.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = analysis_section(result)
    assert section["id"] == "biomarkers" and section["html"].startswith('<section id="biomarkers">')
    assert set(section["tables"]) == {"correlations", "sex", "roc", "fracture"}
    assert len(section["models"]) == 4 and set(section["images"]) == {"scatter", "roc", "levels"}


def test_morphometry_aggregates_are_markers_scored_for_high_values(big):
    c, features, _ = big
    rng = np.random.default_rng(2)
    grade = np.clip(np.round(-(c.clinical["bmd_tscore"] + 2.8) + rng.normal(0, 1, 560)), 0, 3)
    feats = features.assign(morph_genant_max=grade.to_numpy(), morph_ha_mm_L1=20.0)
    assert default_markers(feats) == [
        "pdff_mean_normal", "r2star_mean_normal", "pdff_mean_l1l4", "r2star_mean_l1l4",
        "morph_genant_max",
    ]  # fmt: skip
    res = run_analysis(c.clinical, feats, None, markers=["morph_genant_max"])
    auc = res.auc["morph_genant_max"]
    assert auc.direction == "higher" and auc.lower95 > 0.5
    op = (c.clinical["bmd_tscore"] <= -2.5).astype(int)
    assert auc.auc == pytest.approx(roc_auc_score(op, grade))


# --- a study's own column names, missing columns ------------------------------------------


def test_own_column_names_give_the_same_numbers(big):
    c, features, vertebrae = big
    some = c.clinical.iloc[::4]  # 140 patients from all four sites
    clin = some.rename(
        columns={
            "patient_id": "PatID",
            "bmd_tscore": "T_L1L4",
            "age": "Alter",
            "sex": "Sexo",
            "site": "centre",
        }  # fmt: skip
    )
    clin = clin.drop(columns=["bmi"])
    feats = features.rename(columns={"patient_id": "pid"}).drop(columns="site")
    res = run_analysis(
        clin, feats, None, id_column="PatID", features_id_column="pid", tscore="T_L1L4",
        age="Alter", sex="Sexo", site="centre", markers=["pdff_mean_normal"],
    )  # fmt: skip
    a = res.associations
    assert "bmi" not in set(a["versus"])
    assert any("'bmi'" in n for n in res.notes) and any("per-vertebra" in n for n in res.notes)
    r = row(a, "pdff_mean_normal", "T_L1L4", "partial_pearson")
    assert r["adjusted_for"] == "Alter;Sexo;scanner"  # site "centre" + scanner_id
    same = run_analysis(some, features, None, markers=["pdff_mean_normal"])
    ref = row(same.associations, "pdff_mean_normal", "bmd_tscore", "partial_pearson")
    assert r["estimate"] == pytest.approx(ref["estimate"]) and r["n"] == 140


def test_missing_required_columns_raise_input_errors_naming_them(big):
    c, features, _ = big
    with pytest.raises(InputError, match="'T_score'"):
        run_analysis(c.clinical, features, tscore="T_score")
    with pytest.raises(InputError, match="'PatID'"):
        run_analysis(c.clinical, features, id_column="PatID")
    with pytest.raises(InputError, match="'pdff_mean_index'"):
        run_analysis(c.clinical, features, markers=["pdff_mean_index"])
    with pytest.raises(InputError, match="share patient IDs"):
        run_analysis(c.clinical, features.assign(patient_id="X" + features["patient_id"]))


# --- the command line ---------------------------------------------------------------------

CONFIG = """
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {root}/cache
covariates:
  numeric: [age, bmd_tscore]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal]
extraction:
  r2star_units: per_s
analysis:
  tscore: bmd_tscore
  age: age
  sex: sex
  bmi: bmi
  site: site
"""


@pytest.mark.slow
def test_cli_analyse_end_to_end(tmp_path: Path):
    cohort_dir = tmp_path / "cohort"
    write_cohort(cohort_dir, n=40, n_sites=2, seed=4, jobs=2)
    config = tmp_path / "study.yaml"
    config.write_text(CONFIG.format(cohort=cohort_dir, root=tmp_path))
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["analyse", "--config", str(config), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert str(out / "associations.csv") in res.output and "biomarkers.html" in res.output
    table = pd.read_csv(out / "associations.csv")
    assert tuple(table.columns) == COLUMNS
    assert (table["n"] <= 40 * 8).all() and (table["method"] == "auc_delong_lower").any()
    # real images: PDFF still falls with the T-score, and acute fractures lose marrow fat
    r = row(table, "pdff_mean_normal", "bmd_tscore", "pearson")
    assert r["upper95"] < 0
    assert row(table, "pdff_mean", "vertebra[treated]", "mixed_model")["upper95"] < 0
    assert (out / "biomarkers.html").stat().st_size > 10_000
    assert (out / "extraction" / "features.parquet").is_file()


def test_cli_analyse_errors_are_one_line(tmp_path: Path, synth_nifti: Path):
    no_manifest = tmp_path / "a.yaml"
    no_manifest.write_text(
        f"data:\n  clinical: {synth_nifti}/clinical.csv\ncovariates:\n  numeric: [age]\n"
    )
    res = CliRunner().invoke(app, ["analyse", "--config", str(no_manifest)])
    assert res.exit_code == 2
    assert "data.manifest" in res.output and len(res.output.strip().splitlines()) == 1
    config = tmp_path / "b.yaml"
    config.write_text(CONFIG.format(cohort=synth_nifti, root=tmp_path))
    res = CliRunner().invoke(app, ["analyse", "--config", str(config), "--tscore", "dxa_t"])
    assert res.exit_code == 2 and "'dxa_t'" in res.output
    assert not (tmp_path / "cache").exists()  # refused before any image was read


def test_adjusted_for_the_scanner_with_patients_and_vertebrae_counted_apart(analysed, big):
    """Site 1 has a 1.5 T and a 3 T scanner: the analysis adjusts R2* for the scanner by
    default (the site when the features lack scanner columns, said in the notes); the
    per-vertebra model includes BMI; ``n`` counts patients and ``n_vertebrae`` vertebrae."""
    result, _ = analysed
    a = result.associations
    mixed = a[(a["method"] == "mixed_model") & (a["marker"] == "r2star_mean")]
    assert {"bmi", "bmd_tscore", "age"} <= set(mixed["versus"])
    assert mixed["versus"].str.startswith("scanner[").any()
    assert (mixed["n"] == 560).all() and (mixed["n_vertebrae"] > 3000).all()
    patient_rows = a[a["method"] == "pearson"]
    assert patient_rows["n_vertebrae"].isna().all() and (patient_rows["n"] <= 560).all()
    c, features, vertebrae = big
    by_site = run_analysis(c.clinical, features.drop(columns=["scanner_id"]), None)
    assert any("adjusted for the site instead of the scanner" in n for n in by_site.notes)
    r_site = row(by_site.associations, "r2star_mean_normal", "bmd_tscore", "partial_pearson")
    r_scan = row(a, "r2star_mean_normal", "bmd_tscore", "partial_pearson")
    assert r_site["adjusted_for"] == "age;sex;site" and r_scan["adjusted_for"] == "age;sex;scanner"
    assert r_scan["estimate"] > r_site["estimate"] + 0.03  # the 1.5 T / 3 T mix dilutes it
