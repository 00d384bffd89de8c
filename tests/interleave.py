"""Forced interleavings of concurrent registrations (threads), for the registry tests.

``registry.register`` calls ``checkpoint(event)`` at each protocol step; a ``Schedule`` turns
those calls into waits on other threads' steps, so a test can replay exactly the orders in
which two trains finishing at once could reach the registry.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from mlflow import MlflowClient

from refracture import registry

T = TypeVar("T")
Key = tuple[str, str, int]  # (who, event, n-th time)

SCHEDULES: dict[str, dict[Key, Key]] = {
    # both versions exist before either reads the registry
    "created together": {("A", "registered", 1): ("B", "registered", 1),
                         ("B", "registered", 1): ("A", "registered", 1)},
    "A then B": {("B", "start", 1): ("A", "done", 1)},
    "B then A": {("A", "start", 1): ("B", "done", 1)},
    # A reads before B exists, then writes after B has finished: A's first write is stale
    "A stale": {("B", "start", 1): ("A", "read", 1), ("A", "read", 1): ("B", "done", 1)},
    "B stale": {("A", "start", 1): ("B", "read", 1), ("B", "read", 1): ("A", "done", 1)},
    # A reads, then B creates and reads; A writes first, B second
    "crossed writes": {("B", "start", 1): ("A", "read", 1),
                       ("A", "read", 1): ("B", "read", 1),
                       ("B", "read", 1): ("A", "written", 1)},
}  # fmt: skip


def holder(client: MlflowClient, name: str, alias: str = "champion") -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - no alias (yet)
        return None


class Schedule:
    """``waits[(who, event, n)] = (other, event, m)``: ``who``, on its n-th ``event``, waits
    until ``other`` has passed its m-th ``event``. ``jitter`` adds random pauses. ``seen``
    records the alias holder each time a thread finished writing: (who, 'writtenN', holder)."""

    def __init__(
        self,
        waits: dict[Key, Key],
        *,
        client: MlflowClient,
        name: str,
        jitter: random.Random | None = None,
    ) -> None:
        self.waits, self.client, self.name, self.jitter = waits, client, name, jitter
        self.passed: dict[Key, threading.Event] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str | None]] = []

    def event(self, key: Key) -> threading.Event:
        with self.lock:
            return self.passed.setdefault(key, threading.Event())

    def hook(self, who: str) -> Callable[[str], None]:
        def checkpoint(event: str) -> None:
            with self.lock:
                n = self.counts[(who, event)] = self.counts.get((who, event), 0) + 1
            if event == "written":
                self.seen.append((who, f"written{n}", holder(self.client, self.name)))
            self.event((who, event, n)).set()
            wait = self.waits.get((who, event, n))
            if wait is not None:
                assert self.event(wait).wait(120), f"{who} waited for {wait} in vain"
            if self.jitter is not None:
                threading.Event().wait(self.jitter.uniform(0, 0.03))

        return checkpoint


def race(
    schedule: Schedule, run: Callable[[str, Callable[[str], None]], T], who: Iterable[str]
) -> dict[str, T]:
    """``run(who, checkpoint)`` in one thread per ``who``, under ``schedule``."""
    results: dict[str, T | BaseException] = {}

    def body(w: str) -> None:
        hook = schedule.hook(w)
        try:
            hook("start")
            results[w] = run(w, hook)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results[w] = err
        finally:
            schedule.event((w, "done", 1)).set()

    threads = [threading.Thread(target=body, args=(w,)) for w in who]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for w, r in results.items():
        assert not isinstance(r, BaseException), f"{w}: {r!r}"
    return results  # type: ignore[return-value]


def replay_of(client: MlflowClient, name: str, alias: str = "champion") -> registry.Replay:
    """The rule's answer for everything the registry holds now (no promotion in these tests)."""
    versions = [
        registry.VersionFacts.from_tags(int(mv.version), mv.tags, mv.description)
        for mv in client.search_model_versions(f"name = '{name}'")
    ]
    return registry.replay(versions, None, name=name, alias=alias)
