"""Features for a cohort: ``refracture extract``.

Patients run one at a time or, when asked for (``jobs > 1``), in a reusable pool of worker
processes (loky, as joblib uses): the pool starts once per process and is reused by later
calls, and it does not re-run the caller's script, so the functions work from a plain script,
a notebook or stdin without an ``if __name__ == "__main__"`` guard. One failing patient
becomes a row of ``errors`` and never stops the batch.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from refracture import __version__
from refracture.config import ExtractionConfig
from refracture.errors import InputError, RefractureError
from refracture.features.cache import cache_key, input_hashes, read_cached, write_cached
from refracture.features.manifest import read_manifest, validate_manifest
from refracture.features.patient import Stage, extract_patient
from refracture.features.schema import (
    FEATURE_VERSION,
    QC_COLUMNS,
    ExtractionResult,
    PatientResult,
    features_frame,
    vertebrae_frame,
)
from refracture.files import atomic_path, hash_json, write_json, write_table
from refracture.ids import PATIENT_ID
from refracture.privacy import Pseudonymiser
from refracture.progress import Progress, stage_ticker

__all__ = [
    "STAGE",
    "Outcome",
    "PatientTask",
    "TaskRunner",
    "extract_cohort",
    "iter_extract",
    "run_task_in_worker",
]

#: The progress stage name of extraction.
STAGE = "extracting features"

#: ``(position, result, None)`` or ``(position, None, (stage, message))`` for one patient.
Outcome = tuple[int, PatientResult | None, tuple[str, str] | None]


@dataclass(frozen=True)
class _Task:
    """One patient's work: a validated manifest row (absolute image paths) and where the
    cache and the QC picture go. Plain data, so it can travel to another process or machine."""

    index: int
    row: dict[str, Any]
    config: ExtractionConfig
    cache_dir: str | None
    qc_png: str | None


def _run_task(task: PatientTask) -> Outcome:
    """Run one patient; never raises (errors come back as (stage, message))."""
    stage = Stage()
    pid = str(task.row[PATIENT_ID])
    try:
        hashes = input_hashes(task.row)
        cache_file = cached_png = None
        if task.cache_dir:
            key = cache_key(task.row, hashes, task.config)
            cache_file = Path(task.cache_dir) / f"{key}.json"
            # The QC picture is cached too (titled with the patient's ID, hence the ID in its
            # name), so a run writing pictures into a new folder still reuses the cache.
            cached_png = Path(task.cache_dir) / f"{key}.{hash_json(pid)[:12]}.png"
            png_ok = task.qc_png is None or Path(task.qc_png).is_file() or cached_png.is_file()
            if cache_file.is_file() and png_ok:
                cached = read_cached(cache_file, pid)
                if cached is not None:
                    if task.qc_png is not None and not Path(task.qc_png).is_file():
                        Path(task.qc_png).parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(task.qc_png) as tmp:
                            shutil.copyfile(cached_png, tmp)
                    return task.index, cached, None
        result = extract_patient(
            task.row, task.config, hashes=hashes, qc_png=task.qc_png, stage=stage
        )
        if cache_file is not None:
            write_cached(cache_file, result)
            if task.qc_png is not None and cached_png is not None:
                with atomic_path(cached_png) as tmp:
                    shutil.copyfile(task.qc_png, tmp)
        return task.index, result, None
    except RefractureError as err:
        return task.index, None, (stage.name, err.one_line())
    except MemoryError:
        return task.index, None, (stage.name, f"patient {pid}: out of memory")
    except Exception as err:  # noqa: BLE001 - one patient's bug must not stop the batch
        msg = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return task.index, None, (stage.name, f"patient {pid}: internal error: {msg}")


def _run_in_worker(task: PatientTask) -> Outcome:
    """:func:`_run_task` in a worker process (a pool worker, a Spark executor): one patient per
    worker, so ITK is kept from starting a thread per core in each."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return _run_task(task)


