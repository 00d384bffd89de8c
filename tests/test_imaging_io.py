"""Loading maps: DICOM vs NIfTI on real MR, rescaling, NRRD/MHA, and every bad-file error."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from refracture.errors import ImageError
from refracture.imaging import load_volume
from refracture.imaging.volume import METADATA_KEYS, to_sitk
from test_imaging_helpers import (
    PATIENT_ID,
    PATIENT_NAME,
    affine_for,
    spine,
    write_dicom_series,
    write_nifti,
)

IBSI_MR = Path(__file__).parent / "data" / "ibsi_mr_t1"


@pytest.mark.parametrize("case", ["STS_002", "STS_008", "STS_025"])
def test_real_dicom_series_loads_to_the_grid_and_values_of_its_nifti(case: str) -> None:
    from_dicom = load_volume(IBSI_MR / case / "dicom", "pdff")
    from_nifti = load_volume(IBSI_MR / case / "image.nii.gz", "pdff")
    assert from_dicom.shape == from_nifti.shape
    np.testing.assert_array_equal(from_dicom.data, from_nifti.data)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-3)
    assert from_dicom.orientation == from_nifti.orientation
    assert from_dicom.spacing == pytest.approx(from_nifti.spacing, abs=1e-3)
    assert from_dicom.metadata["format"] == "dicom"
    assert from_dicom.content_hash != from_nifti.content_hash
    # Nothing identifying: the volume's metadata never holds the patient's name or IDs.
    name = str(pydicom.dcmread(next((IBSI_MR / case / "dicom").iterdir())).PatientName)
    assert set(from_dicom.metadata) <= set(METADATA_KEYS)
    header = pydicom.dcmread(next((IBSI_MR / case / "dicom").iterdir()), stop_before_pixels=True)
    for uid in (header.SeriesInstanceUID, header.StudyInstanceUID, header.SOPInstanceUID):
        assert str(uid) not in repr(from_dicom.metadata)
    # The series' identity is kept apart, in memory, for writing DICOM objects about it.
    assert from_dicom.source.series_uid == header.SeriesInstanceUID
    assert str(header.SeriesInstanceUID) not in repr(from_dicom)
    assert name == case  # the IBSI data set's PatientName is the case ID
    assert "UID" not in repr(from_dicom.metadata)


@pytest.mark.parametrize(("slope", "intercept"), [(0.1, 0.0), (0.1, 5.0), (2.0, -100.0)])
def test_dicom_rescale_slope_and_intercept_are_applied_exactly_once(
    tmp_path: Path, slope: float, intercept: float
) -> None:
    p, _, _ = spine(noise=3.0)
    values = np.round((p - intercept) / slope) * slope + intercept  # representable values
    folder = write_dicom_series(tmp_path / "s", values, slope=slope, intercept=intercept)
    vol = load_volume(folder, "r2star")
    np.testing.assert_allclose(vol.data, values, atol=1e-4 * max(1, abs(slope)))
    np.testing.assert_allclose(vol.affine, affine_for(), atol=1e-6)
    assert vol.metadata["rescale_slope"] == slope
    assert vol.metadata["rescale_applied_by"] in ("itk", "refracture")
    assert vol.metadata["vendor"] == "GE MEDICAL SYSTEMS"
    assert vol.metadata["field_strength_t"] == 3.0
    assert vol.metadata["series_description"] == "FatFrac"
    text = repr(vol.metadata)
    for secret in (PATIENT_NAME, PATIENT_ID, "19470312", "Elsewhere"):
        assert secret not in text


@pytest.mark.parametrize("handedness", [1, -1])
def test_dicom_matches_nifti_of_the_same_oblique_volume(tmp_path: Path, handedness: int) -> None:
    p, _, _ = spine(noise=2.0)
    # a sagittal, slightly rotated grid (like the synthetic cohort's, with a tilt); with
    # handedness -1 the slices run against the DICOM slice normal and the loader stacks
    # them the other way: same voxels in space, so compare in canonical orientation.
    theta = np.deg2rad(10)
    rot = np.array(
        [[0, 0, handedness], [np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot * [1.5, 1.5, 4.0]
    aff[:3, 3] = [20.0, -60.0, 15.0]
    values = np.round(p * 10) / 10
    write_dicom_series(tmp_path / "d", values, affine=aff, slope=0.1)
    write_nifti(tmp_path / "n.nii.gz", values, affine=aff, slope=0.1)
    d = load_volume(tmp_path / "d", "pdff")
    n = load_volume(tmp_path / "n.nii.gz", "pdff")
    if handedness == 1:
        np.testing.assert_allclose(d.affine, n.affine, atol=1e-4)
    cd = nib.as_closest_canonical(nib.Nifti1Image(d.data, d.affine))
    cn = nib.as_closest_canonical(nib.Nifti1Image(n.data, n.affine))
    np.testing.assert_allclose(cd.get_fdata(), cn.get_fdata(), atol=1e-4)
    np.testing.assert_allclose(cd.affine, cn.affine, atol=1e-4)
    assert n.metadata["rescale_applied_by"] == "nibabel"


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_load_like_nifti(tmp_path: Path, suffix: str) -> None:
    nifti = load_volume(IBSI_MR / "STS_008" / "image.nii.gz", "pdff")
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(to_sitk(nifti.data, nifti.affine), str(path))
    vol = load_volume(path, "pdff")
    np.testing.assert_array_equal(vol.data, nifti.data)
    np.testing.assert_allclose(vol.affine, nifti.affine, atol=1e-4)
    labels = load_volume(IBSI_MR / "STS_008" / "mask.nii.gz", "labels")
    assert labels.data.dtype == np.int32 and set(np.unique(labels.data)) <= {0, 1}


def test_trailing_singleton_fourth_dimension_is_squeezed(tmp_path: Path) -> None:
    p, _, _ = spine()
    path = write_nifti(tmp_path / "m.nii.gz", p[..., None], dtype=np.float32)
    assert load_volume(path, "pdff").shape == p.shape


# --- errors ------------------------------------------------------------------------------


def _raises(match: str, path: Path, kind: str = "pdff", **kw) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        load_volume(path, kind, patient_id="P9", **kw)
    err = info.value
    assert err.patient_id == "P9"
    assert err.file == str(path)
    line = err.one_line()
    assert line.startswith("patient P9: file ") and "\n" not in line
    return err


def test_missing_empty_truncated_and_corrupt_files(tmp_path: Path) -> None:
    _raises("not found", tmp_path / "nope.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    _raises("empty", empty)
    p, _, _ = spine()
    good = write_nifti(tmp_path / "good.nii.gz", p, dtype=np.float32)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _raises("cannot be read|not a readable", truncated)
    raw = write_nifti(tmp_path / "raw.nii", p, dtype=np.float32)
    short = tmp_path / "short.nii"
    short.write_bytes(raw.read_bytes()[:1000])
    _raises("cannot be read|not a readable", short)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(np.random.default_rng(0).bytes(5000)))
    _raises("not a readable NIfTI", garbage)
    notgz = tmp_path / "notgz.nii.gz"
    notgz.write_bytes(b"hello, I am not an image" * 20)
    _raises("not a readable NIfTI", notgz)
    bad_mha = tmp_path / "bad.mha"
    bad_mha.write_bytes(b"ObjectType = Image\nNDims = 3\nbroken")
    _raises("not a readable image header|cannot be read", bad_mha)
    other = tmp_path / "map.png"
    other.write_bytes(b"x")
    _raises("unsupported image format", other)


def test_2d_and_4d_maps_are_refused(tmp_path: Path) -> None:
    p, _, _ = spine()
    _raises("2-D", write_nifti(tmp_path / "flat.nii.gz", p[:, :, 0], dtype=np.float32))
    _raises("2-D", write_nifti(tmp_path / "one.nii.gz", p[:, :, :1], dtype=np.float32))
    four = np.stack([p, p, p], axis=-1)
    _raises("4-D", write_nifti(tmp_path / "four.nii.gz", four, dtype=np.float32))


def test_huge_header_is_refused_before_reading(tmp_path: Path) -> None:
    # A 20-byte-data file whose header claims 4 billion voxels: must not try to allocate.
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 1000))
    hdr.set_data_dtype(np.float32)
    path = tmp_path / "bomb.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 20)
    err = _raises("more than extraction.max_voxels", path)
    assert "4,000,000,000" in err.message
    # the same check with a configured limit, for every reader
    p, _, _ = spine()
    _raises("max_voxels", write_nifti(tmp_path / "n.nii.gz", p, dtype=np.float32), max_voxels=100)
    mha = tmp_path / "m.mha"
    sitk.WriteImage(to_sitk(p.astype(np.float32), affine_for()), str(mha))
    _raises("max_voxels", mha, max_voxels=100)
    _raises("max_voxels", write_dicom_series(tmp_path / "d", p), max_voxels=100)


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    p, r, _ = spine()
    write_dicom_series(tmp_path / "d", p, description="FatFrac")
    # a second series with other file names in the same folder
    other = write_dicom_series(tmp_path / "other", r, description="R2*")
    for f in other.iterdir():
        f.rename(tmp_path / "d" / f"X{f.name}")
    err = _raises("holds 2 series", tmp_path / "d")
    assert "'FatFrac'" in err.message and "'R2*'" in err.message


def test_dicom_folder_with_missing_slices(tmp_path: Path) -> None:
    p, _, _ = spine()
    folder = write_dicom_series(tmp_path / "d", p, skip_slices=(5,))
    _raises("not evenly spaced.*missing slices", folder)


def test_dicom_folder_with_duplicate_positions(tmp_path: Path) -> None:
    p, _, _ = spine()
    folder = write_dicom_series(tmp_path / "d", p)
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    write_dicom_series(tmp_path / "echo2", p, series_uid=uid)
    for f in (tmp_path / "echo2").iterdir():
        f.rename(folder / f"E{f.name}")
    _raises("share a position", folder)


def test_corrupt_and_truncated_dicom(tmp_path: Path) -> None:
    p, _, _ = spine()
    folder = write_dicom_series(tmp_path / "d", p)
    victim = sorted(folder.iterdir())[3]
    victim.write_bytes(b"\0" * 50)
    _raises("not a readable DICOM file", folder)

    folder2 = write_dicom_series(tmp_path / "d2", p)
    victim = sorted(folder2.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-200])  # pixel data cut short
    _raises("pixel data cannot be read|pixel", folder2)

    empty = tmp_path / "empty_dir"
    empty.mkdir()
    _raises("DICOM folder is empty", empty)


def test_single_slice_dicom_is_2d(tmp_path: Path) -> None:
    p, _, _ = spine()
    folder = write_dicom_series(tmp_path / "d", p[:, :, :1])
    _raises("2-D", folder)


def test_label_maps_must_be_integer(tmp_path: Path) -> None:
    _, _, lab = spine()
    path = write_nifti(tmp_path / "l.nii.gz", lab + 0.5, dtype=np.float32)
    _raises("non-integer", path, kind="labels")
    ok = write_nifti(tmp_path / "ok.nii.gz", lab.astype(np.float32), dtype=np.float32)
    vol = load_volume(ok, "labels")
    assert vol.data.dtype == np.int32
    np.testing.assert_array_equal(vol.data, lab)


def test_unknown_kind_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_volume(tmp_path, "t1")  # type: ignore[arg-type]
