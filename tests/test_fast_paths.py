"""The fast paths of bootstrap refits give the numbers of the plain paths, bit for bit.

Each fast path is compared with the slow code it stands in for (lifelines' whole
``CoxPHFitter.fit``, scikit-survival's ``concordance_index_censored``, pandas' ``nunique``,
the resample's own preprocessing) on data where they could differ: ties, missing values,
constant and collinear columns, and a cohort size whose rows do not fill BLAS blocks evenly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored

from refracture.errors import ModelError
from refracture.models import make_pipeline
from refracture.models.coxnet import harrell_c_columns
from refracture.models.design import collinear_columns, constant_columns, design_problem
from survival_cohort import config, dataset

H = 365.0


def _design(name: str, n: int, seed: int, estimand: str | None = None):
    ds = dataset(n, seed, estimand=estimand)
    cols = ds.feature_names("clinical+imaging")
    imaging = [c for c in cols if c in ds.imaging_features]
    pipe = make_pipeline(
        name, config().covariates, imaging, horizon=H, categories=ds.categories,
        estimand=ds.estimand,
    )  # fmt: skip
    X = ds.model_input("clinical+imaging")
    return pipe, pipe[:-1].fit_transform(X), ds.y


@pytest.mark.parametrize("estimand", ["net", "cif"])
def test_cox_refit_without_inference_is_lifelines_fit(estimand):
    pipe, Xt, y = _design("cox", 241, 3, estimand)
    idx = np.random.default_rng(5).integers(0, len(y), len(y))  # ties from repeated rows
    full = clone(pipe.model).fit(Xt.iloc[idx], y[idx])
    lean = clone(pipe.model).fit(Xt.iloc[idx], y[idx], inference=False)
    for attr in ("coef_", "means_", "baseline_times_", "baseline_cumhaz_"):
        np.testing.assert_array_equal(getattr(lean, attr), getattr(full, attr))
    assert lean.log_likelihood_ == full.log_likelihood_
    np.testing.assert_array_equal(lean.predict_risk(Xt), full.predict_risk(Xt))
    if estimand == "cif":
        assert full.death_model_ is not None and lean.death_model_ is not None
        np.testing.assert_array_equal(lean.death_model_.coef_, full.death_model_.coef_)
        np.testing.assert_array_equal(lean.cif_dh2_, full.cif_dh2_)
    assert lean.lifelines_ is None and lean.summary_ is None
    with pytest.raises(ModelError, match="without inference"):
        lean.coefficient_summary()


def test_harrell_c_of_every_column_is_scikit_survivals():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(100):
        n = int(rng.integers(1, 40))
        time = rng.integers(1, int(rng.integers(2, 15)), n).astype(float)  # many tied times
        event = rng.random(n) < rng.random()
        est = rng.normal(size=(n, 4))
        est[:, 1] = np.round(est[:, 1])  # tied scores
        est[:, 2] = 0.0
        est[:, 3] = est[:, 0] + rng.normal(0, 1e-9, n)  # within the 1e-8 tie tolerance
        try:
            want = [concordance_index_censored(event, time, est[:, j])[0] for j in range(4)]
        except ValueError as err:  # too few patients, no event, no comparable pair
            with pytest.raises(type(err)):
                harrell_c_columns(event, time, est)
            continue
        np.testing.assert_array_equal(harrell_c_columns(event, time, est), want)
        checked += 1
    assert checked > 30
    with pytest.raises(NoComparablePairException):  # the only event is last and alone
        harrell_c_columns(np.array([False, True]), np.array([1.0, 2.0]), np.zeros((2, 1)))


def test_design_checks_on_arrays_answer_as_pandas():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n, p = int(rng.integers(1, 25)), int(rng.integers(1, 6))
        A = rng.integers(0, int(rng.integers(1, 4)), (n, p)).astype(float)
        A[rng.random((n, p)) < 0.15] = np.nan
        A[:, 0] = np.where(rng.random(n) < 0.5, -0.0, 0.0)  # -0.0 equals 0.0
        if p > 2:
            A[:, 2] = A[:, 0] + 2 * A[:, 1]  # a dependence (on the complete rows)
        X = pd.DataFrame(A, columns=[f"c{i}" for i in range(p)])
        slow = X.astype(object)  # object columns take the pandas path
        assert constant_columns(X) == [str(c) for c in X if X[c].dropna().nunique() <= 1]
        assert constant_columns(X) == constant_columns(slow)
        assert collinear_columns(X) == collinear_columns(slow)
        assert design_problem(X) == design_problem(slow)


@pytest.mark.parametrize("name", ["cox", "coxnet", "logistic"])
def test_replicate_metrics_equal_the_resamples_own_preprocessing(name):
    """The resample's design taken as rows of the original's equals transforming the
    resample (241 patients: rows that do not fill BLAS blocks evenly)."""
    from refracture.validation.bootstrap import (
        _fit_params,
        model_seed,
        optimism_replicate,
        predict_all,
        replicate_seeds,
    )
    from refracture.validation.metrics import compute_metrics, time_grid

    ds = dataset(241, 3)
    cols = ds.feature_names("clinical+imaging")
    imaging = [c for c in cols if c in ds.imaging_features]
    template = make_pipeline(
        name, config().covariates, imaging, horizon=H, categories=ds.categories,
        estimand=ds.estimand,
    )  # fmt: skip
    X, y, times = ds.model_input("clinical+imaging"), ds.y, time_grid(H)
    ss = replicate_seeds(0, 1)[0]
    got = optimism_replicate(
        ss, template=template, X=X, y=y, times=times, horizon=H, estimand=ds.estimand
    )
    idx = np.random.default_rng(ss).integers(0, len(y), len(y))
    model = clone(template).set_params(model__random_state=model_seed(ss))
    params = {k: v for k, v in _fit_params(model, idx).items() if k != "model__inference"}
    model.fit(X.iloc[idx], y[idx], **params)  # the plain path: full fit, own transforms
    want = []
    for Xs, ys in ((X.iloc[idx], y[idx]), (X, y)):
        risk, lp, surv = predict_all(model, Xs, times, ds.estimand)
        want.append(compute_metrics(ys, risk, surv, times, H, estimand=ds.estimand, lp=lp)[0])
    assert got is not None
    for fast, plain in zip((got.apparent, got.test), want, strict=True):
        # a replicate computes the resampled metrics only (not the smoothed calibration)
        assert set(fast) <= set(plain) and "cindex_harrell" in fast
        assert pd.Series(fast).equals(pd.Series(plain)[list(fast)])


def _nibabel_save(path, data, affine, kind):
    """What synth wrote with before: the same image through ``nibabel.save`` (zlib)."""
    import nibabel as nib

    if kind == "labels":
        img = nib.Nifti1Image(data.astype(np.uint8), affine)
    else:
        img = nib.Nifti1Image(np.rint(data * 10.0).clip(-32768, 32767).astype(np.int16), affine)
        img.header.set_slope_inter(0.1, 0.0)
        img.header["descrip"] = b"PDFF (percent)"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def test_synth_writes_nibabels_own_nifti_stream_with_the_same_bytes_each_time(tmp_path):
    import gzip

    from refracture.synth import _save_nifti, anatomy_of, simulate_cohort
    from refracture.synth.phantom import generate

    maps = generate(anatomy_of(simulate_cohort(2, 1, 0), 0, 0))
    for kind, data in (("labels", maps.labels), ("pdff", maps.pdff)):
        for name in ("a", "b"):
            _save_nifti(tmp_path / f"{name}.nii.gz", data, maps.affine, kind)
        _nibabel_save(tmp_path / "nibabel.nii.gz", data, maps.affine, kind)
        ours = (tmp_path / "a.nii.gz").read_bytes()
        assert gzip.decompress(ours) == gzip.decompress((tmp_path / "nibabel.nii.gz").read_bytes())
        assert ours == (tmp_path / "b.nii.gz").read_bytes()
