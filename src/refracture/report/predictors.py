"""The predictors of a run with their kind, unit and coding (TRIPOD+AI item 9a).

Units are known for the covariate names of the synthetic study and for every imaging feature
refracture computes (``{map}_{stat}_{where}``: PDFF in percent, R2* in 1/s, counts in voxels,
volumes in ml; morphometry in mm, ratios, percent, degrees or Genant grades). A study's own
column names fall back to a unit read from the name's suffix (``_mm``, ``_ml``, ``_years``...)
or to "as recorded" - the report never guesses a unit it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = [
    "AS_RECORDED",
    "BINARY_MEANINGS",
    "binary_coding",
    "predictor_kinds",
    "predictors_table",
    "unit_of",
]

AS_RECORDED = "as recorded"

#: Units of the synthetic study's numeric covariates (and common clinical names).
KNOWN_UNITS: dict[str, str] = {
    "age": "years",
    "bmi": "kg/m²",
    "bmd_tscore": "SD (T-score)",
    "cement_volume_ml": "ml",
    "n_fractured": "count (vertebrae)",
    "scanner_field_strength_t": "T",
}

#: What 1 and 0 mean for the synthetic study's binary covariates.
BINARY_MEANINGS: dict[str, tuple[str, str]] = {
    "prior_fracture": ("a fragility fracture before the index fracture", "none"),
    "glucocorticoid": ("glucocorticoid treatment", "none"),
    "anti_osteoporosis": ("anti-osteoporosis treatment", "none"),
    "diabetes": ("diabetes", "no diabetes"),
    "index_tl_junction": ("index level in T11-L2 (thoraco-lumbar junction)", "elsewhere"),
}

# Statistics of a map and their unit class: intensities carry the map's unit.
_INTENSITY_STATS = ("mean", "sd", "median", "p10", "p25", "p75", "p90", "iqr", "min", "max",
                    "mad", "medad")  # fmt: skip
_UNITLESS_STATS = {"skewness": "unitless", "kurtosis": "unitless (excess)",
                   "rmad": "ratio", "cov": "ratio"}  # fmt: skip
_MAP_UNITS = {"pdff": "% (PDFF)", "r2star": "1/s"}

# Morphometry measures (from the label map) and their units.
_MORPH_UNITS = (
    ("_mm", "mm"),
    ("_ratio", "ratio"),
    ("_pct", "%"),
    ("_deg", "degrees"),
    ("_ml", "ml"),
)
_SUFFIX_UNITS = (
    ("_years", "years"),
    ("_days", "days"),
    ("_mm", "mm"),
    ("_ml", "ml"),
    ("_pct", "%"),
    ("_percent", "%"),
    ("_deg", "degrees"),
    ("_kg", "kg"),
    ("_cm", "cm"),
    ("_per_s", "1/s"),
    ("_ms", "ms"),
)


def unit_of(name: str, overrides: Mapping[str, str] | None = None) -> str:
    """The unit of a numeric predictor, or ``"as recorded"`` when refracture cannot know it.

    >>> unit_of("pdff_mean_normal"), unit_of("r2star_p90_L1"), unit_of("morph_ha_mm_L1")
    ('% (PDFF)', '1/s', 'mm')
    """
    if overrides and name in overrides:
        return overrides[name]
    if name in KNOWN_UNITS:
        return KNOWN_UNITS[name]
    parts = name.split("_")
    if parts[0] in _MAP_UNITS and len(parts) >= 3:
        stat = parts[1]
        if stat == "volume" and len(parts) >= 4 and parts[2] == "ml":
            return "ml"
        if stat == "n":
            return "voxels"
        if stat in _INTENSITY_STATS:
            return _MAP_UNITS[parts[0]]
        if stat in _UNITLESS_STATS:
            return _UNITLESS_STATS[stat]
    if parts[0] == "morph":
        if "genant" in name:
            return "Genant grade 0-3" if "n_deformed" not in name else "count (vertebrae)"
        if "n_deformed" in name:
            return "count (vertebrae)"
        for marker, unit in _MORPH_UNITS:
            if marker + "_" in name + "_":
                return unit
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return AS_RECORDED


def binary_coding(name: str) -> str:
    """How a 0/1 predictor is coded: ``1 = <meaning>; 0 = <meaning>`` when known."""
    if name in BINARY_MEANINGS:
        one, zero = BINARY_MEANINGS[name]
        return f"1 = {one}; 0 = {zero}"
    return "0/1 as coded in the clinical table"


def predictor_kinds(dataset: Any, feature_set: str) -> dict[str, str]:
    """Each input column of a feature set -> ``numeric`` | ``binary`` | ``categorical``."""
    return dataset.covariate_kinds(feature_set)


def predictors_table(dataset: Any, feature_sets: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """One row per predictor: ``predictor``, ``kind``, ``unit``, ``coding``, ``source``,
    ``missing`` (patients without a value, imputed inside the model pipeline).

    ``feature_sets`` are the run's (a predictor used only with imaging says so in ``source``).
    """
    imaging = set(dataset.imaging_features) if "clinical+imaging" in feature_sets else set()
    kinds = predictor_kinds(dataset, "clinical+imaging" if imaging else "clinical")
    references = dict(dataset.covariates.categorical)
    rows = []
    for name, kind in kinds.items():
        if kind == "numeric":
            unit, coding = unit_of(name), "per unit"
        elif kind == "binary":
            unit, coding = "0/1", binary_coding(name)
        else:
            levels = [str(v) for v in dataset.categories.get(name, [])]
            ref = references.get(name)
            others = [v for v in levels if v != ref]
            unit = "category"
            coding = f"reference {ref}; terms {', '.join(f'{name}[{v}]' for v in others)}"
        rows.append(
            {
                "predictor": name,
                "kind": kind,
                "unit": unit,
                "coding": coding,
                "source": "imaging" if name in imaging else "clinical",
                "missing": int(dataset.n_missing.get(name, 0)),
            }
        )
    return pd.DataFrame(rows, columns=["predictor", "kind", "unit", "coding", "source", "missing"])
