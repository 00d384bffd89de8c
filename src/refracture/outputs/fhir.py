"""A FHIR R4 ``RiskAssessment`` per patient, for the electronic health record.

Validated against the models of ``fhir.resources.R4B`` (FHIR 4.3.0): the package ships the R4
line under that name (its default models are R5), and RiskAssessment has the same elements in
4.0.1 and 4.3.0. The resource holds:

- ``subject``: a reference by identifier (``system`` configurable, ``value`` the patient_id of
  the scores file), so the EHR links it to its own patient record;
- ``occurrenceDateTime``: when the risk was computed;
- ``prediction``: a new vertebral fracture, and under a competing-risk model death before it,
  each with ``probabilityDecimal`` (the number of the scores file), ``whenRange`` (0 to the
  horizon, in days) and the risk group as ``qualitativeRisk``;
- ``basis``: the imaging measurements the risk used, as contained Observations (the model's
  imaging features, and each map's per-vertebra means as components);
- ``method``: the registered model's name and version; ``note``: the score row's warnings.
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime
from typing import Any

from fhir.resources.R4B.riskassessment import RiskAssessment

from refracture.maps import MAP_SPECS
from refracture.outputs.view import PatientView
from refracture.outputs.words import describe

__all__ = ["DEFAULT_SYSTEM", "make_risk_assessment", "qualitative_risk"]

#: Identifier system of ``subject`` unless the site gives its own (its patient ID namespace).
DEFAULT_SYSTEM = "urn:refracture:patient_id"
_UCUM = "http://unitsofmeasure.org"
_RISK_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
_FEATURE_SYSTEM = "urn:refracture:feature"
_MODEL_SYSTEM = "urn:refracture:model"
# refracture's groups in the HL7 risk-probability code system
_QUALITATIVE = {
    "low": ("low", "Low likelihood"),
    "intermediate": ("moderate", "Moderate likelihood"),
    "high": ("high", "High likelihood"),
}
_MAP_TEXT = {name: (spec.label, spec.symbol, spec.ucum) for name, spec in MAP_SPECS.items()}


def qualitative_risk(group: str) -> dict[str, Any]:
    code, display = _QUALITATIVE[group]
    return {"coding": [{"system": _RISK_SYSTEM, "code": code, "display": display}], "text": group}


def _days(n: float) -> dict[str, Any]:
    return {"value": n, "unit": "days", "system": _UCUM, "code": "d"}


def _feature_text(column: str) -> tuple[str, str, str]:
    """(description, unit shown, UCUM code) of an imaging feature column."""
    kind = "pdff" if column.startswith("pdff_") else "r2star"
    _, unit, code = _MAP_TEXT[kind]
    return f"{describe(column)[0]} ({column})", unit, code


def _observations(view: PatientView, subject: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for column in view.model.inputs.imaging:
        value = view.inputs.get(column)
        if value is None or not math.isfinite(float(value)):
            continue  # imputed by the model (said in the note)
        text, unit, code = _feature_text(column)
        out.append(
            {
                "resourceType": "Observation",
                "id": _safe_id(column),
                "status": "final",
                "code": {"coding": [{"system": _FEATURE_SYSTEM, "code": column}], "text": text},
                "subject": subject,
                "valueQuantity": {
                    "value": float(value),
                    "unit": unit,
                    "system": _UCUM,
                    "code": code,
                },
            }
        )
    for kind, (label, unit, code) in _MAP_TEXT.items():
        components = [
            {
                "code": {"text": f"{v.level} {label} mean"},
                "valueQuantity": {
                    "value": v.mean[kind],
                    "unit": unit,
                    "system": _UCUM,
                    "code": code,
                },
            }
            for v in view.vertebrae
            if math.isfinite(v.mean.get(kind, math.nan))
        ]
        if components:
            out.append(
                {
                    "resourceType": "Observation",
                    "id": f"{kind}-per-vertebra",
                    "status": "final",
                    "code": {
                        "coding": [{"system": _FEATURE_SYSTEM, "code": f"{kind}_mean_per_level"}],
                        "text": f"Vertebral marrow {label} per vertebra",
                    },
                    "subject": subject,
                    "component": components,
                }
            )
    return out


def _safe_id(text: str) -> str:
    """A FHIR id: letters, digits, '-' and '.', at most 64 characters."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)[:64]


def _narrative(view: PatientView) -> str:
    parts = [
        f"Risk of a new vertebral fracture within {view.horizon_days} days: "
        f"{100 * view.risk:.1f}% ({view.group})"
    ]
    if view.death_risk is not None:
        parts.append(f"risk of death before it: {100 * view.death_risk:.1f}%")
    parts.append(f"model: {view.registered_name}, {view.model.label}")
    body = "; ".join(html.escape(p) for p in parts)
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{body}.</p></div>'


def make_risk_assessment(
    view: PatientView, *, system: str = DEFAULT_SYSTEM, when: datetime
) -> RiskAssessment:
    """The RiskAssessment of a scored patient (validated: a model error raises)."""
    subject = {"identifier": {"system": system, "value": view.patient_id}}
    observations = _observations(view, subject)
    when_range = {"low": _days(0), "high": _days(view.horizon_days)}
    predictions: list[dict[str, Any]] = [
        {
            "outcome": {"text": "New vertebral fracture"},
            "probabilityDecimal": view.risk,
            "qualitativeRisk": qualitative_risk(view.group),
            "whenRange": when_range,
        }
    ]
    if view.death_risk is not None:
        predictions.append(
            {
                "outcome": {"text": "Death before a new vertebral fracture"},
                "probabilityDecimal": view.death_risk,
                "whenRange": when_range,
            }
        )
    model = view.model
    method = f"{view.registered_name}: {model.label}"
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "text": {"status": "generated", "div": _narrative(view)},
        "contained": observations,
        "identifier": [
            {
                "system": "urn:refracture:risk-assessment",
                "value": f"{view.patient_id}/{model.bundle.registered_model}/{model.version}",
            }
        ],
        "status": "final",
        "method": {
            "coding": [
                {
                    "system": _MODEL_SYSTEM,
                    "code": f"{model.bundle.registered_model}/{model.version}",
                    "display": method,
                }
            ],
            "text": method,
        },
        "code": {"text": "Risk of new vertebral fracture after vertebroplasty or kyphoplasty"},
        "subject": subject,
        "occurrenceDateTime": when.isoformat(timespec="seconds"),
        "basis": [{"reference": f"#{o['id']}", "display": o["code"]["text"]} for o in observations],
        "prediction": predictions,
    }
    if view.warnings:
        resource["note"] = [{"text": "; ".join(view.warnings)}]
    if not observations:
        del resource["contained"], resource["basis"]
    return RiskAssessment.model_validate(resource)
