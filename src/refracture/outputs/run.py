"""Writing every requested output of a scoring run, patient by patient: :func:`write_outputs`.

After ``refracture score`` has written the scores file, each scored patient gets, as asked, a
DICOM SR + SEG (``--dicom-sr``), a FHIR RiskAssessment (``--fhir``) and a risk card
(``--cards``). A patient whose outputs fail (an image changed since scoring, an unreadable
DICOM header) gets an ``error`` line in the folder's ``index.csv`` and a note; the others are
written. Every file is written atomically. ``index.csv`` lists every input patient once per
folder: ``written`` (with its files), ``skipped`` (not scored, or no DICOM maps for an SR) or
``error`` (with the reason), so a job sending the files on knows which exist.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.errors import InputError, RefractureError
from refracture.files import write_bytes, write_table, write_text
from refracture.ids import PATIENT_ID
from refracture.outputs.fhir import DEFAULT_SYSTEM
from refracture.progress import Progress
from refracture.scoring.batch import ScoreResult
from refracture.scoring.inputs import ScoreInput
from refracture.scoring.model import ScoringModel

__all__ = ["KINDS", "OutputOptions", "OutputsResult", "check_options", "write_outputs"]

#: The outputs, in the order they are written and reported.
KINDS = ("dicom_sr", "fhir", "cards")
_FLAG = {"dicom_sr": "--dicom-sr", "fhir": "--fhir", "cards": "--cards"}
INDEX = "index.csv"
#: Patients per task when outputs are written by several processes.
CHUNK = 4


@dataclass(frozen=True)
class OutputOptions:
    """Where each output goes (None: not written) and the FHIR subject identifier system."""

    dicom_sr: Path | None = None
    fhir: Path | None = None
    cards: Path | None = None
    fhir_system: str = DEFAULT_SYSTEM

    def folders(self) -> dict[str, Path]:
        return {k: Path(getattr(self, k)) for k in KINDS if getattr(self, k) is not None}

    def __bool__(self) -> bool:
        return bool(self.folders())


@dataclass
class OutputsResult:
    """What :func:`write_outputs` did: per folder its index, and notes for the terminal."""

    index: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)

    def count(self, kind: str, status: str) -> int:
        df = self.index.get(kind)
        return 0 if df is None else int((df["status"] == status).sum())

    @property
    def n_error(self) -> int:
        return sum(self.count(k, "error") for k in self.index)

    @property
    def exit_code(self) -> int:
        return 1 if self.n_error else 0


def check_options(
    options: OutputOptions,
    model: ScoringModel | None,
    *,
    manifest: str | Path | None,
    pseudonymise: bool,
    out: str | Path,
) -> None:
    """Refuse (InputError, exit 2) before any patient what cannot give the outputs asked;
    ``model`` None checks everything but the model (before loading it)."""
    folders = options.folders()
    if options.dicom_sr is not None:
        if manifest is None:
            raise InputError("--dicom-sr needs --manifest: the SR references the DICOM maps")
        if pseudonymise:
            raise InputError(
                "--dicom-sr cannot be pseudonymised: a DICOM SR carries the patient module of "
                "its source images (it goes back to the PACS they came from); run it without "
                "--pseudonymise"
            )
        if model is not None and not model.uses_images:
            raise InputError(
                f"--dicom-sr needs a model that measures images; '{model.uri}' is {model.label}"
            )
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", options.fhir_system):
        raise InputError(f"the FHIR identifier system must be a URI (got '{options.fhir_system}')")
    if len({f.resolve() for f in folders.values()}) < len(folders):
        raise InputError(f"give {', '.join(_FLAG[k] for k in folders)} different folders")
    out = Path(out).resolve()
    for kind, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{_FLAG[kind]} must be a folder", file=folder)
        if out.parent == folder.resolve() and out.name == INDEX:
            raise InputError(f"the scores file would be overwritten by {INDEX}", file=out)
    if model is None:
        return
    for kind, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(
                f"cannot create the {_FLAG[kind]} folder ({err.strerror})", file=folder
            ) from None


@dataclass(frozen=True)
class _Task:
    """One patient's outputs: plain data, to run here or in a worker process."""

    position: int
    row: pd.Series
    inputs: pd.DataFrame
    record: dict[str, Any] | None
    manifest_dir: Path | None


