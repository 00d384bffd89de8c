"""Map and label map on the same grid, resampled when overlapping, errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refracture.errors import GeometryError
from refracture.imaging import align_to, load_volume, same_grid
from test_imaging_helpers import affine_for, spine, write_nifti


def _vols(tmp_path: Path, label_affine: np.ndarray, label_shape=None):
    p, r, lab = spine()
    pdff = load_volume(write_nifti(tmp_path / "p.nii.gz", p, slope=0.1), "pdff")
    if label_shape is not None:
        lab = np.zeros(label_shape, dtype=np.int16)
        lab[4:-4, 4:-4, 2:-2] = 21
    labels = load_volume(write_nifti(tmp_path / "l.nii.gz", lab, affine=label_affine), "labels")
    return pdff, labels


def test_identical_grids_pass_untouched(tmp_path: Path) -> None:
    aff = affine_for()
    aff[0, 3] += 2e-4  # float noise from a converter is still the same grid
    pdff, labels = _vols(tmp_path, aff)
    assert same_grid(pdff, labels)
    out, resampled = align_to(labels, pdff, allow_resample=False)
    assert not resampled
    assert out.data is labels.data
    np.testing.assert_array_equal(out.affine, pdff.affine)


def test_overlapping_grid_is_resampled_nearest_neighbour(tmp_path: Path) -> None:
    p, _, lab = spine()
    pdff = load_volume(write_nifti(tmp_path / "p.nii.gz", p, slope=0.1), "pdff")
    # the label map at twice the in-plane resolution, same field of view
    fine_aff = affine_for(spacing=(0.75, 0.75, 4.0), origin=(10.0 - 0.375, -20.0 - 0.375, 30.0))
    fine = np.repeat(np.repeat(lab, 2, axis=0), 2, axis=1)
    labels = load_volume(write_nifti(tmp_path / "l.nii.gz", fine, affine=fine_aff), "labels")
    out, resampled = align_to(labels, pdff, allow_resample=True)
    assert resampled
    assert out.shape == pdff.shape
    np.testing.assert_array_equal(out.affine, pdff.affine)
    assert out.data.dtype == np.int32
    assert set(np.unique(out.data)) == set(np.unique(lab))  # nearest neighbour: no new labels
    assert (out.data == lab).mean() > 0.97

    r2 = load_volume(
        write_nifti(tmp_path / "r.nii.gz", fine.astype(np.float32) * 3, affine=fine_aff), "r2star"
    )
    out_r2, resampled = align_to(r2, pdff, allow_resample=True)
    assert resampled and out_r2.data.dtype == np.float32


def test_other_grid_without_resampling_names_both_geometries(tmp_path: Path) -> None:
    pdff, labels = _vols(tmp_path, affine_for(spacing=(1.0, 1.0, 4.0)), label_shape=(30, 80, 12))
    with pytest.raises(GeometryError) as info:
        align_to(labels, pdff, allow_resample=False, patient_id="P7")
    msg = info.value.one_line()
    assert msg.startswith("patient P7: file ")
    assert "allow_resample" in msg
    assert "shape (30, 80, 12)" in msg and f"shape {pdff.shape}" in msg
    assert "spacing (1, 1, 4) mm" in msg and "spacing (1.5, 1.5, 4) mm" in msg
    assert "orientation RAS" in msg


def test_non_overlapping_grids_are_always_an_error(tmp_path: Path) -> None:
    far = affine_for(origin=(500.0, 500.0, 500.0))
    pdff, labels = _vols(tmp_path, far)
    with pytest.raises(GeometryError, match="do not overlap"):
        align_to(labels, pdff, allow_resample=True)
