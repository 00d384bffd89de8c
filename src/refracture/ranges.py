"""Plausible ranges of covariates and imaging features.

Training refuses values outside them (an age of 400 is a typo, not a patient); scoring flags
them in the ``warnings`` column and still scores the row (PRODUCT.md section 6, issue 6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PLAUSIBLE: dict[str, tuple[float, float]] = {
    "age": (18.0, 110.0),
    "bmi": (10.0, 70.0),
    "bmd_tscore": (-8.0, 4.0),
    "cement_volume_ml": (0.0, 40.0),
    "n_fractured": (0.0, 20.0),
}
# Intensity statistics of the maps, by prefix: PDFF in percent, R2* in 1/s.
PLAUSIBLE_PREFIX: dict[str, tuple[float, float]] = {
    "pdff_": (0.0, 100.0),
    "r2star_": (0.0, 1000.0),
}
# Statistics that are not intensities (counts, volumes, shape of the distribution).
NON_INTENSITY_STATS = ("_n_", "_volume_ml_", "_skewness_", "_kurtosis_", "_cov_")


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
    for prefix, rng in PLAUSIBLE_PREFIX.items():
        if column.startswith(prefix) and not any(s in column + "_" for s in NON_INTENSITY_STATS):
            return rng
    return None
