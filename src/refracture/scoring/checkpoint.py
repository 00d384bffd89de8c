"""The checkpoint of an unfinished scoring run, and reuse of an earlier output.

Rows are processed in fixed chunks of input positions. Finished chunks go to a hidden folder
beside the output (``.<out name>.refracture-partial``, one Parquet part at a time, each written
atomically), so a run killed at any moment leaves only whole parts behind and ``--resume``
continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.errors import InputError
from refracture.files import atomic_path
from refracture.ids import PATIENT_ID
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import TEXT_COLUMNS, normalise

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "check_not_busy",
    "checkpoint_dir",
    "chunk_bounds",
    "read_previous_output",
]

CHECKPOINT_FORMAT = 1
ID = PATIENT_ID


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


def read_previous_output(
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
