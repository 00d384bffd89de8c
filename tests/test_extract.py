"""``refracture extract`` on the synthetic cohort: truth, DICOM, jobs, cache, CLI, outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.config import ExtractionConfig
from refracture.features import QC_COLUMNS, extract_cohort
from refracture.features.manifest import read_manifest
from refracture.imaging.stats import PRODUCT_STATS
from refracture.levels import TL_LEVELS

runner = CliRunner()


@pytest.fixture(scope="module")
def nifti_features(synth_nifti: Path):
    return extract_cohort(synth_nifti / "manifest.csv", ExtractionConfig(), out_dir=None, jobs=1)


def _untreated_errors(result, cohort: Path) -> pd.DataFrame:
    manifest = read_manifest(cohort / "manifest.csv").set_index("patient_id")
    truth = pd.read_csv(cohort / "truth.csv").set_index("patient_id")
    feats = result.features.set_index("patient_id")
    rows = []
    for pid, m in manifest.iterrows():
        for lv in TL_LEVELS:
            if lv in m.treated_levels or lv in m.fractured_levels:
                continue
            rows.append(
                {
                    "patient_id": pid,
                    "level": lv,
                    "pdff": feats.loc[pid, f"pdff_mean_{lv}"] - truth.loc[pid, f"pdff_mean_{lv}"],
                    "r2star": feats.loc[pid, f"r2star_mean_{lv}"]
                    - truth.loc[pid, f"r2star_mean_{lv}"],
                }
            )
    return pd.DataFrame(rows)


def test_vertebral_means_agree_with_truth(nifti_features, synth_nifti: Path) -> None:
    assert nifti_features.errors.empty
    assert len(nifti_features.features) == 8
    err = _untreated_errors(nifti_features, synth_nifti)
    assert len(err) >= 8 * 5  # most vertebrae are neither treated nor fractured
    assert err["pdff"].abs().max() < 1.0, err.sort_values("pdff").to_string()
    assert err["r2star"].abs().max() < 3.0, err.sort_values("r2star").to_string()


def test_treated_vertebrae_have_cement_excluded(nifti_features, synth_nifti: Path) -> None:
    manifest = read_manifest(synth_nifti / "manifest.csv")
    v = nifti_features.vertebrae
    treated = v[v["treated"]]
    assert len(treated) == 2 * sum(len(t) for t in manifest["treated_levels"])
    assert (treated["n_cement"] > 0).all()
    assert (v.loc[~v["treated"], "n_cement"] == 0).all()
    # what is left of a treated vertebra is mostly marrow: nothing above the cement
    # threshold (400 1/s; cement is 600-1000 1/s), medians like marrow's
    r2 = treated[treated["map"] == "r2star"]
    assert (r2["max"] <= 400).all()
    assert (r2["median"] < 250).all()
    qc = nifti_features.qc
    assert (qc["qc_cement_voxels_excluded"] > 0).all()
    for (_, q), levels in zip(qc.iterrows(), manifest["treated_levels"], strict=True):
        assert q["qc_cement_levels"].split(";") == levels


def test_dicom_cohort_gives_the_nifti_features(
    nifti_features, synth_dicom: Path, synth_nifti: Path
) -> None:
    dicom = extract_cohort(synth_dicom / "manifest.csv", jobs=1)
    assert dicom.errors.empty
    assert (dicom.qc["qc_pdff_units"] == "per_mille").all()
    assert dicom.qc["qc_pdff_converted"].all()
    assert (dicom.qc["qc_r2star_units_source"] == "manifest").all()
    # without the manifest's unit columns, what the DICOM series state decides
    bare = read_manifest(synth_dicom / "manifest.csv").drop(columns=["pdff_units", "r2star_units"])
    stated = extract_cohort(bare, jobs=1)
    assert stated.errors.empty
    assert (stated.qc["qc_pdff_units_source"] == "dicom").all()
    assert (stated.qc["qc_r2star_units_source"] == "dicom").all()
    pd.testing.assert_frame_equal(stated.features.drop(columns=list(QC_COLUMNS)),
                                  dicom.features.drop(columns=list(QC_COLUMNS)))  # fmt: skip
    # the scanner comes from the manifest's columns, the DICOM headers agreeing
    assert dicom.features["scanner_vendor"].isin(["GE", "Siemens", "Philips"]).all()
    assert dicom.features["scanner_field_strength_t"].isin([1.5, 3.0]).all()
    assert (nifti_features.qc["qc_pdff_units"] == "percent").all()
    assert not nifti_features.qc["qc_pdff_converted"].any()
    err = _untreated_errors(dicom, synth_dicom)
    assert err["pdff"].abs().max() < 1.0 and err["r2star"].abs().max() < 3.0
    cols = [c for c in nifti_features.features.columns if c.startswith(("pdff_", "r2star_"))]
    np.testing.assert_allclose(  # atol: statistics near 0 (skewness) differ by float rounding
        dicom.features[cols].to_numpy(),
        nifti_features.features[cols].to_numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    # the made-up patient names of the DICOM headers are nowhere in the outputs
    name = str(pydicom.dcmread(next((synth_dicom / "images").rglob("*.dcm"))).PatientName)
    assert name
    text = dicom.features.to_csv() + dicom.vertebrae.to_csv() + dicom.qc.to_csv()
    for part in name.split("^"):
        assert part not in text


def test_feature_columns_follow_the_product_contract(nifti_features) -> None:
    f = nifti_features.features
    assert list(f.columns[:2]) == ["patient_id", "site"]
    for lv in TL_LEVELS:
        for m in ("pdff", "r2star"):
            for s in PRODUCT_STATS:
                assert f"{m}_{s}_{lv}" in f.columns
    for g in ("index", "adjacent", "l1l4", "normal"):
        assert f[f"pdff_mean_{g}"].notna().all() or g == "adjacent"
    assert list(f.columns[-len(QC_COLUMNS) :]) == list(QC_COLUMNS)
    v = nifti_features.vertebrae
    assert list(v.columns[:3]) == ["patient_id", "level", "map"]
    assert list(v.columns[3 : 3 + len(PRODUCT_STATS)]) == list(PRODUCT_STATS)
    assert len(v) == 8 * len(TL_LEVELS) * 2
    # the long table and the wide one hold the same numbers
    row = v[(v["level"] == "L3") & (v["map"] == "pdff")].set_index("patient_id")["p90"]
    np.testing.assert_array_equal(row.to_numpy(), f.set_index("patient_id")["pdff_p90_L3"])
    # normal pools the voxels of its levels: its n is the sum of theirs
    for pid, vp in v[v["map"] == "pdff"].groupby("patient_id"):
        healthy = vp[~vp["treated"] & ~vp["fractured"]]
        assert f.set_index("patient_id").loc[pid, "pdff_n_normal"] == healthy["n"].sum()


def test_jobs_1_and_2_give_identical_features(nifti_features, synth_nifti: Path) -> None:
    two = extract_cohort(synth_nifti / "manifest.csv", jobs=2)
    pd.testing.assert_frame_equal(two.features, nifti_features.features)
    pd.testing.assert_frame_equal(two.vertebrae, nifti_features.vertebrae)


def test_cache_only_computes_new_patients(
    synth_nifti: Path, tmp_path: Path, nifti_features
) -> None:
    full = pd.read_csv(synth_nifti / "manifest.csv")
    first = synth_nifti / "first5.csv"
    full.head(5).to_csv(first, index=False)
    cache = tmp_path / "cache"
    r1 = extract_cohort(first, jobs=1, cache_dir=cache)
    assert (r1.n_computed, r1.n_cached) == (5, 0)
    r2 = extract_cohort(synth_nifti / "manifest.csv", jobs=1, cache_dir=cache)
    assert (r2.n_computed, r2.n_cached) == (3, 5)
    pd.testing.assert_frame_equal(r2.features, nifti_features.features)
    pd.testing.assert_frame_equal(r2.vertebrae, nifti_features.vertebrae)
    # another extraction config is another cache key
    r3 = extract_cohort(first, ExtractionConfig(erosion_mm=3.0), jobs=1, cache_dir=cache)
    assert r3.n_computed == 5
    assert not r3.features["pdff_n_L1"].equals(r1.features["pdff_n_L1"])


def test_cache_serves_qc_pictures_to_a_new_output_folder(synth_nifti: Path, tmp_path: Path) -> None:
    """`train` writes QC pictures into a new run folder each time: the cache must still hit."""
    first = synth_nifti / "first3.csv"
    pd.read_csv(synth_nifti / "manifest.csv").head(3).to_csv(first, index=False)
    cache = tmp_path / "cache"
    kw = {"jobs": 1, "cache_dir": cache, "qc_png": True, "progress": None}
    r1 = extract_cohort(first, out_dir=tmp_path / "run1", **kw)
    r2 = extract_cohort(first, out_dir=tmp_path / "run2", **kw)
    assert (r1.n_computed, r2.n_computed, r2.n_cached) == (3, 0, 3)
    for pid in r1.features["patient_id"]:
        a, b = tmp_path / "run1" / "qc" / f"{pid}.png", tmp_path / "run2" / "qc" / f"{pid}.png"
        assert a.read_bytes() == b.read_bytes()


def test_cli_end_to_end_with_a_failing_patient(synth_nifti: Path, tmp_path: Path) -> None:
    work = tmp_path / "cohort"
    shutil.copytree(synth_nifti, work)
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    args = ["extract", "--manifest", str(work / "manifest.csv"), "--out", str(out)]
    args += ["--jobs", "1", "--cache-dir", str(cache)]
    res = runner.invoke(app, [*args, "--qc-png"])
    assert res.exit_code == 0, res.output
    for name in ("features.parquet", "vertebrae.parquet", "qc.csv", "extraction.json"):
        assert (out / name).is_file(), name
    assert not (out / "errors.csv").exists()
    assert len(list((out / "qc").glob("P*.png"))) == 8
    assert (out / "qc" / "contact_sheet.png").is_file()
    assert str(out / "features.parquet") in res.output.replace("\n", "")
    features = pd.read_parquet(out / "features.parquet")
    assert list(features["patient_id"]) == list(pd.read_csv(work / "manifest.csv")["patient_id"])

    # one patient's PDFF goes missing, another's label map is corrupt
    manifest = pd.read_csv(work / "manifest.csv")
    (work / manifest.loc[2, "pdff"]).unlink()
    (work / manifest.loc[5, "labels"]).write_bytes(b"\x1f\x8b broken")
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors.columns) == ["patient_id", "stage", "message"]
    assert list(errors["patient_id"]) == [
        manifest.loc[2, "patient_id"],
        manifest.loc[5, "patient_id"],
    ]
    assert "pdff image not found" in errors.loc[0, "message"]
    assert "labels.nii.gz" in errors.loc[1, "message"]
    assert list(errors["stage"]) == ["load", "load"]
    assert len(pd.read_parquet(out / "features.parquet")) == 6

    # fixed again: a clean run removes the stale errors.csv
    shutil.copy(synth_nifti / manifest.loc[2, "pdff"], work / manifest.loc[2, "pdff"])
    shutil.copy(synth_nifti / manifest.loc[5, "labels"], work / manifest.loc[5, "labels"])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert not (out / "errors.csv").exists()
    assert "0 computed, 8 from the cache" in res.output


def test_cli_bad_manifest_and_config_exit_2(synth_nifti: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    dup = tmp_path / "dup.csv"
    pd.concat([manifest, manifest.head(1)]).to_csv(dup, index=False)
    res = runner.invoke(app, ["extract", "--manifest", str(dup), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "duplicate patient_id" in res.output and manifest.loc[0, "patient_id"] in res.output

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("extraction:\n  erosion_mm: 2\n  bogus: 1\n")
    args = ["extract", "--manifest", str(synth_nifti / "manifest.csv"), "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--config", str(cfg)])
    assert res.exit_code == 2 and "extraction.bogus" in res.output
    cfg.write_text("extraction:\n  erosion_mm: 2\nfrobnicate: {}\n")
    res = runner.invoke(app, [*args, "--config", str(cfg)])
    assert res.exit_code == 2 and "frobnicate" in res.output
