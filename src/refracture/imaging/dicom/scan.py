"""Reading the headers of a whole export, fast: every file once, pixel data never.

A DICOMDIR lists its files; any other folder is walked, whatever the file names. Each
readable DICOM file becomes a :class:`FileInfo` holding what grouping, the vendor rules and
the choice of exam need, read with ``stop_before_pixels`` in worker processes. Identities
(PatientID, names, dates, UIDs) live in these records in memory only; what leaves this module
for an output is decided by :mod:`.index`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from refracture.imaging.dicom.frames import (
    SEG_SOP_CLASS,
    frames_of,
    quiet_pydicom,
    stack_key,
    text,
)
from refracture.imaging.dicom.lean import read_elements

__all__ = ["FileInfo", "FrameKey", "list_files", "scan_files"]

_CHUNK = 256


@dataclass(frozen=True, slots=True)
class FrameKey:
    """One frame as the grouping sees it: its stack (image type), position, echo, volume."""

    stack: str
    position: tuple[float, float, float] | None
    echo: tuple[object, ...]
    volume: str


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One DICOM file's header facts (in memory only: it holds identities)."""

    rel: str  # path relative to the scanned root, '/'-separated
    size: int
    mtime_ns: int
    patient_key: str  # ClinicalTrialSubjectID, else PatientID
    identity: tuple[str, ...]  # name parts, PatientID and birth date: to find them in paths
    study_uid: str
    study_date: str
    series_uid: str
    series_number: int
    description: str
    modality: str
    sop_class: str
    manufacturer: str
    model: str
    field_strength: str
    frame_of_reference: str
    frames: tuple[FrameKey, ...]
    referenced_series: tuple[str, ...] = ()  # a SEG's source series


def list_files(root: Path) -> tuple[Path, list[str]]:
    """(base folder, files relative to it): a DICOMDIR's referenced files, or every file
    under a folder (hidden files and DICOMDIR itself left out), in name order."""
    root = Path(root)
    if root.is_file():
        ds = pydicom.dcmread(root, stop_before_pixels=False)
        base = root.parent
        rels = []
        for record in ds.get("DirectoryRecordSequence") or []:
            parts = record.get("ReferencedFileID")
            if parts:
                parts = [parts] if isinstance(parts, str) else list(parts)
                rels.append("/".join(str(p) for p in parts))
        return base, sorted(set(rels))
    rels = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            rels.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return root, sorted(rels)


def scan_files(
    base: Path,
    rels: list[str],
    *,
    jobs: int = 2,
    tick: Callable[[int], None] | None = None,
) -> tuple[list[FileInfo], list[str]]:
    """Header facts of every DICOM image/SEG file, and the files that are not (non-DICOM,
    unreadable, or DICOM objects without images such as reports)."""
    chunks = [rels[i : i + _CHUNK] for i in range(0, len(rels), _CHUNK)]
    infos: list[FileInfo] = []
    skipped: list[str] = []

    def collect(result: tuple[list[FileInfo], list[str]], n: int) -> None:
        infos.extend(result[0])
        skipped.extend(result[1])
        if tick is not None:
            tick(n)

    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            collect(_scan_chunk(str(base), chunk), len(chunk))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for chunk, result in zip(
                chunks, pool.map(_scan_chunk, [str(base)] * len(chunks), chunks), strict=True
            ):
                collect(result, len(chunk))
    return infos, skipped


def _scan_chunk(base: str, rels: Iterable[str]) -> tuple[list[FileInfo], list[str]]:
    infos, skipped = [], []
    with quiet_pydicom():
        for rel in rels:
            info = read_info(Path(base), rel)
            if info is None:
                skipped.append(rel)
            else:
                infos.append(info)
    return infos, skipped


#: What a classic image file is read for (pydicom ``specific_tags``); values are decoded from
#: the raw bytes here, which costs a third of pydicom's conversion of each element.
_FAST_TAGS = {
    k: pydicom.datadict.tag_for_keyword(k)
    for k in (
        "SOPClassUID", "PatientID", "ClinicalTrialSubjectID", "PatientName", "PatientBirthDate",
        "StudyInstanceUID", "StudyDate", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
        "Modality", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
        "FrameOfReferenceUID", "ImageType", "ImagePositionPatient", "EchoTime", "EchoNumbers",
        "TemporalPositionIdentifier", "AcquisitionNumber", "DiffusionBValue",
        "DiffusionGradientOrientation", "Rows", "NumberOfFrames",
    )
}  # fmt: skip
_MULTI_OR_SEG = {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4",
                 "1.2.840.10008.5.1.4.1.1.2.1", SEG_SOP_CLASS}  # fmt: skip


_WANTED = frozenset(tag for tag in _FAST_TAGS.values())
_MEDIA_SOP_CLASS = 0x00020002


