"""Batch scoring of new patients: ``refracture score``.

A hospital runs this every night, so it is built to be boringly reliable:

* **Nothing lost.** Exactly one output row per input row (manifest or features file), in input
  order. A patient whose images cannot be measured, who has no clinical row, or whose values
  fail the model's checks becomes a ``status="error"`` row with a one-line reason; it never
  stops the batch. Only problems that stop *every* patient (an unloadable model, input columns
  that do not match the model, duplicate IDs) raise :class:`~refracture.errors.InputError`
  (exit code 2) before any work starts.
* **One place predicts.** Rows are checked and scored by
  :func:`refracture.scoring.rows.predict_frame`, the function the registered pyfunc calls, so a
  batch score equals the registry's own prediction for the same row.
* **Crash-safe and resumable.** Rows are processed in fixed chunks of input positions
  (:mod:`refracture.scoring.checkpoint`). The final file is written to a temporary name and
  renamed only when every row is done; then the checkpoint is deleted. ``resume`` reuses
  finished chunks of the same model version and input, so a killed run continues where it
  stopped. Because the chunk boundaries depend only on the input positions, a resumed run
  computes every chunk on exactly the rows a clean run would, and its output is byte-identical
  to a clean run's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.bundle import ModelBundle
from refracture.errors import InputError, RefractureError
from refracture.files import write_table
from refracture.ids import PATIENT_ID
from refracture.privacy import Pseudonymiser
from refracture.progress import Progress
from refracture.scoring.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    check_not_busy,
    checkpoint_dir,
    chunk_bounds,
    read_previous_output,
)
from refracture.scoring.inputs import ScoreInput, measured_scanner, read_input
from refracture.scoring.model import ScoringModel, load_model
from refracture.scoring.rows import (
    CONTEXT_COLUMNS,
    FIELD_STRENGTH,
    estimate_new_batches,
    normalise,
    qc_messages,
    score_rows,
)

__all__ = [
    "CHUNK_PATIENTS",
    "CHUNK_ROWS",
    "MeasuredRow",
    "ScoreResult",
    "check_paths",
    "fill_measured",
    "measured_row",
    "open_input",
    "score",
]

#: Rows per chunk when scoring a features file or a clinical-only model (cheap rows).
CHUNK_ROWS = 2048
#: Patients per chunk when their images are measured first (expensive rows: checkpoint often).
CHUNK_PATIENTS = 16
#: Seconds between checkpoint writes for cheap rows; image chunks are written as they finish.
FEATURES_FLUSH_SECONDS = 1.0
ID = PATIENT_ID


@dataclass
class ScoreResult:
    """What :func:`score` did: the output file, its rows and a tally."""

    out: Path
    scores: pd.DataFrame
    model: ScoringModel
    n_reused: int
    notes: list[str]
    seconds: float
    data: ScoreInput | None = None  # the input rows, for outputs written after the scores
    # the bundle the rows were scored with when not the model's own (a new scanner's effects
    # estimated from the whole input), so outputs recompute a patient's row the same way
    bundle: ModelBundle | None = None

    @property
    def n_ok(self) -> int:
        return int((self.scores["status"] == "ok").sum())

    @property
    def n_error(self) -> int:
        return int((self.scores["status"] == "error").sum())

    @property
    def n_warnings(self) -> int:
        return int((self.scores["warnings"] != "").sum())

    @property
    def exit_code(self) -> int:
        """0 when every patient was scored, 1 when some have status error."""
        return 1 if self.n_error else 0


def _table_suffix(out: Path) -> None:
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError("the output must end in .csv or .parquet", file=out)


def check_paths(
    out: str | Path,
    *,
    manifest: str | Path | None,
    clinical: str | Path | None,
    features: str | Path | None,
) -> Path:
    """The output path, once the inputs exist and the output overwrites none (InputError)."""
    out = Path(out)
    _table_suffix(out)
    if (manifest is None) == (features is None):
        raise InputError("give exactly one of --manifest and --features")
    named = {"manifest": manifest, "clinical table": clinical, "features file": features}
    for what, path in named.items():  # before the few seconds of loading the model
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} not found", file=path)
    inputs = [Path(p).resolve() for p in named.values() if p is not None]
    if out.resolve() in inputs:
        raise InputError("the output would overwrite an input; choose another --out", file=out)
    return out


@dataclass
class MeasuredRow:
    """What one patient's images gave its score row.

    ``error``: why the row is not scored ('' when it is): the extraction failed, or a QC
    finding the model's ``extraction.qc_errors`` makes an error; ``warnings``: the other QC
    findings; ``values``: the imaging features, in the model's order; ``context``: the site
    and scanner (:data:`~refracture.scoring.rows.CONTEXT_COLUMNS`); ``scanner``: the scanner
    batch columns as training found them (what scanner harmonisation reads).
    """

    error: str
    warnings: str
    values: list[float]
    context: dict[str, Any] = field(default_factory=dict)
    scanner: dict[str, Any] = field(default_factory=dict)


def measured_row(
    outcome: tuple[int, Any, tuple[str, str] | None],
    record: dict[str, Any],
    imaging: list[str],
    *,
    scanner: list[str],
    qc_errors: list[str],
    manifest_dir: Path | None,
) -> MeasuredRow:
    """One patient's extraction outcome (``record``: its manifest row) for its score row.

    An extraction error names neither the patient (the row does) nor the manifest's folder
    (paths as the manifest wrote them, relative to it); the row then keeps its inputs' site
    and scanner."""
    _, result, error = outcome
    if result is None or error is not None:
        stage, message = error or ("extract", "no result")
        message = message.removeprefix(f"patient {record[ID]}: ")
        if manifest_dir:
            message = message.replace(f"{manifest_dir}{os.sep}", "")
        return MeasuredRow(f"image {stage} failed: {message}", "", [math.nan] * len(imaging))
    context = {"site": record.get("site")}
    context.update({c: result.scanner.get(c) for c in CONTEXT_COLUMNS[1:]})
    # Extraction QC travels with the row: the model's qc_errors make some of it errors.
    qc_error, qc_warn = qc_messages(result.qc, qc_errors)
    found = measured_scanner(record, result) if scanner else {}
    return MeasuredRow(
        qc_error,
        qc_warn,
        [result.features.get(c, math.nan) for c in imaging],
        context,
        {c: found[c] for c in scanner},
    )


def fill_measured(
    rows: pd.DataFrame,
    measured: list[MeasuredRow | None],
    imaging: list[str],
    scanner: list[str],
) -> pd.DataFrame:
    """``rows`` (a chunk of the input rows, one ``measured`` entry each, None for a row whose
    images were not read) with the imaging features, the scanner batch columns and the site
    and scanner context filled in; the field strength as a number (the R2* unit rule)."""
    rows = rows.copy()
    n = len(rows)
    values = np.full((n, len(imaging)), np.nan)
    context = {c: np.full(n, None, dtype=object) for c in CONTEXT_COLUMNS}
    for i, m in enumerate(measured):
        if m is None:
            continue
        values[i] = m.values
        for c, v in m.context.items():
            context[c][i] = v
        if scanner and m.scanner:  # what scanner harmonisation reads
            rows.loc[rows.index[i], scanner] = [m.scanner[c] for c in scanner]
    rows[imaging] = values
    for c, v in context.items():
        if c not in rows:  # a model input of that name comes from the inputs
            rows[c] = v
    rows[FIELD_STRENGTH] = pd.to_numeric(rows[FIELD_STRENGTH], errors="coerce")
    return rows


def open_input(
    model: str | ScoringModel,
    *,
    out: str | Path,
    manifest: str | Path | None,
    clinical: str | Path | None,
    features: str | Path | None,
    tracking_uri: str | None,
    pseudonymise: bool,
    explain: bool = False,
    id_column: str | None = None,
) -> tuple[Path, ScoringModel, ScoreInput, Pseudonymiser | None]:
    """What every engine does before any patient, each step raising InputError (exit 2): the
    paths, no other run writing ``out``, the model (loaded from its URI unless given),
    ``explain`` possible with it, and the input read (pseudonymised if asked: the
    pseudonymiser is returned too, for scrubbing messages). ``id_column``: the patient ID
    column of the clinical table and features file (default: the model's, ``data.id_column``
    of its training config)."""
    out = check_paths(out, manifest=manifest, clinical=clinical, features=features)
    check_not_busy(checkpoint_dir(out), out)
    pseudonymiser = Pseudonymiser.from_env() if pseudonymise else None
    if isinstance(model, str):
        model = load_model(model, tracking_uri)
    if explain and not model.bundle.estimator.supports_contributions:
        raise InputError(
            f"explain needs a model with per-term contributions (cox, logistic); "
            f"'{model.uri}' is {model.bundle.model}"
        )
    data = read_input(
        model,
        manifest=None if manifest is None else Path(manifest),
        clinical=None if clinical is None else Path(clinical),
        features=None if features is None else Path(features),
        pseudonymiser=pseudonymiser,
        id_column=id_column,
    )
    return out, model, data, pseudonymiser


def score(
    model: str | ScoringModel,
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    clinical: str | Path | None = None,
    features: str | Path | None = None,
    resume: bool = False,
    jobs: int = 1,
    explain: bool = False,
    cache_dir: str | Path | None = Path(".refracture-cache"),
    chunk_size: int | None = None,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    pseudonymise: bool = False,
    id_column: str | None = None,
) -> ScoreResult:
    """Score every input patient and write ``out`` (CSV or Parquet by extension).

    ``model`` is an MLflow model URI or an already loaded :class:`ScoringModel`.
    ``id_column`` names the patient ID column of the clinical table and features file when
    it is not the one the model was trained with (``data.id_column``). Everything
    that would stop every patient is checked first and raises InputError (exit 2); after that
    no single patient can stop the batch. See the module docstring for resume and chunking.
    """
    start = time.perf_counter()
    if jobs < 1:
        raise InputError(f"jobs must be at least 1 (got {jobs})")
    if chunk_size is not None and chunk_size < 1:
        raise InputError(f"chunk_size must be at least 1 (got {chunk_size})")
    out, model, data, pseudonymiser = open_input(
        model,
        out=out,
        manifest=manifest,
        clinical=clinical,
        features=features,
        tracking_uri=tracking_uri,
        pseudonymise=pseudonymise,
        explain=explain,
        id_column=id_column,
    )
    images = data.kind == "manifest" and model.uses_images
    size = chunk_size or (CHUNK_PATIENTS if images else CHUNK_ROWS)
    columns = model.columns(explain)
    ids = data.ids
    bounds = chunk_bounds(len(ids), size)
    notes = list(data.notes)

    checkpoint = Checkpoint(
        checkpoint_dir(out),
        {
            "format": CHECKPOINT_FORMAT,
            "model_uri": model.uri,
            "model_name": model.label,
            "model_version": model.version,
            "input_digest": data.digest,
            "columns": columns,
            "chunk_size": size,
            "n_rows": len(ids),
        },
    )
    done: dict[int, pd.DataFrame] = {}
    keep = False
    if resume:
        done, note = checkpoint.load(ids, bounds)
        keep = not note
        if note:
            notes.append(note)
        # A chunk with error rows is redone whole (same rows -> same floating-point results).
        done = {k: df for k, df in done.items() if (df["status"] == "ok").all()}
        index, prev, note = read_previous_output(out, columns, model)
        if note:
            notes.append(note)
        if prev is not None:
            for k, (a, b) in enumerate(bounds):
                if k not in done and all(pid in index for pid in ids[a:b]):
                    done[k] = normalise(prev.iloc[[index[pid] for pid in ids[a:b]]], columns)
    elif checkpoint.folder.exists():
        notes.append(
            "an unfinished earlier run's checkpoint was replaced (use --resume to reuse it)"
        )
    if _estimates_batches(model) and done:  # a new scanner's effects come from all its rows
        notes.append(
            "every patient was scored again: the model estimates a new scanner's effects from "
            "all of its patients in the input (harmonisation.unseen_batch: estimate)"
        )
        done, keep = {}, False
    n_reused = sum(len(df) for df in done.values())
    checkpoint.start(keep=keep)

    todo = [k for k in range(len(bounds)) if k not in done]
    used: list[ModelBundle] = []  # the bundle the chunks are scored with
    if images:
        computed = _image_chunks(
            model, data, bounds, todo, jobs=jobs, cache_dir=cache_dir, explain=explain,
            progress=progress, used=used,
        )  # fmt: skip
        flush_every = 0.0
    else:
        computed = _row_chunks(model, data, bounds, todo, explain=explain, used=used)
        flush_every = FEATURES_FLUSH_SECONDS
    total = len(ids)
    n_done = n_reused
    if progress:
        progress("scoring", n_done, total)
    pending: list[tuple[int, pd.DataFrame]] = []
    last_flush = time.monotonic()
    for k, df in computed:
        if pseudonymiser is not None:  # image paths in messages often carry the original ID
            df["error"] = [pseudonymiser.scrub(t, data.originals) for t in df["error"]]
        done[k] = df
        pending.append((k, df))
        n_done += len(df)
        if time.monotonic() - last_flush >= flush_every:
            checkpoint.write(pending)
            pending, last_flush = [], time.monotonic()
        if progress:
            progress("scoring", n_done, total)
    checkpoint.write(pending)

    parts = [done[k] for k in range(len(bounds))]
    scores = normalise(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), columns)
    if len(scores) != len(ids) or not (scores[ID].to_numpy(dtype=object) == ids).all():
        raise RefractureError("internal error: the scored rows do not match the input rows")
    write_table(out, scores)
    checkpoint.remove()
    bundle = next((b for b in used if b is not model.bundle), None)
    seconds = time.perf_counter() - start
    return ScoreResult(out, scores, model, n_reused, notes, seconds, data, bundle)


def _row_chunks(
    model: ScoringModel,
    data: ScoreInput,
    bounds: list[tuple[int, int]],
    todo: list[int],
    *,
    explain: bool,
    used: list[ModelBundle],
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Chunks whose model inputs are all in the input table (features file, clinical-only)."""
    bundle = estimate_new_batches(model.bundle, data.rows)
    used.append(bundle)
    for k in todo:
        a, b = bounds[k]
        rows = data.rows.iloc[a:b]
        yield (
            k,
            score_rows(
                bundle,
                rows,
                data.pre_error[a:b],
                None,
                explain=explain,
                columns=model.columns(explain),
            ),
        )


