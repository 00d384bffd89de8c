"""Label-map QC: checks made before any measurement is keyed to a vertebral level.

A segmentation that numbers vertebrae wrongly attaches every measurement to the wrong level
without any error. These checks look for the usual signs, from the label map alone:

- ``order``: levels out of cranio-caudal order (their centroids, projected on the spine's
  main axis, are not in the order of their names);
- ``gap``: a level missing between two present ones, or two consecutive levels whose
  centroids lie so far apart (more than ``GAP_SPACING_FACTOR`` times the patient's usual
  spacing, scaled by the levels' typical heights) that an unlabelled vertebra may lie between;
- ``duplicate``: one label drawn on two separate bodies (a second connected part of at least
  ``DUPLICATE_SHARE`` of the largest and ``DUPLICATE_MIN_ML``);
- ``size``: a label far from its level's typical volume or height, relative to the patient's
  other levels (so small patients, large ones and whole-vertebra labels all pass);
- ``transitional``: T13 or L6 labelled (13 thoracic or 6 lumbar vertebrae). Recognising a
  lumbarised S1 or a sacralised L5 from shape alone is not attempted.

:func:`check_labels` returns the problems and the ``qc_*`` fields; :func:`enforce_label_policy`
raises an :class:`~refracture.errors.ImageError` naming the patient and the label file when
the run's ``extraction.on_label_problem`` is ``fail``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from refracture.errors import ImageError
from refracture.imaging.anatomy import NOT_A_BODY, typical_height_mm, typical_volume_ml
from refracture.imaging.layout import LabelLayout, label_mask, level_boxes
from refracture.imaging.volume import Volume
from refracture.levels import LEVEL_ORDER, level_rank, sort_levels

__all__ = [
    "QC_FIELDS",
    "LabelProblem",
    "LabelQC",
    "check_labels",
    "enforce_label_policy",
]

Kind = Literal["order", "gap", "duplicate", "size", "transitional"]

#: The ``qc_*`` fields of :attr:`LabelQC.fields`, in order.
QC_FIELDS = (
    "qc_label_order",
    "qc_label_gaps",
    "qc_label_duplicates",
    "qc_label_implausible_size",
    "qc_transitional_anatomy",
    "qc_label_n_problems",
    "qc_label_problems",
)
_FIELD_OF_KIND = {
    "order": "qc_label_order",
    "gap": "qc_label_gaps",
    "duplicate": "qc_label_duplicates",
    "size": "qc_label_implausible_size",
    "transitional": "qc_transitional_anatomy",
}
GAP_SPACING_FACTOR = 1.6
DUPLICATE_SHARE = 0.25
DUPLICATE_MIN_ML = 0.5
# Size relative to the patient's median (volume, height) ratio to the typical size of the level.
# Fractured vertebrae may lose up to about half their height, so they get lower bounds.
VOLUME_RANGE = (0.5, 1.7)
VOLUME_RANGE_FRACTURED = (0.3, 1.7)
HEIGHT_RANGE = (0.55, 1.6)
HEIGHT_RANGE_FRACTURED = (0.35, 1.6)
# With fewer than three levels there is no patient scale: absolute ratios to the typical size
# (a whole-vertebra label is about twice its body).
ABSOLUTE_RANGE = (0.3, 3.0)
TRANSITIONAL = ("T13", "L6")
_SUPERIOR = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class LabelProblem:
    """One problem: its kind, the levels it concerns and a sentence for people."""

    kind: Kind
    levels: tuple[str, ...]
    message: str


@dataclass
class LabelQC:
    """Result of :func:`check_labels`.

    ``levels``: the levels present, in cranio-caudal order of their names. ``centroids``:
    world (RAS mm) centroid per level. ``volume_ml`` and ``height_mm``: label volume and
    extent along the spine per level.
    """

    levels: list[str]
    problems: list[LabelProblem] = field(default_factory=list)
    centroids: dict[str, np.ndarray] = field(default_factory=dict)
    volume_ml: dict[str, float] = field(default_factory=dict)
    height_mm: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """All problems in one line ('' when there is none)."""
        return "; ".join(p.message for p in self.problems)

    @property
    def fields(self) -> dict[str, object]:
        """The ``qc_*`` fields: per kind the levels concerned (``;``-separated, '' when
        fine; gaps between two present levels that suggest an unlabelled vertebra are written
        ``T12-L1``), the number of problems and the summary."""
        out: dict[str, object] = {}
        for kind, name in _FIELD_OF_KIND.items():
            levels: list[str] = []
            for p in self.problems:
                if p.kind == kind:
                    levels += [lv for lv in p.levels if lv not in levels]
            out[name] = ";".join(levels)
        out["qc_label_n_problems"] = len(self.problems)
        out["qc_label_problems"] = self.summary
        return out


def check_labels(
    labels: Volume,
    conv: Mapping[int, str],
    fractured: Iterable[str] = (),
    *,
    layout: LabelLayout | None = None,
) -> LabelQC:
    """Check a label map for level mistakes (module docstring).

    Parameters
    ----------
    labels : Volume
        Integer label map with its affine.
    conv : mapping of int to str
        Label value -> level name.
    fractured : iterable of str
        Levels known to be fractured or treated: their size may be well below typical.
    layout : LabelLayout, optional
        The label map's :func:`~refracture.imaging.layout.label_layout`, when already known.
    """
    boxes = level_boxes(labels.data, conv, layout)
    levels = sort_levels(list(boxes))
    qc = LabelQC(levels)
    if not levels:
        return qc
    aff = labels.affine
    vox_ml = labels.voxel_volume_ml
    points: dict[str, np.ndarray] = {}
    parts: dict[str, list[float]] = {}
    largest: dict[str, np.ndarray] = {}
    for level in levels:
        values, box = boxes[level]
        mask = label_mask(labels.data[box], values)
        ijk = np.argwhere(mask) + [s.start for s in box]
        points[level] = ijk @ aff[:3, :3].T + aff[:3, 3]
        qc.centroids[level] = points[level].mean(axis=0)
        qc.volume_ml[level] = len(ijk) * vox_ml
        comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        counts = np.bincount(comp.ravel())[1:]
        parts[level] = (np.sort(counts)[::-1] * vox_ml).tolist()
        # the height is the largest part's: a stray speck must not stretch it
        largest[level] = comp[tuple(ijk.T - np.array([[s.start] for s in box]))] == (
            int(np.argmax(counts)) + 1
        )
    axis = _spine_axis(qc.centroids, levels)
    for level in levels:
        s = points[level][largest[level]] @ axis
        qc.height_mm[level] = float(s.max() - s.min())
    fractured = set(fractured)
    order = _order(qc.centroids, levels, axis)
    misplaced = {lv for p in order for lv in p.levels}
    qc.problems += order
    qc.problems += _gaps(qc.centroids, levels, misplaced)
    qc.problems += _duplicates(parts)
    qc.problems += _sizes(qc, levels, fractured)
    qc.problems += [
        LabelProblem(
            "transitional",
            (lv,),
            f"{lv} is labelled: transitional anatomy suspected "
            f"({'13 thoracic' if lv == 'T13' else '6 lumbar'} vertebrae); check the numbering",
        )
        for lv in TRANSITIONAL
        if lv in levels
    ]
    return qc


def enforce_label_policy(
    qc: LabelQC, policy: str, *, patient_id: str | None, file: str | Path | None
) -> None:
    """Raise an :class:`ImageError` naming the patient and label file when ``policy`` is
    ``fail`` and the label map has problems; ``warn`` leaves them to the ``qc_*`` fields."""
    if policy not in ("warn", "fail"):
        raise ValueError(f"on_label_problem must be 'warn' or 'fail', not {policy!r}")
    if policy == "fail" and qc.problems:
        raise ImageError(
            f"label map problems: {qc.summary} (extraction.on_label_problem is 'fail'; "
            "fix the label map, or set it to 'warn' to extract with qc_label_* warnings)",
            patient_id=patient_id,
            file=file,
        )


# --- the checks ----------------------------------------------------------------------------


def _spine_axis(centroids: dict[str, np.ndarray], levels: list[str]) -> np.ndarray:
    """Main axis of the centroids, pointing superior.

    When the axis runs roughly head-foot in world space its sign comes from the world's
    superior, so even a label map numbered backwards throughout is caught; otherwise (an
    unusual header) from the majority of consecutive levels, so a swap is still caught.
    """
    if len(levels) < 2:
        return _SUPERIOR.copy()
    c = np.array([centroids[lv] for lv in levels])
    if len(levels) == 2:
        axis = c[0] - c[1]
        axis /= max(float(np.linalg.norm(axis)), 1e-9)
    else:
        axis = np.linalg.svd(c - c.mean(axis=0), full_matrices=False)[2][0]
    if abs(axis @ _SUPERIOR) >= 0.5:
        return axis if axis @ _SUPERIOR > 0 else -axis
    steps = np.diff(c @ axis)  # cranio-caudal name order: mostly negative if axis is superior
    return axis if (steps < 0).sum() >= (steps > 0).sum() else -axis


def _order(
    centroids: dict[str, np.ndarray], levels: list[str], axis: np.ndarray
) -> list[LabelProblem]:
    out = []
    pos = {lv: float(centroids[lv] @ axis) for lv in levels}
    for upper, lower in zip(levels, levels[1:], strict=False):
        if pos[upper] <= pos[lower]:
            out.append(
                LabelProblem(
                    "order",
                    (upper, lower),
                    f"{upper} and {lower} are out of cranio-caudal order "
                    f"({lower} lies {pos[lower] - pos[upper]:.0f} mm above {upper})",
                )
            )
    return out


def _gaps(
    centroids: dict[str, np.ndarray], levels: list[str], misplaced: set[str]
) -> list[LabelProblem]:
    """Missing names between present levels; unusually wide spacing between consecutive ones
    (not judged next to levels already out of order, whose spacing means nothing)."""
    out = []
    for upper, lower in zip(levels, levels[1:], strict=False):
        between = LEVEL_ORDER[level_rank(upper) + 1 : level_rank(lower)]
        missing = [lv for lv in between if lv not in TRANSITIONAL]
        if missing:
            out.append(
                LabelProblem(
                    "gap",
                    tuple(missing),
                    f"{', '.join(missing)} missing between {upper} and {lower}",
                )
            )
    # consecutive levels far apart: spacing over the pair's typical height, against the median
    pairs = []
    for upper, lower in zip(levels, levels[1:], strict=False):
        between = LEVEL_ORDER[level_rank(upper) + 1 : level_rank(lower)]
        if any(lv not in TRANSITIONAL for lv in between) or {upper, lower} & misplaced:
            continue
        h = [typical_height_mm(lv) for lv in (upper, lower)]
        if None in h:
            continue
        gap = float(np.linalg.norm(centroids[upper] - centroids[lower]))
        pairs.append((upper, lower, gap, gap / (sum(h) / 2)))  # type: ignore[arg-type]
    if len(pairs) >= 3:
        usual = float(np.median([p[3] for p in pairs]))
        for upper, lower, gap, rel in pairs:
            if rel > GAP_SPACING_FACTOR * usual:
                out.append(
                    LabelProblem(
                        "gap",
                        (f"{upper}-{lower}",),
                        f"{upper} and {lower} lie {gap:.0f} mm apart, "
                        f"{rel / usual:.1f} times the usual spacing: an unlabelled vertebra "
                        "may lie between them",
                    )
                )
    return out


def _duplicates(parts: dict[str, list[float]]) -> list[LabelProblem]:
    out = []
    for level, sizes in parts.items():
        if len(sizes) < 2:
            continue
        big = [s for s in sizes if s >= max(DUPLICATE_SHARE * sizes[0], DUPLICATE_MIN_ML)]
        if len(big) >= 2:
            ml = " and ".join(f"{s:.1f}" for s in big)
            out.append(
                LabelProblem(
                    "duplicate",
                    (level,),
                    f"the label of {level} covers {len(big)} separate bodies ({ml} ml): "
                    "one label used twice",
                )
            )
    return out


def _sizes(qc: LabelQC, levels: list[str], fractured: set[str]) -> list[LabelProblem]:
    rows = []
    for lv in levels:
        v_typ, h_typ = typical_volume_ml(lv), typical_height_mm(lv)
        if lv in NOT_A_BODY or v_typ is None or h_typ is None:
            continue
        rows.append((lv, qc.volume_ml[lv] / v_typ, qc.height_mm[lv] / h_typ))
    if not rows:
        return []
    intact = [r for r in rows if r[0] not in fractured]
    ref = intact if len(intact) >= 3 else rows
    out = []
    if len(ref) >= 3:
        scale_v = float(np.median([r[1] for r in ref]))
        scale_h = float(np.median([r[2] for r in ref]))
    else:
        scale_v = scale_h = 1.0
    for lv, rv, rh in rows:
        rel_v, rel_h = rv / scale_v, rh / scale_h
        if len(ref) >= 3:
            v_lo, v_hi = VOLUME_RANGE_FRACTURED if lv in fractured else VOLUME_RANGE
            h_lo, h_hi = HEIGHT_RANGE_FRACTURED if lv in fractured else HEIGHT_RANGE
        else:
            v_lo, v_hi = h_lo, h_hi = ABSOLUTE_RANGE
        what = []
        if not v_lo <= rel_v <= v_hi:
            what.append(f"volume {qc.volume_ml[lv]:.1f} ml, {rel_v:.2f} times expected")
        if not h_lo <= rel_h <= h_hi:
            what.append(f"height {qc.height_mm[lv]:.0f} mm, {rel_h:.2f} times expected")
        if what:
            size = "small" if min(rel_v, rel_h) < 1 else "large"
            out.append(
                LabelProblem(
                    "size",
                    (lv,),
                    f"{lv} is implausibly {size} for its level ({'; '.join(what)})",
                )
            )
    return out
