"""Vertebral levels and label-map conventions.

Level names are the anatomical ones (``T12``, ``L1``); label values depend on the tool that
drew the segmentation, so every label map is translated to level names through a convention.
"""

from __future__ import annotations

from collections.abc import Mapping

CERVICAL = [f"C{i}" for i in range(1, 8)]
THORACIC = [f"T{i}" for i in range(1, 13)]
LUMBAR = [f"L{i}" for i in range(1, 6)]

# Cranio-caudal order; T13 and L6 are transitional variants.
LEVEL_ORDER: list[str] = [*CERVICAL, *THORACIC, "T13", *LUMBAR, "L6", "S1"]
_RANK = {name: i for i, name in enumerate(LEVEL_ORDER)}

# VerSe (Sekuboyina et al., Med Image Anal 2021): 1-7 C1-C7, 8-19 T1-T12, 20-24 L1-L5,
# 25 L6, 28 T13.
VERSE: dict[int, str] = {
    **{i + 1: name for i, name in enumerate(CERVICAL)},
    **{i + 8: name for i, name in enumerate(THORACIC)},
    **{i + 20: name for i, name in enumerate(LUMBAR)},
    25: "L6",
    28: "T13",
}

# TotalSegmentator v2, task "total" (class map in totalsegmentator/map_to_binary.py):
# 26 vertebrae_S1, 27 L5 ... 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1.
TOTALSEGMENTATOR: dict[int, str] = {
    26: "S1",
    **{27 + i: name for i, name in enumerate(reversed(LUMBAR))},
    **{32 + i: name for i, name in enumerate(reversed(THORACIC))},
    **{44 + i: name for i, name in enumerate(reversed(CERVICAL))},
}

# The thoraco-lumbar levels the synthetic cohort covers and the product reports on.
TL_LEVELS = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
TL_JUNCTION = ["T11", "T12", "L1", "L2"]
L1L4 = ["L1", "L2", "L3", "L4"]


def convention(name: str, custom: Mapping[int, str] | None = None) -> dict[int, str]:
    """Label value -> level name for a convention ('verse', 'totalsegmentator', 'custom')."""
    if name == "verse":
        return dict(VERSE)
    if name == "totalsegmentator":
        return dict(TOTALSEGMENTATOR)
    if name == "custom":
        if not custom:
            raise ValueError("the custom label convention needs a label_map")
        bad = sorted({v for v in custom.values() if v not in _RANK})
        if bad:
            raise ValueError(f"unknown level names in label_map: {', '.join(bad)}")
        return {int(k): str(v) for k, v in custom.items()}
    raise ValueError(f"unknown label convention '{name}' (verse, totalsegmentator or custom)")


def level_rank(level: str) -> int:
    """Position in cranio-caudal order (raises KeyError for unknown names)."""
    return _RANK[level]


def is_level(name: str) -> bool:
    return name in _RANK


def sort_levels(levels: list[str]) -> list[str]:
    return sorted(levels, key=level_rank)


def adjacent_levels(level: str, present: list[str]) -> list[str]:
    """The anatomical neighbours of ``level`` (one above, one below) that are in ``present``.

    Transitional levels (T13, L6) count only when the patient has them; a neighbour that is
    missing from the label map is not replaced by the next one further away.
    """
    order = [lv for lv in LEVEL_ORDER if lv not in ("T13", "L6") or lv in present]
    if level not in order:
        return []
    i = order.index(level)
    near = [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)]
    return [lv for lv in near if lv in present]


def parse_level_list(text: object) -> list[str]:
    """Parse a manifest cell such as ``'T12;L1'`` (empty or NaN -> [])."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    items = [t.strip().upper() for t in str(text).replace(",", ";").split(";")]
    return [t for t in items if t]


def level_list(value: object) -> list[str]:
    """The levels of a manifest cell, parsed (``'T12;L1'``) or already a list or array: the one
    place level lists are read."""
    if isinstance(value, list | tuple) or hasattr(value, "__array__"):
        return [str(v).strip() for v in value]  # type: ignore[union-attr]
    return parse_level_list(value)
