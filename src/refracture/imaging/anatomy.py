"""Typical adult vertebral body sizes by level, for expected heights and plausibility checks.

Approximate adult means (height, antero-posterior depth, left-right width of the body, mm),
rounded from the morphometry studies of Panjabi et al. (cervical and thoracic 1991, lumbar
1992). Only ratios between levels and rough ranges are used: the expected height of a vertebra
from its intact neighbours is scaled by the ratio of the levels' typical heights, and a label
whose size is far from its level's typical size, relative to the patient's other levels, is
flagged. C1 and C2 have no comparable body (atlas ring, dens) and the S1 label of most tools
holds the whole sacrum, so none of them is measured.
"""

from __future__ import annotations

import math

__all__ = ["NOT_A_BODY", "TYPICAL_BODY_MM", "typical_height_mm", "typical_volume_ml"]

TYPICAL_BODY_MM: dict[str, tuple[float, float, float]] = {
    "C3": (14.0, 15.5, 16.0),
    "C4": (13.5, 15.5, 17.0),
    "C5": (13.5, 16.0, 18.5),
    "C6": (13.5, 16.5, 21.0),
    "C7": (14.5, 16.5, 23.5),
    "T1": (15.0, 16.0, 26.0),
    "T2": (16.0, 17.0, 26.0),
    "T3": (16.5, 18.0, 26.5),
    "T4": (17.0, 19.5, 27.0),
    "T5": (17.5, 21.0, 28.0),
    "T6": (18.0, 22.5, 29.0),
    "T7": (18.5, 24.0, 30.0),
    "T8": (19.5, 25.5, 32.0),
    "T9": (20.5, 27.0, 34.0),
    "T10": (21.0, 28.0, 36.0),
    "T11": (22.0, 29.0, 38.0),
    "T12": (23.5, 30.0, 40.0),
    "T13": (24.0, 31.0, 41.0),  # transitional: between T12 and L1
    "L1": (25.0, 32.0, 42.0),
    "L2": (26.0, 33.0, 45.0),
    "L3": (27.0, 34.0, 47.0),
    "L4": (27.0, 35.0, 49.0),
    "L5": (26.0, 35.0, 50.0),
    "L6": (26.0, 35.0, 50.0),  # transitional: like L5
}

#: Levels without a vertebral body comparable to the others (not measured).
NOT_A_BODY = frozenset({"C1", "C2", "S1"})


def typical_height_mm(level: str) -> float | None:
    size = TYPICAL_BODY_MM.get(level)
    return size[0] if size else None


def typical_volume_ml(level: str) -> float | None:
    """Volume of an elliptic cylinder of the level's typical size (a body, not the arch)."""
    size = TYPICAL_BODY_MM.get(level)
    if size is None:
        return None
    h, d, w = size
    return math.pi / 4 * d * w * h / 1000.0
