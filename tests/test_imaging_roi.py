"""Vertebral ROIs: footprint in mm, all-labels-at-once erosion, conventions, unknown labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from refracture.imaging import build_rois, erosion_footprint
from refracture.levels import TOTALSEGMENTATOR, VERSE


def test_footprint_follows_the_voxel_box_distance() -> None:
    fp = erosion_footprint((1.5, 1.5, 4.0), 2.0)
    assert fp.shape == (3, 3, 3)
    assert fp[:, :, 1].all()  # in-plane: the 8 neighbours are within 2 mm
    assert fp[1, 1, 0] and fp[1, 1, 2]  # one slice through-plane (exactly 2 mm)
    assert not fp[0, 1, 0]  # in-plane + through-plane neighbour: 2.14 mm
    assert fp.sum() == 11
    fp = erosion_footprint((1.0, 1.0, 1.0), 2.6)  # two voxel layers, and the diagonal
    assert fp.shape == (7, 7, 7) and fp[3, 3, 0] and fp[0, 3, 3] and fp[2, 2, 3]
    assert erosion_footprint((1.5, 1.5, 4.0), 0.0).sum() == 1  # no erosion
    # thick slices still lose their face neighbour: the edge slice is partial volume
    thick = erosion_footprint((1.5, 1.5, 4.5), 2.0)
    assert thick[1, 1, 0] and thick[1, 1, 2]


def test_erosion_of_all_labels_at_once_equals_per_label_binary_erosion() -> None:
    rng = np.random.default_rng(0)
    lab = np.zeros((30, 50, 14), dtype=np.int32)
    lab[5:25, 2:14, 2:12] = 20
    lab[5:25, 14:28, 2:12] = 21  # touching L1: the shared face is eroded on both sides
    lab[5:25, 32:48, 3:13] = 22
    lab[rng.random(lab.shape) < 0.01] = 0  # holes
    spacing = (1.5, 1.5, 4.0)
    rois = build_rois(lab, spacing, VERSE, 2.0)
    assert rois.levels == ["L1", "L2", "L3"]
    fp = erosion_footprint(spacing, 2.0)
    for li, value in enumerate((20, 21, 22)):
        ref = ndimage.binary_erosion(lab == value, structure=fp, border_value=0)
        got = np.zeros_like(ref)
        sel = rois.level_of == li
        got[tuple(c[sel] for c in rois.coords)] = True
        np.testing.assert_array_equal(got, ref)
        assert rois.n_labelled[li] == (lab == value).sum()
        assert rois.n_eroded[li] == ref.sum()


def test_labels_at_the_image_border_are_eroded_there_too() -> None:
    lab = np.zeros((10, 10, 6), dtype=np.int32)
    lab[:, :, :] = 20  # fills the image
    rois = build_rois(lab, (1.0, 1.0, 1.0), VERSE, 0.5)
    assert rois.n_eroded[0] == 8 * 8 * 4


def test_conventions_and_unknown_labels() -> None:
    lab = np.zeros((20, 40, 10), dtype=np.int32)
    lab[4:16, 2:12, 2:8] = 31  # TotalSegmentator L1
    lab[4:16, 14:24, 2:8] = 30  # L2
    lab[4:16, 26:36, 2:8] = 99  # not a vertebra in either convention
    ts = build_rois(lab, (1.5, 1.5, 4.0), TOTALSEGMENTATOR, 2.0)
    assert ts.levels == ["L1", "L2"] and ts.unknown_labels == [99]
    verse = build_rois(lab, (1.5, 1.5, 4.0), VERSE, 2.0)
    assert verse.levels == [] and verse.unknown_labels == [30, 31, 99]
    custom = build_rois(lab, (1.5, 1.5, 4.0), {31: "L1", 30: "L1", 99: "L2"}, 0.0)
    assert custom.levels == ["L1", "L2"]
    assert list(custom.n_eroded) == [2 * 12 * 10 * 6, 12 * 10 * 6]


@pytest.mark.parametrize("erosion", [0.0, 2.0])
def test_empty_label_map(erosion: float) -> None:
    rois = build_rois(np.zeros((5, 5, 5), dtype=np.int32), (1, 1, 1), VERSE, erosion)
    assert rois.levels == [] and rois.n_voxels == 0
