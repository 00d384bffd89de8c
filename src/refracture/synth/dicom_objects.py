"""DICOM objects of a synthetic exam as scanners and PACS write them: classic MR slices with the
patient, study, series, equipment and image modules; enhanced multi-frame MR converted from
them with highdicom; DICOM SEG label maps written with highdicom (as 3D Slicer's and
TotalSegmentator's exports are), one segment per vertebra coded with its SNOMED CT concept.

Every object carries a made-up identity (:class:`~refracture.synth.dicom.Identity`), so the
product's privacy can be tested against real-looking headers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from refracture.synth.dicom import Identity

__all__ = ["SeriesSpec", "classic_series", "enhanced_series", "label_segmentation"]

_VERSE = {17: "T10", 18: "T11", 19: "T12", 20: "L1", 21: "L2", 22: "L3", 23: "L4", 24: "L5"}


@dataclass(frozen=True)
class SeriesSpec:
    """One series (or one image type of a series) to write.

    ``stored`` holds the integers to store, (i, j, k) with slices along k; ``slope`` and
    ``intercept`` the Modality LUT; ``real_world`` an optional (slope, intercept, UCUM code,
    meaning) Real World Value Mapping; ``image_type`` the ImageType values.
    """

    description: str
    number: int
    image_type: tuple[str, ...]
    stored: np.ndarray
    slope: float = 1.0
    intercept: float = 0.0
    real_world: tuple[float, float, str, str] | None = None
    echo: tuple[int, float] = (1, 1.2)  # (EchoNumbers, EchoTime ms)
    series_uid: str = ""
    private_scale_slope: float | None = None  # Philips (2005,100E)
    first_instance: int = 1


@dataclass(frozen=True)
class Scanner:
    manufacturer: str
    model: str
    software: str
    field_strength_t: float


def classic_series(
    spec: SeriesSpec,
    identity: Identity,
    scanner: Scanner,
    study_date: dt.date,
    geometry: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
) -> list[FileDataset]:
    """One MR Image Storage dataset per slice (not yet saved)."""
    first_instance = spec.first_instance
    direction, origin, spacing = geometry
    row_dir, col_dir, slice_dir = direction[:, 0], direction[:, 1], direction[:, 2]
    series_uid = spec.series_uid or generate_uid(
        entropy_srcs=[identity.study_uid, spec.description, "+".join(spec.image_type)]
    )
    stored = np.clip(np.rint(spec.stored), -32768, 32767).astype(np.int16)
    out = []
    for k in range(stored.shape[2]):
        ds = _base(identity, scanner, study_date, series_uid, spec, first_instance + k)
        position = origin + k * spacing[2] * slice_dir
        ds.ImagePositionPatient = [round(float(x), 4) for x in position]
        ds.ImageOrientationPatient = [round(float(x), 6) for x in (*row_dir, *col_dir)]
        ds.SliceLocation = round(float(np.dot(position, np.cross(row_dir, col_dir))), 4)
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = ds.SpacingBetweenSlices = spacing[2]
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows along j
        out.append(ds)
    return out


def _base(
    identity: Identity,
    scanner: Scanner,
    study_date: dt.date,
    series_uid: str,
    spec: SeriesSpec,
    instance: int,
) -> FileDataset:
    sop_uid = generate_uid(entropy_srcs=[series_uid, str(instance)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.study_uid, series_uid
    ds.FrameOfReferenceUID = identity.frame_uid
    ds.PatientName, ds.PatientID = identity.name, identity.patient_id
    ds.PatientBirthDate, ds.PatientSex = identity.birth_date, identity.sex
    ds.PatientAge = f"{identity.age:03d}Y"
    ds.AccessionNumber, ds.StudyID = identity.accession, "1"
    date = study_date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime, ds.SeriesTime = "083000", f"{8 + spec.number // 100:02d}{spec.number % 60:02d}00"
    ds.ContentTime = ds.SeriesTime
    ds.ReferringPhysicianName, ds.InstitutionName = identity.referrer, identity.institution
    ds.StudyDescription = "MR SPINE"
    ds.Modality, ds.Manufacturer = "MR", scanner.manufacturer
    ds.ManufacturerModelName, ds.SoftwareVersions = scanner.model, scanner.software
    ds.MagneticFieldStrength = scanner.field_strength_t
    ds.SeriesDescription, ds.SeriesNumber = spec.description, spec.number
    ds.InstanceNumber = instance
    ds.ImageType = list(spec.image_type)
    ds.ScanningSequence, ds.SequenceVariant = "GR", "SS"
    ds.ScanOptions, ds.MRAcquisitionType = "", "3D"
    ds.EchoNumbers, ds.EchoTime = spec.echo
    ds.RepetitionTime, ds.FlipAngle = 8.0, 3.0
    ds.PositionReferenceIndicator, ds.BodyPartExamined = "", "SPINE"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = f"{spec.slope:.12g}", f"{spec.intercept:.12g}"
    ds.RescaleType = "US"
    ds.WindowCenter, ds.WindowWidth = 500, 1000
    if spec.real_world is not None:
        ds.RealWorldValueMappingSequence = _real_world(*spec.real_world)
    if spec.private_scale_slope is not None:
        block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        block.add_new(0x0E, "FL", spec.private_scale_slope)
    return ds


def _real_world(slope: float, intercept: float, code: str, meaning: str) -> Sequence:
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = code, "UCUM", meaning
    item = Dataset()
    item.LUTExplanation, item.LUTLabel = meaning, "MAP"
    item.MeasurementUnitsCodeSequence = Sequence([unit])
    item.add_new("RealWorldValueFirstValueMapped", "SS", -32768)
    item.add_new("RealWorldValueLastValueMapped", "SS", 32767)
    item.RealWorldValueSlope, item.RealWorldValueIntercept = float(slope), float(intercept)
    return Sequence([item])


def enhanced_series(slices: list[FileDataset], spec: SeriesSpec) -> Dataset:
    """The slices as one Legacy Converted Enhanced MR object (highdicom), as newer scanners
    and PACS store a series: one file, one frame per slice, per-frame functional groups."""
    import highdicom as hd

    first = slices[0]
    image = hd.legacy.LegacyConvertedEnhancedMRImage(
        slices,
        series_instance_uid=first.SeriesInstanceUID,
        series_number=spec.number,
        sop_instance_uid=generate_uid(entropy_srcs=[first.SeriesInstanceUID, "enhanced"]),
        instance_number=1,
    )
    # The conversion writes 'NONE' as the derived pixel contrast (4th value); a scanner's own
    # enhanced object names the map there, as the classic ImageType did.
    image.ImageType = list(spec.image_type)
    for group in image.SharedFunctionalGroupsSequence:
        for item in group.get("MRImageFrameTypeSequence") or []:
            item.FrameType = list(spec.image_type)
    return image


def label_segmentation(
    labels: np.ndarray, source: list[Dataset], identity: Identity, number: int
) -> Dataset:
    """A DICOM SEG of the VerSe label map (i, j, k) on the grid of ``source`` (its slices in
    k order, or one multi-frame object), one segment per vertebra with its SNOMED CT code."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    present = [v for v in sorted(int(x) for x in np.unique(labels)) if v in _VERSE]
    pixels = np.zeros(labels.shape[::-1], dtype=np.uint8)  # (slice, row, column)
    descriptions = []
    for n, value in enumerate(present, start=1):
        level = _VERSE[value]
        pixels[np.transpose(labels == value, (2, 1, 0))] = n
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=level,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=getattr(codes.SCT, f"{level}Vertebra"),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="refracture synth", version="1", family=codes.DCM.ArtificialIntelligence
                ),
            )
        )
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=[identity.study_uid, "seg"]),
        series_number=number,
        sop_instance_uid=generate_uid(entropy_srcs=[identity.study_uid, "seg", "sop"]),
        instance_number=1,
        manufacturer="refracture",
        manufacturer_model_name="synth",
        software_versions="1",
        device_serial_number="0",
        series_description="Vertebrae (segmentation)",
    )
