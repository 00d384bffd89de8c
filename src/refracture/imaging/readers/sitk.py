"""NRRD and MetaImage maps and label maps (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), read with
SimpleITK; the header is read (and checked) before any voxel."""

from __future__ import annotations

from typing import Any

import SimpleITK as sitk

from refracture.errors import ImageError
from refracture.imaging.readers.base import (
    ImageHeader,
    ImageSource,
    ReadResult,
    check_shape,
    reason,
)
from refracture.imaging.volume import affine_from_sitk, array_from_sitk

__all__ = ["SitkReader"]


class SitkReader:
    """NRRD and MetaImage files (also without the suffix, by their first bytes)."""

    name = "sitk"
    suffixes = (".nrrd", ".nhdr", ".mha", ".mhd")

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        if source.path.name.lower().endswith(self.suffixes):
            return True
        return head.startswith(b"NRRD") or head.startswith(b"ObjectType")

    def read_header(self, source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
        reader = self._reader(source, ctx)
        shape = check_shape(reader.GetSize(), 2**62, ctx)
        img = sitk.Image([2] * reader.GetDimension(), sitk.sitkUInt8)
        img.SetSpacing(reader.GetSpacing())
        img.SetOrigin(reader.GetOrigin())
        img.SetDirection(reader.GetDirection())
        if img.GetDimension() > 3:
            img = sitk.Extract(img, [2, 2, 2, *([0] * (img.GetDimension() - 3))],
                               [0] * img.GetDimension())  # fmt: skip
        fmt = _format(source)
        return ImageHeader(source.path, fmt, shape, affine_from_sitk(img), metadata={"format": fmt})

    def read(
        self, source: ImageSource, ctx: dict[str, Any], max_voxels: int, content: bytes | None
    ) -> ReadResult:
        reader = self._reader(source, ctx)
        shape = check_shape(reader.GetSize(), max_voxels, ctx)
        try:
            img = reader.Execute()
        except RuntimeError as err:
            raise ImageError(
                f"the voxel data cannot be read ({reason(err, source.path)})", **ctx
            ) from None
        if img.GetDimension() > 3:  # trailing singleton dimensions, already checked
            img = sitk.Extract(
                img, [*shape, *([0] * (img.GetDimension() - 3))], [0] * img.GetDimension()
            )
        return ReadResult(array_from_sitk(img), affine_from_sitk(img), {"format": _format(source)})

    @staticmethod
    def _reader(source: ImageSource, ctx: dict[str, Any]) -> sitk.ImageFileReader:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(source.path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as err:
            raise ImageError(
                f"not a readable image header ({reason(err, source.path)})", **ctx
            ) from None
        if reader.GetNumberOfComponents() != 1:
            raise ImageError(
                f"has {reader.GetNumberOfComponents()} components per voxel; a scalar map is "
                "expected",
                **ctx,
            )
        return reader


def _format(source: ImageSource) -> str:
    suffix = source.path.suffix.lower().lstrip(".")
    return suffix if suffix in ("nrrd", "nhdr", "mha", "mhd") else "sitk"
