"""The protocol every image reader follows, the header it returns, and where an image is.

An image is named by a path, optionally followed by a selector that picks one series (and one
image type) out of a DICOM folder holding several, as ``refracture index`` writes them::

    exports/3f9c/0001#series=5e1f0c2a9b7d4e61
    exports/3f9c/0007#series=a91c44d07e2b3f10&type=FF+FF

The series is named by a hash of its SeriesInstanceUID (:func:`series_hash`), never by the
UID itself. Readers are tried in the order of the registry (:mod:`refracture.imaging.readers`);
the first whose :meth:`ImageReader.sniff` accepts the path reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import nibabel as nib
import numpy as np

from refracture.errors import ImageError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "ImageHeader",
    "ImageReader",
    "ImageSource",
    "ReadResult",
    "check_shape",
    "reason",
]

DEFAULT_MAX_VOXELS = 200_000_000
_SELECTOR = "#"


@dataclass(frozen=True)
class ImageSource:
    """A path and, for a DICOM folder, which series (hash) and image type to read from it."""

    path: Path
    series: str | None = None
    image_type: str | None = None

    @classmethod
    def parse(cls, location: str | Path) -> ImageSource:
        """Split ``folder#series=HASH&type=KEY`` (a plain path has no selector)."""
        if isinstance(location, ImageSource):
            return location
        text = str(location)
        head, sep, tail = text.rpartition(_SELECTOR)
        if not sep or "=" not in tail or "/" in tail:
            return cls(Path(text))
        fields = dict(part.partition("=")[::2] for part in tail.split("&") if part)
        if not set(fields) <= {"series", "type"}:
            return cls(Path(text))
        return cls(Path(head), fields.get("series") or None, fields.get("type") or None)

    @property
    def selector(self) -> str:
        parts = [f"series={self.series}"] if self.series else []
        if self.image_type:
            parts.append(f"type={self.image_type}")
        return _SELECTOR + "&".join(parts) if parts else ""

    def __str__(self) -> str:
        return f"{self.path}{self.selector}"

    def exists(self) -> bool:
        return self.path.exists()


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding any voxel.

    ``shape`` and ``affine`` are those of the volume :func:`refracture.imaging.load_volume`
    would return (indices (i, j, k), affine to RAS+ mm); ``units_stated`` the unit the file
    states for its values (None when it states none) and ``units_basis`` why; ``modality`` the
    DICOM modality ('MR', 'SEG') or None for NIfTI/NRRD/MHA; ``metadata`` the same
    non-identifying facts a Volume carries (vendor, model, field strength, series
    description, scaling).
    """

    path: Path
    format: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    modality: str | None = None
    units_stated: str | None = None
    units_basis: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))


@dataclass(frozen=True)
class ReadResult:
    """A reader's output: voxels (i, j, k) after the file's own scaling, the RAS+ affine, the
    non-identifying metadata and, for DICOM, the source series' identity (kept in memory)."""

    data: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any]
    source: Any = None


@runtime_checkable
class ImageReader(Protocol):
    """One image format. ``name`` is what ``metadata['format']`` says; ``suffixes`` the file
    name endings it claims (lower case, used for sidecar names too)."""

    name: str
    suffixes: tuple[str, ...]

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        """Does this reader read ``source``? ``head`` is the file's first bytes (b'' for a
        folder)."""
        ...

    def read_header(self, source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
        """The header only: no voxel is decoded."""
        ...

    def read(
        self, source: ImageSource, ctx: dict[str, Any], max_voxels: int, content: bytes | None
    ) -> ReadResult:
        """The voxels; refuse (before decoding) a volume of more than ``max_voxels``."""
        ...


def check_shape(shape: tuple[int, ...], max_voxels: int, ctx: dict[str, Any]) -> tuple[int, ...]:
    """Validate a header shape; return the 3-D shape (trailing singleton dims dropped)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageError(
            f"is {len(shape)}-D with shape {shape}; a 3-D volume is expected "
            "(select one volume of the series)",
            **ctx,
        )
    if len(shape) < 3 or min(shape) < 2:
        raise ImageError(f"is 2-D (shape {shape}); a 3-D volume is expected", **ctx)
    n = math.prod(shape)
    if n > max_voxels:
        raise ImageError(
            f"the header claims {n:,} voxels {shape}, more than extraction.max_voxels "
            f"({max_voxels:,}); refusing to read it",
            **ctx,
        )
    return shape


def reason(err: BaseException, path: Path | None = None) -> str:
    """A short one-line cause (ITK messages span many lines and name source files).

    The message already starts with the file's full path, so a cause that repeats it (nibabel:
    'Cannot work out file type of "/data/.../labels.nii.gz"') names only the file.
    """
    text = " ".join(str(err).split()) or type(err).__name__
    if path is not None:
        text = text.replace(str(path), path.name)
    if "ITK ERROR:" in text:  # "... ITK ERROR: MetaImageIO(0x55..): File cannot be read: ..."
        text = text.split("ITK ERROR:", 1)[1]
        text = text.split("): ", 1)[1] if "): " in text else text
        text = text.split(" Reason:", 1)[0]  # ITK appends a stale errno ("No such file")
    return text.strip()[:200]
