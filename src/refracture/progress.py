"""The one shape of progress reporting: ``progress(stage, done, total)``.

Library functions take an optional :class:`Progress` and call it as work advances; only the
command line (:mod:`refracture.cli.terminal`) turns the calls into progress bars, so the library
never prints and works the same from a script, a notebook or a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Progress", "Ticker", "relabel", "stage_ticker"]


class Progress(Protocol):
    """Called as ``progress(stage, done, total)``; ``stage`` names the work (a bar per stage)."""

    def __call__(self, stage: str, done: int, total: int) -> None: ...


#: A counter for one stage: ``tick()`` advances by one.
Ticker = Callable[[], None]


def stage_ticker(progress: Progress | None, stage: str, total: int) -> Ticker:
    """Announce ``stage`` at 0 of ``total`` and return a function that advances it by one."""
    if progress is None:
        return lambda: None
    done = [0]
    progress(stage, 0, total)

    def tick() -> None:
        done[0] += 1
        progress(stage, done[0], total)

    return tick


def relabel(progress: Progress | None, stage: str) -> Progress | None:
    """``progress`` with every stage shown as ``stage`` (one bar for a sub-step)."""
    if progress is None:
        return None
    target = progress

    def relabelled(_stage: str, done: int, total: int) -> None:
        target(stage, done, total)

    return relabelled
