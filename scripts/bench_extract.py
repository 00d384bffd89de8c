"""Benchmark ``refracture extract`` on a synthetic cohort; prints JSON.

Reports, for the same cohort: the time to only read (decode) the images, the time to hash
them (what a cache check costs), and the full extraction at each ``--jobs``, so the
overhead of ROI building and features above file decoding is visible.

    python scripts/bench_extract.py --n 560 --jobs 1 2
    python scripts/bench_extract.py --cohort existing_cohort_dir --jobs 2

Target (issue 3): feature computation no more than the decoding time, and 560 patients in
under 2 minutes on 2 cores.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560, help="patients to synthesise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="nifti", choices=["nifti", "dicom"])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cohort", type=Path, help="use this synthetic cohort instead of writing one")
    ap.add_argument("--workdir", type=Path, help="where to write the cohort (default: a temp dir)")
    args = ap.parse_args(argv)

    from refracture.config import ExtractionConfig
    from refracture.features import extract_cohort
    from refracture.features.cache import input_hashes
    from refracture.features.manifest import read_manifest
    from refracture.imaging import load_volume

    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        cohort = args.cohort
        synth_seconds = None
        if cohort is None:
            from refracture.synth import write_cohort

            cohort = (args.workdir or Path(tmp)) / f"cohort_{args.format}_{args.n}"
            t0 = time.perf_counter()
            write_cohort(cohort, n=args.n, seed=args.seed, image_format=args.format, jobs=2)
            synth_seconds = time.perf_counter() - t0
        manifest = read_manifest(cohort / "manifest.csv")
        n = len(manifest)
        config = ExtractionConfig()

        # Decoding only: every image read into memory, one process, nothing else.
        t0 = time.perf_counter()
        for row in manifest.to_dict("records"):
            for kind in ("pdff", "r2star", "labels"):
                load_volume(row[kind], kind, content_hash="-")
        read_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        for row in manifest.to_dict("records"):
            input_hashes(row)
        hash_seconds = time.perf_counter() - t0

        runs = {}
        for jobs in args.jobs:
            t0 = time.perf_counter()
            result = extract_cohort(manifest, config, out_dir=None, jobs=jobs)
            seconds = time.perf_counter() - t0
            runs[f"jobs_{jobs}"] = {
                "seconds": round(seconds, 3),
                "seconds_per_patient": round(seconds / n, 4),
                "patients_per_second": round(n / seconds, 2),
                "failed": int(result.n_failed),
            }

    one = runs.get("jobs_1")
    report = {
        "n_patients": n,
        "format": "dicom" if Path(manifest.loc[0, "pdff"]).is_dir() else "nifti",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "synth_seconds": None if synth_seconds is None else round(synth_seconds, 2),
        "read_only": {
            "seconds": round(read_seconds, 3),
            "seconds_per_patient": round(read_seconds / n, 4),
        },
        "hash_only": {
            "seconds": round(hash_seconds, 3),
            "seconds_per_patient": round(hash_seconds / n, 4),
        },
        "extract": runs,
    }
    if one is not None:
        # jobs 1 = hashing + decoding + ROIs/units/features in one process
        overhead = one["seconds"] - read_seconds - hash_seconds
        report["overhead_above_io"] = {
            "seconds": round(overhead, 3),
            "seconds_per_patient": round(overhead / n, 4),
            "ratio_to_decoding": round(overhead / read_seconds, 3),
        }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
