"""Features for a cohort: ``refracture extract``.

Patients run one at a time or, when asked for (``jobs > 1``), in a reusable pool of warm
worker processes (:mod:`refracture.features.pool`) that does not re-run the caller's script, so
a plain script, a notebook or stdin need no ``if __name__ == "__main__"`` guard. One failing
patient becomes a row of ``errors`` and never stops the batch.

Units are decided once per site (:mod:`refracture.imaging.site_units`), in two passes that do
not measure a patient twice when it can be helped:

1. every patient is read and its unit evidence gathered (declared units, detection
   statistics). A patient whose units follow from itself (declared, configured, pinned by a
   model, or values that clearly point to one unit) is measured at once in those units;
   a patient whose values alone are ambiguous returns its evidence only;
2. :func:`~refracture.imaging.site_units.decide_site_units` decides every site's units from
   all of its patients. Patients already measured in the decided units keep their features;
   the others (the ambiguous ones, and the rare patient whose own values pointed elsewhere)
   are measured now. The patients of a site whose units cannot be decided become ``errors``
   rows (stage ``units``) naming the site; other sites go on.

The cache keeps the evidence and the features (keyed by the units): a rerun measures nothing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from refracture import __version__
from refracture.config import ExtractionConfig
from refracture.errors import InputError, RefractureError, UnitsError
from refracture.features.cache import (
    evidence_key,
    read_cached,
    read_evidence,
    read_inputs,
    result_key,
    write_cached,
    write_evidence,
)
from refracture.features.manifest import read_manifest, validate_manifest
from refracture.features.patient import (
    Stage,
    decide_alone,
    finish_patient,
    prepare_patient,
    units_error,
    units_fields,
)
from refracture.features.pool import map_ordered, warm
from refracture.features.schema import (
    FEATURE_VERSION,
    QC_COLUMNS,
    SCANNER_COLUMNS,
    ExtractionResult,
    PatientResult,
    features_frame,
    vertebrae_frame,
)
from refracture.files import atomic_path, hash_json, write_json, write_table
from refracture.ids import PATIENT_ID
from refracture.imaging.metadata import scanner_key_from_env
from refracture.imaging.site_units import MAPS, PatientUnits, UnitEvidence, decide_site_units
from refracture.privacy import Pseudonymiser
from refracture.progress import Progress, stage_ticker

__all__ = [
    "STAGE",
    "STAGE_UNITS",
    "Outcome",
    "PatientTask",
    "Pinned",
    "TaskDone",
    "TaskRunner",
    "extract_cohort",
    "iter_extract",
    "run_task_in_worker",
]

#: The progress stage name of extraction.
STAGE = "extracting features"
#: The progress stage of patients measured again once their site's units are decided.
STAGE_UNITS = "extracting features (units decided per site)"

#: ``(position, result, None)`` or ``(position, None, (stage, message))`` for one patient.
Outcome = tuple[int, PatientResult | None, tuple[str, str] | None]
Pinned = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class _Task:
    """One patient's work: a validated manifest row (absolute image paths), where the cache
    and the QC picture go, and how its units are settled. Plain data, so it can travel to
    another process or machine."""

    index: int
    row: dict[str, Any]
    config: ExtractionConfig
    cache_dir: str | None
    qc_png: str | None
    units: PatientUnits | None = None  # decided; None: decide from the patient alone
    pinned: Pinned | None = None  # a model's units per site (scoring)
    defer: bool = False  # pass 1 of a cohort: an ambiguous patient returns its evidence only
    device_key: bytes | None = field(default=None, repr=False)


@dataclass
class _Done:
    """What a task returns (it never raises)."""

    index: int
    result: PatientResult | None = None
    error: tuple[str, str] | None = None
    evidence: UnitEvidence | None = None


def _run_task(task: _Task) -> _Done:
    """Run one patient; never raises (errors come back as (stage, message))."""
    stage = Stage()
    row, config = task.row, task.config
    pid = str(row[PATIENT_ID])
    try:
        inputs = read_inputs(row)  # one read per image: hashed here, decoded from the bytes
        hashes = inputs.hashes
        cache = Path(task.cache_dir) if task.cache_dir else None
        ev_key = evidence_key(row, hashes, config)
        evidence = prep = None
        if cache is not None:
            ev_file = cache / f"ev-{ev_key}.json"
            if ev_file.is_file():
                evidence = read_evidence(ev_file, pid, str(row.get("site") or ""))
        if evidence is None:
            prep = prepare_patient(row, config, hashes=hashes, content=inputs.content, stage=stage)
            evidence = prep.evidence
            if cache is not None:
                write_evidence(ev_file, evidence)
        stage.name = "units"
        units = task.units
        if units is None:
            try:
                units = decide_alone(evidence, config, task.pinned, row=row)
            except UnitsError:
                if task.defer:  # the site decides (pass 2)
                    return _Done(task.index, evidence=evidence)
                raise
        cache_file = cached_png = None
        if cache is not None:
            key = result_key(ev_key, row, units, task.device_key)
            cache_file = cache / f"{key}.json"
            # The QC picture is cached too (titled with the patient's ID, hence the ID in its
            # name), so a run writing pictures into a new folder still reuses the cache.
            cached_png = cache / f"{key}.{hash_json(pid)[:12]}.png"
            png_ok = task.qc_png is None or Path(task.qc_png).is_file() or cached_png.is_file()
            if cache_file.is_file() and png_ok:
                cached = read_cached(cache_file, pid)
                if cached is not None:
                    if task.qc_png is not None and not Path(task.qc_png).is_file():
                        Path(task.qc_png).parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(task.qc_png) as tmp:
                            shutil.copyfile(cached_png, tmp)
                    cached.qc.update(units_fields(units))
                    return _Done(task.index, cached, None, evidence)
        if prep is None:
            prep = prepare_patient(row, config, hashes=hashes, content=inputs.content, stage=stage)
        result = finish_patient(
            prep, units, config, qc_png=task.qc_png, stage=stage, device_key=task.device_key
        )
        if cache_file is not None:
            write_cached(cache_file, result)
            if task.qc_png is not None and cached_png is not None:
                with atomic_path(cached_png) as tmp:
                    shutil.copyfile(task.qc_png, tmp)
        return _Done(task.index, result, None, evidence)
    except RefractureError as err:
        return _Done(task.index, error=(stage.name, err.one_line()))
    except MemoryError:
        return _Done(task.index, error=(stage.name, f"patient {pid}: out of memory"))
    except Exception as err:  # noqa: BLE001 - one patient's bug must not stop the batch
        msg = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return _Done(task.index, error=(stage.name, f"patient {pid}: internal error: {msg}"))


def _run_in_worker(task: _Task) -> _Done:
    """:func:`_run_task` in a worker process (a pool worker, a Spark executor): one patient per
    worker, so ITK is kept from starting a thread per core in each."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return _run_task(task)


