"""``refracture synth`` -> ``extract`` -> ``train`` -> ``score`` with no unit config: is any
patient lost? Prints JSON.

For each seed: a 560-patient, 4-site synthetic cohort is written, extracted with the default
config (units ``auto``: the cohort declares them), and scored from its images by a model trained
on the first seed's cohort (cox, clinical+imaging, no unit config). With ``--undeclared`` the
first seed is also extracted and scored with nothing declared (no unit columns, no sidecars:
the images are linked into a folder without them), so every site decides its units from its
patients' values and new patients take the model's units for their site.

Reported per run: patients, extraction errors, score rows with status error, QC findings by
kind (warnings), the label-fit gain distribution (misregistration check: correctly placed
labels should stay below the threshold), the unit sources, and the times.

    python scripts/bench_no_loss.py --n 560 --seeds 0 1 2 --undeclared --out /tmp/noloss
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import load_config
from refracture.features import extract_cohort, qc_findings
from refracture.imaging.label_fit import MIN_GAIN
from refracture.scoring import score
from refracture.study import train
from refracture.synth import write_cohort
from refracture.tracking import quiet_mlflow

TRAIN = """
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {cache}
covariates:
  numeric: [age, bmi, bmd_tscore]
  binary: [prior_fracture, glucocorticoid]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal, pdff_mean_adjacent, morph_genant_max]
models: [cox]
feature_sets: [clinical+imaging]
selection_metric: cindex_harrell
validation: {{split: random, bootstrap: 0, seed: 0, jobs: {jobs}}}
mlflow: {{tracking_uri: "sqlite:///{root}/mlflow.db", experiment: no-loss}}
"""


def undeclared_copy(cohort: Path, out: Path) -> Path:
    """The cohort's images linked into ``out`` without sidecars, a manifest without units."""
    out.mkdir(parents=True, exist_ok=True)
    for image in (cohort / "images").rglob("*.nii.gz"):
        target = out / image.relative_to(cohort)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(image, target)
    manifest = pd.read_csv(cohort / "manifest.csv").drop(columns=["pdff_units", "r2star_units"])
    manifest.to_csv(out / "manifest.csv", index=False)
    for name in ("clinical.csv", "truth.csv"):
        (out / name).write_bytes((cohort / name).read_bytes())
    return out


def summarise(extraction, scores: pd.DataFrame, seconds: dict[str, float]) -> dict:
    qc = extraction.qc
    kinds: Counter[str] = Counter()
    for _, row in qc.iterrows():
        kinds.update({f.kind for f in qc_findings(row.to_dict())})
    gain = qc["qc_label_fit_gain"].to_numpy(dtype=float)
    return {
        "patients": int(len(qc) + len(extraction.errors)),
        "extract_errors": int(len(extraction.errors)),
        "extract_error_messages": extraction.errors["message"].head(5).tolist(),
        "score_rows": int(len(scores)),
        "score_errors": int((scores["status"] == "error").sum()),
        "score_error_messages": scores.loc[scores["status"] == "error", "error"].head(5).tolist(),
        "qc_findings_by_kind": dict(sorted(kinds.items())),
        "label_fit_gain": {
            "max": float(np.nanmax(gain)),
            "p99": float(np.nanpercentile(gain, 99)),
            "threshold": MIN_GAIN,
            "misregistered": int((qc["qc_misregistration"].fillna("") != "").sum()),
        },
        "label_problems": int((qc["qc_label_n_problems"] > 0).sum()),
        "units": {
            k: dict(Counter(zip(qc[f"qc_{k}_units"], qc[f"qc_{k}_units_source"], strict=True)))
            for k in ("pdff", "r2star")
        },
        "site_units": extraction.site_units,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def run(cohort: Path, model: str, root: Path, cache: Path, jobs: int, label: str) -> dict:
    seconds = {}
    t = time.perf_counter()
    extraction = extract_cohort(cohort / "manifest.csv", jobs=jobs, cache_dir=cache)
    seconds["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    result = score(
        model,
        out=root / f"scores_{label}.csv",
        manifest=cohort / "manifest.csv",
        clinical=cohort / "clinical.csv",
        jobs=jobs,
        cache_dir=cache,
        tracking_uri=f"sqlite:///{root}/mlflow.db",
    )
    seconds["score"] = time.perf_counter() - t
    out = summarise(extraction, result.scores, seconds)
    out["score_exit_code"] = result.exit_code
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--undeclared", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench-no-loss"))
    args = ap.parse_args()
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    quiet_mlflow()
    report: dict = {"n": args.n, "seeds": args.seeds, "runs": {}}

    cohorts = {}
    for seed in args.seeds:
        t = time.perf_counter()
        cohorts[seed] = root / f"cohort_{seed}"
        if not (cohorts[seed] / "manifest.csv").is_file():
            write_cohort(cohorts[seed], n=args.n, n_sites=4, seed=seed, jobs=args.jobs)
        report.setdefault("synth_seconds", {})[seed] = round(time.perf_counter() - t, 1)

    first = cohorts[args.seeds[0]]
    config = root / "train.yaml"
    config.write_text(TRAIN.format(cohort=first, cache=cache, root=root, jobs=args.jobs))
    t = time.perf_counter()
    with contextlib.chdir(root):
        trained = train(load_config(config), config_path=config, report=False)
    report["train_seconds"] = round(time.perf_counter() - t, 1)
    model = trained.model_uri

    for seed, cohort in cohorts.items():
        report["runs"][f"seed_{seed}"] = run(cohort, model, root, cache, args.jobs, f"s{seed}")
        print(json.dumps({f"seed_{seed}": report["runs"][f"seed_{seed}"]}), flush=True)
    if args.undeclared:
        bare = undeclared_copy(first, root / f"undeclared_{args.seeds[0]}")
        label = f"undeclared_seed_{args.seeds[0]}"
        report["runs"][label] = run(bare, model, root, cache, args.jobs, label)
    report["lost"] = sum(r["extract_errors"] + r["score_errors"] for r in report["runs"].values())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
