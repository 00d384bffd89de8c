"""What a study declares about its images: JSON sidecars, unit names and the scanner.

A map may come with a BIDS-style JSON sidecar beside it (``pdff.json`` for ``pdff.nii.gz``, or
for the DICOM folder ``pdff/``) holding e.g. ``{"Units": "percent", "MagneticFieldStrength": 3,
"Manufacturer": "GE"}``. This module finds and reads sidecars, turns the many ways of writing a
unit ("%", "1/s", "Hz", "ms", UCUM codes in DICOM) into the config's unit names, and gathers
the scanner of a patient (field strength, vendor, a scanner name) from the manifest, the
sidecars and the DICOM headers, in that order of precedence.

Device serial numbers and station names identify a machine (and through it a hospital). They
are never returned in clear: when a scanner identity must come from them it is a keyed hash
(HMAC-SHA256 with the site's secret key, the key used for patient pseudonyms), so only the
site holding the key can link it back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refracture.errors import InputError, UnitsError
from refracture.maps import MAPS

__all__ = [
    "PDFF_UNITS",
    "R2STAR_UNITS",
    "SCANNER_COLUMNS",
    "canonical_vendor",
    "dicom_device_id",
    "field_strength_tesla",
    "find_sidecar",
    "parse_unit",
    "read_sidecar",
    "row_sidecars",
    "scanner_key_from_env",
    "scanner_metadata",
    "sidecar_for",
]

PDFF_UNITS = ("percent", "fraction", "per_mille")
R2STAR_UNITS = ("per_s", "t2star_ms")
#: Columns :func:`scanner_metadata` produces (features.parquet and qc.csv).
SCANNER_COLUMNS = ("scanner_field_strength_t", "scanner_vendor", "scanner_id")

# Ways of writing a unit, lower-cased with spaces removed, -> the config's unit name.
# BIDS uses free text ("percent", "1/s", "ms"), DICOM real-world value maps use UCUM codes
# ("%", "[ppth]", "/s", "ms", "1"), dcm2niix and vendors add their own spellings.
_UNIT_WORDS: dict[str, str] = {
    **dict.fromkeys(["percent", "%", "pct", "percentage", "pc"], "percent"),
    **dict.fromkeys(
        ["fraction", "ratio", "1", "{ratio}", "unitless", "dimensionless", "fractional"],
        "fraction",
    ),
    **dict.fromkeys(
        ["per_mille", "permille", "per-mille", "‰", "[ppth]", "ppth", "0.1%", "tenthpercent"],
        "per_mille",
    ),
    **dict.fromkeys(
        ["per_s", "1/s", "/s", "s-1", "s^-1", "s**-1", "s⁻¹", "hz", "1/sec", "persecond", "sec-1"],
        "per_s",
    ),
    **dict.fromkeys(
        ["t2star_ms", "ms", "msec", "millisecond", "milliseconds", "t2*ms"], "t2star_ms"
    ),
}
_UNITS_OF = {"pdff": PDFF_UNITS, "r2star": R2STAR_UNITS}

# DICOM Manufacturer strings (and what dcm2niix writes) -> one vendor name per company.
# (name, words a Manufacturer string starts with, words it may contain anywhere)
_VENDORS = (
    ("GE", ("ge", "gehc"), ("general electric",)),
    ("Siemens", ("siemens",), ("siemens",)),
    ("Philips", ("philips",), ("philips",)),
    ("Canon", ("canon", "toshiba"), ("canon medical", "toshiba")),
    ("United Imaging", ("uih", "uih_mec"), ("united imaging",)),
    ("Hitachi", ("hitachi",), ("hitachi",)),
)
# Nominal field strengths (T) a measured MagneticFieldStrength is rounded to for a batch label.
NOMINAL_FIELDS_T = (0.2, 0.35, 0.55, 1.0, 1.5, 3.0, 4.0, 7.0, 9.4)


# --- units ---------------------------------------------------------------------------------


def parse_unit(kind: str, text: object, *, where: str, patient_id: str | None = None) -> str | None:
    """The config's unit name (e.g. ``percent``, ``per_s``) for a declared unit, or None.

    Empty, missing and ``auto`` mean "not declared". ``where`` names the declaration in the
    error (a manifest column, a sidecar file, a DICOM tag). A unit that is not one of the map's
    (``ms`` for PDFF) or that we cannot read raises a :class:`UnitsError`.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    raw = str(text).strip()
    if raw == "" or raw.lower() == "auto":
        return None
    key = raw.lower().replace(" ", "")
    unit = _UNIT_WORDS.get(key)
    allowed = _UNITS_OF[kind]
    if unit is None or unit not in allowed:
        label = "PDFF" if kind == "pdff" else "R2*"
        raise UnitsError(
            f"{where} declares the {label} map's unit as {raw!r}, which refracture cannot use "
            f"(a {label} map is {' or '.join(_unit_help(kind))})",
            patient_id=patient_id,
        )
    return unit


