"""Does the label map sit on the vertebrae of the maps? A check for label/map misregistration.

A label map made on another series (or whose header lost its true origin) can be resampled onto
the PDFF grid without complaint and still lie beside the bodies it names: every feature then
measures discs, canal or soft tissue. Whatever the marrow's PDFF and R2*, the borders of
correctly placed vertebral labels run along edges of the maps (marrow against disc, cortex,
canal and soft tissue), so the alignment is judged by where the labels' borders meet the maps'
edges:

1. each map is replaced by the quantiles of its values (so neither its unit nor a monotone
   transform such as T2* = 1000 / R2* nor a few extreme voxels changes its edges); the edge
   strength is the Gaussian gradient magnitude of that (``SIGMA_MM``), scaled by its 90th
   percentile around the labels so PDFF and R2* count alike, and summed over the maps;
2. the fit of a translation ``t`` is the mean edge strength on the label borders moved by ``t``;
3. translations up to ``MAX_SHIFT_MM`` along every axis are searched (coarse grid of
   ``COARSE_MM``, then voxel by voxel around the best one).

The labels are misregistered when some translation of at least ``MIN_SHIFT_MM`` fits the edges
``MIN_GAIN`` times better than the labels as they are. On the synthetic cohort correctly placed
labels fit best within a voxel (gain 1.00-1.05) and labels moved by 10-30 mm in any direction
gain 1.15-9 (scripts/bench_no_loss.py measures both on whole cohorts). A shift of exactly one
vertebral spacing along the spine cannot be seen this way (the labels then sit on the
neighbouring bodies): that is a numbering question for the label QC.

Written here because no imaging library offers this check; SciPy does the filtering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from refracture.imaging.layout import LabelLayout, grow, label_layout

__all__ = [
    "MAX_SHIFT_MM",
    "MIN_GAIN",
    "MIN_SHIFT_MM",
    "LabelFit",
    "label_fit",
]

#: Largest translation searched, per axis (mm).
MAX_SHIFT_MM = 36.0
#: Step of the coarse search (mm); refined voxel by voxel around the best coarse step.
COARSE_MM = 6.0
#: Smoothing of the edge maps (mm).
SIGMA_MM = 1.5
#: A better fit must be at least this much better, and this far away, to count.
MIN_GAIN = 1.15
MIN_SHIFT_MM = 3.0
#: Label border voxels sampled (evenly) for the fit.
N_POINTS = 3000


@dataclass(frozen=True)
class LabelFit:
    """How well the label borders meet the maps' edges.

    ``shift_mm``: the best translation found (world RAS mm, applied to the labels);
    ``gain``: its fit over the fit of the labels as they are (1 when they fit best as they are);
    ``misregistered``: ``gain >= MIN_GAIN`` and ``|shift_mm| >= MIN_SHIFT_MM``.
    """

    shift_mm: tuple[float, float, float]
    gain: float

    @property
    def distance_mm(self) -> float:
        return float(np.linalg.norm(self.shift_mm))

    @property
    def misregistered(self) -> bool:
        return bool(self.gain >= MIN_GAIN and self.distance_mm >= MIN_SHIFT_MM)

    @property
    def message(self) -> str:
        """'' when the labels fit, else a sentence for a QC column and a score row."""
        if not self.misregistered:
            return ""
        return (
            "label map misregistered: its vertebrae meet the maps' edges "
            f"{self.gain:.1f} times better moved by {self.distance_mm:.0f} mm "
            f"({_direction(self.shift_mm)}); check that the labels belong to this scan"
        )

    @property
    def fields(self) -> dict[str, object]:
        """The ``qc_*`` fields."""
        return {
            "qc_misregistration": self.message,
            "qc_label_fit_shift_mm": round(self.distance_mm, 1),
            "qc_label_fit_gain": round(self.gain, 3),
        }


def label_fit(
    labels: np.ndarray,
    maps: Sequence[np.ndarray],
    affine: np.ndarray,
    values: Iterable[int],
    *,
    layout: LabelLayout | None = None,
) -> LabelFit:
    """Judge the alignment of ``labels`` with ``maps`` (all on one grid; module docstring).

    Parameters
    ----------
    labels : (I, J, K) int array
        The label map on the maps' grid.
    maps : sequence of (I, J, K) float arrays
        The PDFF and R2* maps (any units: each edge map is scaled to its own percentile).
    affine : (4, 4) array
        Voxel -> RAS mm of the grid.
    values : iterable of int
        The label values of vertebrae (others are ignored).
    layout : LabelLayout, optional
        The label map's :func:`~refracture.imaging.layout.label_layout`, when already known.
    """
    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    layout = layout if layout is not None else label_layout(labels)
    wanted = [v for v in layout.slices if v in set(values)]
    body_box = layout.union(wanted)
    if body_box is None:
        return LabelFit((0.0, 0.0, 0.0), 1.0)
    reach = np.ceil(MAX_SHIFT_MM / spacing).astype(int) + 1
    # crop to the labels plus the search reach plus the smoothing margin
    margin = reach + np.ceil(3 * SIGMA_MM / spacing).astype(int)
    box = grow(body_box, margin, labels.shape)
    border, near_box, near = _borders(labels, layout, wanted, body_box, box)
    edges = np.zeros(tuple(s.stop - s.start for s in box), dtype=np.float32)
    sigma = np.maximum(SIGMA_MM / spacing, 0.5)
    for m in maps:
        grad = _gradient_magnitude(_ranks(np.asarray(m[box])), sigma)
        scale = float(np.percentile(grad[near_box][near], 90)) if near.any() else 0.0
        if scale > 0:
            edges += grad / scale
    # zeros beyond the crop: a border moved out of the image meets no edge (padded only where
    # the labels moved by the largest shift searched leave the crop)
    limit = np.floor(MAX_SHIFT_MM / spacing).astype(int)
    before = np.maximum(
        limit - np.array([b.start - c.start for b, c in zip(body_box, box, strict=True)]), 0
    )
    after = np.maximum(
        limit - np.array([c.stop - b.stop for b, c in zip(body_box, box, strict=True)]), 0
    )
    padded = np.pad(edges, [(int(a), int(b)) for a, b in zip(before, after, strict=True)]).ravel()
    shape = np.array(edges.shape) + before + after
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    base = (border + before) @ strides

    def fit(shifts: np.ndarray) -> np.ndarray:
        out = np.empty(len(shifts))
        for a in range(0, len(shifts), 128):  # bounded memory: 128 x N_POINTS gathers
            off = shifts[a : a + 128] @ strides
            out[a : a + 128] = padded[base[None, :] + off[:, None]].mean(axis=1)
        return out

    step = np.maximum(np.round(COARSE_MM / spacing).astype(int), 1)
    grid = _grid([np.arange(-lim, lim + 1, s) for lim, s in zip(limit, step, strict=True)])
    coarse = fit(grid)
    best = grid[int(np.argmax(coarse))]
    local = _grid([np.arange(-s, s + 1) for s in step]) + best
    local = local[(np.abs(local) <= limit).all(axis=1)]
    fine = fit(local)
    best = local[int(np.argmax(fine))]
    here = float(fit(np.zeros((1, 3), dtype=int))[0])
    top = max(float(fine.max()), here)
    gain = top / here if here > 0 else (1.0 if top == 0 else float("inf"))
    shift = np.asarray(affine, dtype=float)[:3, :3] @ best if top > here else np.zeros(3)
    return LabelFit(tuple(float(x) for x in shift), float(gain))  # type: ignore[arg-type]


def _borders(
    labels: np.ndarray, layout: LabelLayout, wanted: list[int], body_box: tuple, box: tuple
) -> tuple[np.ndarray, tuple, np.ndarray]:
    """The label border voxels sampled for the fit (indices in ``box``), and the voxels near
    the labels (within two face steps) with the sub-box of ``box`` they are given on.

    Both are found on the labels' own box grown by two voxels: the cross-shaped filters see no
    further, so they are the voxels the whole ``box`` would give, in the same order.
    """
    own = grow(body_box, 2, labels.shape)
    crop = labels[own]
    table = layout.lookup({v: v for v in wanted}, dtype=np.int32)
    ids = table[crop] if table is not None else np.where(np.isin(crop, wanted), crop, 0)
    at = np.array([a.start - b.start for a, b in zip(own, box, strict=True)])
    border = np.argwhere((ids > 0) & _differs_from_a_face_neighbour(ids)) + at
    if len(border) > N_POINTS:
        border = border[np.linspace(0, len(border) - 1, N_POINTS).astype(int)]
    near = _face_dilation(_face_dilation(ids > 0))
    near_box = tuple(slice(a, a + n) for a, n in zip(at, near.shape, strict=True))
    return border, near_box, near


def _face_slices(axis: int, shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(lower, upper): the voxels with a face neighbour along ``axis`` above, and those
    neighbours."""
    lower = tuple(slice(0, n - 1) if a == axis else slice(None) for a, n in enumerate(shape))
    upper = tuple(slice(1, n) if a == axis else slice(None) for a, n in enumerate(shape))
    return lower, upper


