"""Vertebral morphometry from a label map: body heights along each vertebra's own axes,
wedge and biconcavity ratios, height loss against intact neighbours, Genant grade, volume.

Per vertebra, in world millimetres (so any voxel grid and any rotation of it give the same
answer):

1. The body is isolated from the label: voxels deeper than ``BODY_CORE_MM`` inside the label
   form cores; the largest core, grown back by twice that depth inside the label, is the body.
   A label of the body alone comes back whole; thin posterior elements (laminae, spinous and
   transverse processes) of whole-vertebra labels fall away, and whatever is left more than
   ``POSTERIOR_WALL_MARGIN_MM`` behind the body's posterior wall (pedicle roots, or more of the
   arch on thick slices) is cut.
2. The body's own axes: the cranio-caudal axis bisects the normals of planes fitted to the two
   end plates (found on a grid of rays, starting along the spine's local tangent through the
   neighbouring levels' centroids); the antero-posterior axis is the principal axis of the
   body's cross-section nearest the patient's anterior, pointing to it.
3. Heights are measured on rays along the cranio-caudal axis at three stations, 10 %, 50 % and
   90 % of the AP depth behind the anterior margin (``ha``, ``hm``, ``hp``), each the mean of a
   small bundle of rays around the mid-sagittal plane. On every ray the binary mask is
   interpolated linearly at 0.2 mm steps and the body ends where it falls through 0.5, so the
   ends are found between voxel centres (sub-voxel), not at them. The AP depth is measured the
   same way along the AP axis.

Height loss compares each station with the height expected from the nearest intact level
above and below (listed neither as fractured nor treated, own Ha/Hp and Hm/Hp at least 0.8,
at most three levels away), scaled by the ratio of the levels' typical heights
(:mod:`refracture.imaging.anatomy`); the largest of the three losses gives the Genant grade
(Genant et al., J Bone Miner Res 1993;8:1137-1148). Without an intact neighbour the vertebra's
own posterior height is the reference (wedge and biconcave deformities only). docs/morphometry.md
explains the definitions and their limits.

Written here because no library measures vertebral heights from a label map in each body's own
frame; SciPy does the distance transforms, connected components and interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from refracture.ids import PATIENT_ID
from refracture.imaging.anatomy import NOT_A_BODY, typical_height_mm
from refracture.imaging.layout import LabelLayout, label_mask, level_boxes
from refracture.imaging.volume import Volume
from refracture.levels import LEVEL_ORDER, sort_levels

__all__ = [
    "AGGREGATES",
    "GENANT_THRESHOLDS_PCT",
    "MEASURES",
    "STATIONS",
    "BodyFrame",
    "LevelGeometry",
    "MorphometryResult",
    "genant_grade",
    "level_boxes",
    "level_centroids",
    "label_mask",
    "measure_vertebrae",
]

#: Per-vertebra measures, in the order of the feature names ``morph_{measure}_{level}``.
MEASURES = (
    "ha_mm",
    "hm_mm",
    "hp_mm",
    "wedge_ratio",
    "biconcavity_ratio",
    "height_loss_pct",
    "genant_grade",
    "body_volume_ml",
)
#: Patient aggregates.
AGGREGATES = ("morph_genant_max", "morph_n_deformed", "morph_wedge_angle_deg_index")
#: Stations: fraction of the AP depth behind the anterior margin.
STATIONS = {"a": 0.10, "m": 0.50, "p": 0.90}
#: Genant 1993: < 20 % grade 0, 20-25 % grade 1, 25-40 % grade 2, > 40 % grade 3.
GENANT_THRESHOLDS_PCT = (20.0, 25.0, 40.0)
#: A reference (intact) level's own Ha/Hp and Hm/Hp must be at least this.
INTACT_RATIO = 0.80
#: Intact references are looked for at most this many levels away (T13, L6 count if present).
MAX_REFERENCE_DISTANCE = 3
#: Body isolation: the core is deeper than this inside the label and grows back by twice it.
#: Laminae and processes are thinner than 8 mm; a body is much thicker.
BODY_CORE_MM = 4.0
#: What lies this far behind the body's posterior wall is not body (pedicles, arch).
POSTERIOR_WALL_MARGIN_MM = 3.0
#: A label whose body isolation removed more than this share held posterior elements (QC).
POSTERIOR_ELEMENTS_SHARE = 0.05
#: Voxels behind the posterior wall (beyond the margin) are cut when more than this share.
BEHIND_WALL_SHARE = 0.01
#: Smaller bodies are reported as unmeasured.
MIN_BODY_ML = 0.5
#: Sampling step along rays; the crossing is interpolated between samples.
STEP_MM = 0.2
# Ray bundles, as fractions: AP offsets of the height rays around a station (of the depth),
# LR offsets around the mid-sagittal plane (of the half width), CC offsets of the depth rays
# around the mid-height (of the half height).
_AP_SPREAD = (-0.03, 0.0, 0.03)
_LR_SPREAD = (-0.15, -0.075, 0.0, 0.075, 0.15)
_CC_SPREAD = (-0.1, 0.0, 0.1)
_ANTERIOR = np.array([0.0, 1.0, 0.0])  # RAS
_SUPERIOR = np.array([0.0, 0.0, 1.0])


def genant_grade(loss_pct: float) -> int:
    """Genant semi-quantitative grade (0-3) of a height loss in percent (NaN -> -1)."""
    if not np.isfinite(loss_pct):
        return -1
    lo, mid, hi = GENANT_THRESHOLDS_PCT
    return 3 if loss_pct > hi else 2 if loss_pct >= mid else 1 if loss_pct >= lo else 0


@dataclass(frozen=True)
class BodyFrame:
    """A body's own axes in world RAS mm: centroid and unit vectors (cc superior, ap anterior)."""

    centroid: np.ndarray
    cc: np.ndarray
    ap: np.ndarray
    lr: np.ndarray

    def to_world(self, cc: float, ap: float, lr: float = 0.0) -> np.ndarray:
        return self.centroid + cc * self.cc + ap * self.ap + lr * self.lr

    def points(self, cc: object, ap: object, lr: object) -> np.ndarray:
        """(n, 3) world points of arrays of frame coordinates (:meth:`to_world` for each,
        the same arithmetic in the same order)."""
        c, a, r = (x[:, None] for x in np.broadcast_arrays(*map(np.asarray, (cc, ap, lr))))
        return self.centroid + c * self.cc + a * self.ap + r * self.lr


