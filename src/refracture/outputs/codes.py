"""Coded concepts of the DICOM outputs: standard codes where DICOM has them, a private scheme
for what it has not.

Standard: the vertebrae (SNOMED CT, DICOM CID 7151), "Fat fraction" and "R2*" (DCM), the
statistic "Mean" (SNOMED CT, CID 7464), units (UCUM). DICOM has no concept for a one-year
re-fracture risk, a Genant grade or a vertebral height station, so these are in the private
coding scheme ``99RFR`` (private designators start with ``99``, PS3.16 section 8), declared in
each SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "MAP_CODES",
    "MAP_UNITS",
    "MORPH_CODES",
    "PRIVATE_SCHEME",
    "RISK_CODES",
    "coding_scheme_identification",
    "vertebra_code",
]

#: The private coding scheme designator of refracture's own concepts.
PRIVATE_SCHEME = "99RFR"


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


#: The measured quantity of each map.
MAP_CODES = {"pdff": codes.DCM.FatFraction, "r2star": codes.DCM.R2Star}
#: UCUM units of each map's values as refracture measures them (PDFF in %, R2* in 1/s).
MAP_UNITS = {"pdff": codes.UCUM.Percent, "r2star": codes.UCUM.PerSecond}

#: Per-vertebra morphometry (name, unit) by measure of :mod:`refracture.imaging.morphometry`.
MORPH_CODES: dict[str, tuple[Code, Code]] = {
    "ha_mm": (_private("ha", "Anterior vertebral body height"), codes.UCUM.Millimeter),
    "hm_mm": (_private("hm", "Middle vertebral body height"), codes.UCUM.Millimeter),
    "hp_mm": (_private("hp", "Posterior vertebral body height"), codes.UCUM.Millimeter),
    "wedge_ratio": (_private("wedge", "Anterior to posterior height ratio"), codes.UCUM.Ratio),
    "biconcavity_ratio": (
        _private("biconcavity", "Middle to posterior height ratio"),
        codes.UCUM.Ratio,
    ),
    "height_loss_pct": (_private("loss", "Vertebral height loss"), codes.UCUM.Percent),
    "genant_grade": (_private("genant", "Genant semiquantitative grade"), codes.UCUM.NoUnits),
}

#: The prediction group's concepts (the risks themselves are coded with their horizon).
RISK_CODES = {
    "group": _private("risk-group", "Risk group"),
    "low": _private("low", "Low risk"),
    "intermediate": _private("intermediate", "Intermediate risk"),
    "high": _private("high", "High risk"),
    "linear_predictor": _private("lp", "Linear predictor of the risk model"),
    "model": _private("model", "Risk prediction model"),
}

# SNOMED CT codes of the vertebrae (DICOM CID 7151); T13 and L6 (transitional) have none.
_VERTEBRAE = {f"T{i}": f"T{i}Vertebra" for i in range(1, 13)} | {
    f"L{i}": f"L{i}Vertebra" for i in range(1, 6)
}


def vertebra_code(level: str) -> Code:
    """The SNOMED CT code of a vertebra (``'L1'``); a transitional level without its own
    concept (T13, L6) is the generic "Vertebra" (the SR's tracking identifier names it)."""
    name = _VERTEBRAE.get(level)
    return getattr(codes.SCT, name) if name else codes.SCT.Vertebra


def coding_scheme_identification() -> list[Dataset]:
    """The Coding Scheme Identification Sequence items that declare the private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "refracture vertebral re-fracture risk concepts"
    item.CodingSchemeResponsibleOrganization = "refracture developers"
    return [item]
