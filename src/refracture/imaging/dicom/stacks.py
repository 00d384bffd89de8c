"""Frames to one 3-D stack: the checks that it is one volume, and its voxel-to-world affine.

Frames are sorted along the slice normal (the cross product of the row and column cosines) by
the projection of their ImagePositionPatient, as PS3.3 C.7.6.2.1.1 defines the patient
coordinate system; the affine's third column is the step between the first and the last frame's
positions divided by the number of steps, so sheared (gantry-tilted) stacks keep their true
geometry. Frames sharing a position are told apart: several echoes (multi-echo source images),
several volumes (time points, repetitions, diffusion weightings: a 4-D series) or plain
duplicates, each refused with what to export instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from refracture.errors import ImageError
from refracture.imaging.dicom.frames import Frame

__all__ = ["Stack", "build_stack", "SLICE_GAP_TOLERANCE"]

# Relative tolerance on the spacing between consecutive slices: more than this and a slice is
# missing (or the frames are from two stacks).
SLICE_GAP_TOLERANCE = 0.05
_ORIENTATION_TOLERANCE = 1e-4
# RAS <-> LPS: flip the sign of the first two world axes.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Stack:
    """Frames in slice order, the volume's shape (columns, rows, slices) and RAS+ affine for
    arrays indexed (i, j, k) = (column, row, slice)."""

    frames: list[Frame]
    shape: tuple[int, int, int]
    affine: np.ndarray


def build_stack(frames: list[Frame], ctx: dict[str, Any]) -> Stack:
    """Check that ``frames`` are one 3-D volume and sort them; refuse with a one-line reason."""
    if not frames:
        raise ImageError("the DICOM series holds no image", **ctx)
    if any(f.position is None or f.orientation is None for f in frames):
        raise ImageError("a DICOM file has no ImagePositionPatient/ImageOrientationPatient", **ctx)
    if len({(f.rows, f.cols) for f in frames}) > 1:
        raise ImageError("the DICOM slices differ in size (Rows/Columns)", **ctx)
    orient = np.asarray(frames[0].orientation, dtype=np.float64)
    for f in frames[1:]:
        if not np.allclose(np.asarray(f.orientation), orient, atol=_ORIENTATION_TOLERANCE):
            raise ImageError("the DICOM slices differ in orientation", **ctx)
    spacings = {f.pixel_spacing for f in frames}
    if None in spacings:
        raise ImageError("a DICOM image has no PixelSpacing", **ctx)
    if len(spacings) > 1:
        raise ImageError("the DICOM slices differ in pixel spacing", **ctx)

    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    where = np.array([np.dot(normal, f.position) for f in frames])  # type: ignore[arg-type]
    _check_unique_positions(frames, where, ctx)
    order = np.argsort(where, kind="stable")
    frames = [frames[i] for i in order]
    where = where[order]
    if len(frames) < 2:
        raise ImageError(
            f"is 2-D (shape ({frames[0].cols}, {frames[0].rows})); a 3-D volume is expected", **ctx
        )
    _check_even_spacing(np.diff(where), ctx)

    row_spacing, col_spacing = frames[0].pixel_spacing  # type: ignore[misc]
    first = np.asarray(frames[0].position, dtype=np.float64)
    last = np.asarray(frames[-1].position, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # i: along a row, from one column to the next
    lps[:3, 1] = col_dir * row_spacing  # j: down a column, from one row to the next
    lps[:3, 2] = (last - first) / (len(frames) - 1)
    lps[:3, 3] = first
    shape = (frames[0].cols, frames[0].rows, len(frames))
    return Stack(frames, shape, _LPS @ lps)


def _check_unique_positions(frames: list[Frame], where: np.ndarray, ctx: dict[str, Any]) -> None:
    """Refuse frames sharing a position, saying whether they are echoes or volumes."""
    at: dict[float, list[Frame]] = defaultdict(list)
    for f, w in zip(frames, where, strict=True):
        at[round(float(w), 3)].append(f)
    crowded = [group for group in at.values() if len(group) > 1]
    if not crowded:
        return
    group = max(crowded, key=len)
    echoes = {(f.echo_number, None if f.echo_time is None else round(f.echo_time, 3))
              for f in group}  # fmt: skip
    volumes = {f.temporal for f in group}
    if len(echoes) > 1:
        raise ImageError(
            f"holds multi-echo source images ({len(echoes)} echoes at each position); export "
            "the fat fraction (PDFF) and R2* (or T2*) map series the scanner computed from them "
            "instead",
            **ctx,
        )
    if len(volumes) > 1:
        raise ImageError(
            f"is a 4-D series ({len(volumes)} volumes at each position: time points, "
            "repetitions or diffusion weightings); export the one 3-D map as its own series",
            **ctx,
        )
    raise ImageError(
        "two DICOM slices share a position (several echoes, time points or series in one "
        "folder?); put one 3-D series per folder",
        **ctx,
    )


def _check_even_spacing(gaps: np.ndarray, ctx: dict[str, Any]) -> None:
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > SLICE_GAP_TOLERANCE * step)
    if bad.size:
        i = int(bad[0])
        raise ImageError(
            f"DICOM slice positions are not evenly spaced: a gap of {gaps[i]:.2f} mm after slice "
            f"{i + 1} where the spacing is {step:.2f} mm (missing slices?)",
            **ctx,
        )
