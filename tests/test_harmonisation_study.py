"""Scanner harmonisation in the study (issue 15 items 2 and 4): the data set carries the batch
columns, the pipeline starts with the ComBat step, validation refits it and scores held-out
sites, the registered bundle carries it, scoring applies it and follows ``unseen_batch``; and
what it does on the synthetic cohort (per-scanner means, a replaced 3 T scanner, LOSO)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from refracture.bundle import ModelBundle
from refracture.dataset import Dataset, assemble, scanner_columns
from refracture.errors import ConfigError, InputError
from refracture.models import coefficients_table, make_pipeline
from refracture.results import Candidate
from refracture.scoring.pyfunc import input_example, signature_for
from refracture.scoring.rows import predict_frame
from refracture.study import validate_candidate
from refracture.study.harmonisation import (
    HARMONISED_SUFFIX,
    POOLED_ROW,
    harmonisation_metrics,
    per_site_harmonisation,
)
from refracture.study.packaging import make_bundle
from survival_cohort import cohort, config, imaging_features

FEATS = ["pdff_mean_normal", "r2star_mean_normal"]
PRESERVE = ["age", "sex", "bmd_tscore"]
#: The synthetic study's 1.5 T scanner: harmonised R2* then reads per 1/s at 1.5 T, the scale
#: of the generating model's hazard ratio (truth.json).
REFERENCE = "site_1/MR1"


def manifest_of(c) -> pd.DataFrame:
    """The scanner columns ``refracture synth`` writes into its manifest."""
    return c.truth[["patient_id", "site", "field_strength_t", "vendor", "scanner"]]


def harmonisation(**kw: object) -> dict:
    return {"method": "combat", "batch": "scanner", "preserve": PRESERVE} | kw


def study(harm: dict | None = None, features: list[str] = FEATS, **overrides: object):
    """(config, data set) of the 560-patient cohort with truth-based imaging features."""
    cfg = config(
        imaging={"features": features},
        harmonisation=harm or {"method": "none"},
        models=["cox"],
        feature_sets=["clinical", "clinical+imaging"],
        **overrides,
    )
    c = cohort(560, 0)
    return cfg, assemble(c.clinical, imaging_features(c), cfg, manifest=manifest_of(c))


@functools.lru_cache(maxsize=4)
def _fitted(reference: str | None, changed: bool):
    c = cohort(560, 0)
    feats, manifest = imaging_features(c), manifest_of(c).copy()
    if changed:
        # Site 4 replaces its scanner by a 3 T one reading R2* 1.9 times higher; the manifest
        # declares the new scanner, as a site would.
        site4 = (feats["site"] == "site_4").to_numpy()
        feats.loc[site4, "r2star_mean_normal"] *= 1.9
        manifest.loc[manifest["site"] == "site_4", "scanner"] = "MR-new-3T"
    out = {}
    for harm in ({"method": "none"}, harmonisation(reference_batch=reference)):
        cfg = config(imaging={"features": FEATS}, harmonisation=harm)
        ds = assemble(c.clinical, feats, cfg, manifest=manifest)
        pipe = make_pipeline(
            "cox",
            cfg.covariates,
            FEATS,
            categories=ds.categories,
            harmonisation=ds.harmonisation,
        )
        X = ds.model_input("clinical+imaging")
        pipe.fit(X, ds.y)
        out[harm["method"]] = (pipe, X, ds)
    return out


# --- pipeline and data set ------------------------------------------------------------------


def test_the_step_comes_first_only_with_combat_and_imaging() -> None:
    cfg, ds = study(harmonisation())
    kw = {"categories": ds.categories}
    with_step = make_pipeline("cox", cfg.covariates, FEATS, harmonisation=ds.harmonisation, **kw)
    assert [name for name, _ in with_step.steps] == ["harmonise", "prep", "model"]
    assert with_step.harmoniser.batch == "scanner" and with_step.harmoniser.features == FEATS
    clinical_only = make_pipeline("cox", cfg.covariates, [], harmonisation=ds.harmonisation, **kw)
    assert clinical_only.harmoniser is None
    cfg_none, ds_none = study()
    assert ds_none.harmonisation is None and ds_none.harmonisation_inputs is None
    assert make_pipeline("cox", cfg_none.covariates, FEATS, **kw).harmoniser is None


def test_the_data_set_carries_batch_and_preserved_columns_that_are_never_model_terms() -> None:
    # bmi is preserved but not a model covariate: it must reach the step, not the model
    covariates = {"numeric": ["age", "bmd_tscore"], "binary": [], "categorical": {"sex": "F"}}
    cfg, ds = study(harmonisation(preserve=["age", "sex", "bmi"]), covariates=covariates)
    inputs = ds.harmonisation_inputs
    assert list(inputs.columns) == [
        "site",
        "scanner_field_strength_t",
        "scanner_vendor",
        "scanner_id",
        "bmi",
    ]
    truth = cohort(560, 0).truth.set_index("patient_id")
    np.testing.assert_array_equal(inputs["scanner_id"], truth.loc[inputs.index, "scanner"])
    X = ds.model_input("clinical+imaging")
    assert {"site", "scanner_id", "bmi"} <= set(X.columns)
    assert "scanner_id" not in ds.model_input("clinical").columns
    pipe = make_pipeline(
        "cox", cfg.covariates, FEATS, categories=ds.categories, harmonisation=ds.harmonisation
    ).fit(X, ds.y)
    assert pipe.term_names == ["age", "bmd_tscore", *FEATS, "sex[M]"]
    assert pipe.harmoniser.design_columns_ == ["age", "sex[M]", "bmi"]
    half = ds.subset(np.arange(100))
    assert half.harmonisation_inputs.index.equals(half.X.index)


def test_a_preserved_column_missing_from_the_clinical_table_is_refused_early() -> None:
    c = cohort(560, 0)
    cfg = config(harmonisation=harmonisation(preserve=["agee", "sex"]))
    with pytest.raises(ConfigError) as err:
        assemble(c.clinical, None, cfg, clinical_source="clinical.csv")  # before extraction
    assert err.value.key == "harmonisation.preserve"
    assert "agee" in err.value.message and "'age'" in err.value.message
    cfg = config(harmonisation=harmonisation(preserve=["pdff_mean_normal"]))
    with pytest.raises(ConfigError, match="imaging features"):
        assemble(c.clinical, None, cfg)


def test_a_patient_of_unknown_scanner_is_named() -> None:
    c = cohort(560, 0)
    manifest = manifest_of(c).copy()
    manifest.loc[3, "scanner"] = ""
    manifest.loc[3, "vendor"] = None
    manifest.loc[3, "field_strength_t"] = np.nan
    cfg = config(harmonisation=harmonisation())
    with pytest.raises(InputError) as err:
        assemble(c.clinical, imaging_features(c), cfg, manifest=manifest)
    assert err.value.key == "harmonisation.batch"
    assert err.value.patient_id == manifest.loc[3, "patient_id"]


def test_scanner_columns_prefer_the_feature_table_then_the_manifest_then_the_header() -> None:
    features = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "scanner_field_strength_t": [3.0, np.nan, np.nan, np.nan],
            "scanner_vendor": ["Siemens", "", None, None],
            "scanner_id": ["Vida", "", None, None],
            "qc_field_strength_t": [1.5, 1.5, 2.89, np.nan],
            "qc_vendor": ["GE", "GE", "SIEMENS", ""],
        }
    )
    manifest = pd.DataFrame(
        {
            "patient_id": ["b", "a", "c", "d"],
            "field_strength_t": ["3", "1.5", "", ""],
            "vendor": ["Philips", "GE", "", ""],
            "scanner": ["MR-b", "MR-a", "", ""],
        }
    )
    out = scanner_columns(features, manifest)
    assert out.loc[0].tolist() == [3.0, "Siemens", "Vida"]  # the table's own values win
    assert out.loc[1].tolist() == [3.0, "Philips", "MR-b"]  # then the manifest row
    assert out.loc[2].tolist() == [2.89, "Siemens", "Siemens 2.89T"]  # then the header
    assert np.isnan(out.loc[3, "scanner_field_strength_t"]) and out.loc[3, "scanner_id"] == ""
    alone = scanner_columns(features.set_index("patient_id"))  # the ID as the index
    assert alone["scanner_id"].tolist() == ["Vida", "GE 1.5T", "Siemens 2.89T", ""]


# --- item 4: what it does on the synthetic cohort -------------------------------------------


def _batch_terms(y: pd.Series, data: pd.DataFrame) -> tuple[float, float]:
    """F-test p and the largest |scanner coefficient| of y ~ scanner + preserved covariates."""
    scanner = data["site"] + "/" + data["scanner_id"]
    design = pd.get_dummies(
        pd.DataFrame({"sc": scanner, "sex": data["sex"]}), drop_first=True, dtype=float
    )
    design[["age", "bmd_tscore"]] = data[["age", "bmd_tscore"]]
    ok = y.notna().to_numpy()
    fit = sm.OLS(y[ok], sm.add_constant(design[ok])).fit()
    terms = [c for c in design.columns if c.startswith("sc_")]
    return float(fit.f_test(" = 0, ".join(terms) + " = 0").pvalue), float(
        np.abs(fit.params[terms]).max()
    )


@pytest.mark.parametrize("reference", [None, REFERENCE])
def test_per_scanner_means_agree_given_the_preserved_covariates(reference: str | None) -> None:
    pipe, X, _ = _fitted(reference, False)["combat"]
    harmonised = pipe.harmoniser.transform(X)
    for feature in FEATS:
        p_raw, b_raw = _batch_terms(X[feature], X)
        p, b = _batch_terms(harmonised[feature], harmonised)
        assert p_raw < 0.05, feature  # the scanners differ as measured (R2*: 1.5 vs 3 T)
        assert p > 0.5 and b < 0.1 * b_raw, (feature, p, b, b_raw)
    p_raw, b_raw = _batch_terms(X["r2star_mean_normal"], X)
    assert p_raw < 1e-50 and b_raw > 30  # about 40 1/s between 1.5 and 3 T


def test_a_replacement_3t_scanner_barely_moves_the_harmonised_model() -> None:
    """Site 4's R2* x 1.9 on a newly declared scanner: the harmonised Cox model's imaging
    coefficients stay inside their 95 % CIs and its site-4 risks barely move; the
    unharmonised model's R2* coefficient halves and its risks move several times more."""
    before, after = _fitted(REFERENCE, False), _fitted(REFERENCE, True)
    moved = {}
    for kind in ("none", "combat"):
        (p0, X0, ds), (p1, X1, _) = before[kind], after[kind]
        c0 = coefficients_table(p0).set_index("term")
        c1 = coefficients_table(p1).set_index("term")
        site4 = (ds.site == "site_4").to_numpy()
        shift = np.abs(p1.predict_risk(X1) - p0.predict_risk(X0))
        coef0, coef1 = np.log(c0.loc[FEATS[1], "hr"]), np.log(c1.loc[FEATS[1], "hr"])
        moved[kind] = {
            "inside": all(
                c0.loc[f, "lower95"] <= c1.loc[f, "hr"] <= c0.loc[f, "upper95"] for f in FEATS
            ),
            "r2star": abs(coef1 - coef0),
            "r2star_relative": abs(coef1 / coef0 - 1),
            "risk": float(np.median(shift[site4])),
        }
    raw, harm = moved["none"], moved["combat"]
    assert harm["inside"], moved
    assert harm["r2star_relative"] < 0.05 and raw["r2star_relative"] > 0.3, moved
    assert harm["r2star"] < 0.2 * raw["r2star"], moved
    assert raw["risk"] > 0.005 and harm["risk"] < 0.35 * raw["risk"], moved


