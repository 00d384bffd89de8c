"""Batch scoring of new patients: ``refracture score`` (issue 6; PRODUCT.md sections 2 and 6).

A hospital runs this every night, so it is built to be boringly reliable:

* **Nothing lost.** Exactly one output row per input row (manifest or features file), in input
  order. A patient whose images cannot be measured, who has no clinical row, or whose values
  fail the model's checks becomes a ``status="error"`` row with a one-line reason; it never
  stops the batch. Only problems that stop *every* patient (an unloadable model, input columns
  that do not match the model, duplicate IDs) raise :class:`~refracture.errors.InputError`
  (exit code 2) before any work starts.
* **One place predicts.** Rows are checked and scored by
  :func:`refracture.serving.predict_frame`, the function the registered pyfunc calls, so a
  batch score equals the registry's own prediction for the same row.
* **Crash-safe and resumable.** Rows are processed in fixed chunks of input positions. Finished
  chunks go to a hidden checkpoint folder beside the output (``.<out name>.refracture-partial``,
  one Parquet part at a time, each written atomically). The final file is written to a
  temporary name and renamed only when every row is done; then the checkpoint is deleted.
  ``resume`` reuses finished chunks of the same model version and input, so a killed run
  continues where it stopped. Because the chunk boundaries depend only on the input positions,
  a resumed run computes every chunk on exactly the rows a clean run would, and its output is
  byte-identical to a clean run's.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from refracture.data import patient_ids
from refracture.errors import InputError, RefractureError
from refracture.files import atomic_path, hash_file, write_table
from refracture.privacy import Pseudonymiser
from refracture.serving import (
    InputColumns,
    missing_and_unexpected,
    output_columns,
    predict_frame,
    risk_column,
)

#: Rows per chunk when scoring a features file or a clinical-only model (cheap rows).
CHUNK_ROWS = 2048
#: Patients per chunk when their images are measured first (expensive rows: checkpoint often).
CHUNK_PATIENTS = 16
CHECKPOINT_FORMAT = 1
#: Seconds between checkpoint writes for cheap rows; image chunks are written as they finish.
FEATURES_FLUSH_SECONDS = 1.0
ID = "patient_id"

Progress = Callable[[str, int, int], None]


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringModel:
    """A loaded refracture model: the bundle (with ``model_version`` set to what the output
    reports), the fitted pipeline, and where it came from."""

    uri: str
    version: str
    bundle: dict[str, Any]
    pipeline: Any
    load_seconds: float = 0.0

    @property
    def label(self) -> str:
        return str(self.bundle["model_label"])

    @property
    def uses_images(self) -> bool:
        return self.bundle.get("extraction") is not None and bool(
            self.bundle.get("imaging_features")
        )

    @property
    def inputs(self) -> InputColumns:
        return InputColumns.from_bundle(self.bundle)

    @property
    def covariates(self) -> list[str]:
        """Model inputs that come from the clinical data (not measured on the images)."""
        imaging = set(self.bundle.get("imaging_features") or [])
        return [c for c in self.inputs.names if c not in imaging]

    def columns(self, explain: bool) -> list[str]:
        cols = output_columns(self.bundle["horizon_days"])
        if explain:
            cols += ["lp_reference", *[f"contrib_{t}" for t in self.bundle.get("terms", [])]]
        return cols


def load_model(uri: str, tracking_uri: str | None = None) -> ScoringModel:
    """Load any MLflow model URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``, a
    folder). For registry URIs ``model_version`` becomes the registry version number, otherwise
    the training run ID kept in the bundle. Raises InputError (exit 2) when it cannot be used."""
    import mlflow
    import mlflow.pyfunc

    from refracture.tracking import quiet_mlflow, resolve_tracking_uri

    quiet_mlflow()
    store = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    start = time.perf_counter()
    try:
        loaded = mlflow.pyfunc.load_model(uri)
        python_model = loaded.unwrap_python_model()
    except Exception as err:  # noqa: BLE001 - MLflow raises many types for a bad URI
        msg = getattr(err, "message", None) or str(err) or type(err).__name__
        raise InputError(
            f"cannot load the model '{uri}' (tracking URI {store}): {_clip(msg)}"
        ) from None
    bundle = getattr(python_model, "bundle", None)
    pipeline = getattr(python_model, "pipeline", None)
    if not isinstance(bundle, dict) or pipeline is None:
        raise InputError(f"the model '{uri}' is not a refracture model (no scoring bundle)")
    version = str(bundle.get("model_version", ""))
    if uri.startswith("models:/"):
        from mlflow import MlflowClient
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        try:
            name, number = get_model_name_and_version(MlflowClient(), uri)
        except Exception as err:  # noqa: BLE001
            msg = getattr(err, "message", None) or str(err)
            raise InputError(f"cannot resolve the model version of '{uri}': {_clip(msg)}") from None
        version = str(number)
    bundle = {**bundle, "model_version": version}
    return ScoringModel(uri, version, bundle, pipeline, time.perf_counter() - start)


# --- inputs -------------------------------------------------------------------------------


@dataclass
class ScoreInput:
    """The rows to score, in input order.

    ``rows`` holds ``patient_id`` and every model input known before scoring (for a manifest
    and an imaging model, the imaging features are filled in later, chunk by chunk).
    ``pre_error`` is the reason a row cannot be scored before looking at its values (no
    clinical row), "" otherwise. ``manifest`` holds the validated manifest records when images
    are to be measured.
    """

    kind: Literal["features", "manifest"]
    rows: pd.DataFrame
    pre_error: np.ndarray
    digest: str
    manifest: list[dict[str, Any]] | None = None
    manifest_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)  # the site's own IDs, if pseudonymised

    @property
    def ids(self) -> np.ndarray:
        return self.rows[ID].to_numpy(dtype=object)


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _read_table(path: Path, what: str, categorical: list[str]) -> pd.DataFrame:
    """A CSV or Parquet table with IDs and categories kept as text and numbers read exactly."""
    if not path.is_file():
        raise InputError(f"{what} not found", file=path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix != ".csv":
            raise InputError(f"the {what} must be .csv or .parquet", file=path)
        text_cols = {c: str for c in (ID, *categorical)}
        return pd.read_csv(path, dtype=text_cols, float_precision="round_trip")
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any parser error means an unreadable input
        raise InputError(f"cannot read the {what} ({_clip(str(err), 200)})", file=path) from None


def _patient_ids(table: pd.DataFrame, what: str, path: Path) -> pd.Series:
    """Normalised text IDs, positionally indexed; empty or duplicate IDs stop the run (exit 2)."""
    return patient_ids(table, what, path).astype(object).reset_index(drop=True)


def _names(items: Any, limit: int = 10) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def columns_message(what: str, missing: list[str], unexpected: list[str]) -> str:
    """'lacks X; unexpected Y' with likely typos first, so a renamed column is easy to spot."""
    lower = {c.lower(): c for c in unexpected}
    hints: list[str] = []
    for m in missing:
        close = [lower[m.lower()]] if m.lower() in lower else []
        close += difflib.get_close_matches(m, unexpected, n=2, cutoff=0.75)
        hints += [f"'{c}' for '{m}'" for c in dict.fromkeys(close)]
    likely = [c for c in unexpected if any(f"'{c}' for" in h for h in hints)]
    ordered = [*likely, *[c for c in unexpected if c not in likely]]
    text = f"model column(s) missing from the {what}: {', '.join(missing)}"
    text += f"; unexpected column(s): {_names(ordered, 15)}" if ordered else ""
    if hints:
        text += f" (did you mean {', '.join(hints)}?)"
    return text


def _digest(*parts: Path | str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(hash_file(part).encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def read_input(
    model: ScoringModel,
    *,
    manifest: Path | None = None,
    clinical: Path | None = None,
    features: Path | None = None,
    pseudonymiser: Pseudonymiser | None = None,
) -> ScoreInput:
    """Read and check the inputs before any patient is processed (InputError: exit 2).

    With a ``pseudonymiser`` every patient_id is replaced by its keyed pseudonym as it is read.
    """
    if (manifest is None) == (features is None):
        raise InputError("give exactly one of --manifest and --features")
    categorical = list(model.inputs.categorical)
    notes: list[str] = []
    originals: list[str] = []
    clin: pd.DataFrame | None = None
    if clinical is not None:
        clin = _read_table(Path(clinical), "clinical table", categorical)
        clin_ids = _patient_ids(clin, "clinical table", Path(clinical))
        if pseudonymiser is not None:
            clin_ids = clin_ids.map(pseudonymiser)
        clin.index = pd.Index(clin_ids, name=ID)

    if features is not None:
        path = Path(features)
        table = _read_table(path, "features file", categorical)
        ids = _patient_ids(table, "features file", path)
        if pseudonymiser is not None:
            originals = list(ids.astype(str))
            ids = ids.map(pseudonymiser)
        table = table.reset_index(drop=True)
        # Imaging features come from the features file; covariates from --clinical if given.
        own = [c for c in model.inputs.names if c in table.columns]
        needed_from_clin = [] if clin is None else [c for c in model.covariates if c in clin]
        own = [c for c in own if c not in needed_from_clin]
        what = "features file and clinical table" if clin is not None else "features file"
        pool = list(table.columns)
        kind: Literal["features", "manifest"] = "features"
        records = None
        base_dir = None
    elif manifest is not None:
        from refracture.manifest import IMAGE_COLUMNS, LEVEL_COLUMNS, read_manifest

        path = Path(manifest)
        table = read_manifest(path).reset_index(drop=True)
        if pseudonymiser is not None:
            originals = list(table[ID].astype(str))
            table = pseudonymiser.table(table)
        ids = table[ID].astype(object)
        structural = {"site", *IMAGE_COLUMNS, *LEVEL_COLUMNS}
        needed_from_clin = [] if clin is None else [c for c in model.covariates if c in clin]
        own = [c for c in model.covariates if c in table.columns and c not in needed_from_clin]
        what = "manifest and clinical table" if clin is not None else "manifest"
        pool = [c for c in table.columns if c not in structural]
        kind = "manifest"
        records = table.to_dict("records") if model.uses_images else None
        base_dir = path.parent.resolve()

    available = [*own, *needed_from_clin]
    if kind == "manifest" and model.uses_images:
        available += list(model.bundle["imaging_features"])  # measured on the images
    pool = [*pool, *([] if clin is None else list(clin.columns))]
    missing, unexpected = missing_and_unexpected(available, model.bundle)
    if missing:
        _, unexpected = missing_and_unexpected(list(dict.fromkeys(pool)), model.bundle)
        msg = columns_message(what, missing, unexpected)
        if kind == "manifest" and clin is None:
            msg += "; give the covariates with --clinical"
        raise InputError(msg)

    rows = pd.DataFrame({ID: ids.to_numpy(dtype=object)})
    for c in own:
        rows[c] = table[c].to_numpy()
    pre_error = np.full(len(rows), "", dtype=object)
    if clin is not None and clinical is not None and needed_from_clin:
        found = pd.Index(rows[ID]).isin(clin.index)
        pre_error[~found] = f"no row in the clinical table {Path(clinical).name}"
        picked = clin[needed_from_clin].reindex(rows[ID])  # NaN rows for unknown patients
        for c in needed_from_clin:
            rows[c] = picked[c].to_numpy()
        extra = int((~clin.index.isin(rows[ID])).sum())
        if extra:
            notes.append(
                f"{extra} patient(s) of the clinical table are not in the input; not scored"
            )
    if kind == "manifest" and model.uses_images:
        for c in model.bundle["imaging_features"]:
            rows[c] = np.nan
    digest = _digest(kind, path, None if clinical is None else Path(clinical))
    if pseudonymiser is not None:
        digest = _digest(digest, "pseudonymised")
    return ScoreInput(kind, rows, pre_error, digest, records, base_dir, notes, originals)


# --- scoring one chunk --------------------------------------------------------------------


TEXT_COLUMNS = frozenset(
    {ID, "risk_group", "model_name", "model_version", "status", "error", "warnings"}
)


def normalise(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fixed column order and dtypes, so a chunk computed now, one read back from the
    checkpoint and one read back from an earlier output file write the same bytes."""
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        values = df[c].to_numpy() if c in df else np.full(n, np.nan)
        if c not in TEXT_COLUMNS:
            if values.dtype != np.float64:
                values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
            out[c] = values
            continue
        values = np.asarray(values, dtype=object)
        blank = pd.isna(values)
        if c == "risk_group":  # no group for an error row: None (empty in CSV, null in Parquet)
            blank |= values == ""
            out[c] = np.where(blank, None, values)
        else:
            out[c] = np.where(blank, "", values) if blank.any() else values
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise '; '-join of two text arrays, skipping empty parts."""
    a = a.astype(str)
    b = b.astype(str)
    both = (a != "") & (b != "")
    return np.where(both, np.char.add(np.char.add(a, "; "), b), np.char.add(a, b)).astype(object)


def score_rows(
    model: ScoringModel,
    rows: pd.DataFrame,
    pre_error: np.ndarray,
    extra_warnings: np.ndarray | None,
    *,
    explain: bool,
) -> pd.DataFrame:
    """Score one chunk: rows with a ``pre_error`` are error rows as they are; the others go
    through :func:`predict_frame` (per-row checks, then one vectorised prediction)."""
    columns = model.columns(explain)
    risk_col = risk_column(model.bundle["horizon_days"])
    n = len(rows)
    out: dict[str, np.ndarray] = {
        ID: rows[ID].to_numpy(dtype=object),
        risk_col: np.full(n, np.nan),
        "risk_group": np.full(n, None, dtype=object),
        "linear_predictor": np.full(n, np.nan),
        "model_name": np.full(n, model.label, dtype=object),
        "model_version": np.full(n, model.version, dtype=object),
        "status": np.full(n, "error", dtype=object),
        "error": np.asarray(pre_error, dtype=object).copy(),
        "warnings": np.full(n, "", dtype=object),
    }
    for c in columns[len(out) :]:
        out[c] = np.full(n, np.nan)
    todo = np.flatnonzero(np.asarray(pre_error) == "")
    if len(todo):
        pred = predict_frame(
            model.pipeline, model.bundle, rows.iloc[todo].reset_index(drop=True), explain=explain
        )
        for c in columns:
            if c != ID and c in pred:
                out[c][todo] = pred[c].to_numpy()
        if explain and (pred["status"] == "ok").any():
            out["lp_reference"][todo] = np.where(
                pred["status"].to_numpy() == "ok", model.pipeline.contribution_baseline, np.nan
            )
    if extra_warnings is not None:
        out["warnings"] = _join(np.asarray(extra_warnings, dtype=object), out["warnings"])
    return normalise(pd.DataFrame(out), columns)


def _qc_warnings(qc: dict[str, Any]) -> str:
    """Extraction QC worth a clinician's glance: converted units, resampled grids, small ROIs."""
    notes = []
    if qc.get("qc_pdff_converted"):
        notes.append(f"PDFF converted from {qc.get('qc_pdff_units')} to percent")
    if qc.get("qc_r2star_converted"):
        notes.append(f"R2* converted from {qc.get('qc_r2star_units')} to 1/s")
    if qc.get("qc_labels_resampled"):
        notes.append("label map resampled to the PDFF grid")
    if qc.get("qc_r2star_resampled"):
        notes.append("R2* map resampled to the PDFF grid")
    if qc.get("qc_small_roi"):
        notes.append(f"small ROI at {qc['qc_small_roi']}")
    return "; ".join(notes)


