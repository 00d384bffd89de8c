"""DICOM image headers as frames: one 2-D image each, classic or enhanced multi-frame alike.

A classic MR file (MR Image Storage) holds one frame; an enhanced or legacy-converted enhanced
MR file holds many, each described by its per-frame functional groups with the shared groups
as the fallback (PS3.3 C.7.6.16: Plane Position, Plane Orientation, Pixel Measures, Pixel Value
Transformation, Real World Value Mapping, MR Image Frame Type, MR Echo, Frame Content).
:func:`frames_of` turns either into the same :class:`Frame` records, so stacking, scaling and
the checks are written once. Nothing here identifies a person: identities stay in the
dataset, which the caller drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

__all__ = [
    "ENHANCED_MR",
    "quiet_pydicom",
    "IMAGE_SOP_CLASSES",
    "SEG_SOP_CLASS",
    "Frame",
    "RealWorldMap",
    "frames_of",
    "series_hash",
    "stack_key",
    "text",
]

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SOP classes read as images (MR first; CT and secondary capture only so that a stray series of
#: another kind is listed with its reason instead of being called unreadable).
IMAGE_SOP_CLASSES = {
    MR_IMAGE: "MR",
    ENHANCED_MR: "enhanced MR",
    LEGACY_ENHANCED_MR: "legacy converted enhanced MR",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "enhanced CT",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
}
_MULTI_FRAME = {ENHANCED_MR, LEGACY_ENHANCED_MR, "1.2.840.10008.5.1.4.1.1.2.1"}
# Philips private MR Scale Slope (2005,100E): recorded, never applied (the "floating point"
# scaling is for comparing signal intensities across scans, not for quantitative maps).
_PHILIPS_SCALE_SLOPE = (0x2005, 0x100E)


@dataclass(frozen=True)
class RealWorldMap:
    """One linear Real World Value Mapping item: value = stored * slope + intercept, in unit."""

    slope: float
    intercept: float
    unit: str  # the UCUM code of MeasurementUnitsCodeSequence, e.g. '%', '/s', 'ms', '1'
    label: str
    meaning: str = ""  # its CodeMeaning ('no units' when Philips states none)

    @property
    def states_unit(self) -> bool:
        """False for an empty code or Philips' '1' meaning 'no units' (not a fraction)."""
        return bool(self.unit) and self.meaning.strip().lower() != "no units"


@dataclass(frozen=True)
class Frame:
    """One 2-D image of a file: its geometry, scaling and what distinguishes it from others
    at the same position (echo, temporal position, diffusion weighting)."""

    file: Path
    number: int | None  # 0-based frame of a multi-frame file; None for a single-frame file
    rows: int
    cols: int
    position: tuple[float, float, float] | None  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row then column cosines)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    slope: float
    intercept: float
    rescale_type: str
    real_world: tuple[RealWorldMap, ...]
    image_type: tuple[str, ...]
    echo_time: float | None
    echo_number: int | None
    temporal: str  # temporal position / acquisition / diffusion: what makes a 4th dimension
    philips_scale_slope: float | None = None

    @property
    def volume_key(self) -> tuple[Any, ...]:
        """What tells two frames at one position apart: (echo, everything else)."""
        return (self.echo_number, _round(self.echo_time), self.temporal)


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Read without pydicom's warnings about values that break the standard's length or
    format limits (common in real exports, harmless here), restoring the setting after."""
    settings = pydicom.config.settings
    mode = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = mode


def text(value: Any) -> str:
    """A DICOM value as stripped text ('' when absent); multi-values joined by '\\'."""
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def series_hash(uid: str) -> str:
    """16 hex digits of SHA-256 of a UID: names a series in manifests without the UID itself."""
    return hashlib.sha256(uid.strip().encode("ascii", "replace")).hexdigest()[:16]


def stack_key(frame: Frame) -> str:
    """The image-type part that tells apart stacks sharing one series (Philips stores water,
    fat, fat fraction and T2* of an mDIXON Quant acquisition in one series): the ImageType
    (classic) or FrameType (enhanced) values after ORIGINAL/DERIVED and PRIMARY/SECONDARY,
    joined by '+', e.g. 'FF+FF' or 'M+FFE'."""
    tokens = [t for t in frame.image_type[2:] if t]
    return "+".join(t.replace(" ", "_") for t in tokens) or "-"


def frames_of(ds: Dataset, path: Path) -> list[Frame]:
    """The frames of one image file's header (read with ``stop_before_pixels``)."""
    sop = text(ds.get("SOPClassUID"))
    n = _int(ds.get("NumberOfFrames")) or 1
    if sop in _MULTI_FRAME or "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, path, n)
    return [_classic_frame(ds, path)]


