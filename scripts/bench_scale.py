"""Benchmark the Spark engine against the local engine; prints JSON.

* Extraction: ``--n-extract`` synthetic patients (default 560, the study's size) measured by
  ``extract_cohort(jobs=--jobs)`` and by ``extract_spark`` on each ``--master``, no cache.
* Scoring: a features Parquet of ``--n-score`` patients (default 1,000,000, resampled from
  the extracted cohort's covariates and features) scored by ``score`` and by ``score_spark``.

Every Spark output is checked against the local one (same rows and order, risks to 1e-12,
same errors and warnings). Spark's fixed costs are reported on their own: starting the session
(the JVM; later masters in the same process reuse it) and the first call (the executors'
Python workers start and load the model: a 1,000-row score); a command pays both once. The
timed runs follow them. On a shared machine compare the ratios, not the absolute speeds.

    python scripts/bench_scale.py                                  # full size, trains first
    python scripts/bench_scale.py --n-score 100000 --n-extract 40  # quick
    python scripts/bench_scale.py --master "local[1]" "local[2]"   # growth with executors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_score import train_small_model


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _same_scores(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or list(a.patient_id) != list(b.patient_id):
        return False
    for c in a.columns:
        if a[c].dtype == np.float64:
            x, y = a[c].to_numpy(), b[c].to_numpy()
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return False
            ok = ~np.isnan(x)
            if not np.allclose(x[ok], y[ok], rtol=1e-12, atol=0):
                return False
        elif a[c].fillna("").tolist() != b[c].fillna("").tolist():
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model URI (default: train a small model first)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI of --model")
    ap.add_argument("--n-score", type=int, default=1_000_000, help="patients scored")
    ap.add_argument("--n-extract", type=int, default=560, help="patients extracted")
    ap.add_argument("--n-train", type=int, default=90, help="patients to train on (no --model)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes of the local engine")
    ap.add_argument("--master", nargs="+", default=["local[2]"], help="Spark master(s)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temp dir)")
    args = ap.parse_args(argv)

    from refracture.engines import extract_spark, score_spark, spark_session
    from refracture.features import extract_cohort
    from refracture.scoring import load_model, score
    from refracture.synth import write_cohort

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri, tracking = args.model, args.tracking_uri
        if uri is None:
            uri, tracking = train_small_model(root, args.n_train, models="cox")
        model = load_model(uri, tracking)
        cohort = root / "cohort"
        write_cohort(cohort, n=args.n_extract, n_sites=4, seed=5, id_prefix="N", jobs=2)
        manifest = cohort / "manifest.csv"
        config = model.bundle.extraction

        local_x, local_x_s = _timed(
            extract_cohort, manifest, config, jobs=args.jobs, cache_dir=None
        )
        clinical = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str, "sex": str})
        imaging = list(model.inputs.imaging)
        pool = clinical.merge(local_x.features[["patient_id", *imaging]], on="patient_id")
        rng = np.random.default_rng(0)
        big = pool.iloc[rng.integers(0, len(pool), args.n_score)].reset_index(drop=True)
        big["patient_id"] = [f"B{i:07d}" for i in range(args.n_score)]
        features = root / "features.parquet"
        big.to_parquet(features, index=False)
        local_s, local_s_s = _timed(score, model, features=features, out=root / "local.parquet")

        warmup = root / "warmup.parquet"
        big.head(1000).to_parquet(warmup, index=False)
        spark_runs = {}
        for k, master in enumerate(args.master):
            t0 = time.perf_counter()
            with spark_session(master) as handle:
                start_s = time.perf_counter() - t0
                _, first_s = _timed(
                    score_spark, model, features=warmup, out=root / "w.parquet", handle=handle
                )
                spark_x, spark_x_s = _timed(
                    extract_spark, manifest, config, cache_dir=None, handle=handle
                )
                spark_s, spark_s_s = _timed(
                    score_spark,
                    model,
                    features=features,
                    out=root / "spark.parquet",
                    handle=handle,
                )
                cores = handle.parallelism
            same_x = spark_x.features.equals(local_x.features) and spark_x.errors.equals(
                local_x.errors
            )
            spark_runs[master] = {
                "cores": cores,
                "session_start_seconds": round(start_s, 1),
                "jvm_reused": k > 0,
                "first_call_seconds": round(first_s, 1),
                "extract_seconds": round(spark_x_s, 1),
                "extract_patients_per_second": round(args.n_extract / spark_x_s, 3),
                "extract_speed_vs_local": round(local_x_s / spark_x_s, 3),
                "extract_equal_to_local": bool(same_x),
                "score_seconds": round(spark_s_s, 1),
                "score_patients_per_second": round(args.n_score / spark_s_s, 1),
                "score_speed_vs_local": round(local_s_s / spark_s_s, 3),
                "score_equal_to_local": _same_scores(local_s.scores, spark_s.scores),
            }

    report = {
        "benchmark": "spark engine vs local engine",
        "model": uri,
        "model_label": model.label,
        "n_extract": args.n_extract,
        "n_score": args.n_score,
        "local": {
            "jobs": args.jobs,
            "extract_seconds": round(local_x_s, 1),
            "extract_patients_per_second": round(args.n_extract / local_x_s, 3),
            "score_seconds": round(local_s_s, 1),
            "score_patients_per_second": round(args.n_score / local_s_s, 1),
            "n_ok": local_s.n_ok,
        },
        "spark": spark_runs,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
