"""Warm worker processes for ``extract --jobs N``: forked with the extraction modules imported.

A fresh Python worker spends 1-1.5 s of CPU importing pandas, nibabel, pydicom, SciPy and
SimpleITK before it measures anyone: at 120 patients on 2 cores that alone held ``--jobs 2`` to
1.67 times ``--jobs 1``. Here the workers are forked from a fork server (multiprocessing's
"forkserver") that imported :data:`PRELOAD` once, so each starts in milliseconds with
everything loaded. :func:`warm` starts the server in the background as soon as a caller knows
it will use workers, while it reads the manifest.

Workers never import the caller's ``__main__``: plain multiprocessing re-runs the main script
of the caller in every worker, which a script without an ``if __name__ == "__main__":`` guard,
a notebook or stdin does not survive. :class:`_Popen` sends the worker everything the standard
library's fork-server start sends except the main module (the tasks name only refracture
functions, so no worker needs it).

Patients travel in chunks of a few (:func:`chunk_size`), so the round trips do not cost more
than the work, and the chunks shrink to one patient towards the end of the batch (guided
scheduling, :func:`parts`), so no worker is left alone with a full chunk while the others wait;
results come back in task order with a bounded number of chunks in flight.
A worker that dies (a crash in a native reader, the out-of-memory killer) takes the chunks in
flight with it: those patients are run again one at a time in a fresh pool, so only the patient
that kills a worker on its own becomes an error row.

The fork server keeps the environment variables it started with; the tasks carry whatever
else a patient needs (the working folder and ``sys.path`` are the caller's at each start).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any, TypeVar

__all__ = ["PRELOAD", "available", "chunk_size", "map_ordered", "parts", "shutdown", "warm"]

#: Modules the fork server imports once, so workers start with them (everything a patient needs).
PRELOAD = ("refracture.features.cohort",)
#: Patients per task, at most; chunks in flight per worker.
MAX_CHUNK = 4
AHEAD_PER_WORKER = 3

T = TypeVar("T")
R = TypeVar("R")


class _Popen(popen_forkserver.Popen):
    """The standard library's fork-server start, without the caller's main module."""

    def _launch(self, process_obj: Any) -> None:  # the stdlib's, with one line added
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in ("init_main_from_name", "init_main_from_path"):
            prep_data.pop(key, None)  # the one change: workers do not import __main__
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


class _Context(context.ForkServerContext):
    Process = _Process  # type: ignore[assignment]


_lock = threading.Lock()
_pool: dict[str, Any] = {"executor": None, "workers": 0}


def available() -> bool:
    """Whether this platform has a fork server (Linux, macOS; not Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def warm() -> None:
    """Start the fork server and its imports in the background; returns at once.

    Call it when workers will be needed, before other work (reading the manifest): the imports
    then happen on another core meanwhile. Harmless when the server already runs.
    """
    if multiprocessing.parent_process() is not None or not available():
        return  # a worker does not start servers of its own
    with _lock:
        ctx = _Context()
        ctx.set_forkserver_preload(list(PRELOAD))
        forkserver.ensure_running()


def _executor(workers: int) -> ProcessPoolExecutor:
    """The module's pool of ``workers`` processes, started (or resized) when needed."""
    with _lock:
        if _pool["executor"] is None or _pool["workers"] != workers:
            if _pool["executor"] is not None:
                _pool["executor"].shutdown(wait=True)
            _pool["executor"] = ProcessPoolExecutor(
                workers, mp_context=_Context(), initializer=_worker_init
            )
            _pool["workers"] = workers
        return _pool["executor"]


def _worker_init() -> None:
    """Ctrl-C is the main process's to handle (it stops the pool): workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def shutdown() -> None:
    """Stop the pool's workers (a new one starts when needed)."""
    with _lock:
        if _pool["executor"] is not None:
            _pool["executor"].shutdown(wait=True, cancel_futures=True)
        _pool["executor"], _pool["workers"] = None, 0


def chunk_size(n_items: int, workers: int) -> int:
    """Patients in the next task when ``n_items`` are left: up to :data:`MAX_CHUNK`, a quarter
    of each worker's share of what is left, at least one (the last task of a worker is what the
    others may wait for)."""
    return max(1, min(MAX_CHUNK, -(-n_items // (4 * max(workers, 1)))))


def parts(items: list[T], workers: int) -> list[list[T]]:
    """``items`` cut into consecutive tasks of :func:`chunk_size` of what is left: full chunks
    first, single patients at the end (guided scheduling)."""
    out, i = [], 0
    while i < len(items):
        k = chunk_size(len(items) - i, workers)
        out.append(items[i : i + k])
        i += k
    return out


def _run_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]


def map_ordered(
    fn: Callable[[T], R],
    items: list[T],
    workers: int,
    *,
    on_lost: Callable[[T, str], R],
) -> Iterator[R]:
    """``fn(item)`` for every item, computed by ``workers`` warm processes, in item order.

    ``fn`` must not raise (it returns its errors). When a worker dies, the items of every task
    then in flight are run again one at a time; ``on_lost(item, message)`` is the result of an
    item whose worker died while it ran alone. Without a fork server (Windows) joblib's loky
    workers run the items.
    """
    if not available():  # no fork server (Windows): loky's fresh workers, one item per task
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=workers, backend="loky", return_as="generator")
        yield from run(delayed(fn)(item) for item in items)
        return
    warm()
    todo = deque(parts(items, workers))
    ahead = AHEAD_PER_WORKER * workers
    pending: deque[tuple[list[T], Future]] = deque()
    suspects: deque[T] = deque()  # after a worker died: one at a time, nothing else running
    while todo or pending or suspects:
        if suspects:
            item = suspects.popleft()
            try:
                results = _executor(workers).submit(_run_chunk, fn, [item]).result()
            except BrokenProcessPool:
                shutdown()
                results = [on_lost(item, "the worker process measuring it died")]
            yield from results
            continue
        while todo and len(pending) < ahead:
            part = todo.popleft()
            pending.append((part, _executor(workers).submit(_run_chunk, fn, part)))
        part, future = pending.popleft()
        try:
            results = future.result()
        except BrokenProcessPool:
            suspects.extend(item for p in [part, *(p for p, _ in pending)] for item in p)
            pending.clear()
            shutdown()
            continue
        yield from results