def _unit_help(kind: str) -> list[str]:
    if kind == "pdff":
        return ["percent (0-100)", "fraction (0-1)", "per_mille (0-1000)"]
    return ["per_s (R2* in 1/s, also 'Hz' or 's-1')", "t2star_ms (a T2* map in ms)"]


# --- sidecars ------------------------------------------------------------------------------


def sidecar_for(image: str | Path) -> Path:
    """Where the BIDS sidecar of an image would be: ``pdff.nii.gz`` -> ``pdff.json``.

    A DICOM folder ``.../pdff/`` has its sidecar beside it: ``.../pdff.json``. The format
    suffixes are those the image readers claim (:func:`refracture.imaging.readers.image_stem`).
    """
    from refracture.imaging.readers import ImageSource, image_stem

    p = ImageSource.parse(image).path
    return p.with_name(image_stem(p) + ".json")


def find_sidecar(image: str | Path) -> Path | None:
    """The image's sidecar if it exists."""
    path = sidecar_for(image)
    return path if path.is_file() else None


def read_sidecar(path: str | Path, patient_id: str | None = None) -> dict[str, Any]:
    """A sidecar's JSON object; an unreadable one is an :class:`InputError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = " ".join(str(err).split())[:150]
        raise InputError(
            f"the JSON sidecar cannot be read ({reason})", patient_id=patient_id, file=path
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            "the JSON sidecar must hold an object ({...})", patient_id=patient_id, file=path
        )
    return data


def row_sidecars(row: Mapping[str, Any], patient_id: str | None = None) -> dict[str, dict | None]:
    """The sidecars of a manifest row's maps (``pdff``, ``r2star``), None where there is none."""
    out: dict[str, dict | None] = {}
    for kind in MAPS:
        image = _text(row.get(kind))
        found = find_sidecar(image) if image else None
        out[kind] = read_sidecar(found, patient_id) if found else None
    return out


# --- scanner -------------------------------------------------------------------------------


def canonical_vendor(text: object) -> str:
    """One name per company: 'GE MEDICAL SYSTEMS' and 'GE' -> 'GE'; unknown names as given."""
    raw = _text(text)
    if not raw:
        return ""
    low = raw.lower()
    first_word = low.replace("_", " ").replace(",", " ").split()[0]
    for name, starts, contains in _VENDORS:
        if first_word in starts or any(c in low for c in contains):
            return name
    return raw


def field_strength_tesla(value: object) -> float | None:
    """MagneticFieldStrength in tesla (old headers that store gauss, e.g. 15000, converted)."""
    try:
        t = float(str(value).strip()) if value is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(t) or t <= 0:
        return None
    if t > 100:  # gauss: 15000 G = 1.5 T
        t /= 10_000.0
    return round(t, 3)


def nominal_field(tesla: float | None) -> str:
    """A batch label for a field strength: 2.89 -> '3 T' (nearest common value within 15 %)."""
    if tesla is None or not math.isfinite(tesla):
        return ""
    best = min(NOMINAL_FIELDS_T, key=lambda f: abs(f - tesla))
    value = best if abs(best - tesla) <= 0.15 * best else round(tesla, 1)
    return f"{value:g} T"


def scanner_key_from_env() -> bytes | None:
    """The site's secret key (``REFRACTURE_PSEUDONYM_KEY``) if set, for scanner hashes."""
    from refracture.privacy import ENV_KEY, MIN_KEY_LENGTH

    key = os.environ.get(ENV_KEY, "")
    return key.encode("utf-8") if len(key) >= MIN_KEY_LENGTH else None


def _device_hash(key: bytes, vendor: str, model: str, device: str) -> str:
    # Domain-separated from patient pseudonyms, so a scanner hash never equals a patient's.
    message = "\0".join(["refracture-scanner", vendor, model, device]).encode("utf-8")
    return "SC-" + hmac.new(key, message, hashlib.sha256).hexdigest()[:12].upper()


