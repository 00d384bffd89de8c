"""Extraction wired end to end (issues 12.4, 13.2, 15.1, 16.1, 16.3): morphometry and label QC
in every patient's features, scanner columns, units decided once per site in two passes without
measuring a patient twice, the cache keyed by the decided units, and the label/map registration
check on real shifted label maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refracture.config import ExtractionConfig, load_config
from refracture.features import (
    QC_COLUMNS,
    SCANNER_COLUMNS,
    extract_cohort,
    iter_extract,
    qc_findings,
)
from refracture.features.manifest import read_manifest
from refracture.imaging import align_to, label_fit, load_volume
from refracture.imaging.label_fit import MIN_GAIN, _counted_quantiles, _ranks
from refracture.imaging.morphometry import AGGREGATES, MEASURES
from refracture.levels import TL_LEVELS, convention
from refracture.ranges import plausible_range
from test_imaging_helpers import spine, write_manifest, write_nifti, write_patient


@pytest.fixture(scope="module")
def nifti(synth_nifti: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("wired")
    result = extract_cohort(synth_nifti / "manifest.csv", out_dir=out, jobs=2)
    return result, out


def test_morphometry_label_qc_and_scanner_are_in_the_tables(nifti, synth_nifti: Path) -> None:
    result, out = nifti
    assert result.errors.empty
    f = result.features
    truth = pd.read_csv(synth_nifti / "truth.csv").set_index("patient_id")
    for lv in TL_LEVELS:
        for m in MEASURES:
            assert f"morph_{m}_{lv}" in f.columns
    assert set(AGGREGATES) <= set(f.columns)
    # heights measured on the native label grid agree with the generator's truth
    feats = f.set_index("patient_id")
    err = [
        feats.loc[pid, f"morph_hp_mm_{lv}"] - truth.loc[pid, f"true_hp_mm_{lv}"]
        for pid in feats.index
        for lv in TL_LEVELS
    ]
    assert np.nanmedian(np.abs(err)) < 1.5, np.round(err, 1)
    assert (feats["morph_genant_max"] >= 0).all()
    # every morph column holds numbers the training range checks accept
    for c in [c for c in f.columns if c.startswith("morph_")]:
        lo, hi = plausible_range(c)
        vals = f[c].dropna()
        assert ((vals >= lo) & (vals <= hi)).all(), c
    # scanner columns in both tables, no old qc_vendor; QC columns last
    for table in (f, result.qc):
        assert set(SCANNER_COLUMNS) <= set(table.columns)
        assert "qc_vendor" not in table.columns and "qc_field_strength_t" not in table.columns
    assert list(f.columns[-len(QC_COLUMNS) :]) == list(QC_COLUMNS)
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    assert f["scanner_vendor"].tolist() == manifest["vendor"].tolist()
    assert f["scanner_id"].tolist() == manifest["scanner"].tolist()
    np.testing.assert_array_equal(f["scanner_field_strength_t"], manifest["field_strength_t"])
    # clean synthetic label maps: no label problem, no misregistration, no unit note
    qc = result.qc
    assert (qc["qc_label_n_problems"] == 0).all()
    assert (qc["qc_misregistration"].fillna("") == "").all()
    assert (qc["qc_label_fit_gain"] < MIN_GAIN).all()
    assert (qc["qc_pdff_units_source"] == "manifest").all()
    assert (qc["qc_pdff_units_note"].fillna("") == "").all()
    # written files: the same columns, and the site units in extraction.json
    written = pd.read_parquet(out / "features.parquet")
    assert list(written.columns) == list(f.columns)
    summary = json.loads((out / "extraction.json").read_text())
    assert summary["site_units"] == {
        s: {"pdff": "percent", "r2star": "per_s"} for s in sorted(manifest["site"].unique())
    }
    assert summary["feature_version"] == "2"


def test_morph_features_are_model_inputs(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data: {clinical: c.csv, manifest: m.csv}\ncovariates: {numeric: [age]}\n"
        "imaging: {features: [morph_genant_max, pdff_mean_normal]}\n"
    )
    assert load_config(cfg).imaging.features == ["morph_genant_max", "pdff_mean_normal"]


def shift_labels(path: Path, shift_mm: tuple[float, float, float]) -> None:
    """Rewrite a label NIfTI with its origin moved by ``shift_mm`` (RAS): the same voxels, drawn
    ``shift_mm`` away from the anatomy."""
    img = nib.load(str(path))
    affine = img.affine.copy()
    affine[:3, 3] += shift_mm
    out = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, str(path))


@pytest.mark.parametrize(
    "shift", [(30.0, 0.0, 0.0), (0.0, 30.0, 0.0), (0.0, 0.0, 30.0), (0.0, -12.0, 0.0)]
)
def test_a_shifted_label_map_is_found_misregistered(synth_nifti: Path, shift) -> None:
    row = read_manifest(synth_nifti / "manifest.csv").iloc[3]
    pdff, r2 = load_volume(row["pdff"], "pdff"), load_volume(row["r2star"], "r2star")
    labels = load_volume(row["labels"], "labels")
    values = list(convention("verse"))
    here = label_fit(labels.data, [pdff.data, r2.data], pdff.affine, values)
    assert not here.misregistered and here.message == ""
    moved = labels.with_data(labels.data, affine=labels.affine.copy())
    moved.affine[:3, 3] += shift
    on_grid, resampled = align_to(moved, pdff, allow_resample=True)
    assert resampled
    fit = label_fit(on_grid.data, [pdff.data, r2.data], pdff.affine, values)
    assert fit.misregistered, fit
    # the fit moves the labels back: about minus the shift (within two voxels; slices are 4.5 mm)
    assert fit.distance_mm == pytest.approx(np.linalg.norm(shift), abs=2 * max(pdff.spacing))
    assert np.dot(fit.shift_mm, shift) < 0
    assert "label map misregistered" in fit.message


def test_misregistration_reaches_qc_csv_through_extract(synth_nifti: Path, tmp_path: Path) -> None:
    work = tmp_path / "cohort"
    shutil.copytree(synth_nifti, work)
    manifest = pd.read_csv(work / "manifest.csv")
    shift_labels(work / manifest.loc[1, "labels"], (0.0, 30.0, 0.0))  # 30 mm anterior
    res = extract_cohort(work / "manifest.csv", jobs=1)
    qc = res.qc.set_index("patient_id")
    bad = manifest.loc[1, "patient_id"]
    assert bool(qc.loc[bad, "qc_labels_resampled"])
    assert "misregistered" in qc.loc[bad, "qc_misregistration"]
    assert 26 <= qc.loc[bad, "qc_label_fit_shift_mm"] <= 34
    others = qc.drop(index=bad)
    assert (others["qc_misregistration"].fillna("") == "").all()
    kinds = [f.kind for f in qc_findings(qc.loc[bad].to_dict())]
    assert "misregistration" in kinds and "resampled" in kinds


# --- units decided per site, in two passes ---------------------------------------------------


def _box_cohort(root: Path) -> Path:
    """Box-phantom patients with nothing declared: site A stores R2* in 1/s (one patient's
    marrow at 31 1/s is ambiguous alone, one at 22 1/s looks like T2* in ms alone: 1 of 25
    clear patients, under the 5 % a site may disagree), site B
    stores T2* in ms, site C has one ambiguous patient only."""
    rows = []
    levels = ("L1", "L2", "L3")
    site_a = [55 + 1.5 * i for i in range(24)] + [31, 22]  # distinct files: distinct keys
    for i, r2 in enumerate(site_a):
        rows.append(write_patient(root, f"A{i:02d}", site="A", r2star=_r2(levels, r2)))
    for i, r2 in enumerate([55.0, 70.0, 90.0]):
        row = write_patient(root, f"B{i}", site="B")
        write_nifti(root / row["r2star"], 1000.0 / _r2(levels, r2), dtype=np.float32)
        rows.append(row)
    rows.append(write_patient(root, "C0", site="C", r2star=_r2(levels, 30.0)))
    return write_manifest(root, rows)


def _r2(levels, value: float) -> np.ndarray:
    return spine(levels=levels, r2star={lv: float(value) for lv in levels})[1]


def test_units_are_decided_per_site_and_nobody_is_measured_twice_needlessly(
    tmp_path: Path,
) -> None:
    manifest = _box_cohort(tmp_path)
    cache = tmp_path / "cache"
    res = extract_cohort(manifest, jobs=2, cache_dir=cache)
    qc = res.qc.set_index("patient_id")
    # site C (one ambiguous patient) is refused, naming the site; everyone else is measured
    assert res.errors["patient_id"].tolist() == ["C0"]
    err = res.errors.iloc[0]
    assert err["stage"] == "units" and "site C: cannot tell the R2* unit" in err["message"]
    assert "r2star.nii.gz" in err["message"] and "extraction.r2star_units" in err["message"]
    a = qc[qc["site"] == "A"]
    assert len(a) == 26 and (a["qc_r2star_units"] == "per_s").all()
    assert (a["qc_r2star_units_source"] == "site").all()
    assert "look like t2star_ms" in a.loc["A25", "qc_r2star_units_note"]
    b = qc[qc["site"] == "B"]
    assert (b["qc_r2star_units"] == "t2star_ms").all() and b["qc_r2star_converted"].all()
    feats = res.features.set_index("patient_id")
    assert feats.loc["A24", "r2star_mean_L2"] == pytest.approx(31.0, abs=0.1)
    assert feats.loc["A25", "r2star_mean_L2"] == pytest.approx(22.0, abs=0.1)
    assert feats.loc["B2", "r2star_mean_L2"] == pytest.approx(90.0, rel=1e-3)
    assert res.site_units == {
        "A": {"pdff": "percent", "r2star": "per_s"},
        "B": {"pdff": "percent", "r2star": "t2star_ms"},
    }
    # one evidence entry per patient; one feature entry per measured patient, plus one for
    # A25 alone: its own values pointed to T2* (measured at once), its site said 1/s
    assert len(list(cache.glob("ev-*.json"))) == 30
    features_files = [p for p in cache.glob("*.json") if not p.name.startswith("ev-")]
    assert len(features_files) == 29 + 1
    # a second run measures nothing again, and gives the same tables
    again = extract_cohort(manifest, jobs=1, cache_dir=cache)
    assert (again.n_computed, again.n_cached) == (0, 29)
    pd.testing.assert_frame_equal(again.features, res.features)


def test_the_cache_is_keyed_by_the_decided_units(tmp_path: Path) -> None:
    row = write_patient(tmp_path, "U1", site="s")
    manifest = write_manifest(tmp_path, [row])
    cache = tmp_path / "cache"
    pct = extract_cohort(manifest, ExtractionConfig(pdff_units="percent"), cache_dir=cache)
    assert (pct.n_computed, pct.n_cached) == (1, 0)
    pm = extract_cohort(manifest, ExtractionConfig(pdff_units="per_mille"), cache_dir=cache)
    assert (pm.n_computed, pm.n_cached) == (1, 0)
    assert pm.features["pdff_mean_L1"].iloc[0] == pytest.approx(
        pct.features["pdff_mean_L1"].iloc[0] / 10, rel=1e-5
    )
    # declared in the manifest: the same units as the config said, served from the cache
    declared = write_manifest(tmp_path, [{**row, "pdff_units": "percent"}])
    res = extract_cohort(declared, cache_dir=cache)
    assert res.qc["qc_pdff_units_source"].iloc[0] == "manifest"
    assert res.features["pdff_mean_L1"].iloc[0] == pct.features["pdff_mean_L1"].iloc[0]


def test_label_qc_fail_policy_is_a_labels_error(tmp_path: Path) -> None:
    levels = ("L1", "L2", "L3", "L4")
    _, _, lab = spine(levels=levels)
    swapped = lab.copy()
    swapped[lab == 20], swapped[lab == 21] = 21, 20  # L1 and L2 swapped
    row = write_patient(tmp_path, "L1X", levels=levels, labels=swapped, site="s")
    manifest = write_manifest(tmp_path, [row])
    warn = extract_cohort(manifest)
    assert warn.errors.empty and warn.qc["qc_label_order"].iloc[0] == "L1;L2"
    fail = extract_cohort(manifest, ExtractionConfig(on_label_problem="fail"))
    assert fail.errors["stage"].tolist() == ["labels"]
    assert "out of cranio-caudal order" in fail.errors["message"].iloc[0]
    assert "labels.nii.gz" in fail.errors["message"].iloc[0]


def test_one_sided_adjacency_and_untreated_cement_are_recorded(tmp_path: Path) -> None:
    levels = ("T12", "L1", "L2", "L3", "L4")
    _, _, lab = spine(levels=levels)
    no_l1 = np.where(lab == 20, 0, lab)
    row = write_patient(tmp_path, "N1", levels=levels, labels=no_l1, treated="L2", site="s")
    res = extract_cohort(write_manifest(tmp_path, [row]))
    q = res.qc.iloc[0]
    assert q["qc_adjacent_one_sided"] == "L2: L3 (no L1)"
    assert q["qc_treated_no_cement"] == "L2"  # a box phantom holds no cement
    text = [f.message for f in qc_findings(q.to_dict())]
    assert "adjacent features of treated L2 from L3 only (L1 not in the label map)" in text
    assert any("gap in the label map at L1" in t for t in text)
    assert any("no cement-like voxels in treated L2" in t for t in text)
    assert res.features["pdff_n_adjacent"].iloc[0] == res.features["pdff_n_L3"].iloc[0]


def test_scoring_extraction_takes_a_known_sites_units_and_refuses_an_unknown_ambiguous_one(
    tmp_path: Path,
) -> None:
    """iter_extract (what scoring runs): each patient is decided alone, a known site first
    taking the units the model pinned for it."""
    levels = ("L1", "L2", "L3")
    rows = [
        write_patient(tmp_path, "K1", site="site_1", r2star=_r2(levels, 30.0)),
        write_patient(tmp_path, "U1", site="site_9", r2star=_r2(levels, 30.0)),
        write_patient(tmp_path, "U2", site="site_9", r2star=_r2(levels, 70.0)),
    ]
    records = read_manifest(write_manifest(tmp_path, rows)).to_dict("records")
    pinned = {"site_1": {"pdff": "percent", "r2star": "per_s"}}
    out = list(iter_extract(records, ExtractionConfig(), pinned=pinned))
    (_, k1, e1), (_, u1, e2), (_, u2, e3) = out
    assert e1 is None and k1.qc["qc_r2star_units_source"] == "model"
    assert k1.features["r2star_mean_L2"] == pytest.approx(30.0, abs=0.1)
    assert u1 is None and e2[0] == "units" and "site site_9" in e2[1]
    assert e3 is None and u2.qc["qc_r2star_units"] == "per_s"
    assert u2.qc["qc_r2star_units_source"] == "site"


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False, width=32),
            st.integers(-5, 5).map(float),
            st.sampled_from([np.inf, -np.inf, -0.0]),
        ),
        min_size=1,
        max_size=400,
    ),
    nan_share=st.floats(0, 0.5),
)
def test_label_fit_ranks_equal_numpys_quantiles(values, nan_share) -> None:
    """The registration check's ranks (distinct values and their counts, NumPy's interpolation
    written out) equal the plain NumPy formulation bit for bit, ties, infinite and missing
    values included."""
    data = np.array(values, dtype=np.float64)
    data[: int(nan_share * len(data))] = np.nan
    qs = np.linspace(0.0, 1.0, 257)[1:-1]
    finite = np.isfinite(data)
    if finite.any():
        distinct, counts = np.unique(data[finite], return_counts=True)
        assert np.array_equal(_counted_quantiles(distinct, np.cumsum(counts), qs),
                              np.quantile(data[finite], qs))  # fmt: skip
        cuts = np.quantile(data[finite], qs)
        filled = np.where(finite, data, np.median(data[finite]))
        expected = (np.searchsorted(cuts, filled) / 256).astype(np.float32)
    else:
        expected = np.zeros(data.shape, dtype=np.float32)
    assert np.array_equal(_ranks(data.reshape(1, 1, -1)), expected.reshape(1, 1, -1))
    as_stored = data.astype(np.float32)  # maps arrive as float32, in Fortran order
    if np.array_equal(as_stored, data, equal_nan=True) and data.size % 2 == 0:
        cube = np.asfortranarray(as_stored.reshape(2, 1, -1))
        assert np.array_equal(_ranks(cube), expected.reshape(2, 1, -1))
