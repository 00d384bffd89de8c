"""The per-patient cache: unit evidence and features.

Two kinds of entry, both keyed by content, never by patient ID:

* the unit evidence of a patient (:func:`evidence_key`): the input files' content hashes
  (images and any JSON sidecars beside them), the manifest row's unit columns, the extraction
  config, the patient's levels and :data:`~refracture.features.schema.FEATURE_VERSION`;
* the patient's features (:func:`result_key`): the evidence key plus the units the maps were
  read in, the manifest's scanner columns and which secret key (if any) hashed scanner IDs.

So changed images, declarations, settings, decided units or code are measured again and nothing
else is; a cohort whose units are decided per site finds its patients' features again as soon
as their units are known. Cache files hold no patient ID.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refracture.config import ExtractionConfig
from refracture.errors import ImageError
from refracture.features.patient import image_path
from refracture.features.schema import FEATURE_VERSION, PatientResult
from refracture.files import hash_file, hash_json, write_json
from refracture.ids import PATIENT_ID
from refracture.imaging.io import hash_image, read_image_bytes
from refracture.imaging.metadata import find_sidecar
from refracture.imaging.readers import image_exists
from refracture.imaging.site_units import PatientUnits, UnitEvidence
from refracture.levels import level_list, sort_levels
from refracture.maps import MAPS

__all__ = [
    "cache_key",
    "evidence_key",
    "InputFiles",
    "input_hashes",
    "read_inputs",
    "read_cached",
    "read_evidence",
    "result_key",
    "write_cached",
    "write_evidence",
]

# Manifest columns whose values change a patient's result (besides images and levels).
_UNIT_COLUMNS = ("pdff_units", "r2star_units")
_SCANNER_COLUMNS = ("field_strength_t", "vendor", "scanner")
# Settings that change no measurement (what scoring does with QC findings).
_NOT_MEASURED = ("qc_errors",)


@dataclass(frozen=True)
class InputFiles:
    """A row's input hashes and the image bytes read to compute them.

    ``hashes`` as :func:`input_hashes` returns them; ``content`` maps each image kind to the
    file's bytes (absent for a DICOM folder or a very large file), so the images are decoded
    from the same read that hashed them (:func:`refracture.imaging.io.load_volume`
    ``content=``).
    """

    hashes: dict[str, str]
    content: dict[str, bytes] = field(default_factory=dict, repr=False)


def input_hashes(row: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of a row's three images and of the maps' JSON sidecars (bytes only:
    nothing is decoded)."""
    return read_inputs(row, keep_content=False).hashes


def read_inputs(row: Mapping[str, Any], *, keep_content: bool = True) -> InputFiles:
    """Read a row's images once: their content hashes (the cache key's inputs) and, with
    ``keep_content``, their bytes to decode without reading the files again.

    The hashes are those of :func:`refracture.files.hash_file`, whichever way they are read.
    """
    pid = str(row[PATIENT_ID])
    out = {}
    content = {}
    for kind in (*MAPS, "labels"):
        path = image_path(row, kind, pid)
        if not image_exists(path):
            raise ImageError(f"{kind} image not found", patient_id=pid, file=path)
        data = read_image_bytes(path)
        if data is None:  # a DICOM folder or a very large file: hashed in chunks
            out[kind] = hash_image(path)
        else:
            out[kind] = hashlib.sha256(data).hexdigest()
            if keep_content:
                content[kind] = data
    for kind in MAPS:
        sidecar = find_sidecar(image_path(row, kind, pid))
        if sidecar is not None:
            out[f"{kind}_sidecar"] = hash_file(sidecar)
    return InputFiles(out, content)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def evidence_key(
    row: Mapping[str, Any], hashes: Mapping[str, str], config: ExtractionConfig
) -> str:
    """The key of everything measured before the units are decided."""
    settings = config.model_dump(mode="json", exclude=set(_NOT_MEASURED))
    return hash_json(
        {
            "inputs": [hashes["pdff"], hashes["r2star"], hashes["labels"]],
            "sidecars": [hashes.get(f"{k}_sidecar", "") for k in MAPS],
            "declared": [_cell(row, c) for c in _UNIT_COLUMNS],
            "config": settings,
            "treated": sort_levels(level_list(row.get("treated_levels"))),
            "fractured": sort_levels(level_list(row.get("fractured_levels"))),
            "version": FEATURE_VERSION,
        }
    )


def result_key(
    evidence: str,
    row: Mapping[str, Any],
    units: PatientUnits,
    device_key: bytes | None = None,
) -> str:
    """The key of a patient's features read in ``units``."""
    # Which secret key hashed the scanner IDs, without the key: an HMAC of a fixed text.
    key_id = (
        hmac.new(device_key, b"refracture-cache-key-id", hashlib.sha256).hexdigest()[:16]
        if device_key
        else ""
    )
    return hash_json(
        {
            "evidence": evidence,
            "units": {k: units[k].unit for k in MAPS},
            "scanner": [_cell(row, c) for c in _SCANNER_COLUMNS],
            "device_key": key_id,
        }
    )


def cache_key(
    row: Mapping[str, Any],
    hashes: Mapping[str, str],
    config: ExtractionConfig,
    units: PatientUnits,
    device_key: bytes | None = None,
) -> str:
    """The features' key of a row read in ``units`` (:func:`result_key` of its
    :func:`evidence_key`)."""
    return result_key(evidence_key(row, hashes, config), row, units, device_key)


def read_evidence(path: Path, pid: str, site: str) -> UnitEvidence | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return UnitEvidence.from_dict({**raw, PATIENT_ID: pid, "site": site})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entry: measure again


def write_evidence(path: Path, evidence: UnitEvidence) -> None:
    data = evidence.to_dict()
    data.pop(PATIENT_ID)  # the key is content-based; the file needs no ID
    data.pop("site")
    write_json(path, data)


def read_cached(path: Path, pid: str) -> PatientResult | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return PatientResult(
            patient_id=pid,
            features={
                k: float(v) if v is not None else float("nan") for k, v in raw["features"].items()
            },
            vertebrae=raw["vertebrae"],
            qc=raw["qc"],
            scanner={
                **raw["scanner"],
                "scanner_field_strength_t": _float(raw["scanner"]["scanner_field_strength_t"]),
            },
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entry: compute again


def write_cached(path: Path, result: PatientResult) -> None:
    data = asdict(result)
    data.pop(PATIENT_ID)  # the key is content-based; the file needs no ID
    data.pop("cached")
    write_json(path, data)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
