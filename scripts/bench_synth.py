"""Benchmark ``refracture synth``: seconds for a full cohort, printed as JSON.

    python scripts/bench_synth.py [--n 560] [--jobs 2] [--format nifti]

Reports wall time for the cohort, patients per second, the share spent simulating the tables
and the time to draw one patient's maps without writing them (the generator alone), so the
file-writing cost is visible. Target (issue 2): 560 patients in under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from refracture.synth import anatomy_of, simulate_cohort, write_cohort
from refracture.synth.phantom import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--format", default="nifti")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cohort = simulate_cohort(args.n, 4, 0)
    t_tables = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_gen = min(20, args.n)
    for i in range(n_gen):
        generate(anatomy_of(cohort, i, 0))
    t_generate = (time.perf_counter() - t0) / n_gen

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_cohort(tmp, n=args.n, seed=0, image_format=args.format, jobs=args.jobs)
        wall = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    print(
        json.dumps(
            {
                "n": args.n,
                "jobs": args.jobs,
                "format": args.format,
                "cpus": os.cpu_count(),
                "seconds": round(wall, 2),
                "patients_per_second": round(args.n / wall, 2),
                "seconds_tables": round(t_tables, 3),
                "seconds_draw_one_patient": round(t_generate, 4),
                "mb_on_disk": round(size / 1e6, 1),
                "target_seconds": 120,
            }
        )
    )


if __name__ == "__main__":
    main()
