"""Benchmark ``refracture demo``: wall and CPU time of the whole demo and of each stage, as JSON.

    python scripts/bench_demo.py [--n 560] [--new 50] [--jobs 2] [--bootstrap 200]
                                 [--workdir DIR] [--reference BENCH.json]

A stage runs from its first progress report to the first report of the next stage; time
before the first report of a stage (a model's final fit, the added-value bootstrap) counts
to the stage that was running. CPU time is that of this process and all its worker processes
(read from /proc on Linux; elsewhere this process only), so it does not depend on how busy
the machine is the way wall time does. Target (issue 21): the whole demo under 5 minutes on an
idle 2-core machine with the default n. ``--reference`` takes the JSON of an earlier run (the
code before a change) and prints the ratios of this run's CPU times to it; ``--workdir`` keeps
the outputs (for ``scripts/compare_runs.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu() -> float:
    """CPU seconds of this process and its descendants, alive or finished: utime + stime +
    cutime + cstime over this process and its living descendants (a finished child's time is
    in its parent's cutime/cstime), as tests/cpu_meter.py counts. This process only where
    there is no /proc."""
    if not os.path.isdir("/proc"):
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


class StageClock:
    """A progress callback that adds wall and CPU time to the stage that is running."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.current = "start-up"
        self.t0, self.c0 = time.perf_counter(), tree_cpu()

    def _close(self) -> None:
        t, c = time.perf_counter(), tree_cpu()
        self.wall[self.current] = self.wall.get(self.current, 0.0) + t - self.t0
        self.cpu[self.current] = self.cpu.get(self.current, 0.0) + c - self.c0
        self.t0, self.c0 = t, c

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.current:
            self._close()
            self.current = stage

    def finish(self) -> None:
        self._close()


def _ratios(now: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(now[k] / before[k], 3) for k in now if before.get(k)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--new", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--reference", type=Path, default=None)
    args = ap.parse_args()
    from refracture.cli.demo import run_demo  # tree_cpu alone serves other benchmarks
    from refracture.tracking import quiet_mlflow

    quiet_mlflow()
    clock = StageClock()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        t0, c0 = time.perf_counter(), tree_cpu()
        result = run_demo(workdir, n=args.n, n_new=args.new, jobs=args.jobs,
                          bootstrap=args.bootstrap, progress=clock)  # fmt: skip
        clock.finish()
        wall, cpu = time.perf_counter() - t0, tree_cpu() - c0
    out = {
        "n": args.n, "new": args.new, "jobs": args.jobs, "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "bootstrap": args.bootstrap or 200, "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1), "target_seconds": 300,
        "stages_seconds": {k: round(v, 1) for k, v in clock.wall.items()},
        "stages_cpu_seconds": {k: round(v, 1) for k, v in clock.cpu.items()},
        "risk_vs_truth_spearman": round(result.risk_vs_truth, 3),
    }  # fmt: skip
    if args.reference is not None:
        ref = json.loads(args.reference.read_text())
        out["reference"] = {"seconds": ref["seconds"], "cpu_seconds": ref["cpu_seconds"]}
        out["cpu_ratio_to_reference"] = round(cpu / ref["cpu_seconds"], 3)
        out["stages_cpu_ratio_to_reference"] = _ratios(
            out["stages_cpu_seconds"], ref["stages_cpu_seconds"]
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
