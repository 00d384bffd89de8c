"""ComBat harmonisation (issue 15 items 2 and 4): the transformer against neuroCombat and
combatlearn, what it removes and keeps, unseen batches, train/test separation, pickling, and
its place in front of the model pipeline."""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from combatlearn.core import ComBatModel
from neuroCombat import neuroCombat
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from refracture.config import HarmonisationConfig
from refracture.errors import ConfigError, InputError
from refracture.models.harmonise import ComBatHarmoniser, batch_labels, make_harmoniser
from refracture.models.pipeline import RiskPipeline, make_pipeline
from survival_cohort import cohort, config, dataset

FEATURES = [f"f{j}" for j in range(6)]


def toy(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Six features with an age and a sex effect, and additive + multiplicative batch effects.

    Covariates are exactly representable in float32: neuroCombat casts them to float32.
    """
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c", "d"], n, p=[0.35, 0.3, 0.2, 0.15])
    age = rng.integers(50, 90, n).astype(float)
    sex = rng.choice(["F", "M"], n)
    tscore = rng.integers(-16, 0, n) / 4.0
    shift = pd.Series({"a": 0.0, "b": 2.0, "c": -1.0, "d": 0.5})[site].to_numpy()
    scale = pd.Series({"a": 1.0, "b": 1.5, "c": 0.7, "d": 1.1})[site].to_numpy()
    effects = rng.normal(0.0, 1.0, 6)
    base = 0.1 * age[:, None] - 0.8 * (sex == "M")[:, None] + 0.5 * tscore[:, None] * effects
    noise = rng.normal(size=(n, 6)) * scale[:, None] * 2.0
    X = base + noise + shift[:, None] * (1 + 0.3 * np.tanh(effects))[None, :]
    df = pd.DataFrame(X, columns=FEATURES)
    df.insert(0, "patient_id", [f"T{i:03d}" for i in range(n)])
    df["site"], df["age"], df["sex"], df["bmd_tscore"] = site, age, sex, tscore
    return df


def neurocombat(df: pd.DataFrame, **kw) -> np.ndarray:
    covars = df[["site", "age", "sex", "bmd_tscore"]].copy()
    with contextlib.redirect_stdout(io.StringIO()):  # neuroCombat prints its progress
        out = neuroCombat(
            df[FEATURES].to_numpy(dtype=np.float64).T,  # a DataFrame would be cast to float32
            covars,
            "site",
            categorical_cols=["sex"],
            continuous_cols=["age", "bmd_tscore"],
            **kw,
        )
    return out["data"].T


def harmonised(df: pd.DataFrame, **kw) -> np.ndarray:
    h = ComBatHarmoniser(
        batch="site", features=FEATURES, preserve=["age", "sex", "bmd_tscore"], **kw
    )
    return h.fit(df).transform(df)[FEATURES].to_numpy()


# --- the same numbers as the reference implementations -------------------------------------


@pytest.mark.parametrize(
    "kw", [{}, {"eb": False}, {"mean_only": True}, {"eb": False, "mean_only": True}]
)
def test_matches_neurocombat(kw: dict) -> None:
    df = toy()
    expected = neurocombat(df, **kw)
    got = harmonised(df, **kw)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    assert np.abs(got - df[FEATURES].to_numpy()).max() > 0.5  # it did adjust


@pytest.mark.parametrize("eb", [True, False])
def test_reference_batch_matches_neurocombat(monkeypatch: pytest.MonkeyPatch, eb: bool) -> None:
    # neuroCombat's reference-batch path calls np.int, removed in NumPy 1.24; giving the alias
    # back lets the library's own code run unchanged.
    monkeypatch.setattr(np, "int", int, raising=False)
    df = toy(seed=1)
    expected = neurocombat(df, eb=eb, ref_batch="b")
    got = harmonised(df, eb=eb, reference_batch="b")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    ref = (df["site"] == "b").to_numpy()
    np.testing.assert_array_equal(got[ref], df.loc[ref, FEATURES].to_numpy())  # left as measured


@pytest.mark.parametrize("reference", [None, "c"])
def test_location_scale_matches_combatlearn_feature_by_feature(reference: str | None) -> None:
    """combatlearn's empirical Bayes differs from Johnson's (docs/harmonisation.md), but with one
    feature it does none, so each feature harmonised alone is the same location/scale model."""
    df = toy(seed=2)
    got = harmonised(df, eb=False, reference_batch=reference)
    for j, name in enumerate(FEATURES):
        model = ComBatModel(method="fortin", eps=0.0, reference_batch=reference)
        args = {
            "batch": df["site"],
            "discrete_covariates": df[["sex"]],
            "continuous_covariates": df[["age", "bmd_tscore"]],
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "only one feature: no shrinkage", as intended
            model.fit(df[[name]], **args)
            expected = model.transform(df[[name]], **args).to_numpy()[:, 0]
        np.testing.assert_allclose(got[:, j], expected, rtol=0, atol=1e-8)


# --- what it removes and what it keeps -----------------------------------------------------


def _batch_f_test(y: np.ndarray, df: pd.DataFrame) -> tuple[float, float]:
    """F-test p-value and the largest |batch coefficient| of y ~ batch + covariates."""
    design = pd.get_dummies(df[["site", "sex"]], drop_first=True, dtype=float)
    design[["age", "bmd_tscore"]] = df[["age", "bmd_tscore"]]
    fit = sm.OLS(y, sm.add_constant(design)).fit()
    batch = [c for c in design.columns if c.startswith("site_")]
    test = fit.f_test(" = 0, ".join(batch) + " = 0")
    return float(test.pvalue), float(np.abs(fit.params[batch]).max())


@pytest.mark.parametrize(("eb", "left"), [(False, 0.01), (True, 0.2)])
def test_batch_means_agree_given_the_preserved_covariates(eb: bool, left: float) -> None:
    """Regressing each harmonised feature on batch + preserved covariates: the batch terms are
    gone (a fraction of a percent of before without empirical Bayes, whose shrinkage by design
    leaves part of a small batch's estimated effect in place, a tenth or so here)."""
    df = toy(n=600, seed=3)
    out = harmonised(df, eb=eb)
    for j, name in enumerate(FEATURES):
        p_before, b_before = _batch_f_test(df[name].to_numpy(), df)
        p_after, b_after = _batch_f_test(out[:, j], df)
        assert p_before < 1e-6, name
        assert p_after > 0.2 and b_after < left * b_before, (name, p_after, b_after, b_before)


def test_preserved_covariate_effects_survive_even_when_sites_differ_in_case_mix() -> None:
    """An older site: without preserving age, ComBat takes its age effect for a scanner effect."""
    df = toy(n=600, seed=4)
    old = (df["site"] == "b").to_numpy()
    df.loc[old, "age"] += 10.0
    df.loc[old, FEATURES] += 0.1 * 10.0  # the same biology: 0.1 per year of age
    slope = {}
    for keep in (True, False):
        preserve = ["age", "sex", "bmd_tscore"] if keep else ["sex", "bmd_tscore"]
        h = ComBatHarmoniser(batch="site", features=FEATURES, preserve=preserve).fit(df)
        y = h.transform(df)["f0"].to_numpy()
        design = sm.add_constant(df[["age", "bmd_tscore"]].assign(m=(df["sex"] == "M") * 1.0))
        slope[keep] = sm.OLS(y, design).fit().params["age"]
    assert slope[True] == pytest.approx(0.1, abs=0.02)
    assert abs(slope[False] - 0.1) > abs(slope[True] - 0.1)


def test_missing_feature_values_stay_missing_and_do_not_move_the_estimates() -> None:
    df = toy(seed=5)
    holes = df.copy()
    rng = np.random.default_rng(0)
    drop = rng.random(len(df)) < 0.15
    holes.loc[drop, "f2"] = np.nan
    kw = {"batch": "site", "features": FEATURES, "preserve": ["age", "sex"], "eb": False}
    out = ComBatHarmoniser(**kw).fit(holes).transform(holes)
    assert out.loc[drop, "f2"].isna().all() and out.loc[~drop, "f2"].notna().all()
    # Without empirical Bayes each feature is its own model: f2 equals the complete-case fit.
    kept = holes.loc[~drop]
    alone = ComBatHarmoniser(**{**kw, "features": ["f2"]}).fit(kept).transform(kept)
    np.testing.assert_allclose(out.loc[~drop, "f2"], alone["f2"], atol=1e-10)
    np.testing.assert_allclose(
        out[["f0", "f1"]], ComBatHarmoniser(**kw).fit(df).transform(df)[["f0", "f1"]], atol=1e-10
    )


# --- new patients: known batches, unseen batches, and never the test data's statistics ------


def test_transform_uses_only_the_development_statistics() -> None:
    df = toy(n=400, seed=6)
    train, test = df.iloc[:300], df.iloc[300:].copy()
    h = ComBatHarmoniser(batch="site", features=FEATURES, preserve=["age", "sex"]).fit(train)
    state = {k: np.copy(v) for k, v in vars(h).items() if k.endswith("_") and hasattr(v, "shape")}
    whole = h.transform(test)
    one_by_one = pd.concat([h.transform(test.iloc[[i]]) for i in range(len(test))])
    np.testing.assert_allclose(whole[FEATURES], one_by_one[FEATURES], atol=1e-12)
    # shifting every other test patient of site b changes nobody else's harmonised values
    shifted = test.copy()
    b = (shifted["site"] == "b").to_numpy()
    shifted.loc[b, FEATURES] += 50.0
    again = h.transform(shifted)
    np.testing.assert_allclose(again.loc[~b, FEATURES], whole.loc[~b, FEATURES], atol=1e-12)
    for k, v in state.items():
        np.testing.assert_array_equal(getattr(h, k), v)  # transform learns nothing
    # and the fit itself: refitting on train alone gives the same model
    refit = ComBatHarmoniser(batch="site", features=FEATURES, preserve=["age", "sex"]).fit(train)
    np.testing.assert_array_equal(refit.gamma_star_, h.gamma_star_)


def _with_new_site(df: pd.DataFrame) -> pd.DataFrame:
    new = df.iloc[:3].copy()
    new["site"] = ["e", "e", None]
    new["patient_id"] = ["N1", "N2", "N3"]
    return new


def test_unseen_batch_refuse_names_the_patients_and_the_batch() -> None:
    df = toy(seed=7)
    h = ComBatHarmoniser(batch="site", features=FEATURES).fit(df)
    with pytest.raises(InputError) as err:
        h.transform(pd.concat([df.iloc[:5], _with_new_site(df)]))
    text = err.value.one_line()
    assert "N1" in text and "N3" in text and "e" in text and "unseen_batch" in text
    assert "T000" not in text
    assert h.unseen_mask(_with_new_site(df)).tolist() == [True, True, True]


def test_unseen_batch_reference_and_pooled() -> None:
    df = toy(seed=8)
    new = _with_new_site(df)
    kw = {"batch": "site", "features": FEATURES, "preserve": ["age", "sex"]}
    # reference with a reference batch: the new patients are taken as that batch (unchanged)
    ref = ComBatHarmoniser(**kw, reference_batch="a", unseen_batch="reference").fit(df)
    np.testing.assert_array_equal(ref.transform(new)[FEATURES], new[FEATURES])
    # reference without one: no adjustment either
    plain = ComBatHarmoniser(**kw, unseen_batch="reference").fit(df)
    np.testing.assert_allclose(plain.transform(new)[FEATURES], new[FEATURES], atol=1e-10)
    # pooled: the batch-size weighted mean of the known batches' adjustments
    pooled = ComBatHarmoniser(**kw, reference_batch="a", unseen_batch="pooled").fit(df)
    w = pooled.n_per_batch_ / pooled.n_per_batch_.sum()
    g, d = w @ pooled.gamma_star_, w @ pooled.delta_star_
    assert pooled.design_columns_ == ["age", "sex[M]"]
    design = np.column_stack([new["age"], new["sex"] == "M"]).astype(float)
    stand = pooled.grand_mean_ + design @ pooled.beta_preserve_
    sd = np.sqrt(pooled.var_pooled_)
    expected = ((new[FEATURES].to_numpy() - stand) / sd - g) / np.sqrt(d) * sd + stand
    np.testing.assert_allclose(pooled.transform(new)[FEATURES], expected, atol=1e-10)
    assert np.abs(expected - new[FEATURES].to_numpy()).max() > 0.1
    # known patients are harmonised as usual; the per-row warnings name only the new ones
    mixed = pd.concat([df.iloc[:2], new])
    msgs = pooled.row_warnings(mixed)
    assert msgs[:2] == ["", ""]
    assert all("not in the development data" in m for m in msgs[2:])
    assert "site e" in msgs[2] and "(unknown)" in msgs[4] and "average" in msgs[2]


# --- errors --------------------------------------------------------------------------------


def test_errors_name_the_key() -> None:
    df = toy(seed=9)
    lone = df.copy()
    lone.loc[0, "site"] = "z"
    with pytest.raises(InputError, match="at least 2 development patients.*z \\(1\\)") as e:
        ComBatHarmoniser(batch="site", features=FEATURES).fit(lone)
    assert e.value.key == "harmonisation.batch"
    unknown = df.copy()
    unknown.loc[3, "site"] = None
    with pytest.raises(InputError, match="T003") as e:
        ComBatHarmoniser(batch="site", features=FEATURES).fit(unknown)
    confounded = df.assign(hospital_code=df["site"].map({"a": 1, "b": 2, "c": 3, "d": 4}) * 1.0)
    confounded["hospital_code"] = (confounded["site"] == "b") * 1.0
    with pytest.raises(InputError, match="confounded") as e:
        ComBatHarmoniser(batch="site", features=FEATURES, preserve=["hospital_code"]).fit(
            confounded
        )
    assert e.value.key == "harmonisation.preserve"
    with pytest.raises(ConfigError) as e:
        ComBatHarmoniser(batch="site", features=FEATURES, reference_batch="x").fit(df)
    assert e.value.key == "harmonisation.reference_batch"
    with pytest.raises(ConfigError) as e:
        ComBatHarmoniser(batch="scanner", features=FEATURES).fit(df)  # no scanner_id column
    assert e.value.key == "harmonisation.batch"


def test_batch_labels() -> None:
    X = pd.DataFrame(
        {
            "site": ["s1", "s1", "s2", "s2", ""],
            "scanner_id": ["MR1", "", "MR1", "GE SIGNA 3T", "X"],
            "scanner_field_strength_t": [1.5, 2.89, np.nan, 3.0, 0.55],
        }
    )
    assert batch_labels(X, "site").tolist()[:4] == ["s1", "s1", "s2", "s2"]
    assert pd.isna(batch_labels(X, "site")[4])
    scanner = batch_labels(X, "scanner")
    assert scanner[0] == "s1/MR1" and pd.isna(scanner[1]) and scanner[2] == "s2/MR1"
    assert scanner[4] == "X"  # no site: the scanner name alone
    field = batch_labels(X, "field_strength")
    assert field.tolist()[:2] == ["1.5 T", "3 T"] and pd.isna(field[2]) and field[4] == "0.55 T"


# --- in the model pipeline -----------------------------------------------------------------


def _frame(c, features: pd.DataFrame) -> pd.DataFrame:
    """Covariates + imaging features + the scanner columns extraction writes."""
    truth = c.truth.set_index("patient_id")
    X = features.copy()
    X["site"] = truth.loc[X.index, "site"].to_numpy()
    X["scanner_id"] = truth.loc[X.index, "scanner"].to_numpy()
    X["scanner_field_strength_t"] = truth.loc[X.index, "field_strength_t"].to_numpy()
    return X


def harmonised_pipeline(ds, model: str, harmoniser: ComBatHarmoniser | None) -> RiskPipeline:
    """The intended wiring: harmonise first (on raw values, before imputation), then prep."""
    cfg = config(imaging={"features": ["pdff_mean_normal", "r2star_mean_normal"]})
    pipe = make_pipeline(
        model,
        cfg.covariates,
        ["pdff_mean_normal", "r2star_mean_normal"],
        horizon=365,
        random_state=0,
        categories=ds.categories,
    )
    if harmoniser is None:
        return pipe
    return RiskPipeline([("harmonise", harmoniser), *pipe.steps])


def test_pipeline_pickles_clones_and_predicts(tmp_path) -> None:
    c = cohort(560, 0)
    ds = dataset(560, 0)
    X = _frame(c, ds.X)
    h = make_harmoniser(
        HarmonisationConfig(method="combat", batch="scanner", preserve=["age", "sex"]),
        ["pdff_mean_normal", "r2star_mean_normal"],
    )
    pipe = harmonised_pipeline(ds, "cox", h).fit(X, ds.y)
    risk = pipe.predict_risk(X)
    assert np.all((risk > 0) & (risk < 1))
    joblib.dump(pipe, tmp_path / "m.joblib")
    again = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(again.predict_risk(X), risk)
    twin = clone(pipe)
    assert not hasattr(twin.named_steps["harmonise"], "gamma_star_")  # clone is unfitted
    assert twin.get_params()["harmonise__batch"] == "scanner"
    # prep after harmonisation sees harmonised values; the batch columns are dropped by prep
    design = pipe.transform_features(X)
    assert "scanner_id" not in design.columns and "site" not in design.columns
    assert isinstance(pipe[:1], Pipeline)


def test_a_site_replacing_its_scanner_barely_moves_the_harmonised_model() -> None:
    """Issue 15 item 4: one site's R2* x 1.9 (a 3 T replacement). The harmonised Cox model's
    imaging coefficients stay inside their 95 % CIs and its risks barely move; the
    unharmonised model's R2* coefficient and risks move many times more."""
    c = cohort(560, 0)
    ds = dataset(560, 0)
    X = _frame(c, ds.X)
    changed = X.copy()
    site4 = (changed["site"] == "site_4").to_numpy()
    changed.loc[site4, "r2star_mean_normal"] *= 1.9
    feats = ["pdff_mean_normal", "r2star_mean_normal"]
    result = {}
    for name, h in (
        (
            "harmonised",
            ComBatHarmoniser(
                batch="site",
                features=feats,
                preserve=["age", "sex", "bmd_tscore"],
                reference_batch="site_2",
            ),
        ),  # fmt: skip
        ("raw", None),
    ):
        before = harmonised_pipeline(ds, "cox", h).fit(X, ds.y)
        after = harmonised_pipeline(ds, "cox", None if h is None else clone(h)).fit(changed, ds.y)
        summary = before.model.lifelines_.summary
        coef_after = after.model.lifelines_.summary["coef"]
        inside = {
            f: summary.loc[f, "coef lower 95%"] <= coef_after[f] <= summary.loc[f, "coef upper 95%"]
            for f in feats
        }
        moved = abs(coef_after["r2star_mean_normal"] - summary.loc["r2star_mean_normal", "coef"])
        shift = np.abs(after.predict_risk(changed) - before.predict_risk(X))
        result[name] = (inside, moved, float(np.median(shift[site4])))
    inside, moved, median_shift = result["harmonised"]
    _, raw_moved, raw_median_shift = result["raw"]
    assert all(inside.values()), result
    assert moved < raw_moved, result
    assert raw_median_shift > 0.005, result  # the unharmonised model's risks move
    assert math.isfinite(median_shift) and median_shift < 0.2 * raw_median_shift, result


def test_a_pure_scanner_scale_is_removed_exactly() -> None:
    """Without preserved covariates or shrinkage, a batch multiplied by 1.9 harmonises to the
    same values on the reference batch's scale: the model and its risks do not move at all."""
    c = cohort(560, 0)
    ds = dataset(560, 0)
    X = _frame(c, ds.X)
    changed = X.copy()
    changed.loc[changed["site"] == "site_4", "r2star_mean_normal"] *= 1.9
    feats = ["pdff_mean_normal", "r2star_mean_normal"]
    h = ComBatHarmoniser(batch="site", features=feats, reference_batch="site_2", eb=False)
    a = clone(h).fit(X).transform(X)
    b = clone(h).fit(changed).transform(changed)
    np.testing.assert_allclose(a[feats], b[feats], rtol=1e-10)
    before = harmonised_pipeline(ds, "cox", clone(h)).fit(X, ds.y)
    after = harmonised_pipeline(ds, "cox", clone(h)).fit(changed, ds.y)
    np.testing.assert_allclose(after.predict_risk(changed), before.predict_risk(X), atol=1e-9)
