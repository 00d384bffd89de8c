"""Write a synthetic map as a DICOM series the way scanners store fat-fraction/R2* output.

One MR Image Storage file per sagittal slice, int16 pixels with RescaleSlope/RescaleIntercept,
the vendor's series descriptions (GE: "FatFrac: Sag IDEAL-IQ" and "R2*: Sag IDEAL-IQ"), the
scanner's Manufacturer, ManufacturerModelName, SoftwareVersions and MagneticFieldStrength, the
unit of the rescaled values in a Real World Value Mapping item (UCUM code), and a made-up
patient identity (name, ID, birth date, UIDs) so that the product's PHI handling can be tested:
none of these may ever leave the DICOM files. No DeviceSerialNumber or StationName is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from refracture.files import atomic_path

# Names are assembled from syllables, so no identity a header carries appears verbatim in this
# source (which ships inside every registered model): a scan of a run's outputs for the header
# values finds only real leaks.
SYLLABLES = ["QUA", "VEN", "TOR", "MIL", "DRA", "ZEL", "BRO", "KAN", "SIV", "LOR", "NET", "HAV",
             "PEL", "GRU", "SOM", "WIK", "JAR", "FEN", "TUL", "OBA"]  # fmt: skip
# GE stores FatFrac as integers; "per_mille" is the GE habit (0-1000 for 0-100 %, slope 1);
# "percent" stores x10 integers with RescaleSlope 0.1 so the rescaled value is in percent.
PDFF_SCALES = {"per_mille": 1.0, "percent": 0.1}
# UCUM code and meaning of the rescaled values' unit, per map and PDFF scale.
UNIT_CODES = {
    ("pdff", "per_mille"): ("[ppth]", "per mille"),
    ("pdff", "percent"): ("%", "percent"),
    ("r2star", None): ("/s", "per second"),
}
# Series descriptions by vendor (GE IDEAL-IQ, Siemens qDixon, Philips mDIXON Quant): the
# R2* ones name R2*, as the real exports do.
DESCRIPTIONS = {
    "GE MEDICAL SYSTEMS": ("FatFrac: Sag IDEAL-IQ", "R2*: Sag IDEAL-IQ"),
    "SIEMENS": ("Sag_qDixon_FatFraction", "Sag_qDixon_R2star"),
    "Philips Medical Systems": ("sag mDIXON-Quant FF", "sag mDIXON-Quant R2*"),
}


@dataclass(frozen=True)
class Identity:
    """A made-up patient identity carried only inside the DICOM headers."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: int
    study_uid: str
    frame_uid: str
    accession: str
    referrer: str
    institution: str

    @classmethod
    def make(cls, rng: np.random.Generator, age: int, sex: str, study_date: dt.date) -> Identity:
        name = f"{_word(rng, 4)}^{_word(rng, 3)}"
        born = study_date - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
        entropy = [str(int(x)) for x in rng.integers(0, 2**31, 4)]
        return cls(
            name=name,
            patient_id=f"MRN{rng.integers(10**6, 10**7)}",
            birth_date=born.strftime("%Y%m%d"),
            sex=sex,
            age=age,
            study_uid=generate_uid(entropy_srcs=[*entropy, "study"]),
            frame_uid=generate_uid(entropy_srcs=[*entropy, "frame"]),
            accession=f"ACC{rng.integers(10**7, 10**8)}",
            referrer=f"{_word(rng, 3)}^{_word(rng, 2)}",
            institution=f"{_word(rng, 3).title()} {_word(rng, 2).title()} Hospital",
        )


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES, size=syllables))


