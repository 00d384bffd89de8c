"""Benchmark ``refracture demo``: wall time of the whole demo and of each stage, as JSON.

    python scripts/bench_demo.py [--n 560] [--new 50] [--jobs 2] [--bootstrap 200]

Stage times run from a stage's first progress report to its last (stages overlap little).
Target (issue 7): the whole demo under 10 minutes on 2 cores with the default n.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from refracture.cli.demo import run_demo
from refracture.tracking import quiet_mlflow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--new", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=None)
    args = ap.parse_args()
    quiet_mlflow()
    spans: dict[str, list[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        spans.setdefault(stage, [now, now])[1] = now

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_demo(tmp, n=args.n, n_new=args.new, jobs=args.jobs,
                          bootstrap=args.bootstrap, progress=progress)  # fmt: skip
        wall = time.perf_counter() - t0
    print(json.dumps({
        "n": args.n, "new": args.new, "jobs": args.jobs, "cpus": os.cpu_count(),
        "bootstrap": args.bootstrap or 200, "seconds": round(wall, 1),
        "target_seconds": 600,
        "stages": {k: round(v[1] - v[0], 1) for k, v in spans.items()},
        "risk_vs_truth_spearman": round(result.risk_vs_truth, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