# Public names of the per-patient work, for engines that run it elsewhere (Spark). The objects
# keep their private names because pickles name them: a pool worker that loaded a registered
# model imports the copy of refracture saved with it, which may predate the public names.
PatientTask = _Task
TaskDone = _Done
run_task_in_worker = _run_in_worker

#: Runs patient tasks and yields what each returned, in task order, reporting its own progress
#: under the stage it is given (e.g. the Spark engine); the default runs them here or in warm
#: workers. :func:`extract_cohort` calls it once per pass (:data:`STAGE`, :data:`STAGE_UNITS`).
TaskRunner = Callable[[list[PatientTask], Progress | None, str], Iterable[TaskDone]]


def _ordered(tasks: list[_Task], jobs: int) -> Iterator[_Done]:
    """Results in task order; with ``jobs > 1`` from warm worker processes, a few patients per
    task and a bounded number in flight (:mod:`refracture.features.pool`)."""
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    yield from map_ordered(_run_in_worker, tasks, jobs, on_lost=_lost)


def _lost(task: _Task, message: str) -> _Done:  # a patient whose worker process died
    return _Done(task.index, error=("worker", f"patient {task.row[PATIENT_ID]}: {message}"))


def _check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise InputError(f"jobs must be at least 1 (got {jobs})")


