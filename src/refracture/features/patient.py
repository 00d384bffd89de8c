"""Features of one patient: read the three images, build ROIs, settle units, measure.

Bring the label map and R2* map onto the PDFF grid, build eroded vertebral ROIs, settle the
units, drop cement-like, non-finite and out-of-range voxels (counting them), then compute IBSI
first-order statistics for every vertebra and every patient-level group in one vectorised pass
per map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.config import ExtractionConfig
from refracture.errors import ImageError
from refracture.features.schema import GROUPS, MAPS, PatientResult
from refracture.ids import PATIENT_ID
from refracture.imaging.geometry import align_to
from refracture.imaging.io import load_volume
from refracture.imaging.roi import Rois, build_rois
from refracture.imaging.stats import PRODUCT_STATS, grouped_stats
from refracture.imaging.units import resolve_pdff, resolve_r2star
from refracture.levels import L1L4, TL_LEVELS, adjacent_levels, convention, level_list, sort_levels

__all__ = ["Stage", "extract_patient", "image_path"]

# Fraction of non-finite ROI voxels above which a map is unusable rather than noisy.
_MAX_NONFINITE_FRACTION = 0.5
# "Signal void" in cement: both maps at ~0 (PDFF in %, R2* in 1/s) or not finite.
_VOID_PDFF = 0.5
_VOID_R2STAR = 0.5


class Stage:
    """Which step a patient is in, so an error row can say where it failed."""

    name = "load"


def extract_patient(
    row: Mapping[str, Any] | pd.Series,
    config: ExtractionConfig,
    *,
    hashes: Mapping[str, str] | None = None,
    qc_png: str | Path | None = None,
    stage: Stage | None = None,
) -> PatientResult:
    """Features of one manifest row (as :func:`~refracture.features.manifest.read_manifest`
    returns them).

    Raises an :class:`~refracture.errors.InputError` subclass naming the patient and file
    when this patient cannot be extracted. ``qc_png``: where to write the QC picture.
    """
    stage = stage or Stage()
    pid = str(row[PATIENT_ID])
    treated = sort_levels(list(level_list(row.get("treated_levels"))))
    fractured = sort_levels(list(level_list(row.get("fractured_levels"))))
    hashes = hashes or {}

    stage.name = "load"
    vols = {}
    for kind in ("pdff", "labels", "r2star"):
        path = image_path(row, kind, pid)
        vols[kind] = load_volume(
            path,
            kind,  # type: ignore[arg-type]
            max_voxels=config.max_voxels,
            patient_id=pid,
            content_hash=hashes.get(kind),
        )
    pdff = vols["pdff"]

    stage.name = "geometry"
    labels, labels_resampled = align_to(
        vols["labels"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )
    r2star, r2star_resampled = align_to(
        vols["r2star"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )

    stage.name = "roi"
    conv = convention(config.label_convention, config.label_map)
    rois = build_rois(labels.data, pdff.spacing, conv, config.erosion_mm)
    if not rois.levels:
        found = ", ".join(str(v) for v in rois.unknown_labels[:10]) or "none"
        raise ImageError(
            f"the label map holds no vertebra known to the '{config.label_convention}' label "
            f"convention (label values found: {found}); set extraction.label_convention or "
            "extraction.label_map",
            patient_id=pid,
            file=labels.path,
        )
    missing_treated = [lv for lv in treated if lv not in rois.levels]
    if missing_treated:
        raise ImageError(
            f"the manifest names {', '.join(missing_treated)} as treated but the label map has "
            f"no such vertebra (levels present: {', '.join(rois.levels)})",
            patient_id=pid,
            file=labels.path,
        )
    treated_idx = np.array([rois.levels.index(lv) for lv in treated], dtype=np.int16)
    is_treated = np.isin(rois.level_of, treated_idx)

    for name, vol in (("pdff", pdff), ("r2star", r2star)):
        bad = int((~np.isfinite(vol.data[rois.coords])).sum())
        if bad > _MAX_NONFINITE_FRACTION * rois.n_voxels:
            raise ImageError(
                f"{bad} of {rois.n_voxels} voxels of the {name} map inside the vertebrae are "
                "NaN or infinite",
                patient_id=pid,
                file=vol.path,
            )

    stage.name = "units"
    sample = ~is_treated if (~is_treated).any() else np.ones_like(is_treated)
    pdff, pdff_units = resolve_pdff(
        pdff, pdff.data[rois.coords][sample], config.pdff_units, patient_id=pid
    )
    r2star, r2star_units = resolve_r2star(
        r2star, r2star.data[rois.coords][sample], config.r2star_units, patient_id=pid
    )

    stage.name = "features"
    values = {"pdff": pdff.data[rois.coords], "r2star": r2star.data[rois.coords]}
    cement = is_treated & (
        (values["r2star"] > config.cement_r2star_per_s)
        | (_void(values["pdff"], _VOID_PDFF) & _void(values["r2star"], _VOID_R2STAR))
    )
    groups = _groups(rois.levels, treated, fractured)
    ranges = {"pdff": config.pdff_range, "r2star": config.r2star_range}
    n_cement = np.bincount(rois.level_of[cement], minlength=len(rois.levels))
    features: dict[str, float] = {}
    vertebrae: list[dict[str, Any]] = []
    small: set[str] = set()
    dropped = {"n_nonfinite": 0, "n_out_of_range": 0}
    for name in MAPS:
        feats, rows, small_here = _map_features(
            name,
            values[name],
            cement,
            rois,
            groups,
            ranges[name],
            config.min_voxels,
            pdff.voxel_volume_ml,
        )
        features.update(feats)
        small |= small_here
        for rec in rows:
            rec["n_cement"] = int(n_cement[rois.levels.index(rec["level"])])
            rec["treated"] = rec["level"] in treated
            rec["fractured"] = rec["level"] in fractured
            dropped = {k: dropped[k] + rec[k] for k in dropped}
        vertebrae.extend(rows)

    order = {name: i for i, name in enumerate([*rois.levels, *GROUPS])}
    qc = {
        "qc_levels": ";".join(rois.levels),
        "qc_n_levels": len(rois.levels),
        "qc_missing_levels": ";".join(
            sort_levels(sorted({lv for lv in [*TL_LEVELS, *fractured] if lv not in rois.levels}))
        ),
        "qc_unknown_labels": ";".join(str(v) for v in rois.unknown_labels),
        "qc_small_roi": ";".join(sorted(small, key=order.__getitem__)),
        "qc_labels_resampled": labels_resampled,
        "qc_r2star_resampled": r2star_resampled,
        "qc_pdff_units": pdff_units.unit,
        "qc_pdff_units_source": pdff_units.source,
        "qc_pdff_converted": pdff_units.converted,
        "qc_r2star_units": r2star_units.unit,
        "qc_r2star_units_source": r2star_units.source,
        "qc_r2star_converted": r2star_units.converted,
        "qc_cement_voxels_excluded": int(cement.sum()),
        "qc_cement_levels": ";".join(lv for lv, c in zip(rois.levels, n_cement, strict=True) if c),
        "qc_nonfinite_voxels": dropped["n_nonfinite"],
        "qc_out_of_range_voxels": dropped["n_out_of_range"],
        "qc_roi_voxels": rois.n_voxels,
        "qc_vendor": pdff.metadata.get("vendor") or "",
        "qc_field_strength_t": _float_or_nan(pdff.metadata.get("field_strength_t")),
    }

    if qc_png is not None:
        stage.name = "qc_png"
        from refracture.imaging.qc import render_patient_png

        cement_mask = np.zeros(pdff.shape, dtype=bool)
        cement_mask[tuple(c[cement] for c in rois.coords)] = True
        render_patient_png(qc_png, pdff, rois, title=pid, cement_mask=cement_mask)

    return PatientResult(pid, features, vertebrae, qc)


def _map_features(
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
    finite = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        in_range = finite & (v >= value_range[0]) & (v <= value_range[1])
    valid = in_range & ~cement
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


def _void(v: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(v) | (np.abs(v) <= eps)


def _groups(levels: list[str], treated: list[str], fractured: list[str]) -> dict[str, list[int]]:
    """Level positions of each patient-level group (PRODUCT.md section 4)."""
    excluded = set(treated) | set(fractured)
    adjacent = {nb for lv in treated for nb in adjacent_levels(lv, levels)} - excluded
    members = {
        "index": [lv for lv in levels if lv in treated],
        "adjacent": [lv for lv in levels if lv in adjacent],
        "l1l4": [lv for lv in levels if lv in L1L4 and lv not in excluded],
        "normal": [lv for lv in levels if lv not in excluded],
    }
    return {g: [levels.index(lv) for lv in members[g]] for g in GROUPS}


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


def image_path(row: Mapping[str, Any], kind: str, pid: str) -> Path:
    text = row.get(kind)
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        raise ImageError(f"the manifest gives no {kind} image", patient_id=pid)
    return Path(str(text))


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
