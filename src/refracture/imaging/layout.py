"""Where the labels of a label map lie: one pass per patient shared by every later step.

The label QC, the ROIs, the morphometry and the registration check all need the bounding box
of each label value. Finding them once, on the box of the non-zero voxels (a few percent of a
spine volume), replaces a full-volume pass per step (``np.unique``, ``np.isin``,
``scipy.ndimage.find_objects`` over 1.5 M voxels each): :func:`label_layout` projects the
non-zero mask on the axes for the box and runs ``find_objects`` on the box only.

Label values are mapped to other values (level ids, "is a vertebra") through lookup tables
indexed by the label value (:meth:`LabelLayout.lookup`), one gather instead of a sort.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LabelLayout", "Box", "grow", "label_layout", "label_mask", "level_boxes"]

Box = tuple[slice, slice, slice]

# Label values up to this get a bounding box from one find_objects pass (and a lookup table);
# larger ones (rare) one pass per value.
_DIRECT_MAX = 100_000


@dataclass(frozen=True)
class LabelLayout:
    """The bounding boxes of a label map's values.

    ``box``: the box of the non-zero voxels (None when there is none); ``slices``: every
    positive label value present -> its box, in whole-array coordinates, ascending values;
    ``min_value`` / ``max_value``: the extremes of the values inside ``box``.
    """

    shape: tuple[int, int, int]
    box: Box | None
    slices: dict[int, Box]
    min_value: int
    max_value: int

    def union(self, values: object) -> Box | None:
        """The box holding every voxel whose value is one of ``values`` (None if none is)."""
        wanted = [self.slices[v] for v in self.slices if v in values]  # type: ignore[operator]
        if not wanted:
            return None
        return tuple(  # type: ignore[return-value]
            slice(min(b[a].start for b in wanted), max(b[a].stop for b in wanted)) for a in range(3)
        )

    def lookup(self, mapping: Mapping[int, int], dtype: type = np.int16) -> np.ndarray | None:
        """A table ``t`` with ``t[v] = mapping.get(v, 0)`` for every value of the labels, for
        ``t[labels]``; None when a value is negative or too large for a table."""
        if self.min_value < 0 or self.max_value > _DIRECT_MAX:
            return None
        table = np.zeros(self.max_value + 1, dtype=dtype)
        for value, out in mapping.items():
            if 0 <= value <= self.max_value:
                table[value] = out
        return table


def grow(box: Box, pad: object, shape: tuple[int, ...]) -> Box:
    """``box`` grown by ``pad`` voxels (one number or one per axis), clipped to ``shape``."""
    pads = np.broadcast_to(np.asarray(pad, dtype=int), (3,))
    return tuple(  # type: ignore[return-value]
        slice(max(s.start - int(p), 0), min(s.stop + int(p), n))
        for s, p, n in zip(box, pads, shape, strict=True)
    )


def label_layout(data: np.ndarray) -> LabelLayout:
    """The :class:`LabelLayout` of an integer label array (module docstring)."""
    shape = tuple(int(s) for s in data.shape)
    nz = data != 0
    plane = nz.any(axis=2)
    i = np.flatnonzero(plane.any(axis=1))
    if i.size == 0:
        return LabelLayout(shape, None, {}, 0, 0)  # type: ignore[arg-type]
    j = np.flatnonzero(plane.any(axis=0))
    k = np.flatnonzero(nz[i[0] : i[-1] + 1, j[0] : j[-1] + 1].any(axis=(0, 1)))
    box = tuple(slice(int(a[0]), int(a[-1]) + 1) for a in (i, j, k))
    crop = data[box]
    lo, hi = int(crop.min()), int(crop.max())
    if hi <= 0:
        found: dict[int, tuple] = {}
    elif hi <= _DIRECT_MAX:  # one pass: a box per value
        ids = np.clip(crop, 0, None) if lo < 0 else crop
        objects = ndimage.find_objects(ids.astype(np.int32, copy=False))
        found = {v + 1: s for v, s in enumerate(objects) if s is not None}
    else:  # huge label values: one pass per value
        values = np.unique(crop)
        found = {
            int(v): ndimage.find_objects((crop == v).astype(np.uint8))[0] for v in values if v > 0
        }
    slices = {
        v: tuple(slice(b.start + s.start, b.stop + s.start) for b, s in zip(sl, box, strict=True))
        for v, sl in found.items()
    }
    return LabelLayout(shape, box, slices, lo, hi)  # type: ignore[arg-type]


def level_boxes(
    data: np.ndarray, conv: Mapping[int, str], layout: LabelLayout | None = None
) -> dict[str, tuple[list[int], tuple]]:
    """Level -> (its label values, bounding box) for the levels present (``layout``: the label
    map's :func:`label_layout`, computed when not given)."""
    layout = layout if layout is not None else label_layout(data)
    by_level: dict[str, list[int]] = {}
    boxes: dict[str, list[tuple]] = {}
    for v, box in layout.slices.items():
        level = conv.get(v)
        if level is not None:
            by_level.setdefault(level, []).append(v)
            boxes.setdefault(level, []).append(box)
    out = {}
    for level, vals in by_level.items():
        bs = boxes[level]
        box = tuple(
            slice(min(b[a].start for b in bs), max(b[a].stop for b in bs)) for a in range(3)
        )
        out[level] = (vals, box)
    return out


def label_mask(crop: np.ndarray, values: list[int]) -> np.ndarray:
    """``np.isin(crop, values)``, one comparison when there is one value (the usual case)."""
    return crop == values[0] if len(values) == 1 else np.isin(crop, values)
