"""Image headers, read without decoding a voxel: what a map or label map claims to be.

:func:`read_header` is the one place that opens an image here: NIfTI through nibabel's lazy
loading (the header only), a DICOM folder through pydicom with ``stop_before_pixels`` on a few
tags of each file, NRRD/MHA through SimpleITK's ``ReadImageInformation``.
:func:`header_findings` and :func:`grid_findings` turn headers into findings (one sentence
each), so another header reader can replace :func:`read_header` without touching the rules.
Full checks of the voxels (values, units, vertebrae) stay with extraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refracture.config import ExtractionConfig

__all__ = ["Header", "grid_findings", "header_findings", "read_header"]

NIFTI = (".nii", ".nii.gz")
ITK = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DICOM_TAGS = [
    "SeriesInstanceUID", "NumberOfFrames", "Rows", "Columns", "PixelSpacing",
    "ImageOrientationPatient", "ImagePositionPatient", "SOPClassUID",
]  # fmt: skip


@dataclass(frozen=True)
class Header:
    """What an image's header says: ``shape`` (voxels per axis), ``affine`` (voxel index to
    RAS mm, None when it cannot be told from the header alone), ``n_series`` (DICOM series in
    a folder), ``multiframe`` (one DICOM file holding many frames) and ``unreadable`` (the
    first file that is not DICOM)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray | None
    n_series: int = 1
    multiframe: bool = False
    unreadable: str = ""


def read_header(path: str | Path) -> Header:
    """The header of a NIfTI/NRRD/MHA file or of a folder holding one DICOM series.

    Raises OSError or ValueError (with the reader's reason) when the header cannot be read.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return _dicom_header(path)
    if name.endswith(NIFTI):
        import nibabel as nib

        img = nib.load(str(path))  # lazy: the header only
        return Header(path, tuple(int(n) for n in img.shape), np.asarray(img.affine))
    if name.endswith(ITK):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = tuple(int(n) for n in reader.GetSize())
        direction = np.asarray(reader.GetDirection(), dtype=float).reshape(len(size), len(size))
        affine = None
        if len(size) == 3:
            lps = np.eye(4)
            lps[:3, :3] = direction * np.asarray(reader.GetSpacing())
            lps[:3, 3] = reader.GetOrigin()
            affine = _LPS_TO_RAS @ lps
        return Header(path, size, affine)
    raise ValueError("not an image file refracture reads (.nii, .nii.gz, .nrrd, .mha or a folder)")


def _dicom_header(folder: Path) -> Header:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )  # fmt: skip
    if not files:
        raise ValueError("the DICOM folder holds no file")
    series, positions, unreadable, first = set(), [], "", None
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_DICOM_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError):
            unreadable = unreadable or f.name
            continue
        if "SeriesInstanceUID" not in ds:
            unreadable = unreadable or f.name
            continue
        series.add(str(ds.SeriesInstanceUID))
        first = first or ds
        if "ImagePositionPatient" in ds:
            positions.append([float(x) for x in ds.ImagePositionPatient])
    if first is None:
        raise ValueError(f"{unreadable} in the DICOM folder is not a readable DICOM file")
    frames = int(first.get("NumberOfFrames", 1) or 1)
    shape = (int(first.get("Columns", 0)), int(first.get("Rows", 0)), max(len(positions), frames))
    affine = _dicom_affine(first, np.asarray(positions)) if frames == 1 else None
    return Header(folder, shape, affine, len(series), frames > 1, unreadable)


def _dicom_affine(ds, positions: np.ndarray) -> np.ndarray | None:
    """Voxel -> RAS mm of a classic series (slices sorted along their normal), or None."""
    try:
        iop = np.asarray([float(x) for x in ds.ImageOrientationPatient])
        dy, dx = (float(x) for x in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(positions) == 0 or iop.shape != (6,):
        return None
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    order = positions[np.argsort(positions @ normal)]
    step = (order[-1] - order[0]) / (len(order) - 1) if len(order) > 1 else normal
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, col * dy, step, order[0]
    return _LPS_TO_RAS @ lps


def header_findings(header: Header, kind: str, config: ExtractionConfig) -> list[str]:
    """What is wrong with one image for its role (``pdff``, ``r2star`` or ``labels``)."""
    out = []
    if header.unreadable:
        out.append(f"{header.unreadable} in the DICOM folder is not a readable DICOM file")
    if header.n_series > 1:
        out.append(f"the DICOM folder holds {header.n_series} series; put one series per folder")
    if header.multiframe:
        out.append(
            "multi-frame (enhanced) DICOM is not supported; export the series as one file per "
            "slice or convert it to NIfTI"
        )
    shape = header.shape
    dims = [n for n in shape if n != 1] if len(shape) > 3 else list(shape)
    if len(dims) != 3 or len(shape) < 3:
        out.append(f"the {kind} image is not 3-D (shape {tuple(shape)})")
    elif min(dims) < 1:
        out.append(f"the {kind} image has an empty axis (shape {tuple(shape)})")
    elif int(np.prod(dims)) > config.max_voxels:
        out.append(
            f"the header claims {int(np.prod(dims)):,} voxels, more than extraction.max_voxels "
            f"({config.max_voxels:,})"
        )
    return out


def _bounds(header: Header) -> tuple[np.ndarray, np.ndarray] | None:
    if header.affine is None or len(header.shape) < 3:
        return None
    n = np.asarray(header.shape[:3], dtype=float) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    world = corners @ header.affine.T
    return world[:, :3].min(axis=0), world[:, :3].max(axis=0)


def grid_findings(ref: Header, other: Header, kind: str, config: ExtractionConfig) -> list[str]:
    """What is wrong between the PDFF map (``ref``) and another image of the patient: no
    overlap in space (always an error), another grid when resampling is not allowed."""
    a, b = _bounds(ref), _bounds(other)
    if a is None or b is None:
        return []
    spacing = np.abs(np.linalg.norm(ref.affine[:3, :3], axis=0)).max()  # type: ignore[index]
    low, high = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    if np.any(high - low < -spacing):
        return [
            f"the {kind} image does not overlap the pdff map in space (its header places it "
            "elsewhere); use the image drawn or acquired on this patient's maps"
        ]
    # the same points in space, whatever the order of the voxel axes
    same = (
        sorted(ref.shape[:3]) == sorted(other.shape[:3])
        and np.allclose(a[0], b[0], atol=0.01)
        and np.allclose(a[1], b[1], atol=0.01)
        and np.allclose(
            sorted(np.linalg.norm(ref.affine[:3, :3], axis=0)),  # type: ignore[index]
            sorted(np.linalg.norm(other.affine[:3, :3], axis=0)),  # type: ignore[index]
            atol=1e-3,
        )
    )
    if not same and not config.allow_resample:
        return [
            f"the {kind} image is on another grid than the pdff map; resample it, or set "
            "extraction.allow_resample: true"
        ]
    return []