@dataclass(frozen=True)
class LevelGeometry:
    """Where a vertebra was measured: its frame, and per station (``a``, ``m``, ``p``) the
    inferior and superior end points of the height in the mid-sagittal plane (world mm)."""

    frame: BodyFrame
    segments: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class MorphometryResult:
    """Morphometry of one label map.

    ``per_level``: one row per measured level (index ``level``, cranio-caudal order) with the
    columns of :data:`MEASURES` plus ``ap_depth_mm``, ``wedge_angle_deg`` (angle between the end
    plates, positive when the anterior height is the smaller), ``reference`` (the levels the
    expected height came from, or ``own posterior height``), ``posterior_elements_removed_pct``,
    ``treated`` and ``fractured``. ``features``: ``morph_{measure}_{level}`` and the patient
    aggregates. ``unmeasured``: level -> reason. ``geometry``: for drawing.
    """

    per_level: pd.DataFrame
    features: dict[str, float]
    geometry: dict[str, LevelGeometry] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)

    @property
    def qc(self) -> dict[str, object]:
        """``qc_morph_*`` fields: levels not measured (with reasons) and levels whose label held
        posterior elements."""
        pe = self.per_level["posterior_elements_removed_pct"] > 100 * POSTERIOR_ELEMENTS_SHARE
        return {
            "qc_morph_unmeasured": ";".join(self.unmeasured),
            "qc_morph_unmeasured_reason": "; ".join(
                f"{k}: {v}" for k, v in self.unmeasured.items()
            ),
            "qc_morph_posterior_elements": ";".join(self.per_level.index[pe]),
        }

    def records(self, patient_id: str) -> list[dict[str, object]]:
        """``per_level`` as long-table rows (``patient_id``, ``level``, measures...)."""
        table = self.per_level.reset_index()
        table.insert(0, PATIENT_ID, patient_id)
        return table.to_dict("records")


def level_centroids(
    labels: Volume, conv: Mapping[int, str], boxes: dict | None = None
) -> dict[str, np.ndarray]:
    """World (RAS mm) centroid of every level of ``conv`` present in ``labels``."""
    out = {}
    boxes = boxes if boxes is not None else level_boxes(labels.data, conv)
    for level, (values, box) in boxes.items():
        ijk = np.argwhere(label_mask(labels.data[box], values)) + [s.start for s in box]
        out[level] = ijk.mean(axis=0) @ labels.affine[:3, :3].T + labels.affine[:3, 3]
    return out