def dicom_device_id(location: str | Path, key: bytes) -> str | None:
    """A keyed hash of a DICOM series' scanner (DeviceSerialNumber, else StationName).

    ``location`` is a DICOM folder or file, with its ``#series=`` selector when it has one;
    anything else gives None. Reads headers only. The serial number and station name never
    leave this function: only ``SC-`` + 12 hex digits of HMAC-SHA256(key, vendor, model,
    serial) is returned, or None when the header has neither field.
    """
    import pydicom

    from refracture.imaging.dicom.frames import series_hash
    from refracture.imaging.dicom.series import dicom_files
    from refracture.imaging.readers import ImageSource, is_dicom

    if not str(location).strip():
        return None
    source = ImageSource.parse(location)
    if not is_dicom(source):
        return None
    tags = ["Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "StationName",
            "SeriesInstanceUID"]  # fmt: skip
    for f in dicom_files(source):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        except Exception:  # noqa: BLE001 - not a DICOM file: try the next one
            continue
        if source.series and series_hash(str(ds.get("SeriesInstanceUID", ""))) != source.series:
            continue
        device = _text(ds.get("DeviceSerialNumber")) or _text(ds.get("StationName"))
        if not device:
            return None
        vendor = canonical_vendor(ds.get("Manufacturer"))
        return _device_hash(key, vendor, _text(ds.get("ManufacturerModelName")), device)
    return None


def scanner_metadata(
    row: Mapping[str, Any],
    volume_metadata: Mapping[str, Mapping[str, Any]],
    sidecars: Mapping[str, Mapping[str, Any] | None],
    *,
    device_key: bytes | None = None,
    device_id: str | None = None,
) -> dict[str, Any]:
    """The patient's scanner: ``scanner_field_strength_t``, ``scanner_vendor``, ``scanner_id``.

    Parameters
    ----------
    row : mapping
        The manifest row; its optional columns ``field_strength_t``, ``vendor`` and ``scanner``
        (a site's own name for the scanner) win over everything else.
    volume_metadata : mapping of kind -> dict
        ``Volume.metadata`` of the maps, e.g. ``{"pdff": pdff.metadata, "r2star": ...}``
        (DICOM headers: ``field_strength_t``, ``vendor``, ``model``); the PDFF map's first.
    sidecars : mapping of kind -> dict or None
        The maps' JSON sidecars as read by :func:`read_sidecar` (BIDS keys
        ``MagneticFieldStrength``, ``Manufacturer``, ``ManufacturerModelName``,
        ``DeviceSerialNumber``, ``StationName``); they win over the DICOM headers.
    device_key : bytes, optional
        The site's secret key. Only with it does a sidecar's DeviceSerialNumber or StationName
        become a keyed-hash ``scanner_id`` (``SC-`` + 12 hex digits); without it they are
        ignored.
    device_id : str, optional
        A keyed hash from :func:`dicom_device_id` for a DICOM series.

    Returns
    -------
    dict
        ``scanner_field_strength_t`` (float, NaN when unknown), ``scanner_vendor`` (one name
        per company, '' when unknown) and ``scanner_id``: the manifest's ``scanner``, else a
        keyed hash of the device, else "vendor model field" (e.g. ``GE SIGNA Architect 3T``),
        else ''. Never a serial number or station name in clear.
    """
    kinds = [k for k in MAPS if k in volume_metadata or k in sidecars]
    cars = [dict(sidecars.get(k) or {}) for k in kinds]
    metas = [dict(volume_metadata.get(k) or {}) for k in kinds]

    def first(values: list[object]) -> object:
        return next((v for v in values if _text(v)), None)

    field = field_strength_tesla(_text(row.get("field_strength_t")) or None)
    if field is None:
        field = field_strength_tesla(first([c.get("MagneticFieldStrength") for c in cars]))
    if field is None:
        field = field_strength_tesla(first([m.get("field_strength_t") for m in metas]))

    vendor = canonical_vendor(
        first(
            [
                row.get("vendor"),
                *[c.get("Manufacturer") for c in cars],
                *[m.get("vendor") for m in metas],
            ]
        )
    )
    model = _text(
        first([*[c.get("ManufacturerModelName") for c in cars], *[m.get("model") for m in metas]])
    )

    scanner = _text(row.get("scanner"))
    if not scanner and device_key is not None:
        device = _text(first([c.get("DeviceSerialNumber") for c in cars])) or _text(
            first([c.get("StationName") for c in cars])
        )
        if device:
            scanner = _device_hash(device_key, vendor, model, device)
    if not scanner and device_id:
        scanner = device_id
    if not scanner:
        parts = [vendor, model, f"{field:g}T" if field is not None else ""]
        scanner = " ".join(p for p in parts if p)
    return {
        "scanner_field_strength_t": field if field is not None else math.nan,
        "scanner_vendor": vendor,
        "scanner_id": scanner,
    }


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, list | tuple):
        return " / ".join(_text(v) for v in value if _text(v))
    return str(value).strip()