def test_harmonised_r2star_recovers_the_generating_hazard_ratio() -> None:
    """The cohort's R2* effect is per 1/s at 1.5 T (truth.json). Harmonised onto the 1.5 T
    scanner the Cox CI covers it; the pooled raw 1.5 T + 3 T values dilute it out of the CI."""
    from refracture.synth.cohort import LOG_HR

    true = LOG_HR["r2star_normal_15t"]
    fitted = _fitted(REFERENCE, False)
    for kind, covers in (("combat", True), ("none", False)):
        row = coefficients_table(fitted[kind][0]).set_index("term").loc["r2star_mean_normal"]
        inside = np.log(row["lower95"]) <= true <= np.log(row["upper95"])
        assert inside == covers, (kind, row.to_dict(), true)


# --- validation and the leave-one-site-out comparison ---------------------------------------


@pytest.mark.parametrize("batch", ["site", "scanner"])
def test_loso_scores_every_held_out_site_and_the_final_model_keeps_the_policy(batch: str) -> None:
    cfg, ds = study(
        harmonisation(batch=batch, unseen_batch="refuse"),
        validation={"split": "leave_one_site_out", "bootstrap": 3, "seed": 0},
    )
    result = validate_candidate("cox", "clinical+imaging", ds, cfg, None).result
    assert len(result.predictions) == len(ds) and result.predictions["risk"].notna().all()
    assert result.per_site["site"].tolist() == ["site_1", "site_2", "site_3", "site_4"]
    assert result.features == ds.feature_names("clinical+imaging")  # batch columns not terms
    h = result.final_model.harmoniser
    assert h.unseen_batch == "refuse" and len(h.batches_) == (4 if batch == "site" else 5)
    unseen = ds.model_input("clinical+imaging").iloc[:2].assign(site="site_9")
    with pytest.raises(InputError, match="unseen_batch"):
        result.final_model.predict_risk(unseen)


