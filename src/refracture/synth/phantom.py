"""Sagittal IDEAL-IQ PDFF and R2* maps of the thoraco-lumbar spine for one patient.

The anatomy is analytic: vertebral bodies are elliptic cylinders with a thin cortical rim, each
tilted along a gently curved and pitched spinal axis, some of them deformed (wedge, biconcave,
crush; :mod:`refracture.synth.spine`), stacked with discs, with the spinal canal, spinous processes,
paraspinal muscle, retroperitoneal soft tissue and subcutaneous fat around them. Partial volume
at every edge comes from a linear occupancy ramp one voxel wide across the surface, so voxel
values mix the tissues on either side as a real acquisition does. Numbers are in
``TISSUE_*`` and ``*_MM`` constants below; sources are given where published, otherwise they are
assumptions chosen to look like clinical IDEAL-IQ maps (docs/synthetic.md).

Coordinates: the voxel array is in NIfTI index order (i, j, k) = (anterior->posterior,
superior->inferior, left->right), i.e. sagittal slices along k, as a scanner stores a sagittal
acquisition. ``geometry()`` gives the matching LPS direction/origin and the RAS affine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from refracture.levels import TL_LEVELS, VERSE
from refracture.synth.spine import BODY_MM, DRAWN_LEVELS, MALE_SIZE, BodyShape, _shape

# Site grids: (shape (i, j, k), spacing mm). About 256 x 256 x 24 at ~1.5 x 1.5 x 4 mm (issue 2);
# the variation between sites is an assumption.
SITE_GRIDS: list[tuple[tuple[int, int, int], tuple[float, float, float]]] = [
    ((256, 256, 24), (1.5, 1.5, 4.0)),
    ((256, 256, 20), (1.4844, 1.4844, 4.5)),
    ((224, 224, 24), (1.7, 1.7, 4.0)),
    ((288, 288, 22), (1.3, 1.3, 4.0)),
]
DISC_MM = [6.0, 6.5, 7.0, 8.0, 9.0, 10.0, 10.5, 11.0, 11.0]  # between consecutive drawn levels
CORTEX_MM = 0.8  # cortical shell thickness: assumption
CANAL_RADIUS_MM = 8.0
# Tissue values at 1.5 T: (PDFF %, R2* 1/s). R2* of soft tissue scales with field strength as
# marrow does. Assumptions guided by IDEAL-IQ literature (subcutaneous fat ~90 % PDFF; CSF and
# disc near 0 %; aged paraspinal muscle 10-30 %).
TISSUE = {
    "subcutaneous_fat": (90.0, 30.0),
    "retroperitoneum": (25.0, 28.0),
    "muscle": (12.0, 28.0),
    "csf": (1.0, 4.0),
    "disc": (3.0, 18.0),
    "cortex": (10.0, 160.0),
}
CEMENT_R2STAR = (600.0, 1000.0)  # PMMA signal void: very high apparent R2*, uniform: assumption
HETEROGENEITY_PDFF = 2.0  # smooth within-vertebra variation, amplitude in points: assumption
HETEROGENEITY_R2STAR = 0.03  # relative: assumption
NOISE_PDFF = {1.5: 3.5, 3.0: 2.5}  # voxel noise SD in points: assumption
NOISE_R2STAR_REL = 0.06  # voxel noise SD relative to the local value: assumption
NOISE_R2STAR_ABS = 2.0  # plus a floor in 1/s: assumption


@dataclass(frozen=True)
class PatientAnatomy:
    """What the image generator needs to know about one patient."""

    patient_id: str
    site_index: int
    field_strength_t: float
    male: bool
    bmi: float
    age: float
    pdff: dict[str, float]  # level -> true marrow PDFF (%) as seen in this site's images
    r2star: dict[str, float]  # level -> true marrow R2* (1/s) as seen in this site's images
    treated: tuple[str, ...]
    cement_ml: tuple[float, ...]  # per treated level
    old_fractures: tuple[str, ...]
    leakage: str  # none | intradiscal | paravertebral
    seed: tuple[int, ...]  # random stream of this patient (independent of worker count)
    size: float | None = None  # scale of all bodies (None: 1.08 for men, 1 for women)
    pitch_deg: float = 0.0  # sagittal tilt of the whole spine against the scanner axes
    shapes: Mapping[str, BodyShape] = field(default_factory=dict)  # missing levels: intact

    def shape(self, level: str) -> BodyShape:
        if level in self.shapes:
            return self.shapes[level]
        size = self.size if self.size is not None else (MALE_SIZE if self.male else 1.0)
        return _shape(level, size, "intact", 0.0, 1.0)


@dataclass
class Maps:
    pdff: np.ndarray  # float32, %
    r2star: np.ndarray  # float32, 1/s
    labels: np.ndarray  # uint8, VerSe
    affine: np.ndarray  # 4x4 RAS
    spacing: tuple[float, float, float]
    direction_lps: np.ndarray  # 3x3, columns = index axes
    origin_lps: np.ndarray  # position of voxel (0, 0, 0)


Grid = tuple[tuple[int, int, int], tuple[float, float, float]]


def geometry(
    site_index: int, shift_mm: np.ndarray, grid: Grid | None = None
) -> tuple[tuple[int, int, int], tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Grid shape, spacing, LPS direction, LPS origin and RAS affine of a site's sagittal scan
    (``grid``: another (shape, spacing) centred on the same point, e.g. for tests)."""
    shape, spacing = grid if grid is not None else SITE_GRIDS[site_index % len(SITE_GRIDS)]
    # index i -> posterior (+y LPS), j -> inferior (-z), k -> patient right (-x); det = +1
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    half = (np.array(shape) - 1) / 2 * np.array(spacing)
    centre_lps = np.array([0.0, 20.0, -150.0]) + shift_mm  # near L1, table offsets
    origin = centre_lps - direction @ half
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(spacing)
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return shape, spacing, direction, origin, affine