# --- chunks and the checkpoint ------------------------------------------------------------


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.refracture-partial"


def check_not_busy(folder: Path, out: Path) -> None:
    """Refuse to start while another live run on this machine writes the same output (two
    overlapping nightly jobs would otherwise clear each other's checkpoint)."""
    try:
        pid = int((folder / "pid").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return
    if pid == os.getpid():
        return
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return  # a run that was killed: its checkpoint is free to resume or replace
    except PermissionError:
        pass  # exists, owned by another user
    raise InputError(
        f"another refracture score run (process {pid}) is writing this output; wait for it, "
        f"or delete {folder} if that process is not a scoring run",
        file=out,
    )


class Checkpoint:
    """Finished chunks of an unfinished run: ``header.json`` plus Parquet parts, each written
    atomically, so a run killed at any moment leaves only whole parts behind."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.folder = folder
        self.header = header
        self.seq = 0

    def load(
        self, ids: np.ndarray, bounds: list[tuple[int, int]]
    ) -> tuple[dict[int, pd.DataFrame], str | None]:
        """Chunks of a matching earlier checkpoint, and a note when one was ignored."""
        path = self.folder / "header.json"
        if not path.is_file():
            return {}, None
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, "the checkpoint of an earlier run is unreadable; starting afresh"
        if (old.get("model_name"), old.get("model_version")) != (
            self.header["model_name"],
            self.header["model_version"],
        ):
            return {}, (
                f"the checkpoint of an earlier run is from model version "
                f"{old.get('model_version')} ({old.get('model_name')}), not "
                f"{self.header['model_version']}; ignored"
            )
        for key, why in (
            ("input_digest", "the input files changed"),
            ("columns", "the output columns differ (--explain)"),
            ("chunk_size", "the chunk size differs"),
            ("format", "it has another format"),
        ):
            if old.get(key) != self.header.get(key):
                return {}, f"the checkpoint of an earlier run was ignored: {why}"
        chunks: dict[int, pd.DataFrame] = {}
        for part in sorted(self.folder.glob("part-*.parquet")):  # later parts win
            try:
                df = pd.read_parquet(part)
            except Exception:  # noqa: BLE001 - a damaged part is recomputed, not fatal
                continue
            self.seq = max(self.seq, int(part.stem.split("-")[1]) + 1)
            for k, rows in df.groupby("_chunk", sort=False):
                k = int(k)
                if k >= len(bounds):
                    continue
                a, b = bounds[k]
                rows = rows.drop(columns="_chunk").reset_index(drop=True)
                if len(rows) == b - a and (rows[ID].to_numpy(dtype=object) == ids[a:b]).all():
                    chunks[k] = rows
        return chunks, None

    def start(self, keep: bool) -> None:
        """Create the folder (clearing it unless ``keep``), write the header and our PID."""
        if not keep and self.folder.exists():
            shutil.rmtree(self.folder)
            self.seq = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "header.json") as tmp:
            tmp.write_text(json.dumps(self.header, indent=1), encoding="utf-8")
        with atomic_path(self.folder / "pid") as tmp:
            tmp.write_text(str(os.getpid()), encoding="utf-8")

    def write(self, chunks: list[tuple[int, pd.DataFrame]]) -> None:
        if not chunks:
            return
        part = pd.concat([df.assign(_chunk=np.int64(k)) for k, df in chunks], ignore_index=True)
        with atomic_path(self.folder / f"part-{self.seq:06d}.parquet") as tmp:
            part.to_parquet(tmp, index=False)
        self.seq += 1

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_previous_output(
    out: Path, columns: list[str], model: ScoringModel
) -> tuple[dict[str, int], pd.DataFrame | None, str | None]:
    """An earlier complete output: its ok rows of the same model version, by patient."""
    if not out.is_file():
        return {}, None, None
    text = TEXT_COLUMNS
    try:
        if out.suffix.lower() == ".parquet":
            prev = pd.read_parquet(out)
        else:
            prev = pd.read_csv(
                out,
                dtype={c: str for c in text},
                keep_default_na=False,
                na_values={c: [""] for c in columns if c not in text},
                float_precision="round_trip",
            )
    except Exception:  # noqa: BLE001
        return {}, None, f"the earlier output {out.name} is unreadable; not reused"
    if list(prev.columns) != columns:
        return {}, None, f"the earlier output {out.name} has other columns; not reused"
    prev = normalise(prev, columns)
    same = (
        (prev["status"] == "ok")
        & (prev["model_version"] == model.version)
        & (prev["model_name"] == model.label)
    )
    if not same.any():
        return {}, None, f"the earlier output {out.name} has no rows of this model version"
    prev = prev[same.to_numpy()].reset_index(drop=True)
    return {pid: i for i, pid in enumerate(prev[ID])}, prev, None


# --- the batch ----------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """What :func:`score` did: the output file, its rows and a tally."""

    out: Path
    scores: pd.DataFrame
    model: ScoringModel
    n_reused: int
    notes: list[str]
    seconds: float

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


def score(
    model: str | ScoringModel,
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    clinical: str | Path | None = None,
    features: str | Path | None = None,
    resume: bool = False,
    jobs: int = 2,
    explain: bool = False,
    cache_dir: str | Path | None = Path(".refracture-cache"),
    chunk_size: int | None = None,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    pseudonymise: bool = False,
) -> ScoreResult:
    """Score every input patient and write ``out`` (CSV or Parquet by extension).

    ``model`` is an MLflow model URI or an already loaded :class:`ScoringModel`. Everything
    that would stop every patient is checked first and raises InputError (exit 2); after that
    no single patient can stop the batch. See the module docstring for resume and chunking.
    """
    start = time.perf_counter()
    out = Path(out)
    _table_suffix(out)
    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    if chunk_size is not None and chunk_size < 1:
        raise InputError("--chunk-size must be at least 1")
    if (manifest is None) == (features is None):
        raise InputError("give exactly one of --manifest and --features")
    named = {"manifest": manifest, "clinical table": clinical, "features file": features}
    for what, path in named.items():  # before the few seconds of loading the model
        if path is not None and not Path(path).is_file():
            raise InputError(f"{what} not found", file=path)
    inputs = [Path(p).resolve() for p in named.values() if p is not None]
    if out.resolve() in inputs:
        raise InputError("the output would overwrite an input; choose another --out", file=out)
    check_not_busy(checkpoint_dir(out), out)
    pseudonymiser = Pseudonymiser.from_env() if pseudonymise else None
    if isinstance(model, str):
        model = load_model(model, tracking_uri)
    from refracture.models import MODELS

    capable = MODELS.get(model.bundle["model"])
    if explain and not (capable and capable.supports_contributions):
        raise InputError(
            f"--explain needs a model with per-term contributions (cox, logistic); "
            f"'{model.uri}' is {model.bundle['model']}"
        )
    data = read_input(
        model,
        manifest=None if manifest is None else Path(manifest),
        clinical=None if clinical is None else Path(clinical),
        features=None if features is None else Path(features),
        pseudonymiser=pseudonymiser,
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
        index, prev, note = _read_previous_output(out, columns, model)
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
    n_reused = sum(len(df) for df in done.values())
    checkpoint.start(keep=keep)

    todo = [k for k in range(len(bounds)) if k not in done]
    if images:
        computed = _image_chunks(
            model, data, bounds, todo, jobs=jobs, cache_dir=cache_dir, explain=explain,
            progress=progress,
        )  # fmt: skip
        flush_every = 0.0
    else:
        computed = _row_chunks(model, data, bounds, todo, explain=explain)
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
    return ScoreResult(out, scores, model, n_reused, notes, time.perf_counter() - start)


def _row_chunks(
    model: ScoringModel,
    data: ScoreInput,
    bounds: list[tuple[int, int]],
    todo: list[int],
    *,
    explain: bool,
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Chunks whose model inputs are all in the input table (features file, clinical-only)."""
    for k in todo:
        a, b = bounds[k]
        rows = data.rows.iloc[a:b]
        yield k, score_rows(model, rows, data.pre_error[a:b], None, explain=explain)


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
) -> Iterator[tuple[int, pd.DataFrame]]:
    """Measure the images of the patients in ``todo`` chunks (one process pool for the whole
    batch), then score each chunk as soon as all its patients are measured."""
    from refracture.config import ExtractionConfig
    from refracture.extract import iter_extract

    assert data.manifest is not None
    config = ExtractionConfig(**model.bundle["extraction"])
    # Patients already known to be errors (no clinical row) need no image work.
    positions = [p for k in todo for p in range(*bounds[k]) if data.pre_error[p] == ""]
    stream = iter_extract(
        [data.manifest[p] for p in positions], config, jobs=jobs, cache_dir=cache_dir
    )
    if progress and positions:
        progress("measuring images", 0, len(positions))  # before the scoring bar
    return _score_measured(model, data, bounds, todo, stream, len(positions), explain, progress)


