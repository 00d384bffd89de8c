"""The extraction's fast paths equal the plain library formulations they replace, bit for bit:
the registration check's gradient magnitude (SciPy's) and label borders (grey erosion and
dilation), the grouped statistics' sort (``np.lexsort``), the label layout (``find_objects``
and ``np.unique`` over the whole volume) and the ROIs built from it."""

from __future__ import annotations

import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

import refracture.imaging.label_fit  # noqa: F401 - the module (the package exports the function)
from refracture.imaging.layout import label_layout
from refracture.imaging.morphometry import level_boxes
from refracture.imaging.roi import build_rois, erosion_footprint
from refracture.imaging.stats import _sorted_by_group
from refracture.levels import VERSE

fit = sys.modules["refracture.imaging.label_fit"]
CROSS = ndimage.generate_binary_structure(3, 1)
shapes = st.tuples(*[st.integers(1, 9)] * 3)


@settings(max_examples=40, deadline=None)
@given(
    data=hnp.arrays(np.float32, shapes, elements=st.floats(0, 1, width=32)),
    sigma=st.tuples(*[st.sampled_from([0.5, 0.75, 1.0, 1.7])] * 3),
)
def test_gradient_magnitude_is_scipys(data, sigma) -> None:
    sigma = np.array(sigma)
    expected = ndimage.gaussian_gradient_magnitude(data, sigma)
    assert np.array_equal(fit._gradient_magnitude(data, sigma), expected)
    # the ranks of a NIfTI map come in Fortran order: the same numbers
    assert np.array_equal(fit._gradient_magnitude(np.asfortranarray(data), sigma), expected)


@settings(max_examples=60, deadline=None)
@given(ids=hnp.arrays(np.int32, shapes, elements=st.integers(0, 3)))
def test_label_borders_and_near_mask_are_scipys(ids) -> None:
    inner = ndimage.grey_erosion(ids, footprint=CROSS, mode="nearest")
    outer = ndimage.grey_dilation(ids, footprint=CROSS, mode="nearest")
    assert np.array_equal(fit._differs_from_a_face_neighbour(ids), (inner != ids) | (outer != ids))
    near = ndimage.binary_dilation(ids > 0, structure=CROSS, iterations=2)
    assert np.array_equal(fit._face_dilation(fit._face_dilation(ids > 0)), near)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.0, 7.25, 3.0]), max_size=200),
    n_groups=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_sort_by_group_is_lexsorts(values, n_groups, seed) -> None:
    v = np.array(values, dtype=np.float64)
    g = np.random.default_rng(seed).integers(0, n_groups, v.size)
    order = np.lexsort((v, g))
    got_v, got_g, counts = _sorted_by_group(v, g, n_groups)
    assert np.array_equal(got_v, v[order]) and np.array_equal(got_g, g[order])
    assert np.array_equal(np.signbit(got_v), np.signbit(v[order]))  # -0 and 0 in lexsort order
    assert np.array_equal(counts, np.bincount(g, minlength=n_groups))


@settings(max_examples=40, deadline=None)
@given(labels=hnp.arrays(np.int32, shapes, elements=st.sampled_from([0, 0, 0, 20, 21, 22, 99])))
def test_layout_boxes_and_rois_equal_whole_volume_passes(labels) -> None:
    layout = label_layout(labels)
    found = ndimage.find_objects(labels)
    assert layout.slices == {v + 1: s for v, s in enumerate(found) if s is not None}
    assert level_boxes(labels, VERSE, layout) == level_boxes(labels, VERSE)
    for erosion in (0.0, 2.0):
        fast = build_rois(labels, (1.5, 1.5, 4.0), VERSE, erosion, layout=layout)
        # the plain formulation: np.unique over the whole volume, grey erosion and dilation
        values = [int(v) for v in np.unique(labels) if v != 0]
        assert fast.unknown_labels == [v for v in values if v not in VERSE]
        levels = fast.levels
        ids = np.zeros(labels.shape, np.int16)
        for v in values:
            ids[labels == v] = levels.index(VERSE[v]) + 1 if v in VERSE else len(levels) + 1
        fp = erosion_footprint((1.5, 1.5, 4.0), erosion)
        keep = (ids > 0) & (ids <= len(levels))
        if fp.size > 1:
            mn = ndimage.grey_erosion(ids, footprint=fp, mode="constant", cval=0)
            mx = ndimage.grey_dilation(ids, footprint=fp, mode="constant", cval=0)
            keep &= (mn == ids) & (mx == ids)
        assert np.array_equal(np.stack(fast.coords), np.stack(np.nonzero(keep)))
        assert np.array_equal(fast.level_of, ids[keep] - 1)
