"""QC pictures: the sagittal view is oriented as a radiologist expects, and PNGs get written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread

from refracture.imaging import Volume, build_rois
from refracture.imaging.qc import render_contact_sheets, render_patient_png, sagittal_view
from refracture.levels import VERSE


def _pir_volume() -> tuple[Volume, np.ndarray]:
    """A sagittal grid like the synthetic cohort's: i posterior, j inferior, k patient right."""
    shape = (30, 40, 9)
    affine = np.array(
        [[0, 0, -4.0, 20], [-1.5, 0, 0, 40], [0, -1.5, 0, 30], [0, 0, 0, 1]], dtype=float
    )
    data = np.full(shape, 10.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    labels[5:25, 5:15, 2:7] = 20  # L1 (superior: small j)
    labels[5:25, 20:30, 2:7] = 21  # L2
    data[5, 5, 4] = 99.0  # the most anterior (smallest i) and superior (smallest j) corner
    vol = Volume(data, affine, "pdff", Path("p.nii.gz"), "h", units="percent")
    return vol, labels


def test_sagittal_view_is_superior_up_anterior_left() -> None:
    vol, labels = _pir_volume()
    rois = build_rois(labels, vol.spacing, VERSE, 0.0)
    img, ids, _, aspect, k = sagittal_view(vol, rois)
    assert k == 4  # the middle of the ROIs left-right
    assert img.shape == (40, 30)  # rows: superior-inferior (j), columns: anterior-posterior
    r, c = np.unravel_index(np.argmax(img), img.shape)
    rows, cols = np.nonzero(ids == 0)  # L1
    assert r == rows.min() and c == cols.min()  # top-left corner of L1
    assert np.nonzero(ids == 1)[0].min() > rows.max()  # L2 is below L1
    assert aspect == 1.0


def test_patient_png_and_contact_sheet(tmp_path: Path) -> None:
    vol, labels = _pir_volume()
    rois = build_rois(labels, vol.spacing, VERSE, 0.0)
    cement = np.zeros(vol.shape, dtype=bool)
    cement[10:12, 22:24, 3:6] = True
    pngs = []
    for pid in ("A", "B", "C"):
        path = render_patient_png(tmp_path / f"{pid}.png", vol, rois, title=pid, cement_mask=cement)
        assert imread(path).shape[:2] == (600, 500)
        pngs.append((pid, path))
    sheets = render_contact_sheets(pngs, tmp_path, per_page=2)
    assert [s.name for s in sheets] == ["contact_sheet_001.png", "contact_sheet_002.png"]
    assert all(s.is_file() for s in sheets)
