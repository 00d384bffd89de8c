"""``refracture index``: a manifest from a PACS or CD export, reading headers only.

Writes, beside the manifest, ``index.csv`` (every stack of every series seen: its role by the
vendor rules, whether it went into the manifest, and why not) and a small state file listing
the files already read, so a second run after new files arrive reads only those and adds only
new patients' rows; rows already in the manifest (also rows written or corrected by hand) are
kept as they are.

What reaches the outputs: the manifest's patient IDs (pseudonymised when asked), hashes of
series and study UIDs, series numbers and descriptions, vendor, model and field strength,
relative paths, and days between exam and procedure. Never a name, a birth date, a DICOM
patient ID that is not the study's ID, or a UID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.errors import InputError
from refracture.files import write_table
from refracture.ids import PATIENT_ID
from refracture.imaging.dicom.exams import (
    StackEntry,
    choose_exam,
    days_between,
    group_stacks,
    unit_of,
)
from refracture.imaging.dicom.frames import series_hash
from refracture.imaging.dicom.scan import FileInfo, list_files, read_info, scan_files
from refracture.progress import Progress, stage_ticker

__all__ = ["INDEX_COLUMNS", "IndexResult", "build_index"]

STATE_NAME = ".refracture-index-files.csv"
INDEX_COLUMNS = [
    PATIENT_ID, "exam", "days_from_procedure", "series", "image_type", "series_number",
    "description", "vendor", "model", "field_strength_t", "modality", "n_files", "role", "rule",
    "used", "reason", "location",
]  # fmt: skip
MANIFEST_COLUMNS = [
    PATIENT_ID, "site", "pdff", "r2star", "labels", "treated_levels", "fractured_levels",
    "field_strength_t", "vendor", "pdff_units", "r2star_units",
]  # fmt: skip
LINK_COLUMN = "dicom_patient_id"
_KEPT = "patient already in the manifest (its row is kept; delete the row to index it again)"


@dataclass
class IndexResult:
    manifest: Path
    index_csv: Path
    n_files: int = 0
    n_read: int = 0
    n_reused: int = 0
    n_not_dicom: int = 0
    n_rows_new: int = 0
    n_rows_kept: int = 0
    listed: dict[str, str] = field(default_factory=dict)  # patient_id -> why no row
    n_clinical_without_images: int = 0


@dataclass
class _Clinical:
    rows: dict[str, dict[str, Any]]
    link: dict[str, str]  # DICOM PatientID -> patient_id
    given: bool


def build_index(
    root: str | Path,
    out: str | Path,
    *,
    clinical: str | Path | None = None,
    labels: str | Path | None = None,
    pseudonymiser: Any = None,
    date_column: str = "procedure_date",
    jobs: int = 2,
    progress: Progress | None = None,
) -> IndexResult:
    """Index the export under ``root`` into the manifest ``out`` (see the module docstring)."""
    root, out = Path(root), Path(out)
    if not root.exists():
        raise InputError("the DICOM export folder does not exist", file=root)
    if out.suffix.lower() != ".csv":
        raise InputError("the manifest must be a .csv file", file=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = IndexResult(out, out.parent / "index.csv")
    info = _read_clinical(clinical, date_column)
    kept = _read_table(out)
    kept_ids = set(kept[PATIENT_ID]) if len(kept) else set()
    old_index = _read_table(result.index_csv)
    state = _read_table(out.parent / STATE_NAME)

    base, rels = list_files(root)
    result.n_files = len(rels)
    to_read, reused = _unchanged(base, rels, state, kept_ids)
    tick = stage_ticker(progress, "reading DICOM headers", len(to_read))

    def advance(n: int) -> None:
        for _ in range(n):
            tick()

    infos, skipped = scan_files(base, to_read, jobs=jobs, tick=advance)
    result.n_read, result.n_reused, result.n_not_dicom = len(to_read), len(reused), len(skipped)
    external = _external_labels(labels, jobs)
    infos.extend(external.segs)

    ids = {i.patient_key: _patient_id(i.patient_key, info) for i in infos}
    shown_ids = {k: _shown_id(pid, k, info, pseudonymiser) for k, pid in ids.items()}
    stacks = group_stacks(infos)
    by_patient: dict[str, list[StackEntry]] = {}
    for s in stacks:
        by_patient.setdefault(s.first.patient_key, []).append(s)

    new_rows = []
    for key, mine in by_patient.items():
        pid, shown = ids[key], shown_ids[key]
        row, reason = _decide(pid, shown, mine, info, kept_ids, external, base, out)
        for s in mine:
            s.reason = s.reason or ("" if s.used else (reason or s.classified.reason))
        if row is not None:
            new_rows.append(row)
        elif shown not in kept_ids:
            result.listed[shown] = reason
    result.n_rows_new, result.n_rows_kept = len(new_rows), len(kept)
    seen = {ids[k] for k in by_patient} | kept_ids
    result.n_clinical_without_images = len([p for p in info.rows if p not in seen])

    new_rows.sort(key=lambda r: r[PATIENT_ID])
    added = pd.DataFrame(new_rows, columns=MANIFEST_COLUMNS)
    manifest = pd.concat([kept, added], ignore_index=True) if len(kept) else added
    write_table(out, manifest.fillna(""))
    index_rows = [_index_row(s, ids, shown_ids, info, base, out) for s in stacks]
    write_table(result.index_csv, _merge_index(old_index, index_rows, kept_ids, reused))
    _write_state(out.parent / STATE_NAME, state, infos, shown_ids, reused)
    return result


# --- inputs ------------------------------------------------------------------------------


def _read_clinical(path: str | Path | None, date_column: str) -> _Clinical:
    if path is None:
        return _Clinical({}, {}, False)
    from refracture.tables import read_patient_table

    table = read_patient_table(path, "clinical table", text_columns=[LINK_COLUMN, date_column])
    rows, link = {}, {}
    for rec in table.to_dict("records"):
        pid = str(rec[PATIENT_ID]).strip()
        rec["_date"] = _parse_date(rec.get(date_column), pid, path, date_column)
        rows[pid] = rec
        dicom = str(rec.get(LINK_COLUMN) or "").strip()
        if dicom and dicom.lower() != "nan":
            link[dicom] = pid
    return _Clinical(rows, link, True)


def _parse_date(value: Any, pid: str, path: str | Path, column: str) -> dt.date | None:
    text = "" if value is None else str(value).strip()
    if text in ("", "nan", "NaT", "None"):
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise InputError(
        f"column '{column}' must be a date such as 2024-03-18 (found {text!r})",
        patient_id=pid,
        file=path,
    )


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=[PATIENT_ID])
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _unchanged(base: Path, rels: list[str], state: pd.DataFrame, kept: set[str]):
    """Files to read, and files left unread: known, unchanged, of a patient already kept."""
    known = {}
    if len(state) and "file" in state.columns:
        known = {r["file"]: r for r in state.to_dict("records")}
    to_read, reused = [], []
    for rel in rels:
        old = known.get(rel)
        if old is not None and old.get(PATIENT_ID) in kept:
            st = (base / rel).stat()
            if str(st.st_size) == old.get("size") and str(st.st_mtime_ns) == old.get("mtime_ns"):
                reused.append(rel)
                continue
        to_read.append(rel)
    return to_read, reused


@dataclass
class _External:
    by_name: dict[str, Path] = field(default_factory=dict)
    segs: list[FileInfo] = field(default_factory=list)


def _external_labels(folder: str | Path | None, jobs: int) -> _External:
    """Label maps in ``--labels``: image files named by patient ID (``P0001.nii.gz``,
    ``P0001_labels.nrrd``, ``P0001/labels.nii.gz``) and DICOM SEG files (paired by the series
    they refer to)."""
    if folder is None:
        return _External()
    from refracture.imaging.readers import image_stem

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("the --labels folder does not exist", file=folder)
    found = _External()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stem = image_stem(path)
        if stem != path.name:
            name = stem.removesuffix("_labels").removesuffix("-labels")
            key = path.parent.name if name.lower() == "labels" else name
            found.by_name[key] = path
            continue
        seg = read_info(path.parent, path.name)
        if seg is not None and seg.referenced_series:
            found.segs.append(_absolute(seg, path))
    return found


def _absolute(info: FileInfo, path: Path) -> FileInfo:
    from dataclasses import replace

    return replace(info, rel=str(path.resolve()))


# --- decisions -----------------------------------------------------------------------------


def _patient_id(key: str, info: _Clinical) -> str:
    return info.link.get(key, key)


def _shown_id(pid: str, key: str, info: _Clinical, pseudonymiser: Any) -> str:
    """The ID written for a patient: the study's (pseudonymised when asked); for a patient of
    the export the clinical table does not know, a hash of the export's ID, which may be a
    hospital record number and must not be written."""
    if info.given and pid not in info.rows:
        return "UNLINKED-" + hashlib.sha256(f"refracture-index:{key}".encode()).hexdigest()[:12]
    return pseudonymiser(pid) if pseudonymiser is not None else pid


def _decide(pid, shown, stacks, info, kept_ids, external, base, out):
    if shown in kept_ids:
        return None, _KEPT
    if info.given and pid not in info.rows:
        how = f"no row whose {LINK_COLUMN} is its PatientID" if info.link else "no such patient_id"
        return None, f"not in the clinical table ({how}; shown here by a hash of its ID)"
    clinical = info.rows.get(pid, {})
    label_file = external.by_name.get(pid)
    choice = choose_exam(stacks, clinical.get("_date"), external_labels=label_file is not None)
    if choice.reason:
        return None, choice.reason
    cells = {col: _location(s, base, out) for col, s in choice.maps.items()}
    if label_file is not None:
        cells["labels"] = os.path.relpath(label_file.resolve(), out.parent.resolve())
    leak = _identity_in_paths(stacks, cells)
    if leak:
        return None, leak
    for col, s in choice.maps.items():
        s.used = col
    for s in stacks:
        if not s.used and s.role in ("pdff", "r2star", "t2star", "labels"):
            s.reason = (
                "another exam of the patient was chosen"
                if s.first.study_uid != choice.exam
                else "the exam's R2* map was used instead"
                if s.role == "t2star"
                else "the label map from --labels was used"
                if s.role == "labels" and label_file is not None
                else "not chosen"
            )
    pdff = choice.maps["pdff"].first
    row = {
        PATIENT_ID: shown,
        "site": _cell(clinical.get("site")),
        **cells,
        "treated_levels": _cell(clinical.get("treated_levels")),
        "fractured_levels": _cell(clinical.get("fractured_levels")),
        "field_strength_t": pdff.field_strength,
        "vendor": choice.maps["pdff"].facts.vendor,
        "pdff_units": "",
        "r2star_units": unit_of(choice.maps["r2star"].role) or "",
    }
    return row, ""


def _location(stack: StackEntry, base: Path, out: Path) -> str:
    loc = stack.location()
    path, sep, selector = loc.partition("#")
    rel = os.path.relpath((base / path).resolve(), out.parent.resolve()).replace(os.sep, "/")
    return rel + sep + selector


def _identity_in_paths(stacks: list[StackEntry], cells: dict[str, str]) -> str:
    """A reason when a manifest path would carry the patient's name, ID or birth date."""
    words = {w.lower() for s in stacks for f in s.files for w in f.identity}
    for cell in cells.values():
        path = cell.partition("#")[0].lower()
        if any(w in path for w in words):
            return (
                "the export's folder or file names carry the patient's name, ID or birth date, "
                "which the manifest must not: copy the export to neutral folder names"
            )
    return ""


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() == "nan" else text