# Public names of the per-patient work, for engines that run it elsewhere (Spark). The objects
# keep their private names because pickles name them: a pool worker that loaded a registered
# model imports the copy of refracture saved with it, which may predate the public names.
PatientTask = _Task
run_task_in_worker = _run_in_worker


def _ordered(tasks: list[PatientTask], jobs: int) -> Iterator[Outcome]:
    """Results in task order. With ``jobs > 1`` joblib's loky pool runs them (the pool the
    bootstrap uses too, started once per process); at most ``4 * jobs`` patients are
    dispatched ahead, so memory stays bounded and results come back as they finish in order."""
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    from joblib import Parallel, delayed

    workers = min(jobs, len(tasks))
    run = Parallel(n_jobs=workers, backend="loky", return_as="generator", pre_dispatch=4 * workers)
    yield from run(delayed(_run_in_worker)(task) for task in tasks)


#: Runs patient tasks and yields every outcome in task order, reporting its own progress
#: under :data:`STAGE` (e.g. the Spark engine); the default runs them here or in a loky pool.
TaskRunner = Callable[[list[PatientTask], Progress | None], Iterable[Outcome]]


def _check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise InputError(f"jobs must be at least 1 (got {jobs})")


def iter_extract(
    rows: list[dict[str, Any]],
    config: ExtractionConfig,
    *,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
) -> Iterator[Outcome]:
    """Extract validated manifest rows one patient at a time, yielding in input order.

    Yields ``(position, result, None)`` or ``(position, None, (stage, message))``; never raises
    for one patient. Unlike :func:`extract_cohort` (which needs the whole batch before it
    returns), a caller can act on each patient as soon as it and all earlier ones are done,
    e.g. to checkpoint a long scoring run.
    """
    _check_jobs(jobs)
    cache = str(cache_dir) if cache_dir is not None else None
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    tasks = [PatientTask(i, row, config, cache, None) for i, row in enumerate(rows)]
    yield from _ordered(tasks, jobs)


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
    runner: TaskRunner | None = None,
) -> ExtractionResult:
    """Extract features for every patient of a manifest (a CSV path or a DataFrame).

    With ``out_dir`` the tables are written there atomically (features.parquet,
    vertebrae.parquet, qc.csv, errors.csv when any failed, extraction.json); with
    ``out_dir=None`` nothing is written but the cache. ``cache_dir=None`` disables the
    cache. ``qc_png`` writes ``out_dir/qc/<patient>.png`` and contact sheets. ``jobs``
    worker processes (1: in this process). ``progress(stage, done, total)`` is called as
    patients finish. ``pseudonymiser`` replaces every patient_id by its keyed pseudonym, in
    the tables, file names and messages (see :mod:`refracture.privacy`). One patient's
    failure is a row of ``errors`` (patient_id, stage, message); a bad manifest raises
    InputError. ``runner`` runs the patients elsewhere (``jobs`` then does not apply): the
    tables are assembled from its outcomes exactly as from the local ones.
    """
    config = config or ExtractionConfig()
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

    tasks = []
    for i, row in enumerate(df.to_dict("records")):
        png = str(png_dir / f"{_safe_name(row[PATIENT_ID])}.png") if png_dir else None
        tasks.append(PatientTask(i, row, config, str(cache) if cache else None, png))

    results: dict[int, PatientResult] = {}
    errors: dict[int, tuple[str, str]] = {}
    if runner is None:
        tick = stage_ticker(progress, STAGE, len(tasks))
        outcomes: Iterable[Outcome] = _ordered(tasks, jobs)
    else:
        tick, outcomes = (lambda: None), runner(tasks, progress)
    for index, result, error in outcomes:
        if result is not None:
            results[index] = result
        else:
            errors[index] = error  # type: ignore[assignment]
        tick()

    ids = list(df[PATIENT_ID])
    sites = list(df["site"])
    ok = sorted(results)
    features = features_frame([results[i] for i in ok], [sites[i] for i in ok])
    vertebrae = vertebrae_frame([results[i] for i in ok])
    qc = features[[PATIENT_ID, "site", *QC_COLUMNS]].copy()

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
