"""Small real image files for the imaging and extraction tests (no tests in this module).

Everything is written with the libraries the product reads with (nibabel, pydicom), so the
tests exercise real files: a tiny "spine" of box-shaped vertebrae with known marrow values.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from refracture.levels import VERSE

VERSE_VALUE = {name: value for value, name in VERSE.items()}
# A made-up identity that must never show up in any output.
PATIENT_NAME = "QUARTERMAINE^ELISE"
PATIENT_ID = "MRN-7731-XY"


def affine_for(spacing=(1.5, 1.5, 4.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def spine(
    levels=("L1", "L2", "L3"),
    pdff=None,
    r2star=None,
    shape=None,
    body=(12, 14, 8),
    noise=0.0,
    seed=0,
):
    """Box vertebrae stacked along j with constant marrow values (+ optional noise).

    Returns (pdff in %, r2star in 1/s, VerSe labels) as (i, j, k) arrays. Every vertebra
    is ``body`` voxels, with 4-voxel discs between; outside is soft tissue (PDFF 10 %,
    R2* 30 1/s).
    """
    rng = np.random.default_rng(seed)
    shape = shape or (24, 4 + len(levels) * (body[1] + 4), 12)
    pdff = pdff or {lv: 40.0 + 5 * n for n, lv in enumerate(levels)}
    r2star = r2star or {lv: 60.0 + 10 * n for n, lv in enumerate(levels)}
    p = np.full(shape, 10.0)
    r = np.full(shape, 30.0)
    lab = np.zeros(shape, dtype=np.int16)
    i0 = (shape[0] - body[0]) // 2
    k0 = (shape[2] - body[2]) // 2
    j = 2
    for lv in levels:
        box = (slice(i0, i0 + body[0]), slice(j, j + body[1]), slice(k0, k0 + body[2]))
        lab[box] = VERSE_VALUE[lv]
        p[box] = pdff[lv]
        r[box] = r2star[lv]
        j += body[1] + 4
    if noise:
        p = p + rng.normal(0, noise, shape)
        r = r + rng.normal(0, noise, shape)
    return p, r, lab


def write_nifti(path, data, affine=None, dtype=None, slope=None) -> Path:
    """A NIfTI file; with ``slope`` the data are stored as int16 scaled by it (scl_slope)."""
    affine = affine_for() if affine is None else affine
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if slope is not None:
        stored = np.round(np.asarray(data) / slope).astype(np.int16)
        img = nib.Nifti1Image(stored, affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype or np.asarray(data).dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_dicom_series(
    folder,
    data,
    affine=None,
    slope=1.0,
    intercept=0.0,
    description="FatFrac",
    series_uid=None,
    skip_slices=(),
) -> Path:
    """A GE-like MR Image Storage series (int16 stored = (value - intercept) / slope)."""
    affine = affine_for() if affine is None else affine
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    stored = np.round((np.asarray(data, dtype=np.float64) - intercept) / slope).astype(np.int16)
    series_uid = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    for k in range(stored.shape[2]):
        if k in skip_slices:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.Modality = "MR"
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19470312"
        ds.InstitutionName = "St Elsewhere Hospital"
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.MagneticFieldStrength = 3.0
        ds.SeriesDescription = description
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(x) for x in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(x) for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
    return folder


def write_patient(
    root,
    pid="A001",
    treated="",
    fractured="",
    pdff=None,
    r2star=None,
    labels=None,
    levels=("L1", "L2", "L3"),
    site="s1",
    **spine_kw,
) -> dict:
    """Write one patient's three NIfTI files; returns its manifest row (relative paths)."""
    root = Path(root)
    p, r, lab = spine(levels=levels, **spine_kw)
    p = p if pdff is None else pdff
    r = r if r2star is None else r2star
    lab = lab if labels is None else labels
    d = root / "images" / pid
    if np.all(np.isfinite(p)):
        write_nifti(d / "pdff.nii.gz", p, slope=0.1)  # int16 x 0.1, like the synthetic cohort
    else:
        write_nifti(d / "pdff.nii.gz", p, dtype=np.float32)
    write_nifti(d / "r2star.nii.gz", r, dtype=np.float32)
    write_nifti(d / "labels.nii.gz", lab, dtype=np.int16)
    return {
        "patient_id": pid,
        "site": site,
        "pdff": f"images/{pid}/pdff.nii.gz",
        "r2star": f"images/{pid}/r2star.nii.gz",
        "labels": f"images/{pid}/labels.nii.gz",
        "treated_levels": treated,
        "fractured_levels": fractured,
    }


def write_manifest(root, rows) -> Path:
    path = Path(root) / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


__all__ = [
    "PATIENT_ID",
    "PATIENT_NAME",
    "affine_for",
    "spine",
    "write_dicom_series",
    "write_manifest",
    "write_nifti",
    "write_patient",
]
