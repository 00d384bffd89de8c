"""One read per image: the cache hash and the decoded volume come from the same bytes.

Real NIfTI (gzip and plain, NIfTI-1 and NIfTI-2, scaled and not) and DICOM files are written,
then read both ways: the old way (hash the file, then ``nib.load`` it from disk) and the
single-read way (:func:`read_inputs` then ``load_volume(..., content=...)``). Hashes, voxel
arrays (dtype and bits), affines and metadata must be identical.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from refracture.errors import ImageError
from refracture.features.cache import input_hashes, read_inputs
from refracture.files import hash_file
from refracture.ids import PATIENT_ID
from refracture.imaging import load_volume
from refracture.imaging.io import _Inflater, read_image_bytes
from test_imaging_helpers import affine_for, spine, write_dicom_series, write_nifti


def _old_way(path: Path, kind: str):
    """Hash the file, then decode it from disk with nib.load (the path before single reads)."""
    return hash_file(path), load_volume(path, kind, content_hash=hash_file(path))


def _same(a, b) -> None:
    assert a.data.dtype == b.data.dtype
    assert a.data.shape == b.data.shape
    # bit for bit, NaN included
    assert a.data.tobytes() == b.data.tobytes()
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.metadata == b.metadata
    assert a.content_hash == b.content_hash


@pytest.fixture
def patient(tmp_path: Path) -> dict:
    p, r, lab = spine(noise=0.7)
    p[3, 3, 3] = np.nan  # a non-finite voxel survives both paths alike
    return {
        PATIENT_ID: "P1",
        "site": "A",
        "pdff": str(write_nifti(tmp_path / "pdff.nii.gz", p, slope=0.1)),
        "r2star": str(write_nifti(tmp_path / "r2star.nii", r, dtype=np.float32)),
        "labels": str(write_nifti(tmp_path / "labels.nii.gz", lab, dtype=np.int16)),
    }


def test_single_read_gives_the_old_hashes_and_the_same_arrays(patient: dict) -> None:
    inputs = read_inputs(patient)
    assert inputs.hashes == input_hashes(patient)
    for kind in ("pdff", "r2star", "labels"):
        old_hash, old = _old_way(Path(patient[kind]), kind)
        assert inputs.hashes[kind] == old_hash
        assert inputs.content[kind] == Path(patient[kind]).read_bytes()
        new = load_volume(
            patient[kind], kind, content_hash=inputs.hashes[kind], content=inputs.content[kind]
        )
        _same(new, old)
        # without a hash given, the loader reads once and hashes the same bytes
        _same(load_volume(patient[kind], kind), old)
    assert load_volume(patient["pdff"], "pdff").metadata["rescale_applied_by"] == "nibabel"


def test_nifti2_and_multi_member_gzip_decode_like_nibabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(50, 20, (12, 9, 7)).astype(np.float64)
    n2 = tmp_path / "map2.nii.gz"
    nib.save(nib.Nifti2Image(data, affine_for()), str(n2))
    # Two gzip members (as `cat a.gz b.gz` makes): gzip readers treat them as one stream.
    plain = tmp_path / "plain.nii"
    write_nifti(plain, data.astype(np.float32))
    raw = plain.read_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    for path in (n2, multi):
        _, old = _old_way(path, "pdff")
        new = load_volume(path, "pdff", content=read_image_bytes(path))
        _same(new, old)
        np.testing.assert_array_equal(new.data, np.asarray(nib.load(str(path)).dataobj, "f4"))


def test_inflater_stops_at_what_is_asked(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    inflater = _Inflater(gzip.compress(payload))
    assert inflater.read(348) == payload[:348]
    assert inflater.read(1000) == payload[348:1348]
    assert inflater.read(10 * len(payload)) == payload[1348:]
    assert inflater.read(10) == b"" and inflater.finished
    # cut before the end: whatever was inflated, the stream is not finished
    packed = gzip.compress(payload)
    for cut in (len(packed) // 2, len(packed) - 4):
        truncated = _Inflater(packed[:cut])
        out = truncated.read(10 * len(payload))
        assert payload.startswith(out)
        assert not truncated.finished


def test_broken_files_give_the_same_error_from_bytes_as_from_disk(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "p.nii.gz", np.ones((20, 20, 20), dtype=np.float32) * 7)
    whole = path.read_bytes()
    truncated = tmp_path / "t.nii.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    garbage = tmp_path / "g.nii.gz"
    garbage.write_bytes(b"not a nifti file at all" * 20)
    # the voxels complete but the gzip end (CRC and size) cut off
    no_tail = tmp_path / "n.nii.gz"
    no_tail.write_bytes(whole[:-8])
    for bad in (truncated, garbage):
        with pytest.raises(ImageError) as from_disk:
            load_volume(bad, "pdff", content_hash="x")
        with pytest.raises(ImageError) as from_bytes:
            load_volume(bad, "pdff", content=bad.read_bytes())
        assert str(from_bytes.value) == str(from_disk.value)
    # with only the trailer missing, the bytes are decoded exactly as nibabel does from disk
    try:
        old = load_volume(no_tail, "pdff", content_hash="x")
    except ImageError as err:
        with pytest.raises(ImageError) as again:
            load_volume(no_tail, "pdff", content=no_tail.read_bytes(), content_hash="x")
        assert str(again.value) == str(err)
    else:
        _same(load_volume(no_tail, "pdff", content=no_tail.read_bytes(), content_hash="x"), old)


def test_huge_header_is_refused_from_bytes_without_inflating(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), affine_for())
    img.header.set_data_shape((4000, 4000, 4000))
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(img.header.binaryblock + b"\0" * 4 + bytes(64)))
    with pytest.raises(ImageError, match="more than extraction.max_voxels"):
        load_volume(path, "pdff", content=path.read_bytes())


def test_dicom_folder_is_hashed_as_before_and_loads_alike(tmp_path: Path) -> None:
    p, r, lab = spine()
    row = {
        PATIENT_ID: "P2",
        "site": "A",
        "pdff": str(write_dicom_series(tmp_path / "pdff", p, slope=0.1)),
        "r2star": str(write_dicom_series(tmp_path / "r2star", r)),
        "labels": str(write_nifti(tmp_path / "labels.nii.gz", lab, dtype=np.int16)),
    }
    inputs = read_inputs(row)
    assert "pdff" not in inputs.content and "r2star" not in inputs.content
    for kind in ("pdff", "r2star", "labels"):
        old_hash, old = _old_way(Path(row[kind]), kind)
        assert inputs.hashes[kind] == old_hash
        new = load_volume(
            row[kind], kind, content_hash=inputs.hashes[kind], content=inputs.content.get(kind)
        )
        _same(new, old)
