"""Bringing a label map or R2* map onto the PDFF map's grid.

One reference grid per patient: the PDFF map's. Identical grids pass untouched; grids that
overlap in physical space are resampled with SimpleITK when the config allows it (labels
nearest-neighbour, maps linear); anything else is a GeometryError naming both grids.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from refracture.errors import GeometryError
from refracture.imaging.volume import Volume, array_from_sitk, to_sitk

#: Affines within this (mm, elementwise) describe the same grid.
AFFINE_TOLERANCE_MM = 1e-3


def same_grid(a: Volume, b: Volume, atol: float = AFFINE_TOLERANCE_MM) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, rtol=0, atol=atol))


def world_bounds(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned RAS bounding box (mm) of the voxel boxes of a volume."""
    corners = np.array(
        [
            [c * (s - 1) + (1 if c else -1) * 0.5 for c, s in zip(corner, vol.shape, strict=True)]
            for corner in itertools.product((0, 1), repeat=3)
        ]
    )
    world = corners @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def overlap_fraction(moving: Volume, ref: Volume) -> float:
    """Fraction of the reference bounding box covered by the moving one (0 = disjoint)."""
    lo_a, hi_a = world_bounds(moving)
    lo_b, hi_b = world_bounds(ref)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None)
    return float(np.prod(inter) / np.prod(hi_b - lo_b))


def align_to(
    moving: Volume,
    ref: Volume,
    *,
    allow_resample: bool,
    patient_id: str | None = None,
) -> tuple[Volume, bool]:
    """``moving`` on ``ref``'s grid, and whether it had to be resampled.

    Label maps are resampled nearest-neighbour, maps linearly; voxels of ``ref`` outside
    ``moving`` become 0 (labels) or NaN (maps), and are then counted as non-finite.
    """
    if same_grid(moving, ref):
        if moving.affine is not ref.affine:
            moving = moving.with_data(moving.data, affine=ref.affine)
        return moving, False
    what = "label map" if moving.kind == "labels" else f"{moving.kind} map"
    both = f"{what}: {moving.describe()}; pdff map: {ref.describe()}"
    if overlap_fraction(moving, ref) <= 0:
        raise GeometryError(
            f"the {what} and the pdff map do not overlap in space ({both})",
            patient_id=patient_id,
            file=moving.path,
        )
    if not allow_resample:
        raise GeometryError(
            f"the {what} is on another grid than the pdff map ({both}); resample it, or set "
            "extraction.allow_resample: true",
            patient_id=patient_id,
            file=moving.path,
        )
    if moving.kind == "labels":
        src = to_sitk(moving.data, moving.affine)
        interp, default = sitk.sitkNearestNeighbor, 0
    else:
        src = to_sitk(moving.data.astype(np.float32), moving.affine)
        interp, default = sitk.sitkLinear, float("nan")
    target = to_sitk(np.zeros(ref.shape, dtype=np.uint8), ref.affine)
    out = sitk.Resample(src, target, sitk.Transform(), interp, default, src.GetPixelID())
    data = array_from_sitk(out)
    # Keep the reference affine exactly (the SimpleITK round trip rounds it slightly).
    return moving.with_data(np.ascontiguousarray(data), affine=ref.affine), True
