"""Model inputs, terms and risks in words people read: the card and the calculator.

Covariates are named by the study (the training config); the names of the shipped configs get
a plain label and a unit, any other name is shown as written. Imaging features follow the
product's naming (``{map}_{statistic}_{level|group}``, ``morph_{measure}_{level}``) and are
described from it.
"""

from __future__ import annotations

import math
import re

from refracture.maps import MAP_SPECS

__all__ = [
    "describe",
    "group_words",
    "in_100",
    "plain_number",
    "term_words",
]

_LABELS = {
    "age": ("Age", "years"),
    "bmi": ("Body mass index", "kg/m²"),
    "bmd_tscore": ("Bone density T-score", "SD"),
    "cement_volume_ml": ("Cement volume", "ml"),
    "n_fractured": ("Fractured vertebrae", ""),
    "prior_fracture": ("Earlier fracture", ""),
    "glucocorticoid": ("Glucocorticoid (steroid) treatment", ""),
    "anti_osteoporosis": ("Osteoporosis medicine", ""),
    "diabetes": ("Diabetes", ""),
    "index_tl_junction": ("Treated level at T11-L2", ""),
    "sex": ("Sex", ""),
    "procedure": ("Procedure", ""),
    "cement_leakage": ("Cement leakage", ""),
    "scanner_field_strength_t": ("Scanner field strength", "T"),
}
_MAPS = {name: (spec.title, spec.symbol) for name, spec in MAP_SPECS.items()}
_STATS = {
    "mean": "mean",
    "median": "median",
    "sd": "spread (SD)",
    "p10": "10th percentile",
    "p90": "90th percentile",
    "iqr": "interquartile range",
}
_GROUPS = {
    "normal": "of the untreated vertebrae",
    "adjacent": "of the vertebrae next to the treated one",
    "index": "of the treated vertebrae",
    "l1l4": "of L1-L4 (untreated)",
}
_MORPH = {
    "ha_mm": ("Front height", "mm"),
    "hm_mm": ("Middle height", "mm"),
    "hp_mm": ("Back height", "mm"),
    "wedge_ratio": ("Wedge ratio", ""),
    "biconcavity_ratio": ("Biconcavity ratio", ""),
    "height_loss_pct": ("Height loss", "%"),
    "genant_grade": ("Genant grade", ""),
    "body_volume_ml": ("Body volume", "ml"),
}
_FEATURE = re.compile(r"^(?P<map>pdff|r2star)_(?P<stat>[a-z0-9]+)_(?P<where>.+)$")


def describe(column: str) -> tuple[str, str]:
    """(label, unit) of a model input column: ``('Marrow fat (PDFF) mean of the untreated
    vertebrae', '%')`` for ``pdff_mean_normal``; the column itself for an unknown name."""
    if column in _LABELS:
        return _LABELS[column]
    m = _FEATURE.match(column)
    if m:
        label, unit = _MAPS[m["map"]]
        stat = _STATS.get(m["stat"], m["stat"])
        where = _GROUPS.get(m["where"], f"at {m['where']}")
        unit = "" if m["stat"] in ("n",) or "volume" in m["stat"] else unit
        return f"{label} {stat} {where}", unit
    for measure, (label, unit) in _MORPH.items():
        if column.startswith(f"morph_{measure}_"):
            return f"{label} at {column[len(measure) + 7 :]}", unit
    return column.replace("_", " "), ""


def plain_number(value: float, digits: int = 3) -> str:
    """A number as people write it: 3 significant digits, no exponent for ordinary values."""
    if value is None or not math.isfinite(value):
        return "not measured"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}"


def term_words(term: str, value: object) -> str:
    """A model term with the patient's value: ``sex[M]`` -> 'Sex: M' (or 'Sex: F (not M)'),
    ``age`` -> 'Age 89 years', ``prior_fracture`` = 1 -> 'Earlier fracture: yes'."""
    if "[" in term and term.endswith("]"):  # one level of a category, against the reference
        column, level = term[:-1].split("[", 1)
        label = describe(column)[0]
        if value is None or str(value) == level:
            return f"{label}: {level}"
        return f"{label}: {value} (not {level})"
    label, unit = describe(term)
    number = _number(value)
    if number is None:
        return f"{label}: {value}"
    if unit == "" and number in (0.0, 1.0) and term not in ("n_fractured",):
        return f"{label}: {'yes' if number == 1 else 'no'}"
    return f"{label} {plain_number(number)}{(' ' + unit) if unit else ''}"


def _number(value: object) -> float | None:
    """``value`` as a float when it is a number (numpy's too), else None."""
    if isinstance(value, bool | str) or value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def in_100(p: float) -> str:
    """A probability as a natural frequency: '23 in 100', 'fewer than 1 in 100'."""
    n = 100.0 * p
    if n < 0.5:
        return "fewer than 1 in 100"
    if n > 99.5:
        return "more than 99 in 100"
    return f"{int(round(n))} in 100"


def group_words(group: str, thresholds: tuple[float, float]) -> tuple[str, str]:
    """(headline, explanation) of a risk group with the model's thresholds."""
    low, high = (int(round(100 * t)) for t in thresholds)
    return {
        "low": ("Lower risk", f"below {low} in 100"),
        "intermediate": ("Medium risk", f"between {low} and {high} in 100"),
        "high": ("Higher risk", f"{high} in 100 or more"),
    }[group]
