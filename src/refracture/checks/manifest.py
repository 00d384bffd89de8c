"""The manifest, row by row, and the headers of every image it names.

Where :func:`refracture.features.manifest.read_manifest` stops at the first structural problem,
this check lists them all: rows without an ID, duplicated IDs, unknown level names, empty or
missing image paths, unit and scanner columns that cannot be read, JSON sidecars that cannot
be read, and what each image's header says (:mod:`refracture.checks.images`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.checks.clinical import problem_of
from refracture.checks.images import grid_findings, header_findings, image_exists, read_header
from refracture.checks.problems import CheckReport, Problem
from refracture.config import ExtractionConfig
from refracture.errors import ImageError, InputError
from refracture.features.manifest import IMAGE_COLUMNS, LEVEL_COLUMNS, REQUIRED_COLUMNS
from refracture.ids import PATIENT_ID
from refracture.imaging.metadata import field_strength_tesla, find_sidecar, parse_unit, read_sidecar
from refracture.levels import is_level, level_list
from refracture.maps import MAPS
from refracture.tables import read_patient_table

__all__ = ["check_manifest"]

FIX_PATH = "fix the path in the manifest (relative paths are relative to the manifest's folder)"
Progress = Callable[[str, int, int], None]
STAGE = "checking image headers"


def _resolve(text: str, base: Path) -> str:
    """An image location of the manifest (a path, a DICOM folder with a ``#series=``
    selector) made absolute against the manifest's folder."""
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _row_problems(row: dict[str, Any], line: int, file: str, base: Path) -> list[Problem]:
    pid = row[PATIENT_ID]
    out = []
    for col in LEVEL_COLUMNS:
        unknown = [lv for lv in level_list(row.get(col, "")) if not is_level(lv.upper())]
        if unknown:
            out.append(
                Problem(pid, file, col, ";".join(unknown),
                        f"unknown vertebral level name(s) on line {line}: {', '.join(unknown)}",
                        "use level names such as T12;L1")
            )  # fmt: skip
    for col in IMAGE_COLUMNS:
        text = row[col]
        if not text:
            out.append(Problem(pid, file, col, "", f"no {col} image given", "add the path"))
        elif not image_exists(_resolve(text, base)):
            out.append(Problem(pid, file, col, text, f"{col} image not found", FIX_PATH))
    for kind in MAPS:
        col = f"{kind}_units"
        try:
            parse_unit(kind, row.get(col), where=f"the manifest column {col}")
        except InputError as err:
            out.append(
                Problem(
                    pid,
                    file,
                    col,
                    row.get(col, ""),
                    err.message,
                    "use a unit name "
                    "of docs/data.md (percent, fraction, per_mille; per_s, t2star_ms)",
                )
            )
        image = _resolve(row[kind], base).split("#")[0] if row[kind] else None
        sidecar = find_sidecar(image) if image is not None else None
        if sidecar is not None:
            try:
                side = read_sidecar(sidecar, pid)
                units = next((v for k, v in side.items() if str(k).lower() == "units"), None)
                parse_unit(kind, units, where=f"the JSON sidecar {sidecar.name}")
            except InputError as err:
                out.append(Problem(pid, str(sidecar), "Units", "", err.message,
                                   "write the unit as {\"Units\": \"percent\"}"))  # fmt: skip
    strength = row.get("field_strength_t", "")
    if strength and field_strength_tesla(strength) is None:
        out.append(
            Problem(pid, file, "field_strength_t", strength,
                    "the field strength is not a number of tesla", "write e.g. 1.5 or 3")
        )  # fmt: skip
    return out


def _image_problems(
    row: dict[str, Any], base: Path, config: ExtractionConfig, file: str
) -> list[Problem]:
    """Every header finding of one patient's images (those that exist)."""
    pid = row[PATIENT_ID]
    headers = {}
    out = []
    for col in IMAGE_COLUMNS:
        location = _resolve(row[col], base) if row[col] else None
        if location is None or not image_exists(location):
            continue
        try:
            headers[col] = read_header(location)
        except ImageError as err:  # the reader's own reason: not 3-D, two series, ...
            out.append(Problem(pid, err.file or location, col, "", err.message,
                               "export the image again, or fix the manifest"))  # fmt: skip
            continue
        except Exception as err:  # noqa: BLE001 - any other reader failure is the file's too
            why = " ".join(str(err).split())[:200] or type(err).__name__
            out.append(Problem(pid, location, col, "", f"cannot read the {col} image's header "
                               f"({why})", "export the image again"))  # fmt: skip
            continue
        out += [
            Problem(pid, location, col, "", text, "export the image again, or fix the manifest")
            for text in header_findings(headers[col], col, config)
        ]
    ref = headers.get("pdff")
    for col in ("r2star", "labels"):
        if ref is not None and col in headers:
            out += [
                Problem(pid, str(headers[col].path), col, "", text,
                        "use the image made on this patient's maps")
                for text in grid_findings(ref, headers[col], col, config)
            ]  # fmt: skip
    return out


def check_manifest(
    path: str | Path,
    config: ExtractionConfig,
    *,
    headers: bool = True,
    progress: Progress | None = None,
) -> CheckReport:
    """Every problem of a manifest and of its images' headers. ``tables['manifest']`` holds
    the rows as read (text, IDs stripped); ``counts`` the patients and images checked."""
    report = CheckReport()
    path = Path(path)
    file = str(path)
    try:
        table = read_patient_table(path, "manifest", all_text=True)
    except InputError as err:
        report.problems.append(problem_of(err, "fix data.manifest, or write the manifest as CSV"))
        return report
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        report.problems.append(
            Problem("", file, ", ".join(missing), "",
                    f"manifest is missing the column(s) {', '.join(missing)} (needs "
                    f"{', '.join(REQUIRED_COLUMNS)}; optional {', '.join(LEVEL_COLUMNS)})",
                    "add the columns with these names")
        )  # fmt: skip
        return report
    table = table.map(lambda v: "" if v is None else str(v).strip())
    ids = table[PATIENT_ID]
    lines = pd.Series(np.asarray(table.index) + 2, index=table.index)  # CSV lines as read
    if (ids == "").any():
        shown = ", ".join(map(str, lines[ids == ""].head(10)))
        report.problems.append(
            Problem("", file, PATIENT_ID, "", f"manifest has empty patient_id on line(s) {shown}",
                    "fill in the ID or delete the row")
        )  # fmt: skip
    for pid in dict.fromkeys(ids[(ids != "") & ids.duplicated(keep=False)]):
        shown = ", ".join(map(str, lines[ids == pid]))
        report.problems.append(
            Problem(pid, file, PATIENT_ID, pid,
                    f"manifest has duplicate patient_id: {pid} (lines {shown})",
                    "keep one row per patient")
        )  # fmt: skip
    base = path.parent
    rows = [r for r in table.to_dict("records") if r[PATIENT_ID]]
    for line, row in zip(lines, table.to_dict("records"), strict=True):
        if row[PATIENT_ID]:
            report.problems += _row_problems(row, int(line), file, base)
    report.counts["manifest"] = len(table)
    report.tables["manifest"] = table
    if headers:
        for i, row in enumerate(rows):
            report.problems += _image_problems(row, base, config, file)
            if progress:
                progress(STAGE, i + 1, len(rows))
        report.counts["images"] = sum(bool(r[c]) for r in rows for c in IMAGE_COLUMNS)
    return report
