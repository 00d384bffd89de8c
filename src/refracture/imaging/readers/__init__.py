"""Image readers: one registry, one protocol (:class:`~.base.ImageReader`).

``READERS`` lists the readers in the order they are tried; the first whose ``sniff`` accepts a
path (by its name's suffix or its first bytes) reads it. Adding a format is one class with
``name``, ``suffixes``, ``sniff``, ``read_header`` and ``read``, and one
:func:`register_reader` call (see docs/contributing.md)::

    from refracture.imaging.readers import register_reader

    class NpyReader:
        name, suffixes = "npy", (".npy",)
        def sniff(self, source, head): return head.startswith(b"\\x93NUMPY")
        def read_header(self, source, ctx): ...
        def read(self, source, ctx, max_voxels, content): ...

    register_reader(NpyReader())

:func:`read_header` is the header-only read every check can afford: shape, spacing, affine,
the unit the image states, the modality, no voxel decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refracture.errors import ImageError
from refracture.imaging.readers.base import (
    DEFAULT_MAX_VOXELS,
    ImageHeader,
    ImageReader,
    ImageSource,
    ReadResult,
)
from refracture.imaging.readers.dicom import DicomSegReader, DicomSeriesReader
from refracture.imaging.readers.nifti import NiftiReader
from refracture.imaging.readers.sitk import SitkReader

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "READERS",
    "ImageHeader",
    "ImageReader",
    "ImageSource",
    "ReadResult",
    "image_exists",
    "image_stem",
    "is_dicom",
    "read_header",
    "reader_for",
    "register_reader",
]

#: The readers, tried in this order: the first whose ``sniff`` accepts a path reads it.
READERS: list[ImageReader] = [NiftiReader(), SitkReader(), DicomSegReader(), DicomSeriesReader()]
_HEAD_BYTES = 1024
UNSUPPORTED = "unsupported image format (use .nii, .nii.gz, .nrrd, .mha or a DICOM folder)"


def register_reader(reader: ImageReader, *, first: bool = True) -> ImageReader:
    """Add ``reader`` to :data:`READERS` (tried before the others unless ``first=False``)."""
    if not isinstance(reader, ImageReader):
        raise TypeError(f"{reader!r} does not follow the ImageReader protocol")
    if first:
        READERS.insert(0, reader)
    else:
        READERS.append(reader)
    return reader


def reader_for(
    location: str | Path | ImageSource, ctx: dict[str, Any] | None = None
) -> tuple[ImageReader, ImageSource]:
    """The reader for an image location (a path, optionally with a DICOM series selector)."""
    source = ImageSource.parse(location)
    ctx = ctx or {"file": source.path}
    if not source.path.exists():
        raise ImageError("image not found", **ctx)
    head = b""
    if source.path.is_file():
        if source.path.stat().st_size == 0:
            raise ImageError("the file is empty", **ctx)
        with open(source.path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    for reader in READERS:
        if reader.sniff(source, head):
            return reader, source
    raise ImageError(UNSUPPORTED, **ctx)


def read_header(
    location: str | Path | ImageSource, *, patient_id: str | None = None
) -> ImageHeader:
    """What an image's header says, without decoding a voxel (any registered format).

    Raises an :class:`~refracture.errors.ImageError` naming the file (and the patient when
    given) for a missing, unreadable or non-3-D image, as :func:`~refracture.imaging.load_volume`
    would.
    """
    source = ImageSource.parse(location)
    ctx = {"patient_id": patient_id, "file": source.path}
    reader, source = reader_for(source, ctx)
    return reader.read_header(source, ctx)


def image_exists(location: str | Path) -> bool:
    """Does the file or folder an image location names exist (selector ignored)?"""
    return ImageSource.parse(location).path.exists()


def is_dicom(location: str | Path) -> bool:
    """Is the image at ``location`` read by a DICOM reader (series folder, file or SEG)?"""
    try:
        reader, _ = reader_for(location)
    except ImageError:
        return False
    return reader.name.startswith("dicom")


def image_stem(path: str | Path) -> str:
    """The image's name without its format suffix ('pdff.nii.gz' -> 'pdff'), for sidecars."""
    name = ImageSource.parse(path).path.name
    for reader in READERS:
        for suffix in reader.suffixes:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
    return name