def measure_vertebrae(
    labels: Volume,
    conv: Mapping[int, str],
    treated: Iterable[str] = (),
    fractured: Iterable[str] = (),
    *,
    layout: LabelLayout | None = None,
) -> MorphometryResult:
    """Morphometry of every vertebral body of ``conv`` found in ``labels``.

    Parameters
    ----------
    labels : Volume
        Integer label map with its affine (any grid, any orientation).
    conv : mapping of int to str
        Label value -> level name (``refracture.levels.convention``).
    treated, fractured : iterable of str
        Levels treated (the index levels) and fractured (acute or old) in this patient; they
        are never used as reference for another level's expected height.
    layout : LabelLayout, optional
        The label map's :func:`~refracture.imaging.layout.label_layout`, when already known.

    Returns
    -------
    MorphometryResult
    """
    treated = [str(t) for t in treated]
    not_reference = set(treated) | {str(f) for f in fractured}
    boxes = level_boxes(labels.data, conv, layout)
    centroids = level_centroids(labels, conv, boxes)
    order = sort_levels(list(boxes))
    rows: dict[str, dict[str, object]] = {}
    geometry: dict[str, LevelGeometry] = {}
    unmeasured: dict[str, str] = {}
    for level in order:
        if level in NOT_A_BODY:
            continue
        values, box = boxes[level]
        tangent = _tangent(level, order, centroids)
        row, geo, reason = _measure_body(labels, values, box, tangent)
        if reason:
            unmeasured[level] = reason
            continue
        rows[level] = row
        geometry[level] = geo
    _height_loss(rows, not_reference)

    columns = [*MEASURES, "ap_depth_mm", "wedge_angle_deg", "reference"]
    columns += ["posterior_elements_removed_pct", "treated", "fractured"]
    for level, row in rows.items():
        row["treated"] = level in treated
        row["fractured"] = level in not_reference
    per_level = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    per_level.index.name = "level"

    features: dict[str, float] = {}
    for level in [lv for lv in order if lv not in NOT_A_BODY]:
        for m in MEASURES:
            value = rows[level][m] if level in rows else math.nan
            features[f"morph_{m}_{level}"] = float(value)
    grades = per_level["genant_grade"].to_numpy(dtype=float)
    grades = grades[grades >= 0]
    features["morph_genant_max"] = float(grades.max()) if grades.size else math.nan
    features["morph_n_deformed"] = float((grades >= 1).sum()) if grades.size else math.nan
    angles = [rows[lv]["wedge_angle_deg"] for lv in treated if lv in rows]
    features["morph_wedge_angle_deg_index"] = float(max(angles)) if angles else math.nan
    return MorphometryResult(per_level, features, geometry, unmeasured)


# --- one body ------------------------------------------------------------------------------


def _tangent(level: str, order: list[str], centroids: dict[str, np.ndarray]) -> np.ndarray:
    """Superior-pointing direction of the spine at ``level`` from its neighbours' centroids."""
    i = order.index(level)
    above = centroids[order[i - 1]] if i > 0 else centroids[level]
    below = centroids[order[i + 1]] if i + 1 < len(order) else centroids[level]
    t = above - below
    n = float(np.linalg.norm(t))
    if n < 1e-6:
        return _SUPERIOR.copy()
    t = t / n
    return t if t @ _SUPERIOR >= 0 else -t


