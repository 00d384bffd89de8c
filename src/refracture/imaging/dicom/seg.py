"""Vertebra label maps stored as DICOM Segmentation objects (3D Slicer, TotalSegmentator and
other tools export them through highdicom or dcmqi), read with highdicom.

Each segment becomes one vertebral level, named by its coded anatomy when it has one (the
SNOMED CT concept of a vertebra, e.g. 66794005 "L1 vertebra", as pydicom's code dictionary
lists them) or else by its label ('L1', 'vertebrae_L1', 'T12 vertebra', 'Th12'). The levels
are written as VerSe label values, so the default ``label_convention: verse`` reads them; a
segment naming no vertebra gets the value 1000 + its segment number and is listed among the
unknown labels. Geometry: the segmentation frames' own plane positions and orientation, as for
any label map, checked against the maps later.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from refracture.errors import ImageError
from refracture.imaging.readers.base import ImageHeader, ImageSource, check_shape, reason

__all__ = ["UNKNOWN_SEGMENT_BASE", "read_seg", "read_seg_header", "segment_levels"]

#: Label value of a segment that names no vertebra: this + its segment number.
UNKNOWN_SEGMENT_BASE = 1000
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_LABEL = re.compile(r"(?:^|[^A-Za-z0-9])(C|TH|T|L|S)[ _-]?(\d{1,2})(?![0-9])", re.IGNORECASE)


def _sct_levels() -> dict[str, str]:
    """SNOMED CT code value -> level, from pydicom's code dictionary (C1-C7, T1-T12, L1-L5)."""
    from pydicom.sr.codedict import codes

    from refracture.levels import LEVEL_ORDER

    out = {}
    for level in LEVEL_ORDER:
        code = getattr(codes.SCT, f"{level}Vertebra", None)
        if code is not None:
            out[str(code.value)] = level
    return out


def segment_levels(seg: Any) -> tuple[dict[int, str], str]:
    """Segment number -> level for every segment naming a vertebra, and how they were named."""
    from refracture.levels import is_level

    sct = _sct_levels()
    by_code = by_label = 0
    out: dict[int, str] = {}
    for number in seg.get_segment_numbers():
        desc = seg.get_segment_description(number)
        codes = [desc.segmented_property_type, *desc.anatomic_regions,
                 *desc.primary_anatomic_structures]  # fmt: skip
        coded = [str(c.value) for c in codes
                 if c is not None and str(c.scheme_designator) in ("SCT", "SRT")]  # fmt: skip
        level = next((sct[v] for v in coded if v in sct), None)
        if level:
            by_code += 1
        else:
            m = _LABEL.search(str(desc.segment_label or ""))
            name = f"{'T' if m and m[1].upper() == 'TH' else (m[1].upper() if m else '')}"
            candidate = f"{name}{int(m[2])}" if m else ""
            if candidate and is_level(candidate):
                level, by_label = candidate, by_label + 1
        if level:
            out[int(number)] = level
    how = f"{by_code} segment(s) by SNOMED CT code, {by_label} by label"
    return out, how


def _open(source: ImageSource, ctx: dict[str, Any], header_only: bool) -> Any:
    import highdicom as hd
    import pydicom

    try:
        if header_only:
            ds = pydicom.dcmread(source.path, stop_before_pixels=True)
            return hd.seg.Segmentation.from_dataset(ds, copy=False)
        return hd.seg.segread(source.path)
    except Exception as err:  # noqa: BLE001 - highdicom/pydicom raise many types
        raise ImageError(f"not a readable DICOM SEG ({reason(err, source.path)})", **ctx) from None


def _geometry(affine_lps_srs: np.ndarray, spatial_shape: tuple[int, ...]):
    """highdicom's (slice, row, column) indices to ours (column, row, slice), LPS to RAS."""
    affine = _LPS @ np.asarray(affine_lps_srs, dtype=np.float64)[:, [2, 1, 0, 3]]
    shape = tuple(int(s) for s in spatial_shape)[::-1]
    return affine, shape


def read_seg_header(source: ImageSource, ctx: dict[str, Any]) -> ImageHeader:
    seg = _open(source, ctx, header_only=True)
    try:
        geometry = seg.get_volume_geometry()
    except Exception as err:  # noqa: BLE001
        raise ImageError(f"the DICOM SEG has no 3-D geometry ({reason(err)})", **ctx) from None
    if geometry is None:
        raise ImageError("the DICOM SEG frames do not form a 3-D volume", **ctx)
    affine, shape = _geometry(geometry.affine, geometry.spatial_shape)
    levels, how = segment_levels(seg)
    meta = _metadata(seg, levels, how)
    return ImageHeader(source.path, "dicom-seg", shape, affine, modality="SEG", metadata=meta)


def read_seg(source: ImageSource, ctx: dict[str, Any], max_voxels: int):
    """Label values (i, j, k) as VerSe values, RAS+ affine, metadata."""
    from refracture.levels import convention

    seg = _open(source, ctx, header_only=False)
    geometry = seg.get_volume_geometry()
    if geometry is None:
        raise ImageError("the DICOM SEG frames do not form a 3-D volume", **ctx)
    check_shape(tuple(geometry.spatial_shape), max_voxels, ctx)
    try:
        if str(seg.SegmentationType) == "FRACTIONAL":
            volume = seg.get_volume(combine_segments=False, rescale_fractional=True)
            stack = np.asarray(volume.array, dtype=np.float32)
            numbers = np.asarray(seg.get_segment_numbers())
            best = np.argmax(stack, axis=-1)
            srs = np.where(stack.max(axis=-1) >= 0.5, numbers[best], 0)
        else:
            volume = seg.get_volume(combine_segments=True)
            srs = np.asarray(volume.array)
    except Exception as err:  # noqa: BLE001 - overlapping segments and other refusals
        raise ImageError(f"the DICOM SEG cannot be read as a label map ({reason(err)})",
                         **ctx) from None  # fmt: skip
    affine, _ = _geometry(volume.affine, volume.spatial_shape)
    levels, how = segment_levels(seg)
    value_of = {level: value for value, level in convention("verse").items()}
    lut = np.zeros(int(srs.max()) + 1 if srs.size else 1, dtype=np.int32)
    for number in range(1, lut.size):
        lut[number] = value_of.get(levels.get(number, ""), UNKNOWN_SEGMENT_BASE + number)
    data = np.transpose(lut[srs.astype(np.int64)], (2, 1, 0))
    return data, affine, _metadata(seg, levels, how)


def _metadata(seg: Any, levels: dict[int, str], how: str) -> dict[str, Any]:
    from refracture.imaging.dicom.frames import series_hash, text

    return {
        "format": "dicom-seg",
        "vendor": text(seg.get("Manufacturer")) or None,
        "model": text(seg.get("ManufacturerModelName")) or None,
        "series_description": text(seg.get("SeriesDescription")) or None,
        "series": series_hash(text(seg.get("SeriesInstanceUID"))),
        "label_source": f"DICOM SEG, {len(levels)} vertebrae ({how})",
    }
