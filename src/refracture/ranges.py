"""Plausible ranges of covariates and imaging features, and the physics of the maps' units.

Training refuses values outside the plausible ranges (an age of 400 is a typo, not a patient);
scoring flags them in the ``warnings`` column and still scores the row. A value that the
physics of marrow rules out in its declared unit (:func:`unit_mistake`: a PDFF of 0.4 %, an R2*
of 12 1/s at 3 T) is a unit mistake, and scoring refuses the row whatever the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from refracture.maps import INTENSITY_STATS, LOCATION_STATS, MAP_SPECS, MAPS, PRODUCT_STATS

__all__ = [
    "LOCATION_STATS",
    "PDFF_FRACTION_BELOW",
    "R2STAR_FLOOR_PER_T",
    "plausible_range",
    "r2star_floor",
    "unit_mistake",
]

PLAUSIBLE: dict[str, tuple[float, float]] = {
    "age": (18.0, 110.0),
    "bmi": (10.0, 70.0),
    "bmd_tscore": (-8.0, 4.0),
    "cement_volume_ml": (0.0, 40.0),
    "n_fractured": (0.0, 20.0),
    # morphometry: patient aggregates
    "morph_genant_max": (0.0, 3.0),
    "morph_n_deformed": (0.0, 30.0),
    "morph_wedge_angle_deg_index": (-60.0, 60.0),
}
# Intensity statistics of the maps, by prefix, in each map's canonical unit.
PLAUSIBLE_PREFIX: dict[str, tuple[float, float]] = {
    f"{name}_": spec.plausible for name, spec in MAP_SPECS.items()
}
# Morphometry per vertebra (``morph_{measure}_{level}``): heights in mm (an adult lumbar body is
# ~25 mm high; twice that is a labelling error), ratios (1 for an intact body), height loss in
# percent against intact neighbours (negative: taller than expected), Genant grade 0-3, body
# volume in ml (an adult L5 body ~40 ml).
PLAUSIBLE_MORPH: dict[str, tuple[float, float]] = {
    "ha_mm": (0.0, 60.0),
    "hm_mm": (0.0, 60.0),
    "hp_mm": (0.0, 60.0),
    "wedge_ratio": (0.0, 2.0),
    "biconcavity_ratio": (0.0, 2.0),
    "height_loss_pct": (-100.0, 100.0),
    "genant_grade": (0.0, 3.0),
    "body_volume_ml": (0.0, 150.0),
}
#: A marrow PDFF location below this (%) is a fraction given as percent: adult vertebral marrow
#: holds at least ~10 % fat (and oedematous fractured bodies keep a few percent).
PDFF_FRACTION_BELOW = 1.0
#: The lowest vertebral-marrow R2* (1/s) per tesla of field strength. Marrow R2* grows about
#: linearly with the field (trabecular bone's susceptibility), ~20-80 1/s at 1.5 T and ~40-160
#: 1/s at 3 T, lower in fatty osteoporotic and oedematous bodies. 8 1/s per T (12 at 1.5 T, 24 at
#: 3 T) stays below every vertebra of the synthetic cohort, fractured ones included. Assumption.
R2STAR_FLOOR_PER_T = 8.0
#: Field strength assumed when the scanner's is unknown (the lower floor: never refuse a 1.5 T
#: patient for a 3 T rule).
DEFAULT_FIELD_T = 1.5


def plausible_range(
    column: str, overrides: Mapping[str, Sequence[float]] | None = None
) -> tuple[float, float] | None:
    """The plausible range of a covariate or imaging feature column, or None if unknown.

    ``overrides`` (config ``covariates.ranges``) gives ranges for a study's own column names,
    e.g. ``{age_years: [18, 110]}``, and wins over the defaults.
    """
    if overrides and column in overrides:
        lo, hi = overrides[column]
        return float(lo), float(hi)
    if column in PLAUSIBLE:
        return PLAUSIBLE[column]
    if column.startswith("morph_"):
        for measure, rng in PLAUSIBLE_MORPH.items():
            if column.startswith(f"morph_{measure}_"):
                return rng
        return None
    for prefix, rng in PLAUSIBLE_PREFIX.items():
        if column.startswith(prefix):
            stat = _statistic(column[len(prefix) :])
            return rng if stat is None or stat in INTENSITY_STATS else None
    return None


def _statistic(rest: str) -> str | None:
    """The statistic a map feature's name (without the map prefix) starts with, else None."""
    for stat in sorted(PRODUCT_STATS, key=len, reverse=True):  # volume_ml before a short one
        if rest == stat or rest.startswith(f"{stat}_"):
            return stat
    return None


def _map_stat(column: str) -> tuple[str, str] | None:
    """(map, statistic) of an imaging intensity feature, else None."""
    for kind in MAPS:
        if column.startswith(f"{kind}_"):
            stat = _statistic(column[len(kind) + 1 :])
            return (kind, stat) if stat in INTENSITY_STATS else None
    return None


def r2star_floor(field_strength_t: float | None) -> float:
    """The lowest plausible marrow R2* location (1/s) at a field strength (T; None: unknown)."""
    if field_strength_t is None or not math.isfinite(field_strength_t) or field_strength_t <= 0:
        field_strength_t = DEFAULT_FIELD_T
    return R2STAR_FLOOR_PER_T * field_strength_t


def unit_mistake(column: str, value: float, field_strength_t: float | None = None) -> str | None:
    """Why ``value`` of imaging feature ``column`` cannot be marrow in the feature's unit (PDFF
    in percent, R2* in 1/s), naming the likely mistake; None when physics allows it.

    - any PDFF intensity outside 0-100 % (above: per mille or another scale);
    - a PDFF mean or median below 1 %: a fraction (0-1) given as percent;
    - a negative R2*, or an R2* mean or median below :func:`r2star_floor` at the scanner's field
      strength: a T2* map in ms (T2* = 1000 / R2*: marrow reads 6-50 ms) or R2* in 1/ms.

    Values physics allows are never refused here, however unusual (the training range warns).
    """
    parsed = _map_stat(column)
    if parsed is None or value is None or not math.isfinite(value):
        return None
    kind, stat = parsed
    shown = f"{column}={value:.3g}"
    if kind == "pdff":
        if value > 100.0:
            scale = "per mille (x10)" if value <= 1000.0 else "another scale"
            return f"{shown}: PDFF above 100 %: looks like {scale}, not percent"
        if value < 0.0:
            return f"{shown}: PDFF below 0 %: not a PDFF map in percent"
        if stat in LOCATION_STATS and value < PDFF_FRACTION_BELOW:
            return f"{shown}: PDFF looks like a fraction (0-1), not percent"
        return None
    if value < 0.0:
        return f"{shown}: R2* below 0 1/s: not an R2* map in 1/s"
    floor = r2star_floor(field_strength_t)
    if stat in LOCATION_STATS and value < floor:
        known = field_strength_t is not None and math.isfinite(field_strength_t)
        field = f"{field_strength_t:g} T" if known else "1.5 T (field strength unknown)"
        if value < 1.0:
            return f"{shown}: R2* below marrow's {floor:g} 1/s at {field}: looks like 1/ms, not 1/s"
        return (
            f"{shown}: R2* below marrow's {floor:g} 1/s at {field}: looks like a T2* in ms, "
            "not R2* in 1/s"
        )
    return None
