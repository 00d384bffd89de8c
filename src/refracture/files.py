"""Atomic file output and content hashing.

Every output a command writes goes to a temporary file in the destination folder and is
renamed over the final name only when complete, so an interrupted run never leaves a
half-written file under a final name. A run killed mid-write (SIGKILL, power loss) leaves its
temporary ``.<name>.<random>.tmp`` behind; the next write of the same file removes it once it
is older than :data:`STALE_TMP_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

_CHUNK = 1 << 20
#: A temporary file this old is a killed run's leftover: every write here takes seconds, so no
#: live writer holds one for ten minutes.
STALE_TMP_SECONDS = 600.0
# mkstemp(prefix=".<name>.", suffix=".tmp") adds 8 characters from [a-z0-9_]
_TMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
# Stale temporary files per folder and target name, listed once per process: a cache folder
# can hold tens of thousands of files, and listing it on every write would cost more than
# the writes.
_stale_tmp: dict[Path, dict[str, list[Path]]] = {}
_stale_lock = threading.Lock()


def _list_stale(folder: Path, max_age_s: float) -> dict[str, list[Path]]:
    cutoff = time.time() - max_age_s
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _TMP_NAME.fullmatch(entry.name)
                if match is None:
                    continue
                with contextlib.suppress(OSError):  # vanished while we looked
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        found.setdefault(match.group(1), []).append(Path(entry.path))
    except OSError:  # no folder yet, or not readable: nothing to sweep
        pass
    return found


def sweep_stale_tmp(
    path: str | Path, max_age_s: float = STALE_TMP_SECONDS, *, refresh: bool = False
) -> list[Path]:
    """Remove the temporary files of ``path`` that killed runs left behind; return them.

    Only ``.<name>.<8 characters>.tmp`` files of this very ``path`` older than ``max_age_s``
    go: other files, and a concurrent writer's recent temporary file, are left alone. The
    folder is listed on its first sweep in this process (``refresh`` lists it again).
    """
    path = Path(path)
    folder = path.parent.absolute()
    with _stale_lock:
        if refresh or folder not in _stale_tmp:
            _stale_tmp[folder] = _list_stale(folder, max_age_s)
        stale = _stale_tmp[folder].pop(path.name, [])
    removed = []
    for old in stale:
        try:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except OSError:  # another process swept it first, or it is not ours to remove
            continue
        removed.append(old)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Stale temporary files of the same ``path`` (see :func:`sweep_stale_tmp`) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; outputs get the usual permissions (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_table(path: str | Path, df: pd.DataFrame) -> Path:
    """Write a CSV or Parquet file (by extension) atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(
                f"unsupported table format '{suffix}' for {path} (use .csv or .parquet)"
            )
    return path


def hash_file(path: str | Path, h: Any | None = None) -> str:
    """SHA-256 of a file's bytes (or of every file in a folder, in name order)."""
    path = Path(path)
    h = h or hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """A stable hash of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def shipped_file(folder: str, name: str) -> Path | None:
    """A file the project ships from its top-level ``folder`` (``models``, ``configs``).

    From a source checkout or an editable install it is ``<repo>/<folder>/<name>``; a wheel
    carries the folder inside the package as ``refracture/_<folder>/`` (pyproject.toml,
    force-include). None when neither exists.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1] / folder / name, package / f"_{folder}" / name):
        if candidate.is_file():
            return candidate
    return None
