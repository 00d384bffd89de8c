"""DICOM: image series (a folder, optionally with a series selector, or one multi-frame file)
and Segmentation objects (label maps)."""

from __future__ import annotations

from typing import Any

from refracture.imaging.readers.base import ImageHeader, ImageSource, ReadResult

__all__ = ["DicomSegReader", "DicomSeriesReader", "is_dicom_file"]

_SEG_SOP_CLASS = b"1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_file(head: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


class DicomSegReader:
    """A DICOM Segmentation file (its SOP class is in the file meta group at the start)."""

    name = "dicom-seg"
    suffixes = ()

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        if not is_dicom_file(head):
            return False
        at = head.find(_SEG_SOP_CLASS, 132, 1024)
        after = head[at + len(_SEG_SOP_CLASS) : at + len(_SEG_SOP_CLASS) + 1]
        return at >= 0 and not (after.isdigit() or after == b".")

    def read_header(self, source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
        from refracture.imaging.dicom.seg import read_seg_header

        return read_seg_header(source, ctx)

    def read(
        self, source: ImageSource, ctx: dict[str, Any], max_voxels: int, content: bytes | None
    ) -> ReadResult:
        from refracture.imaging.dicom.seg import read_seg

        data, affine, meta = read_seg(source, ctx, max_voxels)
        return ReadResult(data, affine, meta)


class DicomSeriesReader:
    """A folder of DICOM files (one series, or one chosen by ``#series=``), or one DICOM image
    file (an enhanced multi-frame object)."""

    name = "dicom"
    suffixes = ()

    def sniff(self, source: ImageSource, head: bytes) -> bool:
        return source.path.is_dir() or is_dicom_file(head)

    def read_header(self, source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
        from refracture.imaging.dicom.series import select_series, series_metadata

        sel = select_series(source, ctx, 2**62)
        meta = series_metadata(sel)
        return ImageHeader(
            source.path,
            "dicom",
            sel.stack.shape,
            sel.stack.affine,
            modality=str(sel.first.get("Modality", "")) or None,
            units_stated=sel.values.units_stated,
            units_basis=sel.values.basis,
            metadata=meta,
        )

    def read(
        self, source: ImageSource, ctx: dict[str, Any], max_voxels: int, content: bytes | None
    ) -> ReadResult:
        from refracture.imaging.dicom.series import read_series

        data, affine, meta, identity = read_series(source, ctx, max_voxels)
        return ReadResult(data, affine, meta, identity)
