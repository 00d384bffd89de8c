"""The image readers registry, header-only reading and DICOM series selection (refusals of
multi-echo series and DICOM SEG label maps are in test_index.py, on the synthetic export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from refracture.errors import ImageError
from refracture.imaging import load_volume
from refracture.imaging.dicom.frames import series_hash
from refracture.imaging.metadata import sidecar_for
from refracture.imaging.readers import (
    READERS,
    ImageHeader,
    ImageSource,
    ReadResult,
    read_header,
    register_reader,
)
from test_imaging_helpers import spine, write_dicom_series, write_nifti


class NpyReader:
    """A toy format: a NumPy array with a 2 mm isotropic grid."""

    name = "npy"
    suffixes = (".npy",)

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        return head.startswith(b"\x93NUMPY")

    def read_header(self, source: ImageSource, ctx: dict) -> ImageHeader:
        shape = np.load(source.path, mmap_mode="r").shape
        return ImageHeader(source.path, "npy", shape, np.diag([2.0, 2.0, 2.0, 1.0]))

    def read(self, source: ImageSource, ctx: dict, max_voxels: int, content) -> ReadResult:
        return ReadResult(np.load(source.path), np.diag([2.0, 2.0, 2.0, 1.0]), {"format": "npy"})


def test_a_reader_added_in_one_place_is_used_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "pdff.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    with pytest.raises(ImageError, match="unsupported image format"):
        load_volume(path, "pdff")
    reader = register_reader(NpyReader())
    try:
        vol = load_volume(path, "pdff")
        assert vol.metadata["format"] == "npy" and vol.spacing == (2.0, 2.0, 2.0)
        assert read_header(path).shape == (2, 3, 4)
        assert sidecar_for(path).name == "pdff.json"  # the reader's suffix names the sidecar
    finally:
        READERS.remove(reader)


def test_the_header_only_read_agrees_with_the_volume(tmp_path: Path) -> None:
    p, _, _ = spine()
    for location in (write_nifti(tmp_path / "p.nii.gz", p), write_dicom_series(tmp_path / "d", p)):
        header, vol = read_header(location), load_volume(location, "pdff")
        assert header.shape == vol.shape and header.spacing == pytest.approx(vol.spacing)
        np.testing.assert_allclose(header.affine, vol.affine, atol=1e-6)
    assert read_header(tmp_path / "d").modality == "MR"


def test_several_series_in_one_folder_are_chosen_by_their_hash(tmp_path: Path) -> None:
    p, r, _ = spine()
    write_dicom_series(tmp_path / "study", p, description="FatFrac")
    for f in write_dicom_series(tmp_path / "other", r, description="R2*").iterdir():
        f.rename(tmp_path / "study" / f"r{f.name}")
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SeriesDescription:
            pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID
            for f in (tmp_path / "study").iterdir()}  # fmt: skip
    with pytest.raises(ImageError, match="holds 2 series .* #series="):
        load_volume(tmp_path / "study", "pdff")
    for description, data in (("FatFrac", p), ("R2*", r)):
        vol = load_volume(f"{tmp_path / 'study'}#series={series_hash(uids[description])}", "pdff")
        np.testing.assert_allclose(vol.data, data, atol=1e-3)
        assert vol.metadata["series_description"] == description
    with pytest.raises(ImageError, match="no series with hash 0000000000000000"):
        load_volume(f"{tmp_path / 'study'}#series=0000000000000000", "pdff")


def test_the_lean_header_reader_gives_pydicoms_values(tmp_path: Path) -> None:
    """Every element index reads, on every real vendor sample (private sequences of undefined
    length, enhanced objects), an implicit VR copy, and compressed copies; a deflated file is
    left to pydicom."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

    from refracture.imaging.dicom.lean import read_elements
    from refracture.imaging.dicom.scan import _FAST_TAGS, _WANTED, _pydicom_getter

    qa = Path(__file__).parent / "data" / "dicom_qa"
    files = sorted(p for p in qa.rglob("*.dcm"))
    for n, (syntax, src) in enumerate([(ImplicitVRLittleEndian, files[0]),
                                       (RLELossless, files[-1])]):  # fmt: skip
        ds = pydicom.dcmread(src)
        if syntax.is_compressed:
            ds.compress(syntax)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(tmp_path / f"copy{n}.dcm", enforce_file_format=True)
        files.append(tmp_path / f"copy{n}.dcm")
    checked = 0
    for f in files:
        raw = read_elements(f, _WANTED)
        assert raw is not None, f
        theirs = _pydicom_getter(pydicom.dcmread(f, stop_before_pixels=True))
        for keyword, tag in _FAST_TAGS.items():
            if keyword == "Rows":
                assert (tag in raw) == theirs.has(keyword)
                continue
            mine = raw.get(tag, b"").decode("utf-8", "replace").strip("\x00 ").strip()
            assert mine == theirs(keyword), (f.name, keyword)
            checked += bool(mine)
    assert checked > 300
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert read_elements(tmp_path / "deflated.dcm", _WANTED) is None
