"""CPU seconds of every test phase, including its subprocesses, for finding the slow tests.

Wall times of a test suite on a shared 2-core machine vary with the load; CPU time does not.
With ``REFRACTURE_TEST_CPU=DIR`` each xdist worker appends one JSON line per test phase to
``DIR/<worker>.jsonl``: nodeid, phase (setup/call/teardown), cpu (seconds of this process and
every descendant, alive or reaped, during the phase) and wall. ``scripts/test_cpu_report.py``
sums them per test and per file. Hand-written: psutil is not a dependency, and the standard
library's ``resource`` misses children that are still alive (joblib's and Spark's workers).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """utime+stime+cutime+cstime summed over ``root`` and its living descendants (a reaped
    child's time is in its parent's cutime/cstime, so nothing is counted twice)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        cpu = sum(int(f) for f in fields[11:15]) / _TICK
        stats[int(entry)] = (ppid, cpu)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


class CpuMeter:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.out = (folder / f"{worker}.jsonl").open("a")

    def _measure(self, item: pytest.Item, phase: str):  # type: ignore[no-untyped-def]
        cpu0, wall0 = _tree_cpu(os.getpid()), time.perf_counter()
        yield
        row = {
            "nodeid": item.nodeid,
            "phase": phase,
            "cpu": round(_tree_cpu(os.getpid()) - cpu0, 3),
            "wall": round(time.perf_counter() - wall0, 3),
        }
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item):  # type: ignore[no-untyped-def]
        yield from self._measure(item, "setup")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):  # type: ignore[no-untyped-def]
        yield from self._measure(item, "call")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item):  # type: ignore[no-untyped-def]
        yield from self._measure(item, "teardown")


def register(config: pytest.Config) -> None:
    """Register the meter when ``REFRACTURE_TEST_CPU`` names a folder (from conftest.py)."""
    folder = os.environ.get("REFRACTURE_TEST_CPU")
    if folder:
        config.pluginmanager.register(CpuMeter(Path(folder)), "refracture-cpu-meter")
