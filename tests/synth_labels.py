"""Label maps of synthetic patients written as real NIfTI files, for morphometry and label QC.

The anatomy comes from the synthetic cohort (tables only, no PDFF/R2* maps): each patient's
label map is drawn on a chosen grid, saved with nibabel (or resampled and saved with
SimpleITK) and read back with :func:`refracture.imaging.io.load_volume`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk

from refracture.imaging.io import load_volume
from refracture.imaging.morphometry import level_centroids
from refracture.imaging.volume import Volume
from refracture.levels import TL_LEVELS
from refracture.synth import anatomy_of, simulate_cohort
from refracture.synth.cohort import Cohort
from refracture.synth.phantom import draw_labels

SEED = 5
# Sagittal grids (shape i x j x k = AP x CC x LR, spacing mm) centred on the site's scan
# centre, large enough for T10-L5 of every patient at any pitch.
GRID_1MM = ((160, 420, 70), (1.0, 1.0, 1.0))
GRID_4_5MM = ((160, 420, 16), (1.0, 1.0, 4.5))
GRID_ROTATE = ((200, 420, 70), (1.0, 1.0, 1.0))  # room for a 15 degree turn
GRID_SITE_2 = ((80, 250, 16), (1.4844, 1.4844, 4.5))  # the site 2 PDFF grid, cropped


@lru_cache(maxsize=1)
def cohort() -> Cohort:
    return simulate_cohort(n=12, n_sites=4, seed=SEED)


def levels_of(i: int) -> tuple[list[str], list[str]]:
    """(treated, fractured) levels of patient ``i``."""
    lv = cohort().levels[cohort().clinical["patient_id"].iloc[i]]
    return [str(x) for x in lv["treated"]], [str(x) for x in lv["fractured"]]


def write_labels(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data.astype(np.uint8), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def label_file(
    folder: Path, i: int, grid=None, *, posterior_elements: bool = False, name: str = "labels"
) -> Path:
    """Patient ``i``'s label map on ``grid`` (None: the site's PDFF grid) as a NIfTI file."""
    data, affine = draw_labels(
        anatomy_of(cohort(), i, SEED), grid, posterior_elements=posterior_elements
    )
    faces = [np.take(data, e, axis=a) for a in range(3) for e in (0, -1)]
    assert not any(f.any() for f in faces), "the grid cuts a vertebra"
    return write_labels(folder / f"{name}_{i}.nii", data, affine)  # uncompressed: quicker


def rotate_file(src: Path, dst: Path, degrees: float) -> Path:
    """Turn the anatomy of a label map by ``degrees`` about the left-right axis through the
    grid centre: SimpleITK resampling, nearest neighbour, onto the same grid."""
    img = sitk.ReadImage(str(src))
    centre = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()])
    turn = sitk.Euler3DTransform()
    turn.SetCenter(centre)
    turn.SetRotation(math.radians(degrees), 0.0, 0.0)
    out = sitk.Resample(img, img, turn, sitk.sitkNearestNeighbor, 0, img.GetPixelID())
    sitk.WriteImage(out, str(dst))
    return dst


def spine_axis(vol: Volume) -> np.ndarray:
    """Main axis of the vertebral centroids (world mm)."""
    from refracture.levels import VERSE

    c = np.array(list(level_centroids(vol, VERSE).values()))
    return np.linalg.svd(c - c.mean(axis=0), full_matrices=False)[2][0]


def load(path: Path) -> Volume:
    return load_volume(path, "labels")


def errors(per_level: pd.DataFrame, i: int) -> pd.DataFrame:
    """Measured minus true heights (mm) and measured and true grades, per level."""
    truth = cohort().truth.iloc[i]
    rows = []
    for lv in TL_LEVELS:
        got = per_level.loc[lv]
        rows.append(
            {
                "patient": i,
                "level": lv,
                "kind": truth[f"true_deformity_{lv}"],
                **{
                    f"d_{h}": float(got[f"{h}_mm"]) - float(truth[f"true_{h}_mm_{lv}"])
                    for h in ("ha", "hm", "hp")
                },
                "grade": int(got["genant_grade"]),
                "true_grade": int(truth[f"true_genant_{lv}"]),
                "volume_ratio": float(got["body_volume_ml"])
                / float(truth[f"true_body_volume_ml_{lv}"]),
            }
        )
    out = pd.DataFrame(rows)
    out["max_abs_mm"] = out[["d_ha", "d_hm", "d_hp"]].abs().max(axis=1)
    return out