def _differs_from_a_face_neighbour(ids: np.ndarray) -> np.ndarray:
    """True where one of the six face neighbours holds another value, beyond the array counting
    as the voxel's own value: ``grey_erosion(ids) != ids | grey_dilation(ids) != ids`` with a
    cross footprint and mode "nearest", one comparison per axis."""
    out = np.zeros(ids.shape, dtype=bool)
    for axis in range(ids.ndim):
        lower, upper = _face_slices(axis, ids.shape)
        diff = ids[lower] != ids[upper]
        out[lower] |= diff
        out[upper] |= diff
    return out


def _face_dilation(mask: np.ndarray) -> np.ndarray:
    """``binary_dilation(mask)`` with a cross structure (outside the array: False)."""
    out = mask.copy()
    for axis in range(mask.ndim):
        lower, upper = _face_slices(axis, mask.shape)
        out[lower] |= mask[upper]
        out[upper] |= mask[lower]
    return out


def _gradient_magnitude(data: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.gaussian_gradient_magnitude(data, sigma)`` of a 3-D float32 array, bit
    for bit, in eight one-dimensional passes instead of nine and three buffers.

    SciPy smooths each axis's derivative along the axes in order, so the derivatives along the
    second and third axes both start with the same smoothing along the first: it is done once
    here. Every pass is SciPy's own (``gaussian_filter1d``, mode "reflect", truncate 4, float32
    intermediates, in place as SciPy's ``gaussian_filter`` does), so every number is the same;
    a test compares the two.
    """

    def g(x: np.ndarray, axis: int, order: int, out: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter1d(x, sigma[axis], axis, order, output=out)

    out, first, other = (np.empty(data.shape, dtype=np.float32) for _ in range(3))
    g(data, 0, 0, first)  # shared by the derivatives along axes 1 and 2
    g(g(g(data, 0, 1, out), 1, 0, out), 2, 0, out)
    np.multiply(out, out, out)
    g(g(first, 1, 1, other), 2, 0, other)
    np.multiply(other, other, other)
    out += other
    g(g(first, 1, 0, first), 2, 1, first)
    np.multiply(first, first, first)
    out += first
    np.sqrt(out, out)
    return out


def _ranks(data: np.ndarray, levels: int = 256) -> np.ndarray:
    """The map's values replaced by their quantile (0-1, in ``levels`` steps; NaN -> median).

    Edges of the ranks do not depend on the map's unit or scale, nor on any monotone transform
    (a T2* map in ms, 1000 / R2*, has the edges of the R2* map), and a few extreme voxels (CSF in
    a T2* map, fit failures) cannot outweigh the rest.

    Maps hold few distinct values (stored as 16-bit integers and scaled), so the values are
    factorised (pandas' hash table, one pass) and the cuts and ranks computed on the distinct
    values with their counts: the same numbers as sorting every voxel, in a fraction of the time.
    """
    data = np.asarray(data)
    order = "F" if data.ndim > 1 and data.strides[0] < data.strides[-1] else "C"
    flat = data.ravel(order=order)  # in memory order (NIfTI arrays are Fortran-ordered): no gather
    codes, uniques = pd.factorize(flat)  # NaN -> code -1
    uniques = np.asarray(uniques, dtype=np.float64)
    counts = np.bincount(codes + 1, minlength=uniques.size + 1)[1:]
    finite = np.isfinite(uniques)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.float32)
    order_of = np.argsort(uniques[finite], kind="stable")
    values, per_value = uniques[finite][order_of], counts[finite][order_of]
    ends = np.cumsum(per_value)  # the sorted finite voxels, value by value
    cuts = _counted_quantiles(values, ends, np.linspace(0.0, 1.0, levels + 1)[1:-1])
    rank_of = np.searchsorted(cuts, uniques)
    if counts.sum() < flat.size or not finite.all():
        n = int(ends[-1])  # the median as np.median takes it: the mean of the middle pair
        middle = values[np.searchsorted(ends, [(n - 1) // 2, n // 2], side="right")]
        fill = np.searchsorted(cuts, np.mean(middle))
        rank_of[~finite] = fill
        rank_of = np.append(rank_of, fill)  # code -1 (NaN) takes the last entry
    table = (rank_of / levels).astype(np.float32)  # per distinct value, then one gather
    return table[codes].reshape(data.shape, order=order)


def _counted_quantiles(values: np.ndarray, ends: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(x, q)`` (method "linear") from the distinct values of ``x`` in ascending
    order and ``ends``, the cumulative counts of each, bit for bit.

    Written out because ``np.quantile`` sorts its input; this is NumPy's own interpolation (its
    ``_lerp``, which takes the upper neighbour's side from t = 0.5 on) on the sorted values,
    the k-th of which is the first value whose cumulative count exceeds k. A test compares it
    with ``np.quantile``.
    """
    n = int(ends[-1])
    virtual = q * (n - 1)
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    t = virtual - below
    a = values[np.searchsorted(ends, below, side="right")]
    b = values[np.searchsorted(ends, above, side="right")]
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _grid(axes: list[np.ndarray]) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int64)


def _direction(shift_mm: Sequence[float]) -> str:
    """'18 mm anterior, 24 mm superior' for a RAS vector (components under 2 mm left out)."""
    names = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))
    parts = [f"{abs(v):.0f} mm {names[a][v > 0]}" for a, v in enumerate(shift_mm) if abs(v) >= 2.0]
    return ", ".join(parts) or "less than 2 mm"