def write_outputs(
    result: ScoreResult,
    data: ScoreInput,
    options: OutputOptions,
    *,
    jobs: int = 1,
    progress: Progress | None = None,
) -> OutputsResult:
    """Write the outputs of every scored patient of ``result`` (its input: ``data``)."""
    folders = options.folders()
    when = datetime.now(UTC).replace(microsecond=0)
    images = data.kind == "manifest" and result.model.uses_images
    model = result.model  # with the bundle the rows were scored with (new scanners estimated)
    if result.bundle is not None:
        model = replace(model, bundle=result.bundle)
    tasks = [
        _Task(
            i,
            result.scores.iloc[i],
            data.rows.iloc[[i]],
            data.manifest[i] if images and data.manifest else None,
            data.manifest_dir,
        )
        for i in range(len(result.scores))
    ]
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in folders}
    if progress:
        progress("writing outputs", 0, len(tasks))
    for done, lines in enumerate(_run(tasks, model, options, when, jobs), 1):
        for kind, line in lines.items():
            rows[kind].append(line)
        if progress:
            progress("writing outputs", done, len(tasks))
    index = {}
    notes = []
    pseudonyms = dict(zip(data.originals, data.ids, strict=True)) if data.originals else {}
    for kind, folder in folders.items():
        df = pd.DataFrame(rows[kind], columns=[PATIENT_ID, "status", "files", "reason"])
        if pseudonyms:  # image paths in messages often carry the site's own IDs
            df["reason"] = [_scrub(str(t), pseudonyms) for t in df["reason"]]
        write_table(folder / INDEX, df)
        index[kind] = df
        for line in df[df["status"] == "error"].head(5).itertuples():
            notes.append(f"{_FLAG[kind]} {line.patient_id}: {line.reason}")
    return OutputsResult(index, notes)


def _run(
    tasks: list[_Task], model: ScoringModel, options: OutputOptions, when: datetime, jobs: int
) -> Iterator[dict[str, dict[str, Any]]]:
    """Each patient's index lines, in input order (several processes when ``jobs > 1``)."""
    if jobs <= 1 or len(tasks) <= 2 * CHUNK:
        for task in tasks:
            yield _patient(task, model, options, when)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    # Fresh processes (spawn) that import this refracture: a registered model's folder,
    # first on the path since loading it, holds the refracture it was trained with.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(jobs, len(chunks)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(model, options, when),  # sent once per worker, not per chunk
    ) as pool:
        with _this_refracture_first():
            futures = [pool.submit(_chunk, c) for c in chunks]
        for future in futures:
            yield from future.result()


@contextlib.contextmanager
def _this_refracture_first() -> Iterator[None]:
    """``sys.path`` with the folder of the running refracture first, while processes start."""
    import refracture

    root = str(Path(refracture.__file__).resolve().parents[1])
    saved = list(sys.path)
    sys.path[:] = [root, *(p for p in saved if p != root)]
    try:
        yield
    finally:
        sys.path[:] = saved


#: What a worker process writes with: the model, the options and the time (_start_worker).
_WORKER: dict[str, Any] = {}


def _start_worker(model: ScoringModel, options: OutputOptions, when: datetime) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _WORKER.update(model=model, options=options, when=when)


def _chunk(tasks: list[_Task]) -> list[dict[str, dict[str, Any]]]:
    return [_patient(t, _WORKER["model"], _WORKER["options"], _WORKER["when"]) for t in tasks]


def _scrub(text: str, pseudonyms: dict[str, str]) -> str:
    """``text`` with every original patient ID (a whole token) replaced by its pseudonym."""
    found = sorted((o for o in pseudonyms if o and o in text), key=len, reverse=True)
    if not found:
        return text
    pattern = re.compile(
        r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, found)) + r")(?![A-Za-z0-9])"
    )
    return pattern.sub(lambda m: pseudonyms[m.group(1)], text)


def _line(pid: str, status: str, files: list[str] | None = None, reason: str = "") -> dict:
    return {PATIENT_ID: pid, "status": status, "files": ";".join(files or []), "reason": reason}


def _reason(err: BaseException, pid: str) -> str:
    """One line for the index (the row names the patient already)."""
    if isinstance(err, RefractureError):
        return err.one_line().removeprefix(f"patient {pid}: ")
    return " ".join(f"internal error: {type(err).__name__}: {err}".split())[:300]


