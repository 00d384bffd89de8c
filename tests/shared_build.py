"""Build an expensive test input once per test session, whatever the number of xdist workers.

A session fixture is built once per worker process; for the trained model, the docs sandbox and
the cohorts that is the same minutes of CPU twice. :func:`built_once` gives every worker the
same folder under the session's base temporary folder: the first worker to ask builds it under
an exclusive lock, the others wait for the lock and find it built (the pattern pytest-xdist's
documentation recommends, with the standard library's ``fcntl`` instead of the filelock
package). A worker that failed to build leaves no ``.built`` mark, so the next one retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this session shares (the workers' own base's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]
) -> tuple[Path, T]:
    """``build(folder)`` run once per session for ``name``; its return value is pickled beside
    the folder so every worker gets an equal copy. Returns ``(folder, value)``."""
    root = session_root(tmp_path_factory)
    folder, done, value_file = root / name, root / f"{name}.built", root / f"{name}.pickle"
    with _locked(root / f"{name}.lock"):
        if not done.exists():
            if folder.exists():  # a worker failed half-way: start again
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            value = build(folder)
            value_file.write_bytes(pickle.dumps(value))
            done.touch()
            return folder, value
    return folder, pickle.loads(value_file.read_bytes())
