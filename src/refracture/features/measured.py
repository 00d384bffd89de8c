"""The voxels a patient's statistics are computed on: the eroded vertebral ROIs without the
cement-like voxels of treated vertebrae, and per map without non-finite and out-of-range values.

:func:`~refracture.features.patient.finish_patient` measures exactly these voxels, and a mask
written for a reader (the DICOM SEG of :mod:`refracture.outputs`) comes from the same function,
so the region shown is the region the numbers come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from refracture.config import ExtractionConfig
from refracture.features.schema import MAPS
from refracture.imaging.site_units import PatientUnits
from refracture.imaging.units import apply_units
from refracture.imaging.volume import Volume

if TYPE_CHECKING:
    from refracture.features.patient import Prepared

__all__ = ["MeasuredVoxels", "kept_voxels", "measured_voxels"]

# "Signal void" in cement: both maps at ~0 (PDFF in %, R2* in 1/s) or not finite.
_VOID_PDFF = 0.5
_VOID_R2STAR = 0.5


def kept_voxels(
    v: np.ndarray, cement: np.ndarray, value_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(finite, finite and in range, measured) per ROI voxel of one map: a voxel is measured
    when its value is finite, inside the map's range and it is not cement-like."""
    finite = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        in_range = finite & (v >= value_range[0]) & (v <= value_range[1])
    return finite, in_range, in_range & ~cement


@dataclass(frozen=True)
class MeasuredVoxels:
    """The voxels a patient's statistics are computed on, per ROI voxel (``rois.coords``
    order): the maps in the decided units, their values, the cement-like voxels of the treated
    vertebrae, and per map the voxels measured (finite, in range, not cement)."""

    pdff: Volume
    r2star: Volume
    values: dict[str, np.ndarray]
    cement: np.ndarray
    measured: dict[str, np.ndarray]


def measured_voxels(
    prep: Prepared, units: PatientUnits, config: ExtractionConfig
) -> MeasuredVoxels:
    """Which ROI voxels of each map :func:`finish_patient` measures (it calls this): the one
    place the eroded ROIs lose cement-like, non-finite and out-of-range voxels, so a mask
    written for a reader (a DICOM SEG) is the region the numbers come from."""
    pdff = apply_units(prep.pdff, units.pdff)
    r2star = apply_units(prep.r2star, units.r2star)
    coords = prep.rois.coords
    cached = prep.roi_values or {}  # gathered in step 1: reused when the units changed nothing
    values = {
        name: cached[name] if name in cached and vol.data is raw.data else vol.data[coords]
        for name, vol, raw in (("pdff", pdff, prep.pdff), ("r2star", r2star, prep.r2star))
    }
    cement = prep.is_treated & (
        (values["r2star"] > config.cement_r2star_per_s)
        | (_void(values["pdff"], _VOID_PDFF) & _void(values["r2star"], _VOID_R2STAR))
    )
    ranges = {"pdff": config.pdff_range, "r2star": config.r2star_range}
    measured = {name: kept_voxels(values[name], cement, ranges[name])[2] for name in MAPS}
    return MeasuredVoxels(pdff, r2star, values, cement, measured)


def _void(v: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(v) | (np.abs(v) <= eps)
