"""A DICOM Structured Report of one patient (TID 1500 Measurement Report, with highdicom).

What a PACS viewer with quantitative reporting (3D Slicer's QuantitativeReporting, OHIF)
shows: per vertebra, one measurement group per map (TID 1411, the PDFF or R2* mean over the
voxels measured, in UCUM units, referencing its segment of the patient's DICOM SEG and its
source series), one group with the vertebral body's morphometry and Genant grade (referencing
the labelled body), and one group (TID 1501) with the model's prediction: the risk of a new
vertebral fracture within the horizon, the risk of death before it (competing-risk models),
the risk group and the linear predictor, under the registered model's name and version.
Numbers are stored as decimal strings and, exactly, as floating point values (the same double
as the scores file). The SR belongs to the source study and gets new UIDs.
"""

from __future__ import annotations

import math

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from refracture import __version__
from refracture.outputs.codes import (
    MAP_CODES,
    MAP_UNITS,
    MORPH_CODES,
    PRIVATE_SCHEME,
    RISK_CODES,
    coding_scheme_identification,
    vertebra_code,
)
from refracture.outputs.seg import SegResult, software_identity
from refracture.outputs.source import SourceImages
from refracture.outputs.view import PatientView

__all__ = ["make_sr"]

SERIES_NUMBER = 9102
_MAP_NAMES = {"pdff": "PDFF", "r2star": "R2*"}


def _yes_no(flag: bool) -> Code:
    return codes.SCT.Yes if flag else codes.SCT.No


def _observation_context() -> hd.sr.ObservationContext:
    """refracture as the observing device, with a UID derived from its version (the same
    device every run of this version)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["refracture", __version__]),
        name="refracture",
        manufacturer_name="refracture",
        model_name=f"refracture {__version__}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _map_group(
    view: PatientView, seg: SegResult, level: str, kind: str, series_uid: str
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | None:
    vertebra = next(v for v in view.vertebrae if v.level == level)
    value = vertebra.mean.get(kind, math.nan)
    number = seg.numbers.get((level, kind))
    if number is None or not math.isfinite(value):
        return None  # a map with too few voxels has no mean (qc_small_roi)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{level} {_MAP_NAMES[kind]}"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.dataset.SOPClassUID,
            sop_instance_uid=seg.dataset.SOPInstanceUID,
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
        ),
        finding_type=codes.SCT.BoneMarrow,
        finding_sites=[hd.sr.FindingSite(vertebra_code(level))],
        algorithm_id=hd.sr.AlgorithmIdentification(name="refracture", version=__version__),
        measurements=[
            hd.sr.Measurement(
                name=MAP_CODES[kind],
                value=value,
                unit=MAP_UNITS[kind],
                derivation=codes.SCT.Mean,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                Code("treated", PRIVATE_SCHEME, "Treated level"), _yes_no(vertebra.treated)
            ),
            hd.sr.QualitativeEvaluation(
                Code("fractured", PRIVATE_SCHEME, "Fractured level"), _yes_no(vertebra.fractured)
            ),
        ],
    )


def _morph_group(
    view: PatientView, seg: SegResult, level: str, series_uid: str
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | None:
    vertebra = next(v for v in view.vertebrae if v.level == level)
    number = seg.numbers.get((level, "body"))
    measurements = [
        hd.sr.Measurement(name=name, value=vertebra.morph[key], unit=unit)
        for key, (name, unit) in MORPH_CODES.items()
        if math.isfinite(vertebra.morph.get(key, math.nan))
    ]
    if number is None or not measurements:
        return None  # not measured (qc_morph_unmeasured says why)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{level} morphometry"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.dataset.SOPClassUID,
            sop_instance_uid=seg.dataset.SOPInstanceUID,
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
        ),
        finding_type=codes.SCT.Vertebra,
        finding_sites=[hd.sr.FindingSite(vertebra_code(level))],
        algorithm_id=hd.sr.AlgorithmIdentification(name="refracture", version=__version__),
        measurements=measurements,
    )


def _risk_group(view: PatientView) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    days = view.horizon_days
    risks = [
        (
            Code(
                f"risk-refracture-{days}d",
                PRIVATE_SCHEME,
                f"Risk of new vertebral fracture within {days} days",
            ),
            view.risk,
        ),
    ]
    if view.death_risk is not None:
        risks.append(
            (
                Code(
                    f"risk-death-{days}d",
                    PRIVATE_SCHEME,
                    f"Risk of death before new vertebral fracture within {days} days",
                ),
                view.death_risk,
            )
        )
    measurements = [
        hd.sr.Measurement(name=name, value=value, unit=codes.UCUM.NoUnits) for name, value in risks
    ]
    measurements.append(
        hd.sr.Measurement(
            name=RISK_CODES["linear_predictor"],
            value=float(view.row["linear_predictor"]),
            unit=codes.UCUM.NoUnits,
        )
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="risk prediction"),
        finding_type=RISK_CODES["model"],
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=view.model.bundle.registered_model or "refracture",
            version=f"{view.model.version} ({view.model.label})",
        ),
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(RISK_CODES["group"], RISK_CODES[view.group])
        ],
    )


def make_sr(
    view: PatientView,
    seg: SegResult,
    pdff_source: SourceImages,
    r2star_source: SourceImages,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of one patient whose maps are ``*_source`` (DICOM images) and
    whose measured regions are the segments of ``seg``."""
    pdff_uid, r2star_uid = pdff_source.series_uid, r2star_source.series_uid
    groups: list = []
    for vertebra in view.vertebrae:
        level = vertebra.level
        for kind, uid in (("pdff", pdff_uid), ("r2star", r2star_uid)):
            groups.append(_map_group(view, seg, level, kind, uid))
        groups.append(_morph_group(view, seg, level, pdff_uid))
    groups = [g for g in groups if g is not None]
    groups.append(_risk_group(view))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=codes.cid100.MRIUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*pdff_source.datasets, *r2star_source.datasets, seg.dataset],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=software_identity()["manufacturer"],
        is_complete=True,
        is_final=False,  # a model's output, not verified by a physician
    )
    sr.SeriesDescription = f"refracture {view.horizon_days}-day re-fracture risk"
    sr.CodingSchemeIdentificationSequence = coding_scheme_identification()
    return sr