def iter_extract(
    rows: list[dict[str, Any]],
    config: ExtractionConfig,
    *,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    pinned: Pinned | None = None,
    device_key: bytes | None = None,
) -> Iterator[Outcome]:
    """Extract validated manifest rows one patient at a time, yielding in input order.

    Yields ``(position, result, None)`` or ``(position, None, (stage, message))``; never raises
    for one patient. Unlike :func:`extract_cohort` (which needs the whole batch before it
    returns), a caller can act on each patient as soon as it and all earlier ones are done,
    e.g. to checkpoint a long scoring run. Each patient's units are decided from the patient
    alone: declared > config > ``pinned`` (a trained model's units per site, for new patients
    of a known site) > its own values; an ambiguous patient is an error row (stage ``units``).
    ``device_key``: the site's secret key for keyed-hash scanner IDs (default: from the
    environment, see :func:`refracture.imaging.metadata.scanner_key_from_env`).
    """
    _check_jobs(jobs)
    cache = str(cache_dir) if cache_dir is not None else None
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    key = device_key if device_key is not None else scanner_key_from_env()
    tasks = [
        _Task(i, row, config, cache, None, pinned=pinned, device_key=key)
        for i, row in enumerate(rows)
    ]
    for done in _ordered(tasks, jobs):
        yield done.index, done.result, done.error


def extract_cohort(
    manifest: pd.DataFrame | str | Path,
    config: ExtractionConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    qc_png: bool = False,
    progress: Progress | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    pinned: Pinned | None = None,
    device_key: bytes | None = None,
    runner: TaskRunner | None = None,
) -> ExtractionResult:
    """Extract features for every patient of a manifest (a CSV path or a DataFrame).

    With ``out_dir`` the tables are written there atomically (features.parquet,
    vertebrae.parquet, qc.csv, errors.csv when any failed, extraction.json); with
    ``out_dir=None`` nothing is written but the cache. ``cache_dir=None`` disables the
    cache. ``qc_png`` writes ``out_dir/qc/<patient>.png`` and contact sheets. ``jobs``
    worker processes (1: in this process). ``progress(stage, done, total)`` is called as
    patients finish. ``pseudonymiser`` replaces every patient_id by its keyed pseudonym, in
    the tables, file names and messages (see :mod:`refracture.privacy`). Units are decided
    once per site (module docstring); ``pinned`` gives units per site that undeclared patients
    of those sites take (a trained model's). ``device_key``: the site's secret key for
    keyed-hash scanner IDs (default: from the environment). One patient's failure is a row of
    ``errors`` (patient_id, stage, message); a bad manifest raises InputError. ``runner`` runs
    the patients of each pass elsewhere (``jobs`` then does not apply; units are still decided
    here, between the passes): the tables are assembled from what it returns exactly as from
    the local runs.
    """
    config = config or ExtractionConfig()
    if jobs > 1 and runner is None:
        warm()  # the workers' imports run while the manifest is read
    if isinstance(manifest, str | Path):
        df = read_manifest(manifest)
    else:
        df = validate_manifest(manifest)
    _check_jobs(jobs)
    if df.empty:
        raise InputError("no patients: the manifest has a header but no rows")
    originals = list(df[PATIENT_ID])
    if pseudonymiser is not None:
        df = pseudonymiser.table(df)
    if qc_png and out_dir is None:
        raise InputError("QC pictures need an output folder (out_dir)")
    out = Path(out_dir) if out_dir is not None else None
    png_dir = out / "qc" if (out is not None and qc_png) else None
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    key = device_key if device_key is not None else scanner_key_from_env()

    rows = df.to_dict("records")
    ids = list(df[PATIENT_ID])
    sites = list(df["site"])

    def task(i: int, units: PatientUnits | None = None) -> _Task:
        png = str(png_dir / f"{_safe_name(ids[i])}.png") if png_dir else None
        return _Task(
            i, rows[i], config, str(cache) if cache else None, png,
            units=units, pinned=pinned, defer=units is None, device_key=key,
        )  # fmt: skip

    def run(tasks: list[_Task], stage: str) -> Iterator[_Done]:
        """Every task's result in task order, ticking ``stage`` as they come."""
        if runner is not None:
            yield from runner(tasks, progress, stage)
            return
        tick = stage_ticker(progress, stage, len(tasks)) if tasks else None
        for done in _ordered(tasks, jobs):
            yield done
            if tick:
                tick()

    # Pass 1: evidence for everyone, features for those whose units follow from themselves.
    results: dict[int, PatientResult] = {}
    errors: dict[int, tuple[str, str]] = {}
    evidence: dict[int, UnitEvidence] = {}
    for done in run([task(i) for i in range(len(rows))], STAGE):
        if done.error is not None:
            errors[done.index] = done.error
        else:
            evidence[done.index] = done.evidence  # type: ignore[assignment]
            if done.result is not None:
                results[done.index] = done.result

    # The units of every site, from all of its patients together.
    decided = decide_site_units([evidence[i] for i in sorted(evidence)], config, pinned=pinned)
    again: list[_Task] = []
    for i in sorted(evidence):
        pid = ids[i]
        if pid in decided.errors:
            results.pop(i, None)
            errors[i] = ("units", units_error(decided.errors[pid], rows[i]).one_line())
            continue
        units = decided.decisions[pid]
        got = results.get(i)
        if got is not None and all(got.qc[f"qc_{k}_units"] == units[k].unit for k in MAPS):
            got.qc.update(units_fields(units))  # the site's decision: its source and note
        else:
            results.pop(i, None)
            again.append(task(i, units))

    # Pass 2: patients whose site decided their units.
    for done in run(again, STAGE_UNITS) if again else ():
        if done.error is not None:
            errors[done.index] = done.error
        else:
            results[done.index] = done.result  # type: ignore[assignment]

    ok = sorted(results)
    features = features_frame([results[i] for i in ok], [sites[i] for i in ok])
    vertebrae = vertebrae_frame([results[i] for i in ok])
    qc = features[[PATIENT_ID, "site", *SCANNER_COLUMNS, *QC_COLUMNS]].copy()

    def message(text: str) -> str:  # image paths often carry the original ID
        return text if pseudonymiser is None else pseudonymiser.scrub(text, originals)

    errors_df = pd.DataFrame(
        [
            {PATIENT_ID: ids[i], "stage": errors[i][0], "message": message(errors[i][1])}
            for i in sorted(errors)
        ],
        columns=[PATIENT_ID, "stage", "message"],
    )
    n_cached = sum(r.cached for r in results.values())
    result = ExtractionResult(
        features=features,
        vertebrae=vertebrae,
        qc=qc,
        errors=errors_df,
        n_computed=len(results) - n_cached,
        n_cached=n_cached,
        site_units={s: dict(u) for s, u in sorted(decided.site_units.items())},
    )
    if out is not None:
        result.files = _write_outputs(result, out, config, png_dir, ids)
    return result


