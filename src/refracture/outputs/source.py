"""The source DICOM images of a patient's maps, for the objects that must reference them.

The image readers keep the identity of a DICOM series (UIDs, patient and study modules) in
memory only, as :attr:`refracture.imaging.volume.Volume.source`, so nothing identifying can
reach a message or a table. A DICOM SR or SEG written back to the PACS is the one place that
must carry it: it belongs to the source study and references the source instances.
:func:`source_images` reads those headers again, and only for that; it is the one function of
the outputs that depends on how the readers describe a series.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from refracture.errors import ImageError
from refracture.imaging.volume import Volume

__all__ = ["SourceImages", "source_images"]

#: Type 2 attributes of the Patient and General Study modules that a derived object copies from
#: its source; some exports leave them out although DICOM asks for them, present if empty.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class SourceImages:
    """The DICOM headers (no pixel data) a map was read from, its series UID, and for each of
    their frames in order (one per classic image, ``NumberOfFrames`` for a multi-frame image)
    the volume slice it is, or None for a frame the volume does not use."""

    datasets: list[Dataset]
    series_uid: str
    slices: list[int | None]


def source_images(volume: Volume, *, patient_id: str) -> SourceImages | None:
    """The source images of a map read from DICOM; None for other formats (NIfTI, NRRD)."""
    series = volume.source
    if series is None:
        return None
    try:
        headers = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in series.files}
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        reason = " ".join(str(err).split())[:200]
        raise ImageError(
            f"cannot read the DICOM headers again ({reason})",
            patient_id=patient_id,
            file=volume.path,
        ) from None
    numbers = [number for _, number in series.instances]
    if all(n is None for n in numbers):  # classic images: one per slice, in slice order
        by_uid: dict[str, Dataset] = {str(ds.SOPInstanceUID): ds for ds in headers.values()}
        datasets = [by_uid[uid] for uid, _ in series.instances]
        slices: list[int | None] = list(range(len(datasets)))
    elif len(headers) == 1:  # one multi-frame image: its frames, some maybe unused
        (only,) = headers.values()
        slice_of = {n: k for k, n in enumerate(numbers)}
        datasets = [only]
        slices = [slice_of.get(f) for f in range(int(only.NumberOfFrames))]  # 0-based frames
    else:
        raise ImageError(
            "the map's slices come from several multi-frame images; a DICOM SEG can be derived "
            "from one multi-frame image or from one classic image per slice",
            patient_id=patient_id,
            file=volume.path,
        )
    for ds in datasets:
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return SourceImages(datasets, series.series_uid, slices)
