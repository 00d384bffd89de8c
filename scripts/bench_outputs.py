"""Benchmark the outputs of ``refracture score --dicom-sr --fhir --cards``; prints JSON.

Scores ``--n`` synthetic patients with GE-style DICOM maps from their images (no feature
cache: the reference), then writes each output alone and all three together, and reports CPU
seconds per patient (this process and its workers) and the ratio to scoring the same patient
from its images. Every output measures the patient's images again (the SEG needs the voxels,
the card the QC picture), so one measurement is shared by the three.

    python scripts/bench_outputs.py                    # trains a small model first
    python scripts/bench_outputs.py --model models:/refracture-1y@champion --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from refracture.outputs import OutputOptions, write_outputs
from refracture.scoring import load_model, score
from refracture.synth import write_cohort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import train_small_model  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--n", type=int, default=8, help="patients to score")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri, tracking = args.model, args.tracking_uri
        if uri is None:
            uri, tracking = train_small_model(root, 120, "logistic")
        model = load_model(uri, tracking)
        batch = root / "batch"
        write_cohort(batch, n=args.n, n_sites=2, seed=5, image_format="dicom", id_prefix="B")
        start = cpu()
        result = score(
            model,
            manifest=batch / "manifest.csv",
            clinical=batch / "clinical.csv",
            out=root / "scores.csv",
            cache_dir=None,
            jobs=1,
        )
        scoring = (cpu() - start) / args.n
        report: dict = {
            "python": platform.python_version(),
            "patients": args.n,
            "model": model.label,
            "score_from_images_cpu_s_per_patient": round(scoring, 3),
            "outputs": {},
        }
        runs = [("fhir", 1), ("cards", 1), ("dicom_sr", 1), *[("all", j) for j in args.jobs]]
        for kind, jobs in runs:
            folders = ("dicom_sr", "fhir", "cards") if kind == "all" else (kind,)
            options = OutputOptions(**{k: root / f"{kind}{jobs}" / k for k in folders})
            start, wall = cpu(), time.perf_counter()
            done = write_outputs(result, result.data, options, jobs=jobs)
            per = (cpu() - start) / args.n
            report["outputs"][f"{kind} (jobs {jobs})"] = {
                "cpu_s_per_patient": round(per, 3),
                "vs_scoring": round(per / scoring, 2),
                "wall_s": round(time.perf_counter() - wall, 1),
                "written": sum(done.count(k, "written") for k in folders),
                "errors": done.n_error,
            }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