def read_info(base: Path, rel: str) -> FileInfo | None:
    """One file's facts, or None when it is not a DICOM image or segmentation.

    A classic single-frame file is read for :data:`_FAST_TAGS` only, by the lean reader
    (:mod:`.lean`) or else by pydicom with ``specific_tags``, its values decoded from their
    bytes; a multi-frame image or a SEG is read whole by pydicom (its functional groups and
    references are sequences).
    """
    path = base / rel
    try:
        stat = path.stat()
        raw = read_elements(path, _WANTED)
        if raw is not None:
            get = _lean_getter(raw)
        else:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_WANTED))
            get = _pydicom_getter(ds)
        sop = get("SOPClassUID")
        if sop in _MULTI_OR_SEG or get("NumberOfFrames") not in ("", "1"):
            return _full_info(path, rel, stat)
        return _fast_info(get, rel, stat, sop)
    except Exception:  # noqa: BLE001 - not DICOM, truncated, unreadable: listed as skipped
        return None


def _lean_getter(raw: dict[int, bytes]):
    def get(keyword: str) -> str:
        value = raw.get(_FAST_TAGS[keyword])
        return "" if value is None else value.decode("utf-8", "replace").strip("\x00 ").strip()

    get.has = lambda keyword: _FAST_TAGS[keyword] in raw  # type: ignore[attr-defined]
    return get


def _pydicom_getter(ds: Dataset):
    def get(keyword: str) -> str:
        """A string element's value from its raw bytes (or the value pydicom holds)."""
        elem = ds.get_item(_FAST_TAGS[keyword])
        if elem is None:
            return ""
        value = getattr(elem, "value", None)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace").strip("\x00 ").strip()
        return text(value)

    get.has = lambda keyword: ds.get_item(_FAST_TAGS[keyword]) is not None  # type: ignore[attr-defined]
    return get


def _fast_info(get, rel: str, stat: os.stat_result, sop: str) -> FileInfo | None:
    if not get("SeriesInstanceUID") or not get.has("Rows"):
        return None  # DICOMDIR records, reports, presentation states, raw data
    diffusion = (get("DiffusionBValue"), get("DiffusionGradientOrientation"))
    temporal = "/".join([get("TemporalPositionIdentifier"), get("AcquisitionNumber"),
                         *diffusion])  # fmt: skip
    position = _numbers(get("ImagePositionPatient"), 3)
    echo_time = _numbers(get("EchoTime"), 1)
    echo_number = get("EchoNumbers").split("\\")[0]
    image_type = tuple(t.strip().upper() for t in get("ImageType").split("\\"))
    frame = FrameKey(
        "+".join(t.replace(" ", "_") for t in image_type[2:] if t) or "-",
        None if position is None else tuple(round(v, 2) for v in position),  # type: ignore[misc]
        (_int(echo_number) if echo_number else None,
         None if echo_time is None else round(echo_time[0], 3)),
        temporal,
    )  # fmt: skip
    return _info(get, rel, stat, sop, (frame,), ())


def _full_info(path: Path, rel: str, stat: os.stat_result) -> FileInfo | None:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    sop = text(ds.get("SOPClassUID"))
    if "SeriesInstanceUID" not in ds or ("Rows" not in ds and sop != SEG_SOP_CLASS):
        return None
    frames: tuple[FrameKey, ...] = ()
    if sop != SEG_SOP_CLASS:
        frames = tuple(
            FrameKey(
                stack_key(f),
                None if f.position is None else tuple(round(v, 2) for v in f.position),  # type: ignore[misc]
                (f.echo_number, None if f.echo_time is None else round(f.echo_time, 3)),
                f.temporal,
            )
            for f in frames_of(ds, path)
        )
    return _info(lambda k: text(ds.get(k)), rel, stat, sop, frames, _referenced_series(ds))


def _info(get, rel, stat, sop, frames, referenced) -> FileInfo:
    name = get("PatientName")
    words = [*name.replace("^", " ").split(), get("PatientID"), get("PatientBirthDate")]
    return FileInfo(
        rel=rel,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        patient_key=get("ClinicalTrialSubjectID") or get("PatientID"),
        identity=tuple(w for w in words if len(w) >= 4),
        study_uid=get("StudyInstanceUID"),
        study_date=get("StudyDate"),
        series_uid=get("SeriesInstanceUID"),
        series_number=_int(get("SeriesNumber")),
        description=get("SeriesDescription"),
        modality=get("Modality"),
        sop_class=sop,
        manufacturer=get("Manufacturer"),
        model=get("ManufacturerModelName"),
        field_strength=get("MagneticFieldStrength"),
        frame_of_reference=get("FrameOfReferenceUID"),
        frames=frames,
        referenced_series=referenced,
    )


def _numbers(value: str, size: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value.split("\\"))
    except ValueError:
        return None
    return out if len(out) == size else None


def _referenced_series(ds: Dataset) -> tuple[str, ...]:
    out = [text(item.get("SeriesInstanceUID")) for item in ds.get("ReferencedSeriesSequence") or []]
    return tuple(uid for uid in out if uid)


def _int(value: object) -> int:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return 0
