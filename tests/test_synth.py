"""``refracture synth``: cohort statistics, image geometry, DICOM, determinism, bad arguments."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from lifelines import AalenJohansenFitter
from typer.testing import CliRunner

from refracture.cli import app
from refracture.imaging.metadata import canonical_vendor
from refracture.levels import TL_LEVELS, VERSE
from refracture.synth import cohort as gen
from refracture.synth import write_cohort


@pytest.fixture(scope="module")
def big() -> gen.Cohort:
    """Tables only (no images) for a large cohort: sampling error small enough to test."""
    return gen.simulate_cohort(n=4000, n_sites=4, seed=11)


def test_demographics_follow_the_published_cohorts(big: gen.Cohort) -> None:
    c = big.clinical
    assert c["age"].between(50, 90).all()
    assert abs(c["age"].mean() - 73) < 1.0
    assert 7.0 < c["age"].std() < 8.5  # truncation narrows the SD a little
    assert abs((c["sex"] == "F").mean() - 0.80) < 0.03
    assert abs(c["bmi"].mean() - 24) < 0.3
    assert abs(c["bmd_tscore"].mean() - (-2.8)) < 0.06
    assert abs(c["bmd_tscore"].std() - 0.9) < 0.05
    assert np.corrcoef(c["age"], c["bmd_tscore"])[0, 1] < -0.15  # lower with age
    shares = c["n_fractured"].value_counts(normalize=True)
    assert (
        abs(shares[1] - 0.6) < 0.03 and abs(shares[2] - 0.3) < 0.03 and abs(shares[3] - 0.1) < 0.02
    )
    leak = c["cement_leakage"].value_counts(normalize=True)
    assert abs(leak["none"] - 0.70) < 0.03 and abs(leak["intradiscal"] - 0.15) < 0.02
    for col, p in [
        ("prior_fracture", 0.30),
        ("glucocorticoid", 0.10),
        ("anti_osteoporosis", 0.50),
        ("diabetes", 0.20),
    ]:
        assert abs(c[col].mean() - p) < 0.03, col
    per_level = c["cement_volume_ml"] / c["n_fractured"]
    assert per_level.between(2.0, 6.0).all()
    assert c["index_tl_junction"].mean() > 0.7  # mostly T11-L2
    sizes = c["site"].value_counts()
    assert sizes.nunique() == 4  # unequal site sizes


def test_one_year_incidence_and_competing_death(big: gen.Cohort) -> None:
    c, t = big.clinical, big.truth
    assert abs(t["cif_365d"].mean() - 0.15) < 0.02
    aj = AalenJohansenFitter(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj.fit(c["time_days"], c["event"], event_of_interest=1)
    observed = float(aj.cumulative_density_.loc[:365].iloc[-1, 0])
    assert 0.12 < observed < 0.18
    died_first_year = ((c["event"] == 2) & (c["time_days"] <= 365)).mean()
    assert 0.05 < died_first_year < 0.10  # ~8 %/yr, less those who re-fractured first
    assert (c["time_days"] > 0).all() and c["time_days"].max() <= 730
    assert set(c["event"].unique()) == {0, 1, 2}
    lost = (t["time_censor_days"] < 365).mean()
    assert 0.03 < lost < 0.10  # ~10 % lost at some point in 1-2 years


def test_bone_markers_correlate_as_published(big: gen.Cohort) -> None:
    c, t = big.clinical, big.truth
    r_pdff = np.corrcoef(c["bmd_tscore"], t["pdff_normal_true"])[0, 1]
    r_r2 = np.corrcoef(c["bmd_tscore"], t["r2star_normal_true_15t"])[0, 1]
    assert -0.66 <= r_pdff <= -0.40
    assert 0.35 <= r_r2 <= 0.64
    # MRI carries information beyond DXA: PDFF is far from a function of the T-score
    assert abs(r_pdff) < 0.7
    # osteoporosis about +11 PDFF points over normal bone, R2* lower (1.5 T scale)
    osteo = c["bmd_tscore"] <= -2.5
    normal = c["bmd_tscore"] > -1.0
    assert normal.sum() > 30
    diff = t.loc[osteo, "pdff_normal_true"].mean() - t.loc[normal, "pdff_normal_true"].mean()
    assert 7 < diff < 15
    r2_gap = (
        t.loc[normal, "r2star_normal_true_15t"].mean()
        - t.loc[osteo, "r2star_normal_true_15t"].mean()
    )
    assert 6 < r2_gap < 18


def test_marrow_values_in_the_images_follow_level_and_field_strength(big: gen.Cohort) -> None:
    t = big.truth
    untreated = ~t["treated_levels"].str.contains("T10") & ~t["treated_levels"].str.contains("L5")
    assert (t.loc[untreated, "pdff_mean_L5"] - t.loc[untreated, "pdff_mean_T10"]).mean() > 4
    r2 = t[[f"r2star_mean_{lv}" for lv in ("L3", "L4")]].mean(axis=1)
    ratio = r2[t["field_strength_t"] == 3.0].mean() / r2[t["field_strength_t"] == 1.5].mean()
    assert 1.5 < ratio < 1.9  # ~1.7x at 3 T
    assert (t.loc[t["field_strength_t"] == 1.5, "site"] == "site_1").all()


def test_true_risk_matches_the_generating_model(big: gen.Cohort) -> None:
    t = big.truth
    expected = 1 - np.exp(-gen.baseline_cumhaz(365) * np.exp(t["linear_predictor"]))
    np.testing.assert_allclose(t["risk_365d"], expected, atol=1e-5)
    assert (t["cif_365d"] <= t["risk_365d"] + 1e-6).all()  # competing death lowers incidence


def test_files_and_truth_json(synth_nifti) -> None:
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    clinical = pd.read_csv(synth_nifti / "clinical.csv")
    truth = pd.read_csv(synth_nifti / "truth.csv")
    assert list(manifest.columns) == [
        "patient_id",
        "site",
        "pdff",
        "r2star",
        "labels",
        "treated_levels",
        "fractured_levels",
        "field_strength_t",
        "vendor",
        "scanner",
        "pdff_units",
        "r2star_units",
    ]
    assert (
        manifest["patient_id"].tolist()
        == clinical["patient_id"].tolist()
        == truth["patient_id"].tolist()
    )
    for col in [
        "age",
        "sex",
        "bmi",
        "bmd_tscore",
        "n_fractured",
        "prior_fracture",
        "procedure",
        "cement_volume_ml",
        "cement_leakage",
        "glucocorticoid",
        "anti_osteoporosis",
        "diabetes",
        "index_tl_junction",
        "time_days",
        "event",
    ]:
        assert col in clinical.columns, col
    for rel in manifest[["pdff", "r2star", "labels"]].to_numpy().ravel():
        assert (synth_nifti / rel).is_file(), rel
    info = json.loads((synth_nifti / "truth.json").read_text())
    model = info["refracture_model"]
    assert model["log_hazard_ratios"] == pytest.approx(gen.LOG_HR)
    assert model["weibull_shape"] == gen.WEIBULL_SHAPE
    assert info["n"] == 8
    for lv in TL_LEVELS:
        assert f"pdff_mean_{lv}" in truth.columns and f"r2star_mean_{lv}" in truth.columns


def test_images_have_consistent_geometry_in_nibabel_and_simpleitk(synth_nifti) -> None:
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    shapes = set()
    for _, row in manifest.iterrows():
        for col in ("pdff", "r2star", "labels"):
            path = str(synth_nifti / row[col])
            img = nib.load(path)
            itk = sitk.ReadImage(path)
            lps = np.eye(4)
            lps[:3, :3] = np.array(itk.GetDirection()).reshape(3, 3) * np.array(itk.GetSpacing())
            lps[:3, 3] = itk.GetOrigin()
            np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps, img.affine, atol=1e-4)
            arr_itk = np.transpose(sitk.GetArrayFromImage(itk), (2, 1, 0))
            np.testing.assert_allclose(arr_itk, img.get_fdata(), atol=1e-3)
        shapes.add(img.shape)
        assert nib.aff2axcodes(img.affine) == ("P", "I", "R")  # sagittal acquisition
    assert len(shapes) > 1  # grids differ by site


def test_images_show_vertebrae_with_the_true_marrow_values(synth_nifti) -> None:
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    truth = pd.read_csv(synth_nifti / "truth.csv").set_index("patient_id")
    value_of = {name: v for v, name in VERSE.items()}
    row = manifest.iloc[0]
    pdff = nib.load(synth_nifti / row["pdff"]).get_fdata()
    r2 = nib.load(synth_nifti / row["r2star"]).get_fdata()
    labels = np.asarray(nib.load(synth_nifti / row["labels"]).dataobj)
    assert set(np.unique(labels)) == {0, *(value_of[lv] for lv in TL_LEVELS)}
    fractured = str(row["fractured_levels"]).split(";")
    from scipy.ndimage import binary_erosion

    for lv in TL_LEVELS:
        core = binary_erosion(labels == value_of[lv], iterations=2)
        if lv in fractured or core.sum() < 50:
            continue
        assert abs(pdff[core].mean() - truth.loc[row["patient_id"], f"pdff_mean_{lv}"]) < 1.5
        assert abs(r2[core].mean() - truth.loc[row["patient_id"], f"r2star_mean_{lv}"]) < 4
    treated = str(row["treated_levels"]).split(";")[0]
    assert r2[labels == value_of[treated]].max() > 500  # cement


def test_dicom_series_equal_the_nifti_maps(synth_nifti, synth_dicom) -> None:
    manifest = pd.read_csv(synth_dicom / "manifest.csv")
    nifti = pd.read_csv(synth_nifti / "manifest.csv")
    truth = pd.read_csv(synth_dicom / "truth.csv").set_index("patient_id")
    for i in (0, 5):
        for kind, scale in (("pdff", 10.0), ("r2star", 1.0)):  # PDFF stored per mille
            folder = synth_dicom / manifest.loc[i, kind]
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
            img = reader.Execute()
            arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)) / scale
            ref = nib.load(synth_nifti / nifti.loc[i, kind])
            np.testing.assert_allclose(arr, ref.get_fdata(), atol=1e-4)
            lps = np.eye(4)
            lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
            lps[:3, 3] = img.GetOrigin()
            np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps, ref.affine, atol=1e-3)
            ds = pydicom.dcmread(next(folder.iterdir()))
            scanner = truth.loc[manifest.loc[i, "patient_id"]]
            assert canonical_vendor(ds.Manufacturer) == scanner["vendor"]
            assert ds.ManufacturerModelName == scanner["scanner_model"]
            assert ds.SoftwareVersions == scanner["scanner_software"]
            assert float(ds.MagneticFieldStrength) == scanner["field_strength_t"]
            assert "DeviceSerialNumber" not in ds and "StationName" not in ds
            if kind == "r2star":
                assert "R2*" in ds.SeriesDescription or "R2star" in ds.SeriesDescription
            assert float(ds.RescaleSlope) == (1.0 if kind == "pdff" else 0.1)
            assert ds.pixel_array.dtype == np.int16
            assert str(ds.PatientName) and ds.PatientBirthDate  # a made-up identity to protect
            assert str(ds.PatientName) not in manifest.to_csv()


def test_same_seed_same_cohort_other_seed_differs(tmp_path, synth_nifti) -> None:
    again = tmp_path / "again"
    write_cohort(again, n=8, n_sites=4, seed=3, jobs=1)  # other worker count too
    for name in ("manifest.csv", "clinical.csv", "truth.csv"):
        assert (again / name).read_text() == (synth_nifti / name).read_text()
    for kind in ("pdff", "r2star", "labels"):
        a = np.asarray(nib.load(again / f"images/P0004/{kind}.nii.gz").dataobj)
        b = np.asarray(nib.load(synth_nifti / f"images/P0004/{kind}.nii.gz").dataobj)
        assert np.array_equal(a, b)
    other = gen.simulate_cohort(n=8, n_sites=4, seed=4)
    assert not other.clinical.equals(pd.read_csv(synth_nifti / "clinical.csv"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--n", "0"], "n must be at least 1"),
        (["--n", "3", "--sites", "4"], "more sites (4) than patients (3)"),
        (["--n", "3", "--sites", "1", "--format", "png"], "format must be one of"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, expected) -> None:
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unwritable_folder_exits_2(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        app, ["synth", "--out", str(blocker / "cohort"), "--n", "2", "--sites", "1"]
    )
    assert result.exit_code == 2
    assert "cannot write to the output folder" in result.output
    assert str(blocker) in result.output.replace("\n", "")
