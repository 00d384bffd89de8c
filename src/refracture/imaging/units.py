"""Deciding and converting the units of PDFF and R2* maps (PRODUCT.md section 3).

PDFF is reported in percent, R2* in 1/s. An explicit config setting always wins. Otherwise
the unit is detected from the values inside the labelled vertebrae, where the physiology is
known: vertebral-marrow PDFF is ~10-90 %, marrow T2* ~5-25 ms and R2* ~35-250 1/s at 1.5 and
3 T. Value distributions between the regimes are ambiguous and raise a UnitsError that says
which config key to set: the loader never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refracture.errors import UnitsError
from refracture.imaging.volume import Volume

PDFF_FACTORS = {"percent": 1.0, "fraction": 100.0, "per_mille": 0.1}

# (unit, lowest and highest 99th percentile of ROI values compatible with it). Between the
# windows the map is ambiguous (e.g. p99 of 2: a fraction above 1, or percent PDFF of 2 %).
_PDFF_P99_WINDOWS = (
    ("fraction", 0.05, 1.05),
    ("percent", 5.0, 110.0),
    ("per_mille", 150.0, 1100.0),
)
# Median of ROI values: T2* in ms vs R2* in 1/s. The two readings of a number cross at
# sqrt(1000) ~ 32 (T2* 32 ms = R2* 32 1/s), and fatty 1.5 T marrow gets close to it from
# both sides, so medians of 25-35 are refused as ambiguous rather than converted: on a
# 560-patient synthetic cohort a 30 1/s map would otherwise have been read as T2*.
_R2STAR_MEDIAN_WINDOWS = (("t2star_ms", 1.0, 25.0), ("per_s", 35.0, 600.0))


@dataclass(frozen=True)
class UnitsDecision:
    """What the map was stored in, how that was decided, and whether values were converted."""

    unit: str
    source: str  # "config", "detected" or "series_description"
    converted: bool


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def detect_pdff_units(values: np.ndarray) -> str | None:
    """'fraction', 'percent' or 'per_mille' from ROI values, or None when ambiguous."""
    v = _finite(values)
    if v.size == 0:
        return None
    p99 = float(np.percentile(v, 99))
    for unit, lo, hi in _PDFF_P99_WINDOWS:
        if lo <= p99 <= hi:
            return unit
    return None


def detect_r2star_units(values: np.ndarray) -> str | None:
    """'per_s' or 't2star_ms' from ROI values, or None when ambiguous."""
    v = _finite(values)
    v = v[v > 0]
    if v.size == 0:
        return None
    med = float(np.median(v))
    for unit, lo, hi in _R2STAR_MEDIAN_WINDOWS:
        if lo <= med <= hi:
            return unit
    return None


def r2star_hint(series_description: str | None) -> str | None:
    """A DICOM SeriesDescription naming T2* or R2* (GE: 'R2*', 'T2* map', ...)."""
    if not series_description:
        return None
    text = series_description.upper().replace(" ", "")
    has_t2 = "T2*" in text or "T2STAR" in text
    has_r2 = "R2*" in text or "R2STAR" in text
    if has_t2 != has_r2:
        return "t2star_ms" if has_t2 else "per_s"
    return None


def resolve_pdff(
    vol: Volume, roi_values: np.ndarray, configured: str, patient_id: str | None = None
) -> tuple[Volume, UnitsDecision]:
    """The PDFF map in percent, and how its stored unit was decided."""
    if configured != "auto":
        unit, source = configured, "config"
    else:
        unit, source = detect_pdff_units(roi_values), "detected"
        if unit is None:
            p99 = _p99_text(roi_values)
            raise UnitsError(
                f"cannot tell the PDFF units from the values in the vertebrae ({p99}): neither "
                "a fraction (0-1), percent (0-100) nor per mille (0-1000, x10 scaled); set "
                "extraction.pdff_units to fraction, percent or per_mille",
                patient_id=patient_id,
                file=vol.path,
            )
    factor = PDFF_FACTORS[unit]
    data = vol.data if factor == 1.0 else (vol.data * np.float32(factor)).astype(np.float32)
    return vol.with_data(data, units="percent"), UnitsDecision(unit, source, factor != 1.0)


def resolve_r2star(
    vol: Volume, roi_values: np.ndarray, configured: str, patient_id: str | None = None
) -> tuple[Volume, UnitsDecision]:
    """The R2* map in 1/s (a T2* map in ms converts as 1000 / T2*)."""
    if configured != "auto":
        unit, source = configured, "config"
    else:
        detected = detect_r2star_units(roi_values)
        hint = r2star_hint(vol.metadata.get("series_description"))
        if hint is not None and detected not in (None, hint):
            raise UnitsError(
                f"the series description says {hint} but the values in the vertebrae look like "
                f"{detected} ({_median_text(roi_values)}); set extraction.r2star_units to per_s "
                "or t2star_ms",
                patient_id=patient_id,
                file=vol.path,
            )
        unit, source = (hint, "series_description") if hint else (detected, "detected")
        if unit is None:
            raise UnitsError(
                f"cannot tell whether this is an R2* map in 1/s or a T2* map in ms from the "
                f"values in the vertebrae ({_median_text(roi_values)}); set "
                "extraction.r2star_units to per_s or t2star_ms",
                patient_id=patient_id,
                file=vol.path,
            )
    if unit == "t2star_ms":
        with np.errstate(divide="ignore", invalid="ignore"):
            # T2* <= 0 ms is a fit failure: NaN, dropped and counted as non-finite later.
            data = (1000.0 / vol.data.astype(np.float64)).astype(np.float32)
        data[vol.data <= 0] = np.nan
        return vol.with_data(data, units="per_s"), UnitsDecision(unit, source, True)
    return vol.with_data(vol.data, units="per_s"), UnitsDecision(unit, source, False)


def _p99_text(values: np.ndarray) -> str:
    v = _finite(values)
    return f"99th percentile {np.percentile(v, 99):.3g}" if v.size else "no finite values"


def _median_text(values: np.ndarray) -> str:
    v = _finite(values)
    v = v[v > 0]
    return f"median {np.median(v):.3g}" if v.size else "no positive values"