def _ramp(d: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Occupancy of a voxel whose centre is at signed distance ``d`` (mm, <0 inside)."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _body_distance(du, dv, dw, a, b, h):
    """Approximate signed distance to an elliptic cylinder (semi-axes a (AP), b (LR), half
    height h, a number or an array of the local half height) and the effective voxel width
    along the surface normal is handled by the caller.
    Returns (distance to the side wall, distance to the end plates)."""
    f = (du / a) ** 2 + (dw / b) ** 2 - 1.0
    grad = 2.0 * np.sqrt((du / a**2) ** 2 + (dw / b**2) ** 2) + 1e-6
    return f / grad, np.abs(dv) - h


@dataclass(frozen=True)
class SpineLayout:
    """Where the bodies sit: centres along the vertical axis v (mm, + superior) and the curve
    of the spine, u(v) (AP position of the body centres, mm, + posterior)."""

    shapes: dict[str, BodyShape]
    centres: dict[str, float]
    pitch_slope: float  # tan(pitch)

    def u(self, v):
        """Gentle thoraco-lumbar curve, pitched: AP position of the spinal axis at height v."""
        dv = v - self.centres["L1"]
        return -25.0 + 10.0 * (dv / 140.0) ** 2 + self.pitch_slope * dv

    def slope(self, v: float) -> float:
        """du/dv of the spinal axis: each body is tilted along it."""
        return 20.0 * (v - self.centres["L1"]) / 140.0**2 + self.pitch_slope


def spine_layout(p: PatientAnatomy, rng: np.random.Generator) -> SpineLayout:
    """Stack the bodies from T9 to S1 with their discs, L1 near the grid centre (one draw)."""
    shapes = {lv: p.shape(lv) for lv in DRAWN_LEVELS}
    size = shapes["L1"].h0 / BODY_MM["L1"][0]
    centres = {}
    top = 0.0
    for n_, lv in enumerate(DRAWN_LEVELS):
        h = shapes[lv].max_height
        centres[lv] = top - h / 2
        top -= h + (DISC_MM[n_] * size if n_ < len(DISC_MM) else 0.0)
    l1_offset = centres["L1"] - rng.normal(0.0, 8.0)
    centres = {lv: c - l1_offset for lv, c in centres.items()}
    return SpineLayout(shapes, centres, math.tan(math.radians(p.pitch_deg)))


def _tilt(du, dv, g: float):
    """Coordinates in a body's own frame, tilted by the spine's slope g = du/dv: (AP, CC)."""
    norm = math.sqrt(1.0 + g * g)
    return (du - g * dv) / norm, (g * du + dv) / norm


class _Grid:
    """Local anatomical coordinates (mm) of a grid relative to its centre, broadcastable:
    u anterior->posterior, v inferior->superior, w left->right; and bounding boxes in it."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape, self.spacing = shape, spacing
        (ni, nj, nk), (si, sj, sk) = shape, spacing
        self.u = ((np.arange(ni) - (ni - 1) / 2) * si).astype(np.float32)[:, None, None]
        self.v = (-(np.arange(nj) - (nj - 1) / 2) * sj).astype(np.float32)[None, :, None]
        self.w = ((np.arange(nk) - (nk - 1) / 2) * sk).astype(np.float32)[None, None, :]

    def box(self, vc, half_v, half_u, half_w, uc, wc=0.0):
        (ni, nj, nk), (si, sj, sk) = self.shape, self.spacing
        lo_j = max(int((nj - 1) / 2 - (vc + half_v) / sj) - 2, 0)
        hi_j = min(int((nj - 1) / 2 - (vc - half_v) / sj) + 3, nj)
        lo_i = max(int((uc - half_u) / si + (ni - 1) / 2) - 2, 0)
        hi_i = min(int((uc + half_u) / si + (ni - 1) / 2) + 3, ni)
        lo_k = max(int((wc - half_w) / sk + (nk - 1) / 2) - 2, 0)
        hi_k = min(int((wc + half_w) / sk + (nk - 1) / 2) + 3, nk)
        return slice(lo_i, hi_i), slice(lo_j, hi_j), slice(lo_k, hi_k)

    def body(self, layout: SpineLayout, lv: str):
        """A body's box and its voxels' coordinates in the body's own frame (du, dv, dw), the
        signed distances to its side wall and end plates, and its centre (uc, vc)."""
        shape = layout.shapes[lv]
        vc = layout.centres[lv]
        uc = float(layout.u(vc))
        g = layout.slope(vc)
        hmax = shape.max_height
        sl = self.box(
            vc, hmax / 2 + shape.a * abs(g) + 1, shape.a + hmax / 2 * abs(g) + 1, shape.b, uc
        )
        du, dv = _tilt(self.u[sl[0]] - uc, self.v[:, sl[1]] - vc, g)
        dw = self.w[:, :, sl[2]]
        d_side, d_end = _body_distance(du, dv, dw, shape.a, shape.b, shape.height(du) / 2)
        return sl, du, dv, dw, d_side, d_end, uc, vc


def _label_value(level: str) -> int | None:
    if level not in TL_LEVELS:
        return None  # T9 and S1 are drawn but not labelled
    return next(k for k, name in VERSE.items() if name == level)


def draw_labels(
    p: PatientAnatomy, grid: Grid | None = None, *, posterior_elements: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The label map of one patient (the same anatomy as :func:`generate`), and its affine.

    ``grid``: (shape, spacing) of another sagittal grid centred where the site's is, e.g.
    1 mm isotropic for tests. ``posterior_elements``: label the pedicles, laminae and spinous
    process with the body's value, as whole-vertebra segmentations (VerSe, TotalSegmentator)
    do; by default only the bodies are labelled, as in the cohort.
    """
    rng = np.random.default_rng(list(p.seed))
    shift = rng.normal(0.0, [6.0, 6.0, 10.0])
    layout = spine_layout(p, rng)
    shape, spacing, _, _, affine = geometry(p.site_index, shift, grid)
    g = _Grid(shape, spacing)
    labels = np.zeros(shape, dtype=np.uint8)
    for lv in DRAWN_LEVELS:
        value = _label_value(lv)
        if value is None:
            continue
        if posterior_elements:
            sl, inside = _posterior_elements(g, layout, lv)
            labels[sl][inside] = value
        sl, *_, d_side, d_end, _, _ = g.body(layout, lv)
        labels[sl][(d_side <= 0) & (d_end <= 0)] = value
    return labels, affine


def _posterior_elements(g: _Grid, layout: SpineLayout, lv: str):
    """Pedicles, laminae and spinous process of a level as a box and a mask in it (untilted;
    used for label maps only)."""
    shape = layout.shapes[lv]
    vc = layout.centres[lv]
    uc = float(layout.u(vc))
    h2 = shape.h0 / 2
    back = uc + shape.a  # posterior wall of the body
    canal_back = back + 2 * CANAL_RADIUS_MM + 1.0
    sl = g.box(vc, h2, 2 * CANAL_RADIUS_MM + 40.0, CANAL_RADIUS_MM + 10.0, back + 20.0)
    du, dv, dw = g.u[sl[0]] - back, g.v[:, sl[1]] - vc, g.w[:, :, sl[2]]
    depth = canal_back - back
    # pedicles: 8 mm wide, 0.6 of the body height, from the posterior wall to the laminae
    pedicle = (
        (du >= -2.0)
        & (du <= depth)
        & (np.abs(np.abs(dw) - (CANAL_RADIUS_MM + 4.0)) <= 4.0)
        & (np.abs(dv - 0.15 * h2) <= 0.6 * h2)
    )
    # laminae: a 6 mm plate behind the canal; spinous process: 25 mm further back, sloping down
    lamina = (
        (du >= depth)
        & (du <= depth + 6.0)
        & (np.abs(dw) <= CANAL_RADIUS_MM + 8.0)
        & (np.abs(dv) <= 0.7 * h2)
    )
    spinous = (
        (du >= depth)
        & (du <= depth + 30.0)
        & (np.abs(dw) <= 3.0)
        & (np.abs(dv + 0.3 * h2 + 0.1 * (du - depth)) <= 0.4 * h2)
    )
    return sl, np.broadcast_to(
        pedicle | lamina | spinous, np.broadcast_shapes(du.shape, dv.shape, dw.shape)
    )


def generate(p: PatientAnatomy, grid: Grid | None = None) -> Maps:
    """Draw the PDFF, R2* and label maps of one patient (``grid``: see :func:`draw_labels`)."""
    rng = np.random.default_rng(list(p.seed))
    shift = rng.normal(0.0, [6.0, 6.0, 10.0])  # patient positioning on the table
    layout = spine_layout(p, rng)
    shape, spacing, direction, origin, affine = geometry(p.site_index, shift, grid)
    si, sj, sk = spacing
    field_factor = 1.7 if p.field_strength_t >= 2.0 else 1.0
    grd = _Grid(shape, spacing)
    u, v, w = grd.u, grd.v, grd.w
    box = grd.box
    shapes, centres = layout.shapes, layout.centres
    size = shapes["L1"].h0 / BODY_MM["L1"][0]
    spine_u = layout.u

    # Background tissues, all voxels.
    back_fat = 8.0 + 1.6 * (p.bmi - 18.0) + rng.normal(0, 2)
    front_fat = 10.0 + 3.0 * (p.bmi - 18.0) + rng.normal(0, 3)
    sc = spine_u(v)
    body_front = sc - 120.0 - 3.0 * (p.bmi - 24.0)  # anterior skin
    body_back = sc + 95.0 + 1.0 * (p.bmi - 24.0)  # posterior skin
    canal_u = sc + BODY_MM["L1"][1] * size / 2 + CANAL_RADIUS_MM + 3.0
    inside = _ramp(np.maximum(body_front - u, u - body_back), si)
    fat = np.maximum(_ramp(u - (body_front + front_fat), si), _ramp((body_back - back_fat) - u, si))
    posterior = _ramp((canal_u + CANAL_RADIUS_MM) - u, si)  # behind the canal: muscle
    muscle_pdff = TISSUE["muscle"][0] + 0.4 * (p.age - 60.0)  # fatty infiltration with age
    ret_pdff, ret_r2 = TISSUE["retroperitoneum"]
    soft_pdff = posterior * muscle_pdff + (1 - posterior) * ret_pdff
    soft_r2 = posterior * TISSUE["muscle"][1] + (1 - posterior) * ret_r2
    pdff = fat * TISSUE["subcutaneous_fat"][0] + (1 - fat) * soft_pdff
    r2 = fat * TISSUE["subcutaneous_fat"][1] + (1 - fat) * soft_r2
    canal = _ramp(np.sqrt((u - canal_u) ** 2 + w**2) - CANAL_RADIUS_MM, si)
    pdff = canal * TISSUE["csf"][0] + (1 - canal) * pdff
    r2 = canal * TISSUE["csf"][1] + (1 - canal) * r2
    pdff = np.broadcast_to(pdff, shape).astype(np.float32)
    r2 = (np.broadcast_to(r2, shape) * field_factor).astype(np.float32)
    inside = np.broadcast_to(inside, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    # Discs, then vertebral bodies (and spinous processes), each in its bounding box. A disc
    # fills the space a deformed neighbour's end plate left (disc material follows it).
    for n_ in range(len(DRAWN_LEVELS) - 1):
        upper, lower = shapes[DRAWN_LEVELS[n_]], shapes[DRAWN_LEVELS[n_ + 1]]
        top = centres[upper.level] - upper.max_height / 2
        bottom = centres[lower.level] + lower.max_height / 2
        vc, half_v = (top + bottom) / 2, (top - bottom) / 2
        sag = max(upper.max_height - upper.min_height, lower.max_height - lower.min_height) / 2
        a = (upper.a + lower.a) / 2
        b = (upper.b + lower.b) / 2
        uc = float(spine_u(vc))
        gd = layout.slope(vc)
        sl = box(vc, half_v + sag + a * abs(gd) + 2, a + 2, b + 2, uc)
        du, dv = _tilt(u[sl[0]] - uc, v[:, sl[1]] - vc, gd)
        dw = w[:, :, sl[2]]
        d_side, d_end = _body_distance(du, dv, dw, a, b, half_v + 1.0 + sag)
        occ = np.minimum(_ramp(d_side, si), _ramp(d_end, sj))
        pdff[sl] = occ * TISSUE["disc"][0] + (1 - occ) * pdff[sl]
        r2[sl] = occ * TISSUE["disc"][1] * field_factor + (1 - occ) * r2[sl]

    cement_masks = []
    for lv in DRAWN_LEVELS:
        body = shapes[lv]
        a, b = body.a, body.b
        h2 = body.min_height / 2
        sl, du, dv, dw, d_side, d_end, uc, vc = grd.body(layout, lv)
        # effective voxel width across the side wall: project the voxel on the wall normal
        nu, nw = du / a**2, dw / b**2
        norm = np.sqrt(nu**2 + nw**2) + 1e-9
        w_side = np.sqrt((nu / norm * si) ** 2 + (nw / norm * sk) ** 2)
        occ_body = np.minimum(_ramp(d_side, w_side), _ramp(d_end, sj))
        occ_marrow = np.minimum(_ramp(d_side + CORTEX_MM, w_side), _ramp(d_end + CORTEX_MM, sj))
        occ_body, occ_marrow = np.broadcast_arrays(occ_body, occ_marrow)

        if lv in p.pdff:
            m_pdff, m_r2 = p.pdff[lv], p.r2star[lv]
        else:  # unlabelled edge vertebrae: like their neighbour
            ref = "T10" if lv == "T9" else "L5"
            m_pdff, m_r2 = p.pdff[ref], p.r2star[ref]
        label_mask = np.broadcast_to((d_side <= 0) & (d_end <= 0), occ_body.shape)
        # smooth heterogeneity, zero mean over the labelled body
        field_ = np.zeros(occ_body.shape, dtype=np.float32)
        for _ in range(3):
            kvec = rng.normal(size=3)
            kvec *= 2 * math.pi / rng.uniform(40.0, 80.0) / np.linalg.norm(kvec)
            field_ += np.cos(
                kvec[0] * du + kvec[1] * dv + kvec[2] * dw + rng.uniform(0, 2 * math.pi)
            )
        if label_mask.any():
            field_ -= field_[label_mask].mean()
        field_ /= 3.0
        marrow_pdff = m_pdff + HETEROGENEITY_PDFF * field_
        marrow_r2 = m_r2 * (1.0 + HETEROGENEITY_R2STAR * field_)

        cortex = occ_body - occ_marrow
        inner_pdff = occ_marrow * marrow_pdff + cortex * TISSUE["cortex"][0]
        inner_r2 = occ_marrow * marrow_r2 + cortex * TISSUE["cortex"][1] * field_factor
        pdff[sl] = inner_pdff + (1 - occ_body) * pdff[sl]
        r2[sl] = inner_r2 + (1 - occ_body) * r2[sl]

        if lv in p.treated:  # cement: an ellipsoid holding the injected volume
            ml = p.cement_ml[p.treated.index(lv)]
            scale = (ml * 1000.0 / (4 / 3 * math.pi * a * b * h2)) ** (1 / 3)
            scale = min(scale, 0.85)
            e = (
                ((du + 0.15 * a) / (a * scale)) ** 2  # slightly anterior
                + (dv / (h2 * scale)) ** 2
                + (dw / (b * scale)) ** 2
            )
            occ_c = np.broadcast_to(
                _ramp((np.sqrt(e) - 1) * min(a, b, h2) * scale, si), occ_body.shape
            )
            cement_masks.append((sl, occ_c))
        value = _label_value(lv)
        if value is not None:
            sub = labels[sl]
            sub[label_mask] = value

        # spinous process: a thin bony plate behind the canal, lower than the body
        h2 = body.max_height / 2
        sp_len, sp_half_h = 16.0, h2 * 0.35
        sp_uc = uc + a + 2 * CANAL_RADIUS_MM + 6.0 + sp_len
        sp_vc = vc - 0.3 * h2  # spinous processes slope caudally
        sl_sp = box(sp_vc, sp_half_h, sp_len, 4.0, sp_uc)
        du_sp, dv_sp, dw_sp = u[sl_sp[0]] - sp_uc, v[:, sl_sp[1]] - sp_vc, w[:, :, sl_sp[2]]
        d_sp = np.maximum(
            np.maximum(np.abs(du_sp) - sp_len, np.abs(dv_sp) - sp_half_h), np.abs(dw_sp) - 3.0
        )
        occ_sp = np.broadcast_to(_ramp(d_sp, si), pdff[sl_sp].shape)
        pdff[sl_sp] = (
            occ_sp * (0.6 * m_pdff + 0.4 * TISSUE["cortex"][0]) + (1 - occ_sp) * pdff[sl_sp]
        )
        r2[sl_sp] = (
            occ_sp * (0.6 * m_r2 + 0.4 * TISSUE["cortex"][1] * field_factor)
            + (1 - occ_sp) * r2[sl_sp]
        )

    # Cement and its leaks: PDFF has no usable signal (random), R2* very high.
    for sl, occ_c in cement_masks:
        c_pdff = rng.uniform(0.0, 100.0, occ_c.shape).astype(np.float32)
        c_r2 = rng.uniform(*CEMENT_R2STAR, occ_c.shape).astype(np.float32)
        pdff[sl] = occ_c * c_pdff + (1 - occ_c) * pdff[sl]
        r2[sl] = occ_c * c_r2 + (1 - occ_c) * r2[sl]
    if p.leakage != "none" and p.treated:
        lv = p.treated[0]
        a = shapes[lv].a
        vc = centres[lv] + (shapes[lv].max_height / 2 + 3.0 if p.leakage == "intradiscal" else 0.0)
        uc = float(spine_u(vc)) - (0.0 if p.leakage == "intradiscal" else a + 6.0)
        wc = 0.0 if p.leakage == "intradiscal" else 12.0
        sl = box(vc, 6.0, 8.0, 30.0, uc)
        e = (
            ((u[sl[0]] - uc) / 6.0) ** 2
            + ((v[:, sl[1]] - vc) / 2.5) ** 2
            + ((w[:, :, sl[2]] - wc) / 8.0) ** 2
        )
        occ_l = np.broadcast_to(_ramp((np.sqrt(e) - 1) * 3.0, si), pdff[sl].shape)
        r2[sl] = occ_l * CEMENT_R2STAR[1] + (1 - occ_l) * r2[sl]
        pdff[sl] = occ_l * 50.0 + (1 - occ_l) * pdff[sl]

    # Noise, then air outside the body is zero (background-masked maps).
    pdff += (
        rng.standard_normal(shape, dtype=np.float32) * NOISE_PDFF[3.0 if field_factor > 1 else 1.5]
    )
    r2 += rng.standard_normal(shape, dtype=np.float32) * (
        NOISE_R2STAR_REL * np.abs(r2) + NOISE_R2STAR_ABS
    )
    pdff *= inside
    r2 *= inside
    return Maps(
        pdff=pdff,
        r2star=np.maximum(r2, 0.0, out=r2),
        labels=labels,
        affine=affine,
        spacing=spacing,
        direction_lps=direction,
        origin_lps=origin,
    )