def _classic_frame(ds: Dataset, path: Path) -> Frame:
    diffusion = (text(ds.get("DiffusionBValue")), text(ds.get("DiffusionGradientOrientation")))
    temporal = "/".join(
        [text(ds.get("TemporalPositionIdentifier")), text(ds.get("AcquisitionNumber")), *diffusion]
    )
    return Frame(
        file=path,
        number=None,
        rows=_int(ds.get("Rows")) or 0,
        cols=_int(ds.get("Columns")) or 0,
        position=_vector(ds.get("ImagePositionPatient"), 3),
        orientation=_vector(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=_vector(ds.get("PixelSpacing"), 2),
        slope=_float(ds.get("RescaleSlope"), 1.0),
        intercept=_float(ds.get("RescaleIntercept"), 0.0),
        rescale_type=text(ds.get("RescaleType")),
        real_world=_real_world(ds.get("RealWorldValueMappingSequence")),
        image_type=tuple(text(v).upper() for v in (ds.get("ImageType") or [])),
        echo_time=_float(ds.get("EchoTime"), None),
        echo_number=_int(_first(ds.get("EchoNumbers"))),
        temporal=temporal,
        philips_scale_slope=_private_float(ds, _PHILIPS_SCALE_SLOPE),
    )


def _enhanced_frames(ds: Dataset, path: Path, n: int) -> list[Frame]:
    shared = _item(ds.get("SharedFunctionalGroupsSequence"))
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    top_type = tuple(text(v).upper() for v in (ds.get("ImageType") or []))
    rows, cols = _int(ds.get("Rows")) or 0, _int(ds.get("Columns")) or 0
    out = []
    for i in range(n):
        groups = per_frame[i] if i < len(per_frame) else Dataset()

        def macro(keyword: str, groups: Dataset = groups) -> Dataset:
            return _item(groups.get(keyword)) or _item(shared.get(keyword)) or Dataset()

        pixel = macro("PixelValueTransformationSequence")
        content = macro("FrameContentSequence")
        frame_type = macro("MRImageFrameTypeSequence").get("FrameType") or macro(
            "CTImageFrameTypeSequence"
        ).get("FrameType")
        real_world = groups.get("RealWorldValueMappingSequence") or shared.get(
            "RealWorldValueMappingSequence"
        )
        diffusion = macro("MRDiffusionSequence")
        temporal = "/".join(
            [
                text(content.get("TemporalPositionIndex")),
                text(content.get("StackID")),
                text(diffusion.get("DiffusionBValue")),
                text(
                    _item(diffusion.get("DiffusionGradientDirectionSequence")).get(
                        "DiffusionGradientOrientation"
                    )
                    if diffusion
                    else ""
                ),  # fmt: skip
            ]
        )
        out.append(
            Frame(
                file=path,
                number=i,
                rows=rows,
                cols=cols,
                position=_vector(macro("PlanePositionSequence").get("ImagePositionPatient"), 3),
                orientation=_vector(
                    macro("PlaneOrientationSequence").get("ImageOrientationPatient"), 6
                ),
                pixel_spacing=_vector(macro("PixelMeasuresSequence").get("PixelSpacing"), 2),
                slope=_float(pixel.get("RescaleSlope"), 1.0),
                intercept=_float(pixel.get("RescaleIntercept"), 0.0),
                rescale_type=text(pixel.get("RescaleType")),
                real_world=_real_world(real_world),
                image_type=tuple(text(v).upper() for v in (frame_type or top_type)),
                echo_time=_float(macro("MREchoSequence").get("EffectiveEchoTime"), None),
                echo_number=None,
                temporal=temporal,
                philips_scale_slope=_private_float(groups, _PHILIPS_SCALE_SLOPE)
                or _private_float(ds, _PHILIPS_SCALE_SLOPE),
            )
        )
    return out


def _real_world(items: Any) -> tuple[RealWorldMap, ...]:
    """The linear Real World Value Mapping items (those given by a LUT are left out)."""
    out = []
    for item in items or []:
        slope = _float(item.get("RealWorldValueSlope"), None)
        if slope is None:
            continue
        units = _item(item.get("MeasurementUnitsCodeSequence"))
        out.append(
            RealWorldMap(
                slope=slope,
                intercept=_float(item.get("RealWorldValueIntercept"), 0.0) or 0.0,
                unit=text(units.get("CodeValue")) if units else "",
                label=text(item.get("LUTLabel")) or text(item.get("LUTExplanation")),
                meaning=text(units.get("CodeMeaning")) if units else "",
            )
        )
    return tuple(out)


def _item(seq: Any) -> Dataset:
    try:
        return seq[0] if seq is not None and len(seq) else Dataset()
    except TypeError:
        return Dataset()


def _first(value: Any) -> Any:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return value[0] if len(value) else None
    return value


def _float(value: Any, default: float | None) -> float | None:
    try:
        out = float(_first(value))
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _int(value: Any) -> int | None:
    try:
        return int(float(_first(value)))
    except (TypeError, ValueError):
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _vector(value: Any, size: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == size and all(math.isfinite(v) for v in out) else None


def _private_float(ds: Dataset, tag: tuple[int, int]) -> float | None:
    """A private numeric element, also when stored with VR UN (implicit-VR transfers)."""
    if tag not in ds:
        return None
    elem = ds[tag]
    value = elem.value
    if isinstance(value, bytes) and len(value) == 4:
        import struct

        value = struct.unpack("<f", value)[0]
    return _float(value, None)