def write_series(
    folder: Path,
    values: np.ndarray,
    *,
    kind: str,
    identity: Identity,
    direction_lps: np.ndarray,
    origin_lps: np.ndarray,
    spacing: tuple[float, float, float],
    field_strength_t: float,
    site_name: str,
    study_date: dt.date,
    pdff_scale: str = "per_mille",
    manufacturer: str = "GE MEDICAL SYSTEMS",
    model: str | None = None,
    software: str = "",
) -> None:
    """Write ``values`` (array in (i, j, k) order, sagittal slices along k) as a series."""
    pdff_desc, r2_desc = DESCRIPTIONS.get(manufacturer, DESCRIPTIONS["GE MEDICAL SYSTEMS"])
    if kind == "pdff":
        stored = np.rint(values * 10.0)
        slope, description, number = PDFF_SCALES[pdff_scale], pdff_desc, 6
        unit_code = UNIT_CODES[("pdff", pdff_scale)]
    elif kind == "r2star":
        stored = np.rint(values * 10.0)
        slope, description, number = 0.1, r2_desc, 7
        unit_code = UNIT_CODES[("r2star", None)]
    else:
        raise ValueError(f"unknown map kind {kind!r}")
    if model is None:
        model = "Optima MR450w" if field_strength_t < 2 else "SIGNA Architect"
    stored = np.clip(stored, -32768, 32767).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[identity.study_uid, kind, "series"])
    row_dir, col_dir, slice_dir = direction_lps[:, 0], direction_lps[:, 1], direction_lps[:, 2]
    date = study_date.strftime("%Y%m%d")
    units = _real_world_value_mapping(slope, unit_code, kind)
    for k in range(stored.shape[2]):
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = identity.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = identity.frame_uid
        ds.PatientName = identity.name
        ds.PatientID = identity.patient_id
        ds.PatientBirthDate = identity.birth_date
        ds.PatientSex = identity.sex
        ds.PatientAge = f"{identity.age:03d}Y"
        ds.AccessionNumber = identity.accession
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = "083000"
        ds.ReferringPhysicianName = identity.referrer
        ds.InstitutionName = identity.institution
        ds.Modality = "MR"
        ds.Manufacturer = manufacturer
        ds.ManufacturerModelName = model
        if software:
            ds.SoftwareVersions = software
        ds.MagneticFieldStrength = field_strength_t
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        ds.InstanceNumber = k + 1
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SS"
        ds.MRAcquisitionType = "3D"
        ds.ImageType = ["DERIVED", "PRIMARY", "FATFRAC" if kind == "pdff" else "R2STAR"]
        position = origin_lps + k * spacing[2] * slice_dir
        ds.ImagePositionPatient = [round(float(x), 4) for x in position]
        ds.ImageOrientationPatient = [float(x) for x in (*row_dir, *col_dir)]
        ds.SliceLocation = round(float(np.dot(position, np.cross(row_dir, col_dir))), 4)
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = spacing[2]
        ds.SpacingBetweenSlices = spacing[2]
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = "0"
        ds.RealWorldValueMappingSequence = units
        # rows run along j (index axis 1), columns along i (index axis 0)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        with atomic_path(folder / f"IM{k + 1:04d}.dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)


def _real_world_value_mapping(slope: float, unit: tuple[str, str], kind: str) -> Sequence:
    """One Real World Value Mapping item stating the unit of the rescaled values (same slope
    and intercept as RescaleSlope/Intercept), as PS3.3 C.7.6.16.2.11 describes."""
    code = Dataset()
    code.CodeValue, code.CodeMeaning = unit
    code.CodingSchemeDesignator = "UCUM"
    item = Dataset()
    item.LUTExplanation = "fat fraction" if kind == "pdff" else "R2*"
    item.LUTLabel = "FF" if kind == "pdff" else "R2STAR"
    item.MeasurementUnitsCodeSequence = Sequence([code])
    item.add_new("RealWorldValueFirstValueMapped", "SS", -32768)
    item.add_new("RealWorldValueLastValueMapped", "SS", 32767)
    item.RealWorldValueSlope = float(slope)
    item.RealWorldValueIntercept = 0.0
    return Sequence([item])
