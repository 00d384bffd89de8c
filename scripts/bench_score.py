"""Benchmark ``refracture score``; prints JSON.

Reports the model load time on its own, then scoring throughput (model already loaded):

* from a features file of ``--rows`` patients (Parquet and CSV in, same format out), built by
  resampling the covariates and measured imaging features of a synthetic cohort;
* from images (manifest + clinical table, no feature cache) at each ``--jobs``, next to
  ``extract_cohort`` alone on the same patients, so the cost above extraction is visible.

    python scripts/bench_score.py                      # trains a small model first
    python scripts/bench_score.py --model models:/refracture-1y@champion --tracking-uri sqlite:///mlflow.db

Targets (issue 6): >= 10,000 patients/s from a features file; from images, bounded by
extraction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_CONFIG = """
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {root}/cache
covariates:
  numeric: [age, bmd_tscore]
  binary: [prior_fracture, anti_osteoporosis]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
models: [{models}]
feature_sets: [clinical+imaging]
validation:
  split: random
  bootstrap: 10
mlflow:
  tracking_uri: sqlite:///{root}/mlflow.db
  experiment: bench
"""


def train_small_model(root: Path, n: int, models: str = "cox, logistic") -> tuple[str, str]:
    """Train ``models`` on a synthetic cohort of ``n`` under ``root``; (model URI, tracking URI)."""
    from refracture.config import load_config
    from refracture.study import train
    from refracture.synth import write_cohort
    from refracture.tracking import quiet_mlflow

    cohort = root / "train_cohort"
    write_cohort(cohort, n=n, n_sites=2, seed=21, jobs=2)
    config = root / "train.yaml"
    config.write_text(
        TRAIN_CONFIG.format(cohort=cohort, root=root, models=models), encoding="utf-8"
    )
    quiet_mlflow()
    with contextlib.chdir(root):
        train(load_config(config), config_path=config, report=False)
    return "models:/refracture-1y@champion", f"sqlite:///{root}/mlflow.db"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model URI (default: train a small model first)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI of --model")
    ap.add_argument("--rows", type=int, default=100_000, help="patients in the features file")
    ap.add_argument("--n-images", type=int, default=60, help="patients scored from images")
    ap.add_argument("--n-train", type=int, default=90, help="patients to train on (no --model)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temp dir)")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from refracture.config import ExtractionConfig
    from refracture.features import extract_cohort
    from refracture.scoring import load_model, score
    from refracture.synth import write_cohort

    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri, tracking = args.model, args.tracking_uri
        train_seconds = None
        if uri is None:
            t0 = time.perf_counter()
            uri, tracking = train_small_model(root, args.n_train)
            train_seconds = time.perf_counter() - t0

        # What a nightly job pays once: a fresh interpreter importing refracture and MLflow
        # and loading the model; then the load alone in this (warm) process.
        probe = (
            "import sys, time; t = time.perf_counter(); from refracture.scoring import load_model; "
            "load_model(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None); "
            "print(time.perf_counter() - t)"
        )
        cmd = [sys.executable, "-c", probe, uri, *([tracking] if tracking else [])]
        fresh = float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        model = load_model(uri, tracking)
        warm = load_model(uri, tracking).load_seconds
        if not model.uses_images:
            print("the model uses no imaging features; image scoring not measured", file=sys.stderr)

        cohort = root / "new_cohort"
        write_cohort(cohort, n=args.n_images, n_sites=3, seed=5, id_prefix="N", jobs=2)
        clinical = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str, "sex": str})
        config = model.bundle.extraction or ExtractionConfig()

        # Images: extraction alone, then the whole scoring, on the same patients, no cache.
        images: dict[str, dict[str, float]] = {}
        feats = None
        for jobs in args.jobs:
            t0 = time.perf_counter()
            extracted = extract_cohort(cohort / "manifest.csv", config, jobs=jobs, cache_dir=None)
            extract_s = time.perf_counter() - t0
            feats = extracted.features
            t0 = time.perf_counter()
            res = score(
                model,
                manifest=cohort / "manifest.csv",
                clinical=cohort / "clinical.csv",
                out=root / f"scores_images_{jobs}.csv",
                jobs=jobs,
                cache_dir=None,
            )
            score_s = time.perf_counter() - t0
            n = len(res.scores)
            images[f"jobs_{jobs}"] = {
                "patients": n,
                "extract_only_seconds": round(extract_s, 3),
                "score_seconds": round(score_s, 3),
                "patients_per_second": round(n / score_s, 2),
                "extract_only_patients_per_second": round(n / extract_s, 2),
                "overhead_vs_extraction": round(score_s / extract_s - 1.0, 3),
                "n_ok": res.n_ok,
            }

        # Features file: resample the new cohort's covariates and measured features.
        assert feats is not None
        imaging = list(model.bundle.covariates.imaging)
        pool = clinical.merge(feats[["patient_id", *imaging]], on="patient_id")
        rng = np.random.default_rng(0)
        big = pool.iloc[rng.integers(0, len(pool), args.rows)].reset_index(drop=True)
        big["patient_id"] = [f"B{i:07d}" for i in range(args.rows)]
        features: dict[str, dict[str, float]] = {}
        for fmt in ("parquet", "csv"):
            path = root / f"features.{fmt}"
            if fmt == "parquet":
                big.to_parquet(path, index=False)
            else:
                big.to_csv(path, index=False)
            t0 = time.perf_counter()
            res = score(model, features=path, out=root / f"scores_features.{fmt}")
            seconds = time.perf_counter() - t0
            features[fmt] = {
                "patients": len(res.scores),
                "seconds": round(seconds, 3),
                "patients_per_second": round(len(res.scores) / seconds, 1),
                "n_ok": res.n_ok,
                "n_warnings": res.n_warnings,
            }

    report = {
        "benchmark": "refracture score",
        "model": uri,
        "model_label": model.label,
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "model_load_seconds": {
            "fresh_process_with_imports": round(fresh, 3),
            "warm": round(warm, 3),
        },
        "features_file": features,
        "features_target_patients_per_second": 10_000,
        "features_target_met": min(f["patients_per_second"] for f in features.values()) >= 10_000,
        "images_no_cache": images,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
