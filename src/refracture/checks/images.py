"""Image headers, read without decoding a voxel: what a map or label map claims to be.

The header comes from the readers' registry (:func:`refracture.imaging.readers.read_header`:
NIfTI, NRRD/MHA, DICOM series folders with their series selectors, DICOM SEG), which refuses
what it cannot read, a folder it cannot tell one series from and a volume that is not 3-D,
with the reason. :func:`header_findings` and :func:`grid_findings` add the rules between the
header and the run config (the size limit, the grids of one patient's images). Full checks of
the voxels (values, units, vertebrae) stay with extraction.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from refracture.config import ExtractionConfig
from refracture.errors import ImageError

if TYPE_CHECKING:  # the readers import nibabel and pydicom: only when an image is read
    from refracture.imaging.readers import ImageHeader

__all__ = ["ImageHeader", "grid_findings", "header_findings", "image_exists", "read_header"]


def __getattr__(name: str) -> Any:
    if name == "ImageHeader":
        from refracture.imaging.readers import ImageHeader

        return ImageHeader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def image_exists(location: str | Path) -> bool:
    """Does the file or folder an image location names exist (selector ignored)?"""
    from refracture.imaging.readers import image_exists as registry_exists

    return registry_exists(location)


def read_header(location: str) -> ImageHeader:
    """The header of an image location (a file, or a DICOM folder with its selector).

    Raises :class:`~refracture.errors.ImageError` with the reader's reason."""
    from refracture.imaging.readers import read_header as registry_header

    return registry_header(location)


def header_message(err: ImageError) -> str:
    """The reason of a reader's refusal, without the file the problem's row names already."""
    return err.message


def header_findings(header: ImageHeader, kind: str, config: ExtractionConfig) -> list[str]:
    """What is wrong with one image's header for the run config (``kind``: pdff, r2star or
    labels)."""
    n = int(np.prod(header.shape))
    if n > config.max_voxels:
        return [
            f"the {kind} header claims {n:,} voxels, more than extraction.max_voxels "
            f"({config.max_voxels:,})"
        ]
    return []


def _bounds(header: ImageHeader) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(header.shape[:3], dtype=float) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    world = corners @ np.asarray(header.affine, dtype=float).T
    return world[:, :3].min(axis=0), world[:, :3].max(axis=0)


def grid_findings(
    ref: ImageHeader, other: ImageHeader, kind: str, config: ExtractionConfig
) -> list[str]:
    """What is wrong between the PDFF map (``ref``) and another image of the patient: no
    overlap in space (always an error), another grid when resampling is not allowed."""
    a, b = _bounds(ref), _bounds(other)
    spacing = max(ref.spacing)
    low, high = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    if np.any(high - low < -spacing):
        return [
            f"the {kind} image does not overlap the pdff map in space (its header places it "
            "elsewhere)"
        ]
    # the same points in space, whatever the order of the voxel axes
    same = (
        sorted(ref.shape) == sorted(other.shape)
        and np.allclose(a[0], b[0], atol=0.01)
        and np.allclose(a[1], b[1], atol=0.01)
        and np.allclose(sorted(ref.spacing), sorted(other.spacing), atol=1e-3)
    )
    if not same and not config.allow_resample:
        return [
            f"the {kind} image is on another grid than the pdff map; resample it, or set "
            "extraction.allow_resample: true"
        ]
    return []