def test_leave_one_site_out_with_and_without_harmonisation_side_by_side() -> None:
    cfg, ds = study(harmonisation(reference_batch=REFERENCE))
    table = per_site_harmonisation("cox", ds, cfg)
    assert table["site"].tolist() == [POOLED_ROW, "site_1", "site_2", "site_3", "site_4"]
    assert table.loc[0, "n"] == len(ds) and table["n"].iloc[1:].sum() == len(ds)
    for m in ("cindex_harrell", "auc_365d", "brier_365d", "calibration_slope", "oe_ratio_365d"):
        assert np.isfinite(table[m]).all() and np.isfinite(table[m + HARMONISED_SUFFIX]).all()
    # the unharmonised columns are exactly a plain leave-one-site-out validation
    cfg_plain, ds_plain = study(validation={"split": "leave_one_site_out", "bootstrap": 0})
    plain = validate_candidate("cox", "clinical+imaging", ds_plain, cfg_plain, None).result
    np.testing.assert_allclose(table["cindex_harrell"].iloc[1:], plain.per_site["cindex_harrell"])
    assert table.loc[0, "cindex_harrell"] == pytest.approx(plain.metrics["cindex_harrell"])
    # and harmonising changed the predictions (so the harmonised columns are not a copy)
    assert not np.allclose(table["brier_365d"], table["brier_365d" + HARMONISED_SUFFIX])
    metrics = harmonisation_metrics(table)
    assert metrics["loso_cindex_harrell"] == table.loc[0, "cindex_harrell"]
    assert metrics["loso_auc_365d_harmonised.site_3"] == table.loc[3, "auc_365d_harmonised"]
    assert per_site_harmonisation("cox", study()[1], cfg) is None  # harmonisation off


