"""Benchmark ``refracture synth``: seconds for a full cohort, printed as JSON.

    python scripts/bench_synth.py [--n 560] [--jobs 2] [--format nifti]

Reports wall and CPU time for the cohort (CPU of this process and its finished workers, which
does not depend on how busy the machine is), patients per second, the share spent simulating
the tables, and per patient the CPU time to draw the maps (the generator alone) and to write
them. The writer is compared in the same run with a plain ``nibabel.save`` of the same images
(what synth used before: zlib level 1), so the ratio holds on any machine. Target (issue 21):
the 560-patient cohort is part of a 5-minute demo on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from refracture.synth import _save_nifti, anatomy_of, simulate_cohort, write_cohort
from refracture.synth.phantom import generate


def _cpu() -> float:
    """CPU seconds of this process and of its finished child processes."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _nibabel_save(path: Path, data: np.ndarray, affine: np.ndarray, kind: str) -> None:
    """The reference: the same image written by ``nibabel.save`` (zlib, level 1)."""
    if kind == "labels":
        img = nib.Nifti1Image(data.astype(np.uint8), affine)
    else:
        img = nib.Nifti1Image(np.rint(data * 10.0).clip(-32768, 32767).astype(np.int16), affine)
        img.header.set_slope_inter(0.1, 0.0)
    nib.save(img, path)


def _per_patient(cohort, n: int, folder: Path) -> dict[str, float]:
    """CPU seconds per patient to draw the maps and to write them, both ways."""
    spent = {"draw": 0.0, "write": 0.0, "write_nibabel_save": 0.0}
    for i in range(n):
        c0 = time.process_time()
        maps = generate(anatomy_of(cohort, i, 0))
        spent["draw"] += time.process_time() - c0
        images = (("labels", maps.labels), ("pdff", maps.pdff), ("r2star", maps.r2star))
        for key, save in (("write", _save_nifti), ("write_nibabel_save", _nibabel_save)):
            c0 = time.process_time()
            for kind, data in images:
                save(folder / f"{key}_{kind}.nii.gz", data, maps.affine, kind)
            spent[key] += time.process_time() - c0
    return {k: v / n for k, v in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--format", default="nifti")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cohort = simulate_cohort(args.n, 4, 0)
    t_tables = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        each = _per_patient(cohort, min(20, args.n), Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), _cpu()
        write_cohort(tmp, n=args.n, seed=0, image_format=args.format, jobs=args.jobs)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    print(
        json.dumps(
            {
                "n": args.n,
                "jobs": args.jobs,
                "format": args.format,
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 1),
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "cpu_seconds_per_patient": round(cpu / args.n, 4),
                "patients_per_second": round(args.n / wall, 2),
                "seconds_tables": round(t_tables, 3),
                "cpu_seconds_draw_one_patient": round(each["draw"], 4),
                "cpu_seconds_write_one_patient": round(each["write"], 4),
                "cpu_seconds_write_one_patient_nibabel_save": round(each["write_nibabel_save"], 4),
                "write_ratio_to_nibabel_save": round(each["write"] / each["write_nibabel_save"], 3),
                "mb_on_disk": round(size / 1e6, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
