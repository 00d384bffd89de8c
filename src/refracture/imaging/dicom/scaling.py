"""From stored pixel values to the values a map means, and the unit the series states for them.

Three mappings exist side by side in MR DICOM (see the dcm2niix Philips notes,
github.com/rordenlab/dcm2niix/tree/master/Philips, "Image Scaling", and PS3.3 C.7.6.16.2.11):

* the Modality LUT, RescaleSlope/RescaleIntercept (per frame in enhanced objects): the
  "displayed value" every vendor writes;
* a Real World Value Mapping item with a unit (UCUM code such as ``%``, ``/s``, ``ms``): the
  standard's physical quantity. Philips writes its quantitative maps' values this way, with a
  slope that may differ from the display RescaleSlope;
* Philips' private MR Scale Slope (2005,100E), the "floating point" value for comparing signal
  intensities across scans. It is never used for maps: a fat fraction or T2* map's physical
  value is its real-world value.

:func:`value_map` picks one mapping per frame and says why, so the decision can be recorded
with each series like the rest of the units evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refracture.errors import UnitsError
from refracture.imaging.dicom.frames import Frame, RealWorldMap
from refracture.maps import MAPS

__all__ = ["ValueMap", "value_map"]

# RescaleType values that state no unit: US unspecified, HU Hounsfield (CT), OD optical density.
_NO_UNIT_RESCALE_TYPES = {"", "US", "HU", "OD"}
# UCUM codes that say "a number without unit": they do not tell fraction from percent from
# per mille, so a Real World Value Mapping carrying one is not a unit statement of its own.
_UNITLESS = {"", "1", "{ratio}", "NO UNITS"}


@dataclass(frozen=True)
class ValueMap:
    """Per-frame slope and intercept to apply to the stored values, the unit they are then in
    (as the series states it, None when it states none), and the decision in words."""

    slopes: np.ndarray
    intercepts: np.ndarray
    units_stated: str | None
    basis: str
    mapping: str  # 'rescale' (RescaleSlope/Intercept) or 'real_world' (Real World Value Mapping)


def value_map(frames: list[Frame]) -> ValueMap:
    """The mapping of stored to physical values for a stack's frames (in stack order)."""
    chosen = _value_map(frames)
    if any(f.philips_scale_slope for f in frames):
        note = "; Philips private scale slope not applied (it scales signal, not maps)"
        return ValueMap(chosen.slopes, chosen.intercepts, chosen.units_stated,
                        chosen.basis + note, chosen.mapping)  # fmt: skip
    return chosen


def _value_map(frames: list[Frame]) -> ValueMap:
    rescale = (np.array([f.slope for f in frames]), np.array([f.intercept for f in frames]))
    restated = [_restating(f) for f in frames]
    if all(r is not None for r in restated):
        units = {r.unit for r in restated if r is not None}
        if len(units) == 1:
            unit = units.pop()
            return ValueMap(
                *rescale,
                units_stated=unit,
                basis=f"Real World Value Mapping unit {unit!r} (RescaleSlope/Intercept values)",
                mapping="rescale",
            )
    quantity = [_quantity(f) for f in frames]
    if all(q is not None for q in quantity):
        units = {q.unit for q in quantity if q is not None}
        if len(units) == 1:
            unit = units.pop()
            slopes = np.array([q.slope for q in quantity if q is not None])
            inters = np.array([q.intercept for q in quantity if q is not None])
            return ValueMap(
                slopes,
                inters,
                units_stated=unit,
                basis=f"Real World Value Mapping unit {unit!r} (slope {slopes[0]:g}; the "
                f"RescaleSlope {frames[0].slope:g} is the display scaling)",
                mapping="real_world",
            )
    types = {f.rescale_type.upper() for f in frames}
    if (
        len(types) == 1
        and (kind := frames[0].rescale_type)
        and kind.upper() not in (_NO_UNIT_RESCALE_TYPES)
    ):
        return ValueMap(*rescale, kind, f"RescaleType {kind!r}", "rescale")
    return ValueMap(*rescale, None, "no unit stated", "rescale")


def _restating(frame: Frame) -> RealWorldMap | None:
    """A Real World Value Mapping item with a unit whose slope and intercept are the frame's
    RescaleSlope/Intercept: the unit of the rescaled values (as stated, even '1')."""
    for item in frame.real_world:
        if (
            item.states_unit
            and np.isclose(item.slope, frame.slope, rtol=1e-6)
            and np.isclose(item.intercept, frame.intercept, rtol=1e-6, atol=1e-9)
        ):
            return item
    return None


def _quantity(frame: Frame) -> RealWorldMap | None:
    """A Real World Value Mapping item with a physical unit a map can be in (%, per mille,
    1/s, Hz, ms ...), whatever its slope."""
    from refracture.imaging.metadata import parse_unit

    for item in frame.real_world:
        if not item.states_unit or item.unit.upper() in _UNITLESS:
            continue
        for kind in MAPS:
            try:
                if parse_unit(kind, item.unit, where="the DICOM series"):
                    return item
            except UnitsError:
                continue
    return None
