"""Benchmark ``refracture extract`` on a synthetic cohort; prints JSON.

Reports, for the same cohort and in the same process: a reference decode of the three images
per patient with the plain library readers (``nib.load`` + ``dataobj`` for NIfTI, SimpleITK's
series reader for DICOM), the time refracture's loader takes to read (hash and decode) them,
the time to only hash them (what a cache check costs), and the full extraction at each
``--jobs``; ratios put extraction against the reference decode and ``--jobs 2`` against
``--jobs 1``. The machine may be shared: ``--repeat`` runs everything several times and
reports the median of each figure (the pool of ``--jobs 2`` is started by the first repeat
and reused by later ones; ``first_jobs_N_seconds`` keeps the first run with its start-up).

    python scripts/bench_extract.py --n 120 --jobs 1 2 --repeat 3
    python scripts/bench_extract.py --cohort existing_cohort_dir --jobs 2

Targets (issue 11): extraction at ``--jobs 1`` at most 1.2x the decoding time of the images,
and at least 1.8x faster with ``--jobs 2`` than ``--jobs 1`` at 120 patients on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _reference_decode(path: str) -> None:
    """Decode one image with the plain library reader, nothing else (the yardstick)."""
    if Path(path).is_dir():
        import SimpleITK as sitk

        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path))
        sitk.GetArrayFromImage(reader.Execute())
    else:
        import nibabel as nib
        import numpy as np

        np.asarray(nib.load(path).dataobj)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560, help="patients to synthesise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="nifti", choices=["nifti", "dicom"])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cohort", type=Path, help="use this synthetic cohort instead of writing one")
    ap.add_argument("--workdir", type=Path, help="where to write the cohort (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of everything; medians reported")
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

        rows = manifest.to_dict("records")
        paths = [(str(r[k]), k) for r in rows for k in ("pdff", "r2star", "labels")]

        def reference() -> None:
            for path, _ in paths:
                _reference_decode(path)

        def read() -> None:  # refracture's loader: the file read, hashed and decoded
            for path, kind in paths:
                load_volume(path, kind)

        def hashes() -> None:
            for row in rows:
                input_hashes(row)

        timings: dict[str, list[float]] = {"reference": [], "read": [], "hash": []}
        failed = {}
        for _ in range(args.repeat):
            hashes()  # untimed: every file in the page cache, whatever ran before
            timings["reference"].append(_timed(reference))
            timings["read"].append(_timed(read))
            timings["hash"].append(_timed(hashes))
            for jobs in args.jobs:
                t0 = time.perf_counter()
                result = extract_cohort(manifest, config, out_dir=None, jobs=jobs)
                timings.setdefault(f"jobs_{jobs}", []).append(time.perf_counter() - t0)
                failed[f"jobs_{jobs}"] = int(result.n_failed)

    med = {k: statistics.median(v) for k, v in timings.items()}

    def figures(seconds: float, key: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "seconds_per_patient": round(seconds / n, 4),
        }
        if key is not None:
            out["all_seconds"] = [round(t, 2) for t in timings[key]]
        return out

    runs = {}
    for jobs in args.jobs:
        key = f"jobs_{jobs}"
        runs[key] = {
            **figures(med[key]),
            "patients_per_second": round(n / med[key], 2),
            "ratio_to_reference_decode": round(med[key] / med["reference"], 3),
            f"first_{key}_seconds": round(timings[key][0], 3),
            "all_seconds": [round(t, 2) for t in timings[key]],
            "failed": failed[key],
        }
    report = {
        "n_patients": n,
        "format": "dicom" if Path(manifest.loc[0, "pdff"]).is_dir() else "nifti",
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "repeats": args.repeat,
        "synth_seconds": None if synth_seconds is None else round(synth_seconds, 2),
        "reference_decode": figures(med["reference"], "reference"),
        "read_only": {
            **figures(med["read"], "read"),
            "ratio_to_reference_decode": round(med["read"] / med["reference"], 3),
        },
        "hash_only": figures(med["hash"], "hash"),
        "extract": runs,
    }
    if "jobs_1" in med:
        # jobs 1 = reading + ROIs/units/features/morphometry/QC in one process
        overhead = med["jobs_1"] - med["read"]
        report["overhead_above_read"] = {
            **figures(overhead),
            "ratio_to_reference_decode": round(overhead / med["reference"], 3),
        }
        for jobs in args.jobs:
            if jobs > 1:
                report[f"speedup_jobs_{jobs}_vs_1"] = round(med["jobs_1"] / med[f"jobs_{jobs}"], 3)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