# --- the registered bundle and scoring ------------------------------------------------------


#: Model covariates without bmi, so preserving bmi makes a column that is not a model input.
SMALL = {"numeric": ["age", "bmd_tscore"], "binary": ["prior_fracture"], "categorical": {}}


def _bundle(
    policy: str, tmp_path, harm: dict | None = None, split: str = "random"
) -> tuple[ModelBundle, Dataset]:
    """The registered model's bundle, written and read back as scoring reads it."""
    if harm is None:
        harm = harmonisation(unseen_batch=policy, preserve=["age", "bmi"])
    cfg, ds = study(
        harm,
        covariates=SMALL,
        validation={"split": split, "bootstrap": 0, "seed": 0},
        selection_metric="cindex_harrell",
    )
    result = validate_candidate("cox", "clinical+imaging", ds, cfg, None).result
    bundle = make_bundle(Candidate("cox", "clinical+imaging", result), cfg, ds)
    folder = tmp_path / f"{policy}-{harm['method']}"
    bundle.to_dir(folder)
    return ModelBundle.from_dir(folder), ds


def _rows(ds: Dataset, n: int = 6) -> pd.DataFrame:
    return ds.model_input("clinical+imaging").iloc[:n].reset_index()


def test_the_bundle_carries_the_step_and_asks_for_the_batch_columns(tmp_path) -> None:
    bundle, ds = _bundle("refuse", tmp_path)
    assert bundle.pipeline.harmoniser is not None
    assert bundle.covariates.batch == ("site", "scanner_id")
    assert bundle.covariates.preserved == ("bmi",)  # age is a model covariate already
    assert bundle.harmonisation["unseen_batch"] == "refuse"
    assert "site_1/MR2" in bundle.harmonisation["batches"]
    names = [c.name for c in signature_for(bundle).inputs.inputs]
    assert {"site", "scanner_id", "bmi"} <= set(names)
    example = input_example(bundle)
    assert f"{example['site'][0]}/{example['scanner_id'][0]}" in bundle.harmonisation["batches"]
    assert (predict_frame(bundle, example)["status"] == "ok").all()
    with pytest.raises(KeyError, match="scanner_id"):
        predict_frame(bundle, _rows(ds).drop(columns="scanner_id"))