def _patient(
    task: _Task, model: ScoringModel, options: OutputOptions, when: datetime
) -> dict[str, dict[str, Any]]:
    """One patient's outputs (never raises: a failure is its index lines' reason)."""
    from refracture.outputs.measure import remeasure, rescore, same_risk
    from refracture.outputs.view import make_view

    pid = str(task.row[PATIENT_ID])
    folders = options.folders()
    name = safe_name(pid)
    if task.row["status"] != "ok":
        for kind, folder in folders.items():
            _remove_stale(folder, name, kind)
        return {k: _line(pid, "skipped", reason="not scored (status error)") for k in folders}
    with tempfile.TemporaryDirectory(prefix="refracture-card-") as tmp:
        try:
            png = Path(tmp) / "qc.png" if "cards" in folders and task.record else None
            measured = remeasure(task.record, model, qc_png=png) if task.record else None
            again, inputs = rescore(model, task.inputs, task.record, measured, task.manifest_dir)
            if not same_risk(task.row, again, model.bundle.horizon_days):
                raise InputError(
                    "measured again for its outputs, the patient's images give another risk "
                    "than the scores file: an image changed since scoring; score again",
                    patient_id=pid,
                )
            view = make_view(model, task.row, again, inputs, measured)
        except Exception as err:  # noqa: BLE001 - one patient never stops the others
            reason = _reason(err, pid)
            for kind, folder in folders.items():
                _remove_stale(folder, name, kind)
            return {k: _line(pid, "error", reason=reason) for k in folders}
        lines = {}
        for kind, folder in folders.items():
            try:
                files = _WRITERS[kind](view, folder, name, options, when)
                lines[kind] = (
                    _line(pid, "written", files)
                    if files
                    else _line(pid, "skipped", reason="its maps are not DICOM series")
                )
            except Exception as err:  # noqa: BLE001
                _remove_stale(folder, name, kind)
                lines[kind] = _line(pid, "error", reason=_reason(err, pid))
        return lines


def _write_sr(view, folder: Path, name: str, options: OutputOptions, when: datetime) -> list[str]:
    from refracture.outputs.seg import make_seg
    from refracture.outputs.source import source_images
    from refracture.outputs.sr import make_sr

    measured = view.measured
    pid = view.patient_id
    pdff = source_images(measured.prep.pdff, patient_id=pid) if measured else None
    r2star = source_images(measured.prep.r2star, patient_id=pid) if measured else None
    if pdff is None or r2star is None:
        _remove_stale(folder, name, "dicom_sr")
        return []
    seg = make_seg(measured, pdff, r2star, pid)
    sr = make_sr(view, seg, pdff, r2star)
    files = [f"{name}.seg.dcm", f"{name}.sr.dcm"]
    for ds, file in zip((seg.dataset, sr), files, strict=True):
        write_bytes(folder / file, _dicom_bytes(ds))
    return files


def _dicom_bytes(ds: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_fhir(view, folder: Path, name: str, options: OutputOptions, when: datetime) -> list:
    from refracture.outputs.fhir import make_risk_assessment

    resource = make_risk_assessment(view, system=options.fhir_system, when=when)
    text = json.dumps(json.loads(resource.model_dump_json(exclude_none=True)), indent=2)
    write_text(folder / f"{name}.json", text + "\n")
    return [f"{name}.json"]


def _write_card(view, folder: Path, name: str, options: OutputOptions, when: datetime) -> list:
    from refracture.outputs.card import card_context, render_card, render_pdf

    png = view.measured.qc_png if view.measured is not None else None
    context = card_context(
        view, when=when.date().isoformat(), qc_png=png.read_bytes() if png else None
    )
    page = render_card(context)
    pdf, pages = render_pdf(page)
    if pages != 1:
        raise RefractureError(f"the risk card takes {pages} pages instead of one")
    write_text(folder / f"{name}.html", page)
    write_bytes(folder / f"{name}.pdf", pdf)
    return [f"{name}.html", f"{name}.pdf"]


_WRITERS = {"dicom_sr": _write_sr, "fhir": _write_fhir, "cards": _write_card}
_SUFFIXES = {"dicom_sr": (".seg.dcm", ".sr.dcm"), "fhir": (".json",), "cards": (".html", ".pdf")}


def _remove_stale(folder: Path, name: str, kind: str) -> None:
    """An earlier run's file of this patient would be read as this run's: remove it."""
    for suffix in _SUFFIXES[kind]:
        (folder / f"{name}{suffix}").unlink(missing_ok=True)


def safe_name(patient_id: str) -> str:
    """A file name for a patient ID (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(patient_id)) or "_"
