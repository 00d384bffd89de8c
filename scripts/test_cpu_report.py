"""Sum the per-test CPU seconds written by tests/cpu_meter.py, per test and per file (JSON).

Usage: ``REFRACTURE_TEST_CPU=/tmp/cpu pytest -n 2`` then
``python scripts/test_cpu_report.py /tmp/cpu [--top 30]``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    per_test: dict[str, float] = defaultdict(float)
    per_file: dict[str, float] = defaultdict(float)
    per_worker: dict[str, float] = defaultdict(float)
    wall_worker: dict[str, float] = defaultdict(float)
    for path in sorted(args.folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            per_test[f"{row['nodeid']} [{row['phase']}]"] += row["cpu"]
            per_file[row["nodeid"].split("::")[0]] += row["cpu"]
            per_worker[path.stem] += row["cpu"]
            wall_worker[path.stem] += row["wall"]
    top = sorted(per_test.items(), key=lambda kv: -kv[1])[: args.top]
    report = {
        "cpu_total_s": round(sum(per_file.values()), 1),
        "cpu_per_worker_s": {k: round(v, 1) for k, v in per_worker.items()},
        "wall_per_worker_s": {k: round(v, 1) for k, v in wall_worker.items()},
        "files": {k: round(v, 1) for k, v in sorted(per_file.items(), key=lambda kv: -kv[1])},
        "top_tests": {k: round(v, 1) for k, v in top},
    }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