def test_scoring_refuses_an_unseen_scanner_row_by_row(tmp_path) -> None:
    bundle, ds = _bundle("refuse", tmp_path)
    rows = _rows(ds)
    out = predict_frame(bundle, rows)
    assert (out["status"] == "ok").all() and (out["warnings"] == "").all()
    expected = bundle.pipeline.predict_risk(ds.model_input("clinical+imaging").iloc[:6])
    np.testing.assert_allclose(out["risk_365d"], expected)
    rows.loc[1, "scanner_id"] = "MR-unknown"
    rows.loc[4, "site"] = "site_9"
    out = predict_frame(bundle, rows)
    assert out["status"].tolist() == ["ok", "error", "ok", "ok", "error", "ok"]
    assert (
        f"{rows.loc[1, 'site']}/MR-unknown was not in the development data" in out.loc[1, "error"]
    )
    assert "harmonisation.unseen_batch" in out.loc[1, "error"] and "site_9" in out.loc[4, "error"]
    np.testing.assert_allclose(out.loc[[0, 2, 3, 5], "risk_365d"], expected[[0, 2, 3, 5]])


@pytest.mark.parametrize("policy", ["pooled", "reference"])
def test_scoring_warns_for_an_unseen_scanner_when_the_config_says_so(policy, tmp_path) -> None:
    bundle, ds = _bundle(policy, tmp_path)
    rows = _rows(ds)
    rows.loc[2, "scanner_id"] = "MR-unknown"
    out = predict_frame(bundle, rows)
    assert (out["status"] == "ok").all()
    assert "not in the development data" in out.loc[2, "warnings"]
    assert (out.drop(index=2)["warnings"] == "").all()


