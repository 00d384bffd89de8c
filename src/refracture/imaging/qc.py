"""QC pictures a radiologist would look at: the mid-sagittal PDFF slice with the ROIs, and,
when given, the vertebral heights with their Genant grades and any label-map problems.

Rendered with matplotlib's object API on the Agg canvas (no pyplot state), so worker
processes can draw in parallel. Sagittal display convention: superior up, anterior left.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from refracture.files import atomic_path
from refracture.imaging.roi import Rois
from refracture.imaging.volume import Volume

if TYPE_CHECKING:
    from refracture.imaging.morphometry import MorphometryResult

_COLORS = ("#ffd92f", "#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#e5c494", "#b3b3b3")


def _world_axis(affine: np.ndarray, voxel_axis: int) -> int:
    return int(np.argmax(np.abs(affine[:3, voxel_axis])))


def _view_axes(vol: Volume, rois: Rois) -> tuple[int, int, int, int]:
    """(sagittal, vertical, horizontal) voxel axes of the display and the slice index."""
    world = [_world_axis(vol.affine, a) for a in range(3)]
    sag = world.index(0) if 0 in world else 0
    vert = (
        world.index(2)
        if 2 in world and world.index(2) != sag
        else next(a for a in range(3) if a != sag)
    )
    horiz = next(a for a in range(3) if a not in (sag, vert))
    k = int(np.median(rois.coords[sag])) if rois.n_voxels else vol.shape[sag] // 2
    return sag, vert, horiz, k


def _to_display(vol: Volume, rois: Rois, world_mm: np.ndarray) -> np.ndarray:
    """(row, column) in :func:`sagittal_view`'s image of world points (n x 3, RAS mm),
    projected on the sagittal slice."""
    _, vert, horiz, _ = _view_axes(vol, rois)
    ijk = (np.asarray(world_mm, dtype=float) - vol.affine[:3, 3]) @ np.linalg.inv(
        vol.affine[:3, :3]
    ).T
    row, col = ijk[:, vert], ijk[:, horiz]
    if vol.affine[2, vert] > 0:
        row = vol.shape[vert] - 1 - row
    if vol.affine[1, horiz] > 0:
        col = vol.shape[horiz] - 1 - col
    return np.column_stack([row, col])


def sagittal_view(
    vol: Volume, rois: Rois, extra_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float, int]:
    """The mid-sagittal slice (superior up, anterior left) of the map, ROI level ids, a mask.

    Returns (image, level ids with -1 outside ROIs, extra mask slice or None, pixel aspect,
    slice index). The slice is the median left-right position of the ROI voxels.
    """
    sag, vert, horiz, k = _view_axes(vol, rois)
    ids = np.full(vol.shape, -1, dtype=np.int16)
    ids[rois.coords] = rois.level_of

    def plane(a: np.ndarray) -> np.ndarray:
        s = np.take(a, k, axis=sag)
        rest = [ax for ax in range(3) if ax != sag]  # remaining axes, in order
        s = s if rest.index(vert) == 0 else s.T  # rows = vertical axis
        if vol.affine[2, vert] > 0:  # index grows superior: flip so superior is on top
            s = s[::-1]
        if vol.affine[1, horiz] > 0:  # index grows anterior: flip so anterior is left
            s = s[:, ::-1]
        return s

    aspect = vol.spacing[vert] / vol.spacing[horiz]
    extra = plane(extra_mask) if extra_mask is not None else None
    return plane(vol.data), plane(ids), extra, aspect, k


#: Height lines and grade labels by Genant grade (0-3): green, yellow, orange, red.
GRADE_COLORS = ("#1a9850", "#fee08b", "#fc8d59", "#d73027")


def render_patient_png(
    path: str | Path,
    pdff: Volume,
    rois: Rois,
    *,
    title: str,
    cement_mask: np.ndarray | None = None,
    morphometry: MorphometryResult | None = None,
    label_problems: Sequence[str] | str | None = None,
) -> Path:
    """Write the QC PNG of one patient: PDFF (0-100 %) grey, ROI outlines labelled by level,
    cement-like voxels excluded from the ROIs in red.

    ``morphometry``: the anterior, middle and posterior heights are drawn on the view (projected
    on the sagittal slice), coloured by Genant grade, and each level's label gets its grade and
    height loss. ``label_problems``: label-map QC problems, written in a red box under a red
    frame (``LabelQC.summary`` or its messages).
    """
    img, ids, cement, aspect, k = sagittal_view(pdff, rois, cement_mask)
    r0 = c0 = 0
    rows, cols = np.nonzero(ids >= 0)
    if rows.size:  # zoom on the spine: the ROIs plus a margin of ~40 mm
        m = max(10, int(40 / min(pdff.spacing)))
        r0, r1 = max(rows.min() - m, 0), min(rows.max() + m + 1, img.shape[0])
        c0, c1 = max(cols.min() - m, 0), min(cols.max() + m + 1, img.shape[1])
        img, ids = img[r0:r1, c0:c1], ids[r0:r1, c0:c1]
        cement = cement[r0:r1, c0:c1] if cement is not None else None
    fig = Figure(figsize=(5, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.94))
    ax.imshow(np.nan_to_num(img, nan=0.0), cmap="gray", vmin=0, vmax=100, aspect=aspect)
    if cement is not None and cement.any():
        overlay = np.zeros((*cement.shape, 4))
        overlay[cement] = (1.0, 0.1, 0.1, 0.8)
        ax.imshow(overlay, aspect=aspect, interpolation="nearest")
    graded = _morph_labels(morphometry)
    for li, level in enumerate(rois.levels):
        mask = ids == li
        if not mask.any():
            continue
        color = _COLORS[li % len(_COLORS)]
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
        rows, cols = np.nonzero(mask)
        text, grade_color = level, color
        if level in graded:
            grade_text, grade = graded[level]
            text = f"{level} {grade_text}"
            grade_color = GRADE_COLORS[grade] if 0 <= grade < len(GRADE_COLORS) else color
        ax.text(
            cols.max() + 3,
            rows.mean(),
            text,
            color=grade_color,
            fontsize=9,
            fontweight="bold",
            va="center",
        )
    if morphometry is not None:
        _draw_heights(ax, pdff, rois, morphometry, (r0, c0), img.shape)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    problems = [label_problems] if isinstance(label_problems, str) else list(label_problems or [])
    problems = [p for p in problems if p]
    head = f"{title}  PDFF 0-100 %, sagittal slice {k}"
    if morphometry is not None:
        head += "; heights by Genant grade"
    fig.suptitle(head, fontsize=9, y=0.985, color="white")
    if problems:
        fig.patches.append(
            Rectangle(
                (0, 0), 1, 1, transform=fig.transFigure, fill=False, edgecolor="red", linewidth=6
            )
        )
        text = "LABEL QC: " + "; ".join(problems)
        fig.text(
            0.02,
            0.02,
            "\n".join(textwrap.wrap(text, 70)[:6]),
            color="white",
            fontsize=7,
            va="bottom",
            bbox={"facecolor": "#b2182b", "alpha": 0.85, "edgecolor": "none"},
        )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="black")
    return path


def _morph_labels(morph: MorphometryResult | None) -> dict[str, tuple[str, int]]:
    """Level -> ('G2 31%', grade) for the measured levels."""
    if morph is None or morph.per_level.empty:
        return {}
    out = {}
    for level, row in morph.per_level.iterrows():
        grade = int(row["genant_grade"])
        loss = float(row["height_loss_pct"])
        out[str(level)] = (f"G{grade} {loss:.0f}%", grade)
    return out


def _draw_heights(ax, vol: Volume, rois: Rois, morph, offset, shape) -> None:
    for level, geo in morph.geometry.items():
        grade = int(morph.per_level.loc[level, "genant_grade"])
        color = GRADE_COLORS[grade] if 0 <= grade < len(GRADE_COLORS) else "white"
        for lo, hi in geo.segments.values():
            (ra, ca), (rb, cb) = _to_display(vol, rois, np.array([lo, hi])) - np.array(offset)
            ax.plot([ca, cb], [ra, rb], color=color, linewidth=1.6, solid_capstyle="butt")


def render_contact_sheets(
    items: list[tuple[str, Path]], out_dir: str | Path, per_page: int = 48, columns: int = 8
) -> list[Path]:
    """Contact sheets of per-patient QC PNGs (``(patient_id, png)`` in manifest order)."""
    from matplotlib.image import imread

    out_dir = Path(out_dir)
    items = [(pid, Path(p)) for pid, p in items if Path(p).is_file()]
    pages = [items[i : i + per_page] for i in range(0, len(items), per_page)]
    written = []
    for n, page in enumerate(pages, start=1):
        rows = math.ceil(len(page) / columns)
        ncols = min(columns, len(page))
        fig = Figure(figsize=(2.0 * ncols, 2.5 * rows), dpi=80)
        FigureCanvasAgg(fig)
        for i, (pid, png) in enumerate(page):
            ax = fig.add_subplot(rows, ncols, i + 1)
            ax.imshow(imread(png))
            ax.set_title(pid, fontsize=8)
            ax.set_axis_off()
        fig.tight_layout()
        name = "contact_sheet.png" if len(pages) == 1 else f"contact_sheet_{n:03d}.png"
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, format="png")
        written.append(out_dir / name)
    return written
