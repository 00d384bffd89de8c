"""``refracture extract --engine spark``: every patient measured on a Spark executor.

The driver reads and validates the manifest as the local engine does (image paths become
absolute, so an executor finds them wherever its working folder is). Each patient becomes a
task, the tasks are spread over partitions, and an executor runs them with the local engine's
own per-patient function (:func:`refracture.features.cohort.run_task_in_worker`: reading the
images, gathering the unit evidence, measuring, caching), in ``mapInPandas``. What they return
comes back to the driver, which runs the local engine's own code in between and after: units
are decided per site on the driver from the evidence of every patient, the patients whose
site's units were still open are measured on the executors in a second Spark job, and the
tables are assembled and written in manifest order. One code path computes the numbers and
decides the units, so the files equal the local engine's.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import ExtractionConfig
from refracture.engines.session import (
    DEFAULT_MASTER,
    SparkHandle,
    require_spark,
    run_followed,
    spark_session,
)
from refracture.errors import RefractureError
from refracture.features.cohort import (
    PatientTask,
    Pinned,
    TaskDone,
    TaskRunner,
    extract_cohort,
    run_task_in_worker,
)
from refracture.features.schema import ExtractionResult
from refracture.privacy import Pseudonymiser
from refracture.progress import Progress

__all__ = ["extract_spark", "partitions_for", "spark_runner"]

TASK_SCHEMA = "_pos long, _task binary"
OUTCOME_SCHEMA = "_pos long, _outcome binary"
#: Partitions per core: patients differ in cost, so smaller partitions balance the cores.
PARTITIONS_PER_CORE = 4


def partitions_for(n_tasks: int, parallelism: int) -> int:
    """How many partitions ``n_tasks`` patients are spread over on ``parallelism`` cores."""
    return max(1, min(n_tasks, PARTITIONS_PER_CORE * max(parallelism, 1)))


def _absolute(task: PatientTask) -> PatientTask:
    """The task with its cache and picture paths absolute: an executor's working folder is not
    the driver's."""

    def resolve(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    return dataclasses.replace(task, cache_dir=resolve(task.cache_dir), qc_png=resolve(task.qc_png))


def _run_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """On an executor: run each pickled task, return what each returned, pickled."""
    for batch in batches:
        outcomes = [pickle.dumps(run_task_in_worker(pickle.loads(b))) for b in batch["_task"]]
        yield pd.DataFrame({"_pos": batch["_pos"].to_numpy(), "_outcome": outcomes})


def run_tasks(
    handle: SparkHandle, tasks: list[PatientTask], progress: Progress | None, stage: str
) -> list[TaskDone]:
    """Run patient tasks on Spark; what each returned, in task order."""
    if not tasks:
        return []
    frame = pd.DataFrame(
        {
            "_pos": np.arange(len(tasks), dtype=np.int64),
            "_task": [pickle.dumps(_absolute(t)) for t in tasks],
        }
    )
    parts = partitions_for(len(tasks), handle.parallelism)
    spread = handle.session.createDataFrame(frame, TASK_SCHEMA).repartition(parts)
    measured = spread.mapInPandas(_run_partition, OUTCOME_SCHEMA)
    got = run_followed(handle, measured.toPandas, progress=progress, stage=stage, total=len(tasks))
    got = got.sort_values("_pos", kind="stable")
    if not np.array_equal(got["_pos"].to_numpy(), frame["_pos"].to_numpy()):
        raise RefractureError(
            f"Spark returned {len(got)} outcomes for {len(tasks)} patients; run again"
        )
    return [pickle.loads(b) for b in got["_outcome"]]


def spark_runner(handle: SparkHandle | None = None, master: str = DEFAULT_MASTER) -> TaskRunner:
    """A task runner for :func:`~refracture.features.extract_cohort` that runs the patients on
    ``handle``'s session, or on a session started on ``master`` for each call and stopped
    after (:func:`extract_spark` keeps one session for both passes)."""

    def run(tasks: list[PatientTask], progress: Progress | None, stage: str) -> Iterable[TaskDone]:
        with nullcontext(handle) if handle is not None else spark_session(master) as spark:
            return run_tasks(spark, tasks, progress, stage)

    return run


def extract_spark(
    manifest: pd.DataFrame | str | Path,
    config: ExtractionConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    qc_png: bool = False,
    progress: Progress | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    pinned: Pinned | None = None,
    device_key: bytes | None = None,
    master: str = DEFAULT_MASTER,
    handle: SparkHandle | None = None,
) -> ExtractionResult:
    """:func:`~refracture.features.extract_cohort` with the patients measured on Spark.

    Same arguments and result (``jobs`` is Spark's: the cores of ``master``). Units are
    decided per site on the driver between the two passes, as the local engine does.
    ``handle`` reuses a running session; otherwise one is started on ``master`` once the
    manifest is validated, serves both passes, and is stopped at the end. Paths (images,
    cache, QC pictures) must be readable and writable at the same place by every executor: on
    one machine they are; on a cluster use a shared file system.
    """
    require_spark()
    with ExitStack() as stack:
        started: list[SparkHandle] = [] if handle is None else [handle]

        def run(tasks: list[PatientTask], progress: Progress | None, stage: str) -> list[TaskDone]:
            if not started:  # the first pass: the manifest is valid
                started.append(stack.enter_context(spark_session(master)))
            return run_tasks(started[0], tasks, progress, stage)

        return extract_cohort(
            manifest,
            config,
            out_dir=out_dir,
            cache_dir=cache_dir,
            qc_png=qc_png,
            progress=progress,
            pseudonymiser=pseudonymiser,
            pinned=pinned,
            device_key=device_key,
            runner=run,
        )