def test_the_registered_model_scores_a_rescanned_3t_patient_like_at_1_5t(tmp_path) -> None:
    """Site 1's 1.5 T patients imaged again on its 3 T scanner MR2 (R2* x 1.7, PDFF + 0.5 as
    the generator's MR2 does), scored by the registered bundle: harmonised, their risks barely
    move; declared as still on MR1, or scored by the unharmonised model, they move."""
    from refracture.synth.cohort import SITE_SCANNERS

    mr1, mr2 = SITE_SCANNERS[0]
    moved = {}
    for kind, harm in (("raw", {"method": "none"}), ("harmonised", harmonisation())):
        bundle, ds = _bundle("refuse", tmp_path, harm=harm, split="none")
        rows = ds.model_input("clinical+imaging")
        if "scanner_id" not in rows.columns:  # the unharmonised model does not ask for it
            scan = manifest_of(cohort(560, 0)).set_index("patient_id")
            rows = rows.join(scan[["site", "scanner"]].rename(columns={"scanner": "scanner_id"}))
        rows = rows[(rows["site"] == "site_1") & (rows["scanner_id"] == mr1.name)].reset_index()
        again = rows.assign(
            r2star_mean_normal=rows["r2star_mean_normal"] * mr2.r2star_factor / mr1.r2star_factor,
            pdff_mean_normal=rows["pdff_mean_normal"] + mr2.pdff_bias - mr1.pdff_bias,
            scanner_id=mr2.name,
        )
        base = predict_frame(bundle, rows)
        assert (base["status"] == "ok").all()
        for label, table in (
            ("declared", again),
            ("undeclared", again.assign(scanner_id=mr1.name)),
        ):
            out = predict_frame(bundle, table)
            assert (out["status"] == "ok").all() and (out["warnings"] == "").all()
            d = (out["risk_365d"] - base["risk_365d"]).to_numpy()
            moved[kind, label] = (abs(float(d.mean())), float(np.median(np.abs(d))))
    harm, raw = moved["harmonised", "declared"], moved["raw", "declared"]
    forgot = moved["harmonised", "undeclared"]
    assert len(rows) > 80
    assert harm[0] < 0.01 and harm[1] < 0.01, moved  # like the same patients at 1.5 T
    assert harm[1] < 0.5 * raw[1] and harm[0] < 0.3 * raw[0], moved
    assert forgot[1] > 5 * harm[1], moved  # the declared scanner is what harmonises them


def test_refracture_score_reads_the_scanner_from_a_features_file(tmp_path) -> None:
    """``score --features``: the batch columns come from the file's site and scanner_*
    columns; a file without scanner_id gets it from the header-derived columns (here none, so
    the scanner is unknown and the row is refused, naming the key)."""
    from refracture.scoring.batch import score
    from refracture.scoring.model import ScoringModel

    bundle, ds = _bundle("refuse", tmp_path)
    model = ScoringModel("local", "test", bundle)
    table = _rows(ds).drop(columns=["scanner_vendor", "scanner_field_strength_t"])
    table.to_csv(tmp_path / "features.csv", index=False)
    result = score(model, out=tmp_path / "scores.csv", features=tmp_path / "features.csv")
    assert result.n_ok == len(table) and result.n_warnings == 0
    expected = bundle.pipeline.predict_risk(ds.model_input("clinical+imaging").iloc[:6])
    np.testing.assert_allclose(result.scores["risk_365d"], expected)
    bare = table.drop(columns="scanner_id").assign(qc_vendor="", qc_field_strength_t=np.nan)
    bare.to_csv(tmp_path / "bare.csv", index=False)
    result = score(model, out=tmp_path / "bare_scores.csv", features=tmp_path / "bare.csv")
    assert result.n_error == len(table)
    assert result.scores["error"].str.contains("harmonisation.unseen_batch").all()
