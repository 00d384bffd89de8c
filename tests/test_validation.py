"""validate(): splits, bootstrap optimism correction and CIs, determinism, added value, plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refracture.errors import ConfigError, InputError
from refracture.models import CoxPH, make_outcome, make_pipeline
from refracture.validation import compute_metrics, metric_names, time_grid
from refracture.validation.added_value import added_value
from refracture.validation.bootstrap import optimism_replicate, replicate_seeds
from refracture.validation.plots import (
    plot_calibration,
    plot_decision_curve,
    plot_forest,
    plot_km_risk_groups,
    plot_td_roc,
)
from survival_cohort import config, dataset, validate_with

B = 20


def _cfg(**validation):
    return config(validation={"bootstrap": B, "jobs": 1, "seed": 0, **validation})


@pytest.fixture(scope="module")
def cox_results():
    ds = dataset()
    cfg = _cfg()
    return (
        ds,
        cfg,
        {fs: validate_with("cox", ds, fs, cfg) for fs in ("clinical", "clinical+imaging")},
    )


def test_result_has_every_metric_with_cis(cox_results):
    ds, _, res = cox_results
    r = res["clinical+imaging"]
    for m in metric_names(365):
        for suffix in ("", "_lo", "_hi", "_optcorr", "_optcorr_lo", "_optcorr_hi"):
            assert np.isfinite(r.metrics[m + suffix]), m + suffix
        assert r.metrics[m + "_lo"] <= r.metrics[m] <= r.metrics[m + "_hi"]
        assert r.metrics[m + "_optcorr"] == pytest.approx(r.apparent[m] - r.optimism[m])
        assert r.metrics[m + "_optcorr_lo"] <= r.metrics[m + "_optcorr_hi"]
    # apparent discrimination is optimistic; the correction lowers it
    assert r.optimism["cindex_harrell"] > 0
    assert r.metrics["calibration_slope_optcorr"] < 1.0
    assert r.n_train + r.n_valid == len(ds) and r.n_boot_failed == 0
    assert len(r.boot_apparent) == B
    assert "competing" in r.competing_risk_note


def test_random_split_is_stratified_and_holds_out(cox_results):
    ds, _, res = cox_results
    r = res["clinical"]
    pred = r.predictions
    death = ["risk_death"] if r.estimand == "cif" else []  # the risk of death under cif
    assert list(pred.columns) == [
        "patient_id",
        "site",
        "risk",
        "lp",
        "time",
        "event",
        "fold",
        "role",
        *death,
    ]
    assert set(pred["role"]) == {"test"}
    assert not set(pred["patient_id"]) & set(r.development_ids)
    assert len(pred) == round(0.3 * len(ds)) or abs(len(pred) - 0.3 * len(ds)) < 2
    by_h = lambda t, e: ((e == 1) & (t <= 365)).mean()  # noqa: E731
    dev = ds.y[np.isin(ds.ids, r.development_ids)]
    assert by_h(pred["time"], pred["event"]) == pytest.approx(
        by_h(dev["time"], dev["event"]), abs=0.01
    )
    # the final model is the one fitted on the development part
    X_valid = ds.X.loc[pred["patient_id"], r.features]
    np.testing.assert_allclose(r.final_model.predict_risk(X_valid), pred["risk"])


def test_coefficients_and_ph_test_come_with_cox(cox_results):
    _, _, res = cox_results
    r = res["clinical+imaging"]
    assert list(r.coefficients.columns) == ["term", "coef", "hr", "lower95", "upper95", "p"]
    assert "pdff_mean_normal" in set(r.coefficients["term"])
    assert set(r.ph_test["term"]) == set(r.coefficients["term"])


def test_imaging_beats_clinical_only(cox_results):
    ds, cfg, res = cox_results
    clin, img = res["clinical"], res["clinical+imaging"]
    assert img.metrics["cindex_harrell"] > clin.metrics["cindex_harrell"]
    assert img.metrics["cindex_harrell_optcorr"] > clin.metrics["cindex_harrell_optcorr"]
    reasons: dict[str, str] = {}
    av = added_value(
        clin, img, bootstrap=cfg.validation.bootstrap, seed=cfg.validation.seed, reasons=reasons
    )
    assert reasons == {} and clin.estimand == "cif"  # the cohort has deaths
    assert av["delta_cindex"] == pytest.approx(
        img.metrics["cindex_harrell"] - clin.metrics["cindex_harrell"]
    )
    assert av["delta_cindex_lo"] <= av["delta_cindex"] <= av["delta_cindex_hi"]
    assert av["lrt_df"] == 4 and av["lrt_p"] < 0.05
    for k in ("nri_365d", "idi_365d", "nri_365d_lo", "idi_365d_hi"):
        assert np.isfinite(av[k])


def test_added_value_needs_the_same_patients(cox_results):
    ds, cfg, res = cox_results
    other = validate_with("cox", ds, "clinical", _cfg(seed=1, bootstrap=0))
    with pytest.raises(InputError, match="same validation patients"):
        added_value(other, res["clinical+imaging"])


def test_bootstrap_repeats_exactly_whatever_the_workers():
    ds = dataset(300, 2)
    ticks = []
    one = validate_with(
        "logistic", ds, "clinical+imaging", _cfg(), progress=lambda s, d, t: ticks.append((d, t))
    )
    again = validate_with("logistic", ds, "clinical+imaging", _cfg())
    two = validate_with("logistic", ds, "clinical+imaging", _cfg(jobs=2))
    # exact equality, NaN (the logistic model's IBS) equal to NaN
    assert pd.Series(one.metrics).equals(pd.Series(again.metrics))
    assert pd.Series(one.metrics).equals(pd.Series(two.metrics))
    pd.testing.assert_frame_equal(one.boot_apparent, two.boot_apparent)
    assert ticks[-1] == (2 * B, 2 * B)
    assert all(a[0] < b[0] for a, b in zip(ticks, ticks[1:], strict=False))
    other_seed = validate_with("logistic", ds, "clinical+imaging", _cfg(seed=7))
    assert not pd.Series(other_seed.metrics).equals(pd.Series(one.metrics))
    # the logistic model has no survival curve: IBS is NaN and says why
    assert np.isnan(one.metrics["ibs_365d"]) and "ibs" in " ".join(one.notes)
    assert list(one.coefficients.columns)[2] == "or" and one.ph_test is None


def test_site_split_validates_externally():
    ds = dataset()
    r = validate_with("cox", ds, "clinical", _cfg(split="site", test_site="site_2", bootstrap=0))
    assert set(r.predictions["site"]) == {"site_2"}
    assert set(r.predictions["role"]) == {"external"}
    assert r.n_train == int((ds.site != "site_2").sum())
    assert np.isnan(r.metrics["cindex_harrell_lo"])  # no bootstrap asked for
    with pytest.raises(ConfigError) as err:
        validate_with("cox", ds, "clinical", _cfg(split="site", test_site="site_9", bootstrap=0))
    assert err.value.key == "validation.test_site"


def test_leave_one_site_out_pools_and_reports_per_site():
    ds = dataset()
    r = validate_with("cox", ds, "clinical", _cfg(split="leave_one_site_out", bootstrap=0))
    assert r.n_valid == len(ds) and r.n_train == len(ds)
    assert sorted(r.predictions["patient_id"]) == sorted(ds.ids)
    assert list(r.per_site["site"]) == ["site_1", "site_2", "site_3", "site_4"]
    assert r.per_site["n"].sum() == len(ds)
    assert (r.predictions["fold"] == r.predictions["site"]).all()
    assert r.per_site["cindex_harrell"].between(0.5, 1).all()
    # per-site metrics weight each site's censoring by that site's own follow-up
    for _, row in r.per_site.iterrows():
        p = r.predictions[r.predictions["site"] == row["site"]]
        y = make_outcome(p["event"].to_numpy(), p["time"].to_numpy())
        m, _ = compute_metrics(y, p["risk"].to_numpy(), estimand=r.estimand, lp=p["lp"].to_numpy())
        assert row["brier_365d"] == pytest.approx(m["brier_365d"], abs=1e-15)
        assert row["cindex_uno"] == pytest.approx(m["cindex_uno"], abs=1e-15)


def test_kfold_predicts_everyone_once_and_none_is_apparent():
    ds = dataset(300, 2)
    r = validate_with("cox", ds, "clinical", _cfg(split="kfold", folds=3, bootstrap=0))
    assert r.predictions["patient_id"].tolist() == ds.ids.tolist()
    assert r.predictions["fold"].nunique() == 3 and len(r.per_fold) == 3
    a = validate_with("cox", ds, "clinical", _cfg(split="none", bootstrap=4))
    assert set(a.predictions["role"]) == {"apparent"}
    assert a.metrics["cindex_harrell"] == a.apparent["cindex_harrell"]
    assert np.isfinite(a.metrics["cindex_harrell_optcorr"])


@pytest.mark.parametrize("name", ["coxnet", "rsf", "gbsa"])
def test_other_models_validate(name):
    ds = dataset(240, 11)
    r = validate_with(name, ds, "clinical+imaging", _cfg(bootstrap=8))
    assert np.isfinite(r.metrics["cindex_harrell"]) and np.isfinite(r.metrics["ibs_365d"])
    # Noma's location-shifted interval: percentiles of the resamples' apparent values minus
    # the optimism; when it misses its own estimate (forests, tuned penalties) a note says so
    for m in ("cindex_harrell", "auc_365d", "brier_365d"):
        lo, est, hi = (r.metrics[f"{m}_optcorr{s}"] for s in ("_lo", "", "_hi"))
        app = r.boot_apparent[m].to_numpy()
        opt = np.mean(app - r.boot_test[m].to_numpy())
        assert est == pytest.approx(r.apparent[m] - opt)
        assert (lo, hi) == pytest.approx(tuple(np.percentile(app, [2.5, 97.5]) - opt))
        if not lo <= est <= hi:
            assert any(m in n and "outside" in n for n in r.notes), r.notes
    assert r.coefficients is None and r.ph_test is None
    assert r.predictions["risk"].between(0, 1).all()


def test_plots_write_pngs(cox_results, tmp_path):
    _, cfg, res = cox_results
    both = {k: v.predictions for k, v in res.items()}
    img = res["clinical+imaging"]
    paths = [
        plot_calibration(both, tmp_path / "calibration.png"),
        plot_km_risk_groups(img.predictions, cfg.risk_groups, tmp_path / "km.png"),
        plot_td_roc(both, tmp_path / "roc.png", y_train=img.y_development),
        plot_decision_curve(both, tmp_path / "dca.png"),
        plot_forest(img.coefficients, tmp_path / "forest.png"),
    ]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


class _GroupedCox(CoxPH):
    """A Cox model whose fit takes the patient groups, as one with inner cross-validation
    would; it remembers what it was given."""

    seen: list[np.ndarray] = []

    def fit(self, X, y, groups=None):
        _GroupedCox.seen.append(groups)
        return super().fit(X, y)


def test_bootstrap_refits_receive_the_original_patient_of_each_row():
    ds = dataset(240, 11)
    cols = ds.feature_names("clinical")
    template = make_pipeline(
        "cox", config().covariates, horizon=365.0, random_state=0, categories=ds.categories
    ).set_params(model=_GroupedCox(horizon=365.0))
    ss = replicate_seeds(0, 1)[0]
    _GroupedCox.seen.clear()
    out = optimism_replicate(
        ss, template=template, X=ds.X[cols], y=ds.y, times=time_grid(365.0), horizon=365.0
    )
    assert out is not None and len(_GroupedCox.seen) == 1
    expected = np.random.default_rng(ss).integers(0, len(ds), len(ds))
    np.testing.assert_array_equal(_GroupedCox.seen[0], expected)
