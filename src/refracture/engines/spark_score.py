"""``refracture score --engine spark``: the registered model scores on Spark executors.

The driver does what every engine does before any patient: loads the model, reads and checks
the inputs (:func:`refracture.scoring.inputs.read_input`: the same exit-2 errors, the same
"no clinical row" errors). The rows then go to Spark with their input position:

* from a features file (or a clinical-only model), straight into
  ``mlflow.pyfunc.spark_udf`` on the registered model (``env_manager="local"``), whose
  ``predict`` is the function the local engine calls per chunk;
* from a manifest with images, first through ``mapInPandas``: an executor measures each of its
  patients with the local engine's per-patient function, reading the images from their
  absolute paths (units decided from the patient alone or pinned by the model for its site,
  as the local engine scores), and fills in the imaging features, the site and scanner, and
  the QC findings (those the model's ``extraction.qc_errors`` names make the row an error)
  with the local engine's code (:func:`refracture.scoring.batch.measured_row`,
  :func:`~refracture.scoring.batch.fill_measured`); then through the same UDF.

The driver collects the rows, puts them back in input order and assembles the output rows
with the local engine's code (:func:`refracture.scoring.rows.assemble_scores`). Predictions
are per row, so the file equals the local engine's. Not available here: ``--resume`` (Spark
recomputes a failed task itself; a killed run starts again) and ``--explain``.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.covariates import category_label
from refracture.engines.session import (
    DEFAULT_MASTER,
    SparkHandle,
    require_spark,
    run_followed,
    spark_session,
)
from refracture.engines.spark_extract import partitions_for
from refracture.errors import InputError, RefractureError
from refracture.features.cohort import PatientTask, run_task_in_worker
from refracture.files import write_table
from refracture.ids import PATIENT_ID
from refracture.imaging.metadata import scanner_key_from_env
from refracture.progress import Progress
from refracture.scoring.batch import (
    MeasuredRow,
    ScoreResult,
    fill_measured,
    measured_row,
    open_input,
)
from refracture.scoring.inputs import ScoreInput
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import (
    CONTEXT_COLUMNS,
    FIELD_STRENGTH,
    TEXT_COLUMNS,
    assemble_scores,
    output_columns,
)

__all__ = ["model_udf", "score_spark", "spark_frame"]

POS, PRE_ERROR, QC_WARN, TASK, PRED = "_pos", "_pre_error", "_qc_warn", "_task", "_pred"


def _spark_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "bigint"
    if pd.api.types.is_float_dtype(series):
        return "double"
    return "string"


def _missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _text(v: object) -> str | None:
    return None if _missing(v) else str(v)


def _all_numbers(values: np.ndarray) -> bool:
    """Every value is a number, a boolean or missing (a CSV column of True/False with gaps)."""
    return all(_missing(v) or isinstance(v, bool | int | float | np.number) for v in values)


def spark_frame(
    rows: pd.DataFrame, categorical: list[str], text: tuple[str, ...] | list[str] = ()
) -> tuple[pd.DataFrame, str]:
    """The model's input rows typed for Spark, and their Spark schema (DDL).

    Numbers and booleans keep their dtype (Arrow carries float64 bit for bit); a text column
    holding only numbers, booleans and gaps becomes float64 (what the model's checks make of
    it), except the ``text`` columns (scanner harmonisation's batch columns, which it reads as
    text: site "1" must not arrive as 1.0); any other column becomes text with None for
    missing. A categorical covariate is sent as its label (what the model's checks turn every
    value into first), so 1.0 from a numeric column arrives as "1", as the model's signature
    wants. The field strength is a number (the R2* unit rule reads it so).
    """
    out: dict[str, Any] = {}
    for c in rows.columns:
        col = rows[c]
        if c in categorical:
            out[c] = np.array([_text(category_label(v)) for v in col], dtype=object)
        elif c == FIELD_STRENGTH:
            out[c] = pd.to_numeric(col, errors="coerce").astype(np.float64).to_numpy()
        elif _spark_type(col) != "string":
            out[c] = col.to_numpy()
        elif c != PATIENT_ID and c not in text and _all_numbers(col.to_numpy(dtype=object)):
            out[c] = pd.to_numeric(col, errors="coerce").astype(np.float64).to_numpy()
        else:
            out[c] = np.array([_text(v) for v in col], dtype=object)
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(rows)))
    schema = ", ".join(f"`{c}` {_spark_type(frame[c])}" for c in frame.columns)
    return frame, schema


def _udf_uri(model: ScoringModel) -> str:
    """A registry alias pinned to the version the driver loaded: the alias may move while the
    executors load the model."""
    match = re.match(r"^models:/([^/@]+)", model.uri)
    return f"models:/{match.group(1)}/{model.version}" if match else model.uri


def model_udf(handle: SparkHandle, model: ScoringModel) -> Any:
    """``mlflow.pyfunc.spark_udf`` on the loaded model, returning its score columns as a
    struct. MLflow's advice about ``env_manager="local"`` is kept off the terminal: the
    executors run this environment, the one refracture runs in."""
    import mlflow.pyfunc

    from refracture.tracking import use_store

    fields = ", ".join(
        f"`{c}` {'string' if c in TEXT_COLUMNS else 'double'}"
        for c in output_columns(model.bundle.horizon_days, model.bundle.estimand)
    )
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    # spark_udf reads the process-wide store, which refracture leaves as the user set it:
    # point it at the model's own store for this call only.
    store = use_store(model.tracking_uri) if model.tracking_uri else nullcontext()
    try:
        with store:
            return mlflow.pyfunc.spark_udf(
                handle.session, _udf_uri(model), result_type=fields, env_manager="local"
            )
    finally:
        logger.setLevel(level)


def _measure_partition(
    batches: Iterator[pd.DataFrame],
    imaging: list[str],
    scanner: list[str],
    qc_errors: list[str],
    manifest_dir: Path | None,
) -> Iterator[pd.DataFrame]:
    """On an executor: measure the patients that have a task, fill in their imaging features,
    site and scanner, error and QC warnings (as the local engine does per patient)."""
    for batch in batches:
        n = len(batch)
        pre_error = batch[PRE_ERROR].to_numpy(dtype=object).copy()
        qc_warn = np.full(n, "", dtype=object)
        measured: list[MeasuredRow | None] = [None] * n
        for i, blob in enumerate(batch[TASK]):
            if blob is None:
                continue
            task = pickle.loads(blob)
            done = run_task_in_worker(task)
            measured[i] = measured_row(
                (done.index, done.result, done.error),
                task.row,
                imaging,
                scanner=scanner,
                qc_errors=qc_errors,
                manifest_dir=manifest_dir,
            )
            pre_error[i], qc_warn[i] = measured[i].error, measured[i].warnings
        out = fill_measured(batch.drop(columns=[TASK]), measured, imaging, scanner)
        out[PRE_ERROR] = pre_error
        out[QC_WARN] = qc_warn
        yield out


def _tasks(data: ScoreInput, model: ScoringModel, cache_dir: str | Path | None) -> list[Any]:
    """One pickled task per patient to measure (None for rows already known to be errors).

    As the local engine scores: each patient's units from itself, or the units the model was
    trained with for its site; the scanner key read here, on the driver."""
    assert data.manifest is not None and model.bundle.extraction is not None
    cache = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache = str(Path(cache_dir).resolve())
    key = scanner_key_from_env()
    pinned = model.bundle.site_units

    def task(p: int) -> PatientTask:
        config = model.bundle.extraction
        assert data.manifest is not None and config is not None
        return PatientTask(p, data.manifest[p], config, cache, None, pinned=pinned, device_key=key)

    todo = data.pre_error == ""
    return [pickle.dumps(task(p)) if todo[p] else None for p in range(len(data.rows))]


def _run(
    handle: SparkHandle,
    model: ScoringModel,
    data: ScoreInput,
    images: bool,
    cache_dir: str | Path | None,
    progress: Progress | None,
) -> pd.DataFrame:
    """The collected rows in input order: position, pre-error, QC warnings, predictions."""
    session = handle.session
    n = len(data.rows)
    batch = [c for c in model.inputs.batch if c != FIELD_STRENGTH]
    rows, schema = spark_frame(data.rows, list(model.inputs.categorical), batch)
    inputs = list(rows.columns)
    rows[POS] = np.arange(n, dtype=np.int64)
    rows[PRE_ERROR] = data.pre_error.astype(object)
    schema += f", {POS} bigint, {PRE_ERROR} string"
    predict = model_udf(handle, model)
    if images:
        rows[TASK] = _tasks(data, model, cache_dir)
        n_tasks = int(rows[TASK].notna().sum())
        frame = session.createDataFrame(rows, f"{schema}, {TASK} binary")
        frame = frame.repartition(partitions_for(n, handle.parallelism))
        imaging = list(model.inputs.imaging)
        scanner = [c for c in model.inputs.batch if c != "site"]
        config = model.bundle.extraction
        qc_errors = list(config.qc_errors) if config is not None else []
        manifest_dir = data.manifest_dir

        def measure(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            return _measure_partition(batches, imaging, scanner, qc_errors, manifest_dir)

        # The site and scanner the local engine adds beside the inputs once the images are read.
        added = [c for c in CONTEXT_COLUMNS if c not in inputs]
        types = {c: "double" if c == FIELD_STRENGTH else "string" for c in added}
        measured = "".join(f", `{c}` {t}" for c, t in types.items())
        frame = frame.mapInPandas(measure, f"{schema}, {QC_WARN} string{measured}")
        inputs += [FIELD_STRENGTH] if FIELD_STRENGTH in added else []
        stage, total = "measuring images", n_tasks
    else:
        frame = session.createDataFrame(rows, schema)
        stage, total = "scoring", n
    scored = frame.select(
        POS,
        PRE_ERROR,
        *([QC_WARN] if images else []),
        predict(_struct(inputs)).alias(PRED),
    ).select(POS, PRE_ERROR, *([QC_WARN] if images else []), f"{PRED}.*")
    got = run_followed(handle, scored.toPandas, progress=progress, stage=stage, total=total)
    got = got.sort_values(POS, kind="stable").reset_index(drop=True)
    if not np.array_equal(got[POS].to_numpy(), np.arange(n)):
        raise RefractureError(f"Spark returned {len(got)} rows for {n} input rows; run again")
    # spark_udf writes a missing text value as the text "None": a row that was not scored has
    # no risk group.
    got.loc[got["status"] != "ok", "risk_group"] = None
    return got


def _struct(columns: list[str]) -> Any:
    from pyspark.sql import functions as F

    return F.struct(*[F.col(f"`{c}`") for c in columns])


def score_spark(
    model: str | ScoringModel,
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    clinical: str | Path | None = None,
    features: str | Path | None = None,
    cache_dir: str | Path | None = Path(".refracture-cache"),
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    pseudonymise: bool = False,
    master: str = DEFAULT_MASTER,
    handle: SparkHandle | None = None,
    id_column: str | None = None,
) -> ScoreResult:
    """:func:`refracture.scoring.score` on Spark: the same checks, rows, order and file.

    ``handle`` reuses a running session; otherwise one is started on ``master`` once the
    inputs are checked, and stopped at the end. No checkpoint is kept (``n_reused`` is 0).
    """
    start = time.perf_counter()
    require_spark()
    out, model, data, pseudonymiser = open_input(
        model,
        out=out,
        manifest=manifest,
        clinical=clinical,
        features=features,
        tracking_uri=tracking_uri,
        pseudonymise=pseudonymise,
        id_column=id_column,
    )
    harmoniser = getattr(model.pipeline, "harmoniser", None)
    if harmoniser is not None and harmoniser.unseen_batch == "estimate":
        raise InputError(
            "this model estimates a new scanner's effects from all of its patients in the "
            "input (harmonisation.unseen_batch: estimate), which Spark's partitions cannot "
            "see together; score it with --engine local"
        )
    images = data.kind == "manifest" and model.uses_images
    with nullcontext(handle) if handle is not None else spark_session(master) as spark:
        got = _run(spark, model, data, images, cache_dir, progress)
    pre_error = got[PRE_ERROR].to_numpy(dtype=object)
    todo = pre_error == ""
    columns = model.columns(False)
    scores = assemble_scores(
        model.bundle,
        data.ids,
        pre_error,
        got[QC_WARN].to_numpy(dtype=object) if images else None,
        got.loc[todo].reset_index(drop=True) if todo.any() else None,
        explain=False,
        columns=columns,
    )
    if pseudonymiser is not None:  # image paths in messages often carry the original ID
        scores["error"] = [pseudonymiser.scrub(t, data.originals) for t in scores["error"]]
    if progress and images:
        progress("scoring", len(scores), len(scores))
    write_table(out, scores)
    notes, seconds = list(data.notes), time.perf_counter() - start
    return ScoreResult(out, scores, model, 0, notes, seconds, data)