# --- outputs ------------------------------------------------------------------------------


def _index_row(s, ids, shown_ids, info, base, out) -> dict[str, Any]:
    first = s.first
    pid = ids[first.patient_key]
    days = days_between(first.study_date, info.rows.get(pid, {}).get("_date"))
    return {
        PATIENT_ID: shown_ids[first.patient_key],
        "exam": "E-" + series_hash(first.study_uid)[:10],
        "days_from_procedure": "" if days is None else days,
        "series": s.series,
        "image_type": s.image_type,
        "series_number": first.series_number,
        "description": first.description,
        "vendor": s.facts.vendor,
        "model": first.model,
        "field_strength_t": first.field_strength,
        "modality": first.modality,
        "n_files": len(s.files),
        "role": s.role,
        "rule": s.classified.rule,
        "used": s.used,
        "reason": s.reason,
        "location": _location(s, base, out),
    }


def _merge_index(old: pd.DataFrame, rows: list[dict], kept: set[str], reused: list[str]):
    new = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    if len(old) and set(INDEX_COLUMNS) <= set(old.columns) and reused:
        keys = set(zip(new[PATIENT_ID], new["series"], new["image_type"], strict=True))
        keep = old[old[PATIENT_ID].isin(kept)]
        keep = keep[[k not in keys for k in zip(keep[PATIENT_ID], keep["series"],
                                                keep["image_type"], strict=True)]]  # fmt: skip
        new = pd.concat([keep[INDEX_COLUMNS], new], ignore_index=True)
    return new.sort_values([PATIENT_ID, "exam", "series_number", "image_type"], kind="stable")


def _write_state(path, old, infos, shown_ids, reused) -> None:
    rows = [
        {"file": i.rel, "size": i.size, "mtime_ns": i.mtime_ns,
         PATIENT_ID: shown_ids[i.patient_key]}
        for i in infos if not os.path.isabs(i.rel)
    ]  # fmt: skip
    if len(old) and "file" in old.columns:
        keep = old[old["file"].isin(set(reused))]
        rows.extend(keep.to_dict("records"))
    write_table(path, pd.DataFrame(rows, columns=["file", "size", "mtime_ns", PATIENT_ID]))