def _image_chunks(
    model: ScoringModel,
    data: ScoreInput,
    bounds: list[tuple[int, int]],
    todo: list[int],
    *,
    jobs: int,
    cache_dir: str | Path | None,
    explain: bool,
    progress: Progress | None,
    used: list[ModelBundle],
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Measure the images of the patients in ``todo`` chunks (one process pool for the whole
    batch), then score each chunk as soon as all its patients are measured."""
    from refracture.features import iter_extract

    assert data.manifest is not None
    config = model.bundle.extraction
    assert config is not None
    # Patients already known to be errors (no clinical row) need no image work.
    positions = [p for k in todo for p in range(*bounds[k]) if data.pre_error[p] == ""]
    # Undeclared units of a site the model knows are the units it was trained with.
    stream = iter_extract(
        [data.manifest[p] for p in positions],
        config,
        jobs=jobs,
        cache_dir=cache_dir,
        pinned=model.bundle.site_units,
    )
    if progress and positions:
        progress("measuring images", 0, len(positions))  # before the scoring bar
    return _score_measured(
        model, data, bounds, todo, stream, len(positions), explain, progress, used
    )


def _score_measured(
    model: ScoringModel,
    data: ScoreInput,
    bounds: list[tuple[int, int]],
    todo: list[int],
    stream: Iterator[tuple[int, Any, tuple[str, str] | None]],
    n_total: int,
    explain: bool,
    progress: Progress | None,
    used: list[ModelBundle],
) -> Iterator[tuple[int, pd.DataFrame]]:
    imaging = list(model.inputs.imaging)
    scanner = [c for c in model.inputs.batch if c != "site"]
    config = model.bundle.extraction
    qc_errors = list(config.qc_errors) if config is not None else []
    n_measured = 0
    estimate = _estimates_batches(model)
    measured_chunks = []  # with unseen_batch: estimate, every chunk is measured first
    for k in todo:
        a, b = bounds[k]
        rows = data.rows.iloc[a:b].copy()
        pre_error = data.pre_error[a:b].copy()
        qc_warn = np.full(b - a, "", dtype=object)
        measured: list[MeasuredRow | None] = [None] * (b - a)
        for i in range(b - a):
            if pre_error[i] != "":
                continue
            outcome = next(stream)
            n_measured += 1
            if progress:
                progress("measuring images", n_measured, n_total)
            measured[i] = measured_row(
                outcome,
                data.manifest[a + i],
                imaging,
                scanner=scanner,
                qc_errors=qc_errors,
                manifest_dir=data.manifest_dir,
            )
            pre_error[i], qc_warn[i] = measured[i].error, measured[i].warnings
        rows = fill_measured(rows, measured, imaging, scanner)
        if estimate:
            measured_chunks.append((k, rows, pre_error, qc_warn))
            continue
        yield (
            k,
            score_rows(
                model.bundle,
                rows,
                pre_error,
                qc_warn,
                explain=explain,
                columns=model.columns(explain),
            ),
        )
    if measured_chunks:
        every = pd.concat([c[1][c[2] == ""] for c in measured_chunks], ignore_index=True)
        bundle = estimate_new_batches(model.bundle, every)
        used.append(bundle)
        for k, rows, pre_error, qc_warn in measured_chunks:
            yield (
                k,
                score_rows(
                    bundle,
                    rows,
                    pre_error,
                    qc_warn,
                    explain=explain,
                    columns=model.columns(explain),
                ),
            )


def _estimates_batches(model: ScoringModel) -> bool:
    """The model harmonises a new scanner from its own patients' scans."""
    harmoniser = getattr(model.pipeline, "harmoniser", None)
    return harmoniser is not None and harmoniser.unseen_batch == "estimate"
