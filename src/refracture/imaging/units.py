"""Detecting and converting the units of PDFF and R2* maps.

PDFF is reported in percent, R2* in 1/s. Units are best declared (manifest, sidecar, DICOM:
see :mod:`refracture.imaging.site_units`, which decides them once per site). Undeclared units
are detected from the values inside the labelled vertebrae, where the physiology is known:
vertebral-marrow PDFF is ~10-90 %, marrow T2* ~5-25 ms and R2* ~35-250 1/s at 1.5 and 3 T.
Value distributions between the regimes are ambiguous and raise a UnitsError that says which
key to set: the loader never guesses. :func:`resolve_pdff` / :func:`resolve_r2star` are the
older per-patient deciders (config, else the patient's own values).
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
    """What the map was stored in, how that was decided, and whether values were converted.

    ``source``: "manifest", "sidecar", "dicom" (declared for the image), "config", "site"
    (detected once from all of the site's patients), "model" (the unit the model was trained
    with for that site), or for the per-patient resolvers "detected" / "series_description".
    ``note`` says when the values look like another unit than the one used.
    """

    unit: str
    source: str
    converted: bool
    note: str = ""


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def unit_statistic(kind: str, values: np.ndarray) -> float:
    """The value a map's unit is detected from: PDFF's 99th percentile, R2*'s median of the
    positive values (NaN when there are none)."""
    v = _finite(values)
    if kind == "r2star":
        v = v[v > 0]
        return float(np.median(v)) if v.size else float("nan")
    return float(np.percentile(v, 99)) if v.size else float("nan")


def unit_of_statistic(kind: str, statistic: float) -> str | None:
    """The unit whose window holds ``statistic`` (see :func:`unit_statistic`), or None."""
    if not np.isfinite(statistic):
        return None
    windows = _R2STAR_MEDIAN_WINDOWS if kind == "r2star" else _PDFF_P99_WINDOWS
    for unit, lo, hi in windows:
        if lo <= statistic <= hi:
            return unit
    return None


def detect_pdff_units(values: np.ndarray) -> str | None:
    """'fraction', 'percent' or 'per_mille' from ROI values, or None when ambiguous."""
    return unit_of_statistic("pdff", unit_statistic("pdff", values))


def detect_r2star_units(values: np.ndarray) -> str | None:
    """'per_s' or 't2star_ms' from ROI values, or None when ambiguous."""
    return unit_of_statistic("r2star", unit_statistic("r2star", values))


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
    return convert_pdff(vol, unit), UnitsDecision(unit, source, PDFF_FACTORS[unit] != 1.0)


def convert_pdff(vol: Volume, unit: str) -> Volume:
    """The PDFF map in percent, from values stored in ``unit``."""
    factor = PDFF_FACTORS[unit]
    data = vol.data if factor == 1.0 else (vol.data * np.float32(factor)).astype(np.float32)
    return vol.with_data(data, units="percent")


def convert_r2star(vol: Volume, unit: str) -> Volume:
    """The R2* map in 1/s, from values stored in ``unit`` (a T2* map in ms: 1000 / T2*)."""
    if unit == "t2star_ms":
        with np.errstate(divide="ignore", invalid="ignore"):
            # T2* <= 0 ms is a fit failure: NaN, dropped and counted as non-finite later.
            data = (1000.0 / vol.data.astype(np.float64)).astype(np.float32)
        data[vol.data <= 0] = np.nan
        return vol.with_data(data, units="per_s")
    if unit != "per_s":
        raise ValueError(f"unknown R2* unit {unit!r}")
    return vol.with_data(vol.data, units="per_s")


def apply_units(vol: Volume, decision: UnitsDecision) -> Volume:
    """Pass 2 of the cohort's unit decision: the map converted from ``decision.unit``."""
    if vol.kind == "pdff":
        return convert_pdff(vol, decision.unit)
    if vol.kind == "r2star":
        return convert_r2star(vol, decision.unit)
    raise ValueError(f"a {vol.kind} volume has no units")


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
    return convert_r2star(vol, unit), UnitsDecision(unit, source, unit == "t2star_ms")


def _p99_text(values: np.ndarray) -> str:
    v = _finite(values)
    return f"99th percentile {np.percentile(v, 99):.3g}" if v.size else "no finite values"


def _median_text(values: np.ndarray) -> str:
    v = _finite(values)
    v = v[v > 0]
    return f"median {np.median(v):.3g}" if v.size else "no positive values"