def _padded_crop(labels: Volume, values: list[int], box: tuple, pad: int = 2):
    lo = [max(s.start - pad, 0) for s in box]
    hi = [min(s.stop + pad, n) for s, n in zip(box, labels.shape, strict=True)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = np.pad(label_mask(labels.data[sl], values), pad)  # background all around
    offset = np.array(lo) - pad
    return mask, offset


def _isolate_body(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The vertebral body of a label that may hold posterior elements (module docstring)."""
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    core = depth > BODY_CORE_MM
    if not core.any():
        core = depth >= depth.max()  # a thin label: keep its deepest part's component
    comp, n = ndimage.label(core, structure=np.ones((3, 3, 3), bool))
    if n > 1:
        sizes = np.bincount(comp.ravel())[1:]
        core = comp == (int(np.argmax(sizes)) + 1)
    near = ndimage.distance_transform_edt(~core, sampling=spacing) <= 2 * BODY_CORE_MM + 1e-6
    body = mask & near
    comp, n = ndimage.label(body, structure=np.ones((3, 3, 3), bool))
    if n > 1:  # keep what is connected to the core
        keep = np.unique(comp[core & body])
        body = np.isin(comp, keep[keep > 0])
    return body


class _Sampler:
    """Linear interpolation of a binary mask along rays given in world mm."""

    def __init__(self, mask: np.ndarray, affine: np.ndarray, offset: np.ndarray):
        self.mask = mask.astype(np.float32)
        inv = np.linalg.inv(affine)
        self.rot, self.shift = inv[:3, :3], inv[:3, 3] - offset

    def crossings(
        self, origins: np.ndarray, direction: np.ndarray, half_length: float
    ) -> np.ndarray:
        """(n, 2) positions (mm from each origin along ``direction``) where the run of the mask
        holding the origin, or the run nearest to it, starts and ends; NaN when none."""
        t = np.arange(-half_length, half_length + STEP_MM / 2, STEP_MM)
        pts = origins[:, None, :] + t[None, :, None] * direction  # (n, m, 3)
        ijk = pts @ self.rot.T + self.shift
        vals = ndimage.map_coordinates(
            self.mask, ijk.reshape(-1, 3).T, order=1, mode="constant", cval=0.0
        ).reshape(len(origins), len(t))
        # per ray, the inside sample nearest the origin, then the outside samples either
        # side of its run (the last outside index before it, the first after), all rays at once
        n, m = vals.shape
        idx = np.arange(m)
        inside = vals >= 0.5
        dist = np.where(inside, np.abs(idx - m // 2), m)
        k = np.argmin(dist, axis=1)
        rows, kk = np.arange(n), k[:, None]
        last_out = np.where(~inside & (idx <= kk), idx, -1).max(axis=1)
        first_out = np.where(~inside & (idx >= kk), idx, m).min(axis=1)
        ok = inside[rows, k] & (last_out >= 0) & (first_out < m)  # the ray left the body
        lo, hi = np.clip(last_out + 1, 1, m - 1), np.clip(first_out - 1, 0, m - 2)
        # the mask falls through 0.5 between two samples: interpolate linearly
        v_lo, v_before = vals[rows, lo], vals[rows, lo - 1]
        v_hi, v_after = vals[rows, hi], vals[rows, hi + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            start = t[lo] - STEP_MM * (v_lo - 0.5) / (v_lo - v_before)
            end = t[hi] + STEP_MM * (v_hi - 0.5) / (v_hi - v_after)
        out = np.column_stack([start, end])
        out[~ok] = np.nan
        return out


def _axial_frame(points: np.ndarray, cc: np.ndarray) -> BodyFrame:
    """A frame with the given cranio-caudal axis; the AP axis is the principal axis of the
    body's cross-section nearest the patient's anterior (the patient's anterior itself when the
    cross-section is nearly round)."""
    centroid = points.mean(axis=0)
    cc = cc / np.linalg.norm(cc)
    ref = _ANTERIOR - (_ANTERIOR @ cc) * cc
    if np.linalg.norm(ref) < 0.3:  # the axis runs antero-posteriorly: start from superior
        ref = _SUPERIOR - (_SUPERIOR @ cc) * cc
    ref /= np.linalg.norm(ref)
    other = np.cross(cc, ref)
    rel = points - centroid
    xy = np.column_stack([rel @ ref, rel @ other])
    evals, evecs = np.linalg.eigh(np.cov(xy.T))
    ap = ref
    if evals[1] > 1.2 * evals[0]:  # elongated cross-section: its axis nearest the anterior
        near = evecs[:, int(np.argmax(np.abs(evecs[0])))]
        ap = near[0] * ref + near[1] * other
    ap = ap if ap @ _ANTERIOR >= 0 else -ap
    ap /= np.linalg.norm(ap)
    return BodyFrame(centroid, cc, ap, np.cross(cc, ap))


def _frame(points: np.ndarray, tangent: np.ndarray, sampler: _Sampler) -> BodyFrame:
    """The body's own axes: the cranio-caudal axis bisects the normals of planes fitted to its
    two end plates, found on a grid of rays; the spine's tangent is the starting guess.

    Principal axes alone are unreliable here: a body's height and depth are alike, so the
    two smallest moments of inertia are close and one partly filled voxel row at an end plate
    turns the principal axes by ten degrees or more.
    """
    frame = _axial_frame(points, tangent)
    for _ in range(2):
        rel = points - frame.centroid
        ap, lr, cc = rel @ frame.ap, rel @ frame.lr, rel @ frame.cc
        ap_c, ap_h = (ap.max() + ap.min()) / 2, (ap.max() - ap.min()) / 2
        lr_c, lr_h = (lr.max() + lr.min()) / 2, (lr.max() - lr.min()) / 2
        grid = np.linspace(-0.6, 0.6, 7)
        x, y = np.repeat(grid, grid.size), np.tile(grid, grid.size)  # x outer, y inner
        origins = frame.points(0.0, ap_c + x * ap_h, lr_c + y * lr_h)
        ends = sampler.crossings(origins, frame.cc, float(np.abs(cc).max()) + 5.0)
        ok = np.isfinite(ends).all(axis=1)
        if ok.sum() < 10:
            break
        normals = []
        for side in (0, 1):
            surface = origins[ok] + ends[ok, side][:, None] * frame.cc
            _, _, vt = np.linalg.svd(surface - surface.mean(axis=0), full_matrices=False)
            n = vt[2]
            normals.append(n if n @ frame.cc >= 0 else -n)
        axis = normals[0] + normals[1]
        frame = _axial_frame(points, axis if axis @ tangent >= 0 else -axis)
    return frame


def _measure_body(
    labels: Volume, values: list[int], box: tuple, tangent: np.ndarray
) -> tuple[dict[str, object], LevelGeometry | None, str]:
    mask, offset = _padded_crop(labels, values, box)
    n_label = int(mask.sum())
    body = _isolate_body(mask, labels.spacing)
    affine = labels.affine

    def world(m: np.ndarray) -> np.ndarray:
        return (np.argwhere(m) + offset) @ affine[:3, :3].T + affine[:3, 3]

    pts = world(body)
    if pts.shape[0] * labels.voxel_volume_ml < MIN_BODY_ML or pts.shape[0] < 10:
        return {}, None, f"body smaller than {MIN_BODY_ML} ml"
    sampler = _Sampler(body, affine, offset)
    frame = _frame(pts, tangent, sampler)
    extent = _ap_extent(sampler, frame, pts)
    if extent is None:
        return {}, None, "no antero-posterior extent found"
    behind = (pts - frame.centroid) @ frame.ap < extent[1] - POSTERIOR_WALL_MARGIN_MM
    if behind.sum() > BEHIND_WALL_SHARE * len(pts):
        # posterior elements left after the opening (pedicle roots, or a whole arch on thick
        # slices): cut what lies behind the posterior wall, then measure again
        body[tuple((np.argwhere(body)[behind]).T)] = False
        pts = pts[~behind]
        sampler = _Sampler(body, affine, offset)
        frame = _frame(pts, tangent, sampler)
        extent = _ap_extent(sampler, frame, pts)
        if extent is None:
            return {}, None, "no antero-posterior extent found"
    anterior, posterior = extent
    d_ap = anterior - posterior
    rel = pts - frame.centroid
    half_cc = float(np.abs(rel @ frame.cc).max()) + 2 * max(labels.spacing)
    half_lr = float(np.abs(rel @ frame.lr).max())

    # the rays of the three stations in one call: a bundle per station, AP offsets outer
    ap0s = {name: anterior - f * d_ap for name, f in STATIONS.items()}
    da = np.repeat(np.array(_AP_SPREAD) * d_ap, len(_LR_SPREAD))
    dl = np.tile(np.array(_LR_SPREAD) * half_lr, len(_AP_SPREAD))
    origins = np.concatenate([frame.points(0.0, ap0 + da, dl) for ap0 in ap0s.values()])
    bundles = np.split(sampler.crossings(origins, frame.cc, half_cc), len(STATIONS))
    heights, segments = {}, {}
    for (name, ap0), ends in zip(ap0s.items(), bundles, strict=True):
        ok = np.isfinite(ends).all(axis=1)
        if ok.sum() < 3:
            return {}, None, f"no height found at the {name} station"
        lo, hi = ends[ok].mean(axis=0)
        heights[name] = float(np.mean(ends[ok, 1] - ends[ok, 0]))
        segments[name] = (frame.to_world(lo, ap0), frame.to_world(hi, ap0))
    ha, hm, hp = heights["a"], heights["m"], heights["p"]
    span = (STATIONS["p"] - STATIONS["a"]) * d_ap
    row: dict[str, object] = {
        "ha_mm": ha,
        "hm_mm": hm,
        "hp_mm": hp,
        "wedge_ratio": ha / hp,
        "biconcavity_ratio": hm / hp,
        "body_volume_ml": pts.shape[0] * labels.voxel_volume_ml,
        "ap_depth_mm": d_ap,
        "wedge_angle_deg": math.degrees(math.atan2(hp - ha, span)),
        "posterior_elements_removed_pct": 100.0 * (1.0 - pts.shape[0] / n_label),
    }
    return row, LevelGeometry(frame, segments), ""


def _ap_extent(sampler: _Sampler, frame: BodyFrame, pts: np.ndarray) -> tuple[float, float] | None:
    """(anterior, posterior) margins along the AP axis, mm from the centroid (median of a
    bundle of rays around the mid-height, mid-sagittal line)."""
    rel = pts - frame.centroid
    half_cc = float(np.abs(rel @ frame.cc).max())
    half_lr = float(np.abs(rel @ frame.lr).max())
    half_ap = float(np.abs(rel @ frame.ap).max()) + 5.0
    dc = np.repeat(np.array(_CC_SPREAD) * half_cc, len(_LR_SPREAD))
    dl = np.tile(np.array(_LR_SPREAD) * half_lr, len(_CC_SPREAD))
    ends = sampler.crossings(frame.points(dc, 0.0, dl), frame.ap, half_ap)
    ok = np.isfinite(ends).all(axis=1)
    if ok.sum() < 3:
        return None
    return float(np.median(ends[ok, 1])), float(np.median(ends[ok, 0]))


# --- height loss ---------------------------------------------------------------------------


def _height_loss(rows: dict[str, dict[str, object]], not_reference: set[str]) -> None:
    """Add ``height_loss_pct``, ``genant_grade`` and ``reference`` to every row (in place)."""
    intact = [
        lv
        for lv, r in rows.items()
        if lv not in not_reference
        and float(r["wedge_ratio"]) >= INTACT_RATIO
        and float(r["biconcavity_ratio"]) >= INTACT_RATIO
    ]
    for level, row in rows.items():
        refs = _references(level, intact, list(rows))
        own = {k: float(row[f"h{k}_mm"]) for k in STATIONS}
        if refs:
            scale = {r: _typical_ratio(level, r) for r in refs}
            expected = {
                k: float(np.mean([float(rows[r][f"h{k}_mm"]) * scale[r] for r in refs]))
                for k in STATIONS
            }
            row["reference"] = ";".join(refs)
        else:
            expected = {k: own["p"] for k in STATIONS}
            row["reference"] = "own posterior height"
        loss = max(100.0 * (1.0 - own[k] / expected[k]) for k in STATIONS)
        row["height_loss_pct"] = loss
        row["genant_grade"] = genant_grade(loss)


def _references(level: str, intact: list[str], present: list[str]) -> list[str]:
    """The nearest intact level above and the nearest below, at most 3 levels away (counted
    in the anatomical order; T13 and L6 count only when present)."""
    order = [lv for lv in LEVEL_ORDER if lv not in ("T13", "L6") or lv in present]
    if level not in order:
        return []
    pos = {lv: k for k, lv in enumerate(order)}
    here = pos[level]
    above = [lv for lv in intact if lv in pos and 0 < here - pos[lv] <= MAX_REFERENCE_DISTANCE]
    below = [lv for lv in intact if lv in pos and 0 < pos[lv] - here <= MAX_REFERENCE_DISTANCE]
    out = []
    if above:
        out.append(max(above, key=pos.__getitem__))
    if below:
        out.append(min(below, key=pos.__getitem__))
    return out


def _typical_ratio(level: str, ref: str) -> float:
    """Typical height of ``level`` over that of ``ref`` (1 when either is unknown)."""
    h, h_ref = typical_height_mm(level), typical_height_mm(ref)
    return h / h_ref if h and h_ref else 1.0
