"""Reading maps and label maps into :class:`~refracture.imaging.volume.Volume` objects.

:func:`load_volume` hands the path to the first reader of the registry
(:mod:`refracture.imaging.readers`: NIfTI, NRRD/MHA, DICOM SEG, DICOM series) that recognises
it by suffix or signature. Every reader looks at the header first and refuses a volume whose
claimed size exceeds ``max_voxels`` before any voxel is decoded, so a corrupt or hostile header
cannot make us allocate gigabytes. Every failure is an :class:`~refracture.errors.ImageError`
naming the file and what is wrong; DICOM fields that identify a person, study or institution
never reach the volume's metadata, so they cannot reach a message or an output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from refracture.errors import ImageError
from refracture.files import hash_file
from refracture.imaging.readers import ImageSource, reader_for
from refracture.imaging.readers.base import DEFAULT_MAX_VOXELS
from refracture.imaging.readers.nifti import _Inflater  # noqa: F401  (re-exported for tests)
from refracture.imaging.volume import Kind, Volume
from refracture.maps import MAPS

__all__ = ["DEFAULT_MAX_VOXELS", "hash_image", "load_volume", "read_image_bytes"]

# A file up to this size is read into memory once, hashed and decoded from the same bytes;
# a larger one is hashed in chunks and decoded by nibabel from disk.
SINGLE_READ_MAX_BYTES = 1 << 30


def load_volume(
    path: str | Path,
    kind: Kind,
    *,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    patient_id: str | None = None,
    content_hash: str | None = None,
    content: bytes | None = None,
) -> Volume:
    """Read a 3-D map (``kind`` 'pdff' or 'r2star') or label map (``kind`` 'labels').

    ``path`` is a NIfTI, NRRD or MHA file, a DICOM SEG file, a DICOM multi-frame file, or a
    folder of DICOM files (with ``#series=HASH[&type=KEY]`` appended when it holds several
    series, as ``refracture index`` writes). Maps come back as float32 in their stored units
    after the file's own scaling (NIfTI scl_slope, DICOM RescaleSlope/Intercept or a Real
    World Value Mapping), with ``units=None`` (decided later from declarations or values);
    label maps as int32. ``content_hash`` may be passed when already computed; ``content``, the
    file's bytes already read (see :func:`read_image_bytes`), is decoded instead of reading the
    file again (NIfTI; other formats are read from ``path``).
    """
    if kind not in (*MAPS, "labels"):
        raise ValueError(f"kind must be 'pdff', 'r2star' or 'labels', not {kind!r}")
    source = ImageSource.parse(path)
    ctx: dict[str, Any] = {"patient_id": patient_id, "file": source.path}
    if not source.path.exists():
        raise ImageError(f"{kind} image not found", **ctx)
    reader, source = reader_for(source, ctx)
    if reader.name == "nifti" and content is None and content_hash is None:
        content = read_image_bytes(source.path)  # one read for the decode and the hash
    if content is not None and content_hash is None:
        content_hash = hashlib.sha256(content).hexdigest()
    result = reader.read(source, ctx, max_voxels, content)
    affine = result.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ImageError("the image has no valid voxel-to-world geometry (affine)", **ctx)
    return Volume(
        data=_as_kind(result.data, kind, ctx),
        affine=np.asarray(affine, dtype=np.float64),
        kind=kind,
        path=source.path,
        content_hash=content_hash or hash_image(source),
        units=None,
        metadata=result.metadata,
        source=result.source,
    )


def _as_kind(data: np.ndarray, kind: Kind, ctx: dict[str, Any]) -> np.ndarray:
    if kind != "labels":
        return np.asarray(data, dtype=np.float32)
    if np.issubdtype(data.dtype, np.integer):
        return np.asarray(data, dtype=np.int32)
    finite = np.isfinite(data)
    if not finite.all() or not np.array_equal(data, np.round(data)):
        raise ImageError(
            "the label map holds non-integer values; integer labels are expected", **ctx
        )
    return data.astype(np.int32)


def read_image_bytes(path: str | Path) -> bytes | None:
    """The bytes of an image file, to hash and decode from one read; None for a folder (a
    DICOM series), a series selector or a file above :data:`SINGLE_READ_MAX_BYTES` (hashed in
    chunks instead).

    ``hashlib.sha256(content).hexdigest()`` of the result equals :func:`hash_image` of the path.
    """
    source = ImageSource.parse(path)
    if source.selector or not source.path.is_file():
        return None
    if source.path.stat().st_size > SINGLE_READ_MAX_BYTES:
        return None
    return source.path.read_bytes()


def hash_image(location: str | Path | ImageSource) -> str:
    """SHA-256 of an image's bytes: the file, or every file of a DICOM folder (in name order),
    followed by the series selector when there is one (another series of the same folder is
    another image)."""
    source = ImageSource.parse(location)
    if not source.selector:
        return hash_file(source.path)
    h = hashlib.sha256()
    hash_file(source.path, h)
    h.update(source.selector.encode())
    return h.hexdigest()
