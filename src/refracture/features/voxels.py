"""A patient's voxels made into features: exclusions counted, statistics per vertebra and per
patient-level group (:func:`map_features`), and the groups themselves.

Step 2 of :mod:`refracture.features.patient`; every map is one vectorised pass
(:func:`refracture.imaging.stats.grouped_stats`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refracture.features.measured import kept_voxels
from refracture.features.schema import GROUPS
from refracture.imaging.roi import Rois
from refracture.imaging.stats import PRODUCT_STATS, grouped_stats
from refracture.levels import L1L4, LEVEL_ORDER, adjacent_levels

__all__ = ["group_members", "map_features", "one_sided", "void"]


def map_features(
    name: str,
    v: np.ndarray,
    cement: np.ndarray,
    rois: Rois,
    groups: dict[str, list[int]],
    value_range: tuple[float, float],
    min_voxels: int,
    voxel_ml: float,
) -> tuple[dict[str, float], list[dict[str, Any]], set[str]]:
    """One map's features per level and group, its vertebra rows, and the too-small names.

    Drops (and counts per level) non-finite and out-of-range voxels; cement-like voxels
    are already marked in ``cement``.
    """
    n_levels = len(rois.levels)
    finite, in_range, valid = kept_voxels(v, cement, value_range)
    stats = _level_and_group_stats(v[valid], rois.level_of[valid], n_levels, groups)
    stats["volume_ml"] = stats["n"] * voxel_ml
    too_small = stats["n"] < min_voxels

    features: dict[str, float] = {}
    for gi, gname in enumerate([*rois.levels, *groups]):
        for stat in PRODUCT_STATS:
            value = float(stats[stat][gi])
            if too_small[gi] and stat not in ("n", "volume_ml"):
                value = float("nan")  # reported in qc_small_roi, never a silent estimate
            features[f"{name}_{stat}_{gname}"] = value

    counts = {
        "n_labelled": rois.n_labelled,
        "n_roi": rois.n_eroded,
        "n_nonfinite": np.bincount(rois.level_of[~finite & ~cement], minlength=n_levels),
        "n_out_of_range": np.bincount(
            rois.level_of[finite & ~in_range & ~cement], minlength=n_levels
        ),
    }
    rows = []
    for li, level in enumerate(rois.levels):
        rec: dict[str, Any] = {"level": level, "map": name}
        rec.update({stat: features[f"{name}_{stat}_{level}"] for stat in PRODUCT_STATS})
        rec["n"] = int(stats["n"][li])
        rec.update({k: int(c[li]) for k, c in counts.items()})
        rec["small_roi"] = bool(too_small[li])
        rows.append(rec)
    small = {g for g, s in zip([*rois.levels, *groups], too_small, strict=True) if s}
    return features, rows, small


def void(v: np.ndarray, eps: float) -> np.ndarray:
    """Where a map is a signal void: within ``eps`` of 0, or not finite."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(v) | (np.abs(v) <= eps)


def group_members(
    levels: list[str], treated: list[str], fractured: list[str]
) -> dict[str, list[int]]:
    """Level positions of each patient-level group (docs/data.md)."""
    excluded = set(treated) | set(fractured)
    adjacent = {nb for lv in treated for nb in adjacent_levels(lv, levels)} - excluded
    members = {
        "index": [lv for lv in levels if lv in treated],
        "adjacent": [lv for lv in levels if lv in adjacent],
        "l1l4": [lv for lv in levels if lv in L1L4 and lv not in excluded],
        "normal": [lv for lv in levels if lv not in excluded],
    }
    return {g: [levels.index(lv) for lv in members[g]] for g in GROUPS}


def one_sided(levels: list[str], treated: list[str], fractured: list[str]) -> str:
    """Treated levels with an anatomical neighbour missing from the label map, and where their
    adjacent features come from: ``"L2: L3 (no L1)"``; '' when every neighbour is labelled."""
    present = set(levels)
    order = [lv for lv in LEVEL_ORDER if lv not in ("T13", "L6") or lv in present]
    excluded = set(treated) | set(fractured)
    out = []
    for lv in treated:
        i = order.index(lv)
        neighbours = [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)]
        missing = [nb for nb in neighbours if nb not in present]
        if missing:
            used = [nb for nb in adjacent_levels(lv, levels) if nb not in excluded]
            out.append(f"{lv}: {'+'.join(used) or 'none'} (no {'+'.join(missing)})")
    return "; ".join(out)


def _level_and_group_stats(
    values: np.ndarray, level_of: np.ndarray, n_levels: int, groups: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Stats for ids 0..L-1 (levels) then L.. (groups), pooling the voxels of each group.

    A voxel appears once for its level and once more for every group holding that level,
    so overlapping groups cost one extra copy of their voxels, not a pass per group.
    """
    vals = [values]
    ids = [level_of.astype(np.int64)]
    for gi, members in enumerate(groups.values()):
        sel = np.isin(level_of, members)
        vals.append(values[sel])
        ids.append(np.full(int(sel.sum()), n_levels + gi, dtype=np.int64))
    return grouped_stats(np.concatenate(vals), np.concatenate(ids), n_levels + len(groups))
