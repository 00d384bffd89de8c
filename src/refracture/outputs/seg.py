"""A DICOM Segmentation of the regions a patient's numbers come from (written with highdicom).

Per vertebra three segments on the PDFF map's grid: the voxels its PDFF mean was computed on,
the voxels its R2* mean was computed on (the eroded ROI without cement-like, non-finite and
out-of-range voxels, from :func:`refracture.features.measured.measured_voxels`, the function the
extraction measures with), and the labelled vertebral body (on the PDFF grid) its morphometry
describes. The SEG is derived from the PDFF series (the R2* series, same frame of reference, is
a further source), belongs to their study, and gets new UIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from refracture import __version__
from refracture.errors import ImageError
from refracture.outputs.codes import vertebra_code
from refracture.outputs.measure import Remeasured
from refracture.outputs.source import SourceImages

__all__ = ["SEGMENT_KINDS", "SegResult", "make_seg", "software_identity"]

#: The segments of each vertebra, in segment-number order.
SEGMENT_KINDS = ("pdff", "r2star", "body")
_LABELS = {"pdff": "PDFF ROI", "r2star": "R2* ROI", "body": "vertebral body"}
# CIELab display colours (highdicom.color.CIELabColor from sRGB) per kind.
_COLOURS = {"pdff": (255, 217, 47), "r2star": (102, 194, 165), "body": (141, 160, 203)}
SERIES_NUMBER = 9101


@dataclass
class SegResult:
    """The SEG and which segment number holds each (level, kind)."""

    dataset: hd.seg.Segmentation
    numbers: dict[tuple[str, str], int]


def software_identity() -> dict[str, str]:
    """Manufacturer, model and version of the software that writes the DICOM objects."""
    return {
        "manufacturer": "refracture",
        "manufacturer_model_name": "refracture",
        "software_versions": __version__,
    }


def make_seg(
    measured: Remeasured, pdff_source: SourceImages, r2star_source: SourceImages, pid: str
) -> SegResult:
    """The SEG of one patient; ``*_source``: the maps' source DICOM images
    (:func:`refracture.outputs.source.source_images`)."""
    prep = measured.prep
    rois = prep.rois
    shape = prep.pdff.shape
    first = pdff_source.datasets[0]
    used = sorted(k for k in pdff_source.slices if k is not None)
    if (used, int(first.Rows), int(first.Columns)) != (list(range(shape[2])), shape[1], shape[0]):
        raise ImageError(
            "the PDFF series does not match the measured grid (slices, rows, columns)",
            patient_id=pid,
            file=prep.pdff.path,
        )
    masks: list[np.ndarray] = []
    descriptions: list[hd.seg.SegmentDescription] = []
    numbers: dict[tuple[str, str], int] = {}
    algorithm = hd.AlgorithmIdentificationSequence(
        name="refracture", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    label_ids = {lv: [v for v, name in prep.conv.items() if name == lv] for lv in rois.levels}
    for li, level in enumerate(rois.levels):
        for kind in SEGMENT_KINDS:
            volume = np.zeros(shape, dtype=bool)
            if kind == "body":
                volume = np.isin(prep.labels.data, label_ids[level])
            else:
                sel = (rois.level_of == li) & measured.voxels.measured[kind]
                volume[tuple(c[sel] for c in rois.coords)] = True
            if not volume.any():
                continue
            number = len(descriptions) + 1
            numbers[(level, kind)] = number
            masks.append(_frames(volume, pdff_source.slices))
            descriptions.append(
                hd.seg.SegmentDescription(
                    segment_number=number,
                    segment_label=f"{level} {_LABELS[kind]}",
                    segmented_property_category=codes.SCT.AnatomicalStructure,
                    segmented_property_type=vertebra_code(level),
                    algorithm_type="AUTOMATIC",
                    algorithm_identification=algorithm,
                    tracking_uid=hd.UID(),
                    tracking_id=f"{level} {_LABELS[kind]}",
                    display_color=hd.color.CIELabColor.from_rgb(*_COLOURS[kind]),
                )
            )
    if not masks:
        raise ImageError("no measured voxel to segment", patient_id=pid, file=prep.pdff.path)
    ident = software_identity()
    frame = str(first.get("FrameOfReferenceUID", ""))
    further = r2star_source.datasets
    same_frame = all(str(h.get("FrameOfReferenceUID", "")) == frame for h in further)
    seg = hd.seg.Segmentation(
        source_images=pdff_source.datasets,
        further_source_images=further if same_frame else None,
        pixel_array=np.stack(masks, axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        device_serial_number=__version__,
        content_label="REFRACTURE",
        content_description="Vertebral regions measured by refracture",
        manufacturer=ident["manufacturer"],
        manufacturer_model_name=ident["manufacturer_model_name"],
        software_versions=ident["software_versions"],
    )
    seg.SeriesDescription = "refracture vertebral ROIs"
    return SegResult(seg, numbers)


def _frames(volume: np.ndarray, slices: list[int | None]) -> np.ndarray:
    """A mask on the volume's grid (i, j, k) as the source's frames (rows j, columns i), one
    per source frame in order; a frame the volume does not use stays empty."""
    empty = np.zeros(volume.shape[1::-1], dtype=bool)
    return np.stack([empty if k is None else volume[:, :, k].T for k in slices])
