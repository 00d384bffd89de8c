"""The source DICOM series of a patient's maps, for the objects that must reference them.

The image reader (:mod:`refracture.imaging.io`) deliberately keeps no DICOM identity (UIDs,
patient module) in what it returns, so nothing identifying can reach a message or a table. A
DICOM SR or SEG written back to the PACS is the one place that must carry it: it belongs to
the source study and references the source instances. :func:`source_series` reads those
headers, and only for that; it is the one function of the outputs that depends on how a map's
DICOM files are found (today: a folder holding one series, sorted as the reader stacks it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from refracture.errors import ImageError

__all__ = ["source_series"]


def source_series(path: str | Path, *, patient_id: str) -> list[Dataset] | None:
    """The headers (no pixel data) of the DICOM series of a map, in the order the reader
    stacks its slices (ascending position along the slice normal): frame ``k`` of the volume
    is ``result[k]``. None when the map is not a DICOM folder (NIfTI, NRRD, ...)."""
    path = Path(path)
    if not path.is_dir():
        return None
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )
    try:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        reason = " ".join(str(err).split())[:200]
        raise ImageError(
            f"cannot read the DICOM headers again ({reason})", patient_id=patient_id, file=path
        ) from None
    if not headers or len({str(h.get("SeriesInstanceUID", "")) for h in headers}) != 1:
        raise ImageError(
            "the DICOM folder does not hold exactly one series", patient_id=patient_id, file=path
        )
    orient = np.asarray(headers[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orient[:3], orient[3:])
    position = [float(np.dot(normal, np.asarray(h.ImagePositionPatient, float))) for h in headers]
    order = np.argsort(position, kind="stable")
    for h in headers:  # type 2 (present, may be empty): a file without them gets them empty
        for keyword in _TYPE2:
            if keyword not in h:
                setattr(h, keyword, "")
    return [headers[i] for i in order]


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