def _write_outputs(
    result: ExtractionResult,
    out: Path,
    config: ExtractionConfig,
    png_dir: Path | None,
    ids: Iterable[str],
) -> dict[str, Path]:
    ids = list(ids)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "features": write_table(out / "features.parquet", result.features),
        "vertebrae": write_table(out / "vertebrae.parquet", result.vertebrae),
        "qc": write_table(out / "qc.csv", result.qc),
    }
    errors_path = out / "errors.csv"
    if len(result.errors):
        files["errors"] = write_table(errors_path, result.errors)
    else:
        errors_path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if png_dir is not None:
        from refracture.imaging.qc import render_contact_sheets

        done = set(result.features[PATIENT_ID])
        items = [(pid, png_dir / f"{_safe_name(pid)}.png") for pid in ids if pid in done]
        sheets = render_contact_sheets(items, png_dir)
        if sheets:
            files["qc_png"] = png_dir
    files["summary"] = write_json(
        out / "extraction.json",
        {
            "refracture_version": __version__,
            "feature_version": FEATURE_VERSION,
            "extraction": config.model_dump(mode="json"),
            "site_units": result.site_units,
            "n_patients": len(ids),
            "n_succeeded": len(result.features),
            "n_failed": len(result.errors),
            "n_computed": result.n_computed,
            "n_cached": result.n_cached,
        },
    )
    return files


def _safe_name(patient_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(patient_id)) or "_"
