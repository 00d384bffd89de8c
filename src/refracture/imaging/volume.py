"""The one typed object every map and label map arrives as.

Voxel arrays are in nibabel index order (i, j, k) with a 4x4 affine to RAS+ world
coordinates in mm, whatever the file format. SimpleITK images are LPS+ and indexed
(k, j, i) by ``GetArrayFromImage``; the two helpers below convert between the conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

Kind = Literal["pdff", "r2star", "labels"]

# RAS <-> LPS: flip the sign of the first two world axes.
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: DICOM/header facts a Volume may carry. Nothing that identifies a patient, study,
#: institution or instance (names, IDs, dates, UIDs) is ever read into a Volume.
METADATA_KEYS = (
    "format",
    "vendor",
    "model",
    "software_versions",
    "field_strength_t",
    "series_description",
    "units_stated",
    "rescale_slope",
    "rescale_intercept",
    "rescale_applied_by",
    "units_basis",
    "value_mapping",
    "transfer_syntax",
    "series",
    "image_type",
    "n_frames",
    "label_source",
)


@dataclass(frozen=True, repr=False)
class SourceSeries:
    """The DICOM series a volume was read from, for writing DICOM objects that refer to it
    (segmentations, structured reports). Kept in memory only: it holds the patient's identity,
    so it is never written to a table, a log or an MLflow artifact, and its repr names no
    identity.

    ``instances`` lists (SOPInstanceUID, frame number or None) for each slice k of the volume;
    ``patient`` the Patient module (PatientName, PatientID, PatientBirthDate, PatientSex) and
    ``study`` the General Study module (StudyID, StudyDate, StudyTime, AccessionNumber,
    ReferringPhysicianName, StudyDescription) as the files state them.
    """

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    instances: tuple[tuple[str, int | None], ...]
    files: tuple[Path, ...]
    patient: dict[str, str] = field(default_factory=dict)
    study: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SourceSeries({len(self.instances)} slices)"


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D map or label map on a physical grid.

    ``data`` is float32 for maps and int32 for label maps, indexed (i, j, k); ``affine``
    maps voxel indices to RAS+ mm. ``units`` is the unit of ``data`` (``None`` while still
    unknown, for example a PDFF map whose scaling is only decided from the ROI values).
    """

    data: np.ndarray
    affine: np.ndarray
    kind: Kind
    path: Path
    content_hash: str
    units: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The DICOM series it came from (None for other formats); in memory only, see
    #: :class:`SourceSeries`.
    source: SourceSeries | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'LPS'`` (nibabel ``aff2axcodes``: where each index axis points)."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume(kind={self.kind!r}, shape={self.shape}, spacing={sp} mm, "
            f"orientation={self.orientation!r}, units={self.units!r}, dtype={self.data.dtype}, "
            f"path={self.path.name!r})"
        )

    def with_data(self, data: np.ndarray, **changes: Any) -> Volume:
        """A copy holding ``data`` (same grid unless ``affine`` is given)."""
        return replace(self, data=data, **changes)

    def describe(self) -> str:
        """Grid summary for error messages: shape, spacing, origin, orientation."""
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        origin = ", ".join(f"{o:.1f}" for o in self.affine[:3, 3])
        return (
            f"shape {self.shape}, spacing ({sp}) mm, origin ({origin}) mm RAS, "
            f"orientation {self.orientation}"
        )


def affine_from_sitk(img: sitk.Image) -> np.ndarray:
    """RAS affine of a 3-D SimpleITK image, for arrays transposed to (i, j, k)."""
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()
    return _LPS @ lps


def array_from_sitk(img: sitk.Image) -> np.ndarray:
    """Voxel array of a 3-D SimpleITK image in (i, j, k) order."""
    return np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))


def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of an (i, j, k) array on a RAS affine (orthogonal axes only)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(d) for d in direction.ravel()))
    img.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    return img
