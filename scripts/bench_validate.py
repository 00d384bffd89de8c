"""Benchmark validation: seconds per model with Harrell's bootstrap, printed as JSON.

    python scripts/bench_validate.py [--n 560] [--bootstrap 200] [--jobs 1 2] [--split none]
                                     [--estimand net|cif] [--models cox logistic ...]
                                     [--save FILE] [--reference FILE]

Each model is validated on the clinical+imaging feature set of a synthetic cohort (the
covariates of configs/synthetic.yaml) in the given estimand; with ``--split none`` the
bootstrap refits on all ``n`` patients (the largest development set any scheme uses). Every
run includes the optimism bootstrap (B refits) and the percentile bootstrap of the validation
predictions (B resamples). Target (issue 21): cox + logistic under ``cif`` in under 30 s with
2 workers. The script checks that 1 and 2 workers give identical metrics; CPU times count the
worker processes too. ``--save`` writes every metric at full precision with the timings;
``--reference`` compares this run with such a file from the code before a change: every
metric must be equal to the last digit, and the JSON gives the seconds before and after
(``scripts/bench_validate_reference.json``: cox + logistic, ``cif``, 2 workers, saved from
the code before the bootstrap refits skipped inference).
A model refused in the estimand (a net-only model under ``cif``) is listed under ``skipped``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import config_to_dict, load_config, parse_config
from refracture.dataset import assemble
from refracture.errors import ConfigError, ModelError
from refracture.ids import PATIENT_ID
from refracture.levels import TL_LEVELS, adjacent_levels
from refracture.models import MODEL_NAMES
from refracture.study import validate_candidate
from refracture.synth.cohort import Cohort, simulate_cohort

try:  # CPU of this process and its workers (scripts import each other)
    from bench_demo import tree_cpu
except ImportError:  # pragma: no cover - run from another folder
    tree_cpu = time.process_time


def imaging_table(c: Cohort, seed: int = 1) -> pd.DataFrame:
    """Imaging features from the simulator's truth (what extraction would measure)."""
    rng = np.random.default_rng(seed)
    truth = c.truth.set_index(PATIENT_ID)
    rows = []
    for pid in c.clinical[PATIENT_ID]:
        lv = c.levels[pid]
        bad = set(lv["fractured"])
        groups = {
            "normal": [x for x in TL_LEVELS if x not in bad],
            "adjacent": sorted(
                {a for t in lv["treated"] for a in adjacent_levels(t, TL_LEVELS)} - bad
            ),
        }
        row = {PATIENT_ID: pid}
        for g, levels in groups.items():
            for m in ("pdff", "r2star"):
                vals = [truth.loc[pid, f"{m}_mean_{x}"] for x in levels]
                row[f"{m}_mean_{g}"] = (
                    float(np.mean(vals)) * (1 + rng.normal(0, 0.01)) if vals else np.nan
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _config(args: argparse.Namespace, jobs: int):
    raw = config_to_dict(load_config("configs/synthetic.yaml"))
    raw["outcome"]["estimand"] = args.estimand
    raw["validation"] |= {"split": args.split, "bootstrap": args.bootstrap, "jobs": jobs, "seed": 0}
    return parse_config(raw)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def compare(metrics: dict, reference: dict) -> dict:
    """Every metric of every model against the reference run: counts and the differences."""
    differ, compared = [], 0
    for model, values in metrics.items():
        for name, value in values.items():
            if name in reference.get(model, {}):
                compared += 1
                if not _same(value, reference[model][name]):
                    differ.append(f"{model} {name}: {reference[model][name]!r} -> {value!r}")
    return {"metrics_compared": compared, "identical": not differ, "differences": differ[:20]}


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=560)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--split", default="none", choices=["none", "random", "kfold", "leave_one_site_out"]
    )
    ap.add_argument("--estimand", default="net", choices=["net", "cif"])
    ap.add_argument("--models", nargs="+", default=["cox", "logistic"])
    ap.add_argument("--save", type=Path, default=None)
    ap.add_argument("--reference", type=Path, default=None)
    return ap.parse_args()


def main() -> None:
    args = _parse()
    models = [m for m in args.models if m in MODEL_NAMES]
    skipped = {m: "not a model of this installation" for m in args.models if m not in models}
    cohort = simulate_cohort(args.n, 4, 0)
    features = imaging_table(cohort)
    runs = []
    reference = None
    for jobs in args.jobs:
        cfg = _config(args, jobs)
        ds = assemble(cohort.clinical, features, cfg)
        per_model, cpu_per_model, metrics = {}, {}, {}
        t_all, c_all = time.perf_counter(), tree_cpu()
        for name in list(models):
            t0, c0 = time.perf_counter(), tree_cpu()
            try:
                res = validate_candidate(name, "clinical+imaging", ds, cfg, None).result
            except (ConfigError, ModelError) as err:  # e.g. a net-only model refused under cif
                skipped[name] = err.message
                models.remove(name)
                continue
            per_model[name] = round(time.perf_counter() - t0, 2)
            cpu_per_model[name] = round(tree_cpu() - c0, 2)
            metrics[name] = res.metrics
        total, cpu = time.perf_counter() - t_all, tree_cpu() - c_all
        if reference is None:
            reference = metrics
        identical = all(pd.Series(metrics[m]).equals(pd.Series(reference[m])) for m in models)
        runs.append(
            {
                "jobs": jobs,
                "seconds": round(total, 2),
                # this process and its workers (the first run with workers starts them)
                "cpu_seconds": round(cpu, 2),
                "seconds_per_model": per_model,
                "cpu_seconds_per_model": cpu_per_model,
                "identical_to_first_run": identical,
                "cindex_harrell_optcorr": {
                    m: round(metrics[m]["cindex_harrell_optcorr"], 4) for m in models
                },
                "oe_ratio_optcorr": {
                    m: round(metrics[m][f"oe_ratio_{int(cfg.outcome.horizon_days)}d_optcorr"], 4)
                    for m in models
                },
            }
        )
    out = {
        "n": args.n,
        "bootstrap": args.bootstrap,
        "split": args.split,
        "estimand": args.estimand,
        "models": models,
        "skipped": skipped,
        "feature_set": "clinical+imaging",
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "runs": runs,
        "target_seconds_2_workers": 30,
    }
    if args.reference is not None:
        before = json.loads(args.reference.read_text())
        out["reference"] = {
            "code": before.get("code", str(args.reference)),
            "runs": [{k: r[k] for k in ("jobs", "seconds", "cpu_seconds")} for r in before["runs"]],
            **compare(reference or {}, before["metrics"]),
        }
        cpu_before = {r["jobs"]: r["cpu_seconds"] for r in before["runs"]}
        out["cpu_ratio_to_reference"] = {
            r["jobs"]: round(r["cpu_seconds"] / cpu_before[r["jobs"]], 3)
            for r in runs
            if cpu_before.get(r["jobs"])
        }
    if args.save is not None:
        args.save.write_text(json.dumps(out | {"metrics": reference}, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
