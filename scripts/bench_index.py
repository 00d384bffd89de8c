"""Benchmark ``refracture index``: a 560-patient PACS export, headers only, printed as JSON.

    python scripts/bench_index.py [--n 560] [--series 6] [--slices 40] [--jobs 2] [--keep DIR]

Writes an export of ``n`` patients, each one GE IDEAL IQ exam of ``series`` classic series of
``slices`` slices (the six IDEAL IQ series: water, fat, in-phase, out-of-phase, fat fraction,
R2*) with the synthetic cohort's headers, in nested folders with opaque file names, and a
clinical table linking the export's PatientIDs to study IDs. The pixel matrices are 32 x 32:
index reads no pixel data (``stop_before_pixels``), so only the headers' size matters. Then
times ``build_index`` (the command's work, without the interpreter's start-up): CPU seconds of
this process and its workers, wall seconds, files per second; and, as the reference measured
in the same run, the CPU seconds pydicom needs to read every header once in this process.
Target (issue 25): under a minute on 2 cores. ``--keep DIR`` writes (or reuses) the export there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from refracture.imaging.dicom.index import build_index
from refracture.synth.dicom import Identity
from refracture.synth.dicom_objects import Scanner, SeriesSpec, classic_series

_NAMES = ["WATER", "FAT", "InPhase", "OutPhase", "FatFrac", "R2*"]


def write_patient(job: tuple[Path, int, int, int]) -> str:
    root, i, n_series, n_slices = job
    rng = np.random.default_rng([7, i])
    date = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 365)))
    identity = Identity.make(rng, int(rng.integers(50, 90)), "F", date)
    scanner = Scanner("GE MEDICAL SYSTEMS", "SIGNA Architect", "MR29.1", 3.0)
    geometry = (np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]), np.array([-40.0, 0, -100]),
                (1.5, 1.5, 4.0))  # fmt: skip
    for s in range(n_series):
        name = _NAMES[s % len(_NAMES)]
        spec = SeriesSpec(f"{name}: Sag IDEAL-IQ", 601 + s, ("DERIVED", "PRIMARY", "OTHER"),
                          np.full((32, 32, n_slices), 100.0))  # fmt: skip
        folder = root / f"{i:04X}A" / f"{s:02X}{i:05X}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(classic_series(spec, identity, scanner, date, geometry)):
            ds.save_as(folder / f"I{k:05d}{s}", enforce_file_format=True)
    return identity.patient_id


def write_export(root: Path, n: int, n_series: int, n_slices: int, jobs: int) -> Path:
    """The export, a clinical table and a label map per patient (``labels/P0001.nii.gz``)."""
    import nibabel as nib

    clinical = root.parent / "clinical.csv"
    if clinical.is_file():
        return clinical
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        mrns = list(pool.map(write_patient, [(root, i, n_series, n_slices) for i in range(n)],
                             chunksize=4))  # fmt: skip
    ids = [f"P{i + 1:04d}" for i in range(n)]
    labels = root.parent / "labels"
    labels.mkdir(exist_ok=True)
    for pid in ids:  # index pairs them by name and reads none of them
        empty = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
        nib.save(empty, labels / f"{pid}.nii.gz")
    pd.DataFrame({"patient_id": ids, "dicom_patient_id": mrns}).to_csv(clinical, index=False)
    return clinical


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--series", type=int, default=6)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        export = base / "export"
        t0 = time.perf_counter()
        clinical = write_export(export, args.n, args.series, args.slices, args.jobs)
        t_write = time.perf_counter() - t0
        files = [p for p in export.rglob("*") if p.is_file()]
        shutil.rmtree(base / "study", ignore_errors=True)  # a first run, not a re-run

        c0, t0 = cpu_seconds(), time.perf_counter()
        result = build_index(export, base / "study" / "manifest.csv", clinical=clinical,
                             labels=base / "labels", jobs=args.jobs)  # fmt: skip
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0

        c0 = cpu_seconds()  # reference: every header once, in this process
        sample = files[:: max(1, len(files) // 5000)]
        for f in sample:
            pydicom.dcmread(f, stop_before_pixels=True)
        per_header = (cpu_seconds() - c0) / len(sample)

        c0, t0 = cpu_seconds(), time.perf_counter()  # a second run: nothing new
        again = build_index(export, base / "study" / "manifest.csv", clinical=clinical,
                            labels=base / "labels", jobs=args.jobs)  # fmt: skip
        wall_again, cpu_again = time.perf_counter() - t0, cpu_seconds() - c0
    print(
        json.dumps(
            {
                "patients": args.n,
                "series_per_patient": args.series,
                "slices_per_series": args.slices,
                "files": len(files),
                "jobs": args.jobs,
                "cpus": os.cpu_count(),
                "rows": result.n_rows_new,
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "files_per_second_wall": round(len(files) / wall),
                "reference_cpu_seconds_pydicom_headers_once": round(per_header * len(files), 2),
                "cpu_ratio_to_reference": round(cpu / (per_header * len(files)), 2),
                "rerun_wall_seconds": round(wall_again, 2),
                "rerun_cpu_seconds": round(cpu_again, 2),
                "rerun_files_read": again.n_read,
                "seconds_writing_the_export": round(t_write, 1),
                "target_wall_seconds": 60,
            }
        )
    )


if __name__ == "__main__":
    main()
