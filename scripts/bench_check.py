"""Benchmark ``refracture check`` on a 560-patient study: CPU seconds, printed as JSON.

    python scripts/bench_check.py [--cohort DIR] [--n 560] [--extract 5]

Checks a synthetic study (``refracture synth`` output; written to a temporary folder unless
``--cohort`` names one) with and without reading the image headers, and measures, in the same
run, the CPU time to extract ``--extract`` of its patients: the reference the check must stay
far below (it runs before every ``train``). A fresh process imports the check command and lists
which heavy modules it pulled in (none of mlflow, sksurv, matplotlib, lifelines, sklearn is
expected). CPU time (``time.process_time``) is reported, since wall time on a shared machine is
noisy; target: the whole check of 560 patients in seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("mlflow", "sksurv", "matplotlib", "lifelines", "sklearn")
CONFIG = """\
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
covariates:
  numeric: [age, bmi, bmd_tscore, cement_volume_ml, n_fractured]
  binary: [prior_fracture, glucocorticoid, anti_osteoporosis, diabetes, index_tl_junction]
  categorical: {{sex: F, procedure: PVP, cement_leakage: none}}
  roles: {{age: age, sex: sex, bmi: bmi, tscore: bmd_tscore}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
extraction:
  r2star_units: per_s
"""

IMPORTS = """
import sys, time
t = time.process_time()
import refracture.cli.commands.check, refracture.checks
print(time.process_time() - t, [m for m in {heavy!r} if m in sys.modules])
"""


def cpu(fn, *args, **kwargs):
    t = time.process_time()
    out = fn(*args, **kwargs)
    return time.process_time() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None)
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--extract", type=int, default=5)
    args = ap.parse_args()

    from refracture.checks import check_study
    from refracture.config import parse_config
    from refracture.features import extract_cohort

    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            from refracture.synth import write_cohort

            cohort = Path(tmp) / "cohort"
            write_cohort(cohort, n=args.n, seed=0, jobs=2)
        import yaml

        cfg = parse_config(yaml.safe_load(CONFIG.format(cohort=cohort)))
        check_study(cfg, headers=False)  # warm the readers' own imports
        wall = time.perf_counter()
        t_full, report = cpu(check_study, cfg)
        wall = time.perf_counter() - wall
        t_tables, _ = cpu(check_study, cfg, headers=False)
        import pandas as pd

        manifest = pd.read_csv(cohort / "manifest.csv").head(args.extract)
        for col in ("pdff", "r2star", "labels"):
            manifest[col] = [str(cohort / p) for p in manifest[col]]
        t_extract, _ = cpu(extract_cohort, manifest, cfg.extraction, jobs=1)
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    import_cpu, heavy = done.stdout.strip().split(" ", 1)
    n = report.counts.get("manifest", 0)
    per_patient_extract = t_extract / args.extract
    print(
        json.dumps(
            {
                "patients": n,
                "image_headers": report.counts.get("images", 0),
                "problems": len(report.problems),
                "check_cpu_s": round(t_full, 3),
                "check_wall_s": round(wall, 3),
                "check_without_headers_cpu_s": round(t_tables, 3),
                "check_cpu_ms_per_patient": round(1000 * t_full / max(n, 1), 3),
                "extraction_cpu_s_per_patient": round(per_patient_extract, 3),
                "check_of_all_vs_extracting_one_patient": round(t_full / per_patient_extract, 2),
                "fresh_process_import_cpu_s": round(float(import_cpu), 3),
                "heavy_modules_imported": heavy,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