def _score_measured(
    model: ScoringModel,
    data: ScoreInput,
    bounds: list[tuple[int, int]],
    todo: list[int],
    stream: Iterator[tuple[int, Any, tuple[str, str] | None]],
    n_total: int,
    explain: bool,
    progress: Progress | None,
) -> Iterator[tuple[int, pd.DataFrame]]:
    imaging = list(model.bundle["imaging_features"])
    prefix = f"{data.manifest_dir}{os.sep}" if data.manifest_dir else None
    n_measured = 0
    for k in todo:
        a, b = bounds[k]
        rows = data.rows.iloc[a:b].copy()
        pre_error = data.pre_error[a:b].copy()
        qc_warn = np.full(b - a, "", dtype=object)
        values = np.full((b - a, len(imaging)), np.nan)
        for i in range(b - a):
            if pre_error[i] != "":
                continue
            _, result, error = next(stream)
            n_measured += 1
            if progress:
                progress("measuring images", n_measured, n_total)
            if result is None or error is not None:
                stage, message = error or ("extract", "no result")
                # The row names the patient already; paths as the manifest wrote them
                # (relative to its folder), not the absolute ones.
                message = message.removeprefix(f"patient {rows[ID].iloc[i]}: ")
                message = message.replace(prefix, "") if prefix else message
                pre_error[i] = f"image {stage} failed: {message}"
                continue
            values[i] = [result.features.get(c, math.nan) for c in imaging]
            qc_warn[i] = _qc_warnings(result.qc)
        rows[imaging] = values
        yield k, score_rows(model, rows, pre_error, qc_warn, explain=explain)
