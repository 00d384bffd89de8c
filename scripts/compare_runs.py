"""Compare two `refracture demo` (or `train`) folders, or two `refracture extract` output
folders: are the outputs the same?

    python scripts/compare_runs.py BEFORE_DIR AFTER_DIR

For two extraction folders (holding features.parquet): features.parquet, vertebrae.parquet and
qc.csv must be byte-identical. For two demo or train folders: the same three files of the
latest run's extraction, every metric logged to MLflow by every model run (same names, same
values; NaN equals NaN), and the summary tables. Prints JSON; exit code 1 when anything
differs. Used to prove that a refactoring changed no result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sqlite3
import sys
from pathlib import Path


def _latest_run_dir(root: Path) -> Path:
    runs = sorted((root / "refracture-runs").iterdir(), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no refracture-runs folder under {root}")
    return runs[-1]


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _metrics(db: Path, parent: str) -> dict[str, dict[str, float]]:
    """run name -> {metric: last value} for the parent run and its nested runs."""
    con = sqlite3.connect(db)
    try:
        runs = con.execute(
            "SELECT r.run_uuid, r.name FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'mlflow.parentRunId' AND t.value = ?",
            (parent,),
        ).fetchall()
        runs.append((parent, "parent"))
        out: dict[str, dict[str, float]] = {}
        for run_id, name in runs:
            rows = con.execute(
                "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,)
            ).fetchall()
            out[name] = {k: (math.nan if nan else float(v)) for k, v, nan in rows}
        return out
    finally:
        con.close()


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


#: The extraction's outputs that must not change by a byte.
EXTRACTION_FILES = ("features.parquet", "vertebrae.parquet", "qc.csv")


def _same_files(a: Path, b: Path, names: tuple[str, ...], prefix: str = "") -> dict:
    out = {}
    for name in names:
        ha, hb = _sha(a / name), _sha(b / name)
        out[prefix + name] = {"identical": ha is not None and ha == hb, "before": ha, "after": hb}
    return out


def compare_extractions(before: Path, after: Path) -> dict:
    """Two ``refracture extract`` output folders: the three tables byte for byte."""
    files = _same_files(before, after, EXTRACTION_FILES)
    return {"files": files, "identical": all(f["identical"] for f in files.values())}


def compare(before: Path, after: Path) -> dict:
    if (before / "features.parquet").is_file():
        return compare_extractions(before, after)
    run_a, run_b = _latest_run_dir(before), _latest_run_dir(after)
    report: dict = {"before_run": run_a.name, "after_run": run_b.name, "files": {}}
    report["files"].update(
        _same_files(run_a / "extraction", run_b / "extraction", EXTRACTION_FILES, "extraction/")
    )
    # the summary table holds each run's own MLflow run IDs: compare everything else
    import pandas as pd

    sa, sb = (pd.read_csv(r / "summary.csv").drop(columns="run_id") for r in (run_a, run_b))
    same = sa.shape == sb.shape and bool(sa.equals(sb))
    report["files"]["summary.csv (without run_id)"] = {"identical": same}
    ma = _metrics(before / "mlflow.db", run_a.name)
    mb = _metrics(after / "mlflow.db", run_b.name)
    diffs = []
    n = 0
    for run in sorted(set(ma) | set(mb)):
        a, b = ma.get(run, {}), mb.get(run, {})
        for key in sorted(set(a) | set(b)):
            n += 1
            if key not in a or key not in b or not _same(a[key], b[key]):
                diffs.append({"run": run, "metric": key, "before": a.get(key), "after": b.get(key)})
    report["metrics_compared"] = n
    report["metric_differences"] = diffs
    report["identical"] = not diffs and all(f["identical"] for f in report["files"].values())
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    report = compare(args.before, args.after)
    print(json.dumps(report, indent=2, default=str))
    sys.exit(0 if report["identical"] else 1)


if __name__ == "__main__":
    main()
