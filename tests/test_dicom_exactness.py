"""Real vendor DICOM read exactly as dcm2niix reads it (tests/data/dicom_qa, BSD-2 samples of
the dcm2niix QA collections: GE, Siemens classic and XA enhanced, Philips classic and
enhanced, Canon; sagittal and oblique).

For each series: the same stored values voxel for voxel, the same physical values (the
scaling dcm2niix writes as scl_slope/scl_inter, within the float32 precision of that header
field) and the same affine to 1e-4 mm, once both are oriented to RAS+. dcm2niix runs when it is
installed (the ``dcm2niix`` package of the test extra), and its output must then also equal the
stored references; without it the stored references (``ref/``, written by dcm2niix
v1.0.20260724) stand in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from refracture.errors import ImageError
from refracture.imaging import load_volume
from refracture.imaging.readers import read_header

QA = Path(__file__).parent / "data" / "dicom_qa"
DCM2NIIX = shutil.which("dcm2niix")

#: (case folder, selector, dcm2niix output name)
CASES = [
    ("ge_axial", "", "ge_axial_1"),
    ("siemens_sagittal", "", "siemens_sagittal_1"),
    ("siemens_xa_enhanced", "", "siemens_xa_enhanced_2_ph"),
    ("philips_oblique", "", "philips_oblique_1"),
    ("philips_enhanced", "#type=T1+M", "philips_enhanced_1"),
    ("philips_enhanced", "#type=T1+FIELD_MAP", "philips_enhanced_2_fieldmaphz"),
    ("canon_sagittal_oblique", "", "canon_sagittal_oblique_1"),
]


def dcm2niix(folder: Path, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [DCM2NIIX, "-p", "n", "-z", "y", "-b", "n", "-f", f"{name}_%e", "-o", str(out),
         str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dcm2niix's NIfTI of every case: converted now when dcm2niix is installed (and checked
    against the stored ones), else the stored ones."""
    if DCM2NIIX is None:
        return QA / "ref"
    out = tmp_path_factory.mktemp("dcm2niix")
    for case in sorted({c for c, _, _ in CASES}):
        dcm2niix(QA / case, out, case)
    for stored in (QA / "ref").glob("*.nii.gz"):
        fresh, kept = nib.load(out / stored.name), nib.load(stored)
        np.testing.assert_array_equal(fresh.dataobj.get_unscaled(), kept.dataobj.get_unscaled())
        np.testing.assert_allclose(fresh.affine, kept.affine, atol=1e-6)
    return out


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(img.dataobj), img.affine


def assert_same_as_dcm2niix(vol, ref: Path) -> None:
    img = nib.load(ref)
    raw = np.asarray(img.dataobj.get_unscaled())
    slope, inter = img.dataobj.slope, img.dataobj.inter
    ours, ours_affine = canonical(vol.data, vol.affine)
    theirs, their_affine = canonical(raw.reshape(raw.shape[:3]), img.affine)
    assert ours.shape == theirs.shape
    # the stored integers, voxel for voxel
    s, i = vol.metadata["rescale_slope"], vol.metadata["rescale_intercept"]
    np.testing.assert_array_equal(np.rint((ours.astype(np.float64) - i) / s), theirs)
    # the physical values (dcm2niix's scl_slope is float32, ours the header's decimal string)
    expected = theirs * float(slope) + float(inter)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    assert np.abs(ours_affine - their_affine).max() < 1e-4


@pytest.mark.parametrize(("case", "selector", "ref"), CASES, ids=[f"{c}{s}" for c, s, _ in CASES])
def test_vendor_series_reads_as_dcm2niix_reads_it(
    case: str, selector: str, ref: str, references: Path
) -> None:
    vol = load_volume(f"{QA / case}{selector}", "pdff")
    assert_same_as_dcm2niix(vol, references / f"{ref}.nii.gz")
    header = read_header(f"{QA / case}{selector}")  # the header-only read agrees
    assert header.shape == vol.shape
    np.testing.assert_allclose(header.affine, vol.affine)


def test_philips_maps_keep_their_displayed_values_not_the_private_scaling() -> None:
    vol = load_volume(QA / "philips_oblique", "pdff")
    assert vol.metadata["rescale_slope"] == pytest.approx(1.29035409035409)
    assert "private scale slope not applied" in vol.metadata["units_basis"]
    field = load_volume(f"{QA / 'philips_enhanced'}#type=T1+FIELD_MAP", "r2star")
    # per-frame real-world value map in Hz that restates the per-frame rescale
    assert field.metadata["units_stated"] == "Hz"
    magnitude = read_header(f"{QA / 'philips_enhanced'}#type=T1+M")
    assert magnitude.units_stated is None  # Philips' '1' meaning "no units" states no unit


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian]
)
def test_compressed_transfer_syntaxes_read_to_the_same_voxels(
    syntax: pydicom.uid.UID, tmp_path: Path, references: Path
) -> None:
    src = QA / "canon_sagittal_oblique"
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)  # pydicom's encoders: pylibjpeg-openjpeg, pyjpegls, native RLE
        ds.save_as(tmp_path / f"x{f.name[-7:-4]}", enforce_file_format=True)  # opaque names
    vol = load_volume(tmp_path, "pdff")
    assert vol.metadata["transfer_syntax"] == syntax.name
    assert_same_as_dcm2niix(vol, references / "canon_sagittal_oblique_1.nii.gz")
    # dcm2niix's own decoders (OpenJPEG, CharLS) read them the same; it does not inflate
    # deflated files (it says to decompress them first)
    if DCM2NIIX is not None and syntax != DeflatedExplicitVRLittleEndian:
        out = dcm2niix(tmp_path, tmp_path.parent / f"{tmp_path.name}-nii", "c")
        assert_same_as_dcm2niix(vol, out / "c_1.nii.gz")


def test_a_real_4d_series_is_refused_naming_what_to_export(tmp_path: Path) -> None:
    for f in sorted((QA / "canon_sagittal_oblique").iterdir())[:4]:
        shutil.copy(f, tmp_path / f.name)
    for f in (QA / "canon_4d_more").iterdir():
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(ImageError, match="is a 4-D series .2 volumes at each position"):
        load_volume(tmp_path, "pdff")


def test_a_series_mixing_image_types_needs_one_chosen() -> None:
    with pytest.raises(ImageError, match=r"holds 2 image types \(T1\+FIELD_MAP, T1\+M\)"):
        load_volume(QA / "philips_enhanced", "pdff")
