"""The real-data battery, every data set and every model, printed as JSON.

    python scripts/bench_realdata.py [--datasets rossi lung ...] [--models cox coxnet logistic rsf]
                                     [--bootstrap 10] [--jobs 2] [--keep DIR]

For each public survival data set shipped with lifelines and scikit-survival (written as a
study's clinical table under its own column names, tests/public_survival.py), plus WHAS500 cut
administratively at one year and the synthetic cohort re-cut to a one-year protocol, it runs
what a new user would, as separate processes:

    refracture init --clinical clinical.csv --out study.yaml
    refracture train --config study.yaml --no-report      (models and bootstrap edited)

and prints, per data set: the exit codes, wall times, what init detected (time, event, ID
column, horizon, parameters, events by the horizon), the warnings train printed, and the
agreement with the libraries (largest absolute differences): Cox coefficients against
lifelines' CoxPHFitter on the same development rows, Harrell's and Uno's C of every model
against scikit-survival on the same validation predictions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from public_survival import (  # noqa: E402 - the shared battery helpers live with the tests
    DATASETS,
    administrative_cut,
    agreement,
    edit_draft,
    one_year_protocol,
    run_folder,
    study_table,
)
from refracture.config import load_config  # noqa: E402

EXTRA = ["whas500_cut", "synthetic_1y"]


def table_of(name: str):
    if name == "whas500_cut":
        return administrative_cut(study_table("whas500"), "lenfol", "fstat", 365.0)
    if name == "synthetic_1y":
        return one_year_protocol()
    return study_table(name)


def run(args: list[str], cwd: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        ["refracture", *args], cwd=cwd, capture_output=True, text=True, env=None, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def bench(name: str, folder: Path, models: list[str], bootstrap: int, jobs: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    table = table_of(name)
    table.to_csv(folder / "clinical.csv", index=False)
    out: dict = {"dataset": name, "patients": len(table)}
    code, output, seconds = run(["init", "--clinical", "clinical.csv"], folder)
    out |= {"init_exit": code, "init_seconds": round(seconds, 2)}
    if code != 0:
        return out | {"error": output.strip().splitlines()[-1:]}
    cfg = load_config(folder / "study.yaml")
    out |= {
        "time": cfg.outcome.time,
        "event": cfg.outcome.event,
        "id_column": cfg.data.id_column,
        "horizon": cfg.outcome.horizon_days,
        "covariates": cfg.covariates.names,
        "longest_follow_up": float(table[cfg.outcome.time].max()),
        "init_notes": [line for line in output.splitlines() if line.startswith("note:")],
    }
    text = edit_draft(
        (folder / "study.yaml").read_text(),
        models=models,
        bootstrap=bootstrap,
        store=f"sqlite:///{folder / 'mlflow.db'}",
        name=name,
    ).replace("  jobs: 1", f"  jobs: {jobs}")
    (folder / "study.yaml").write_text(text)
    code, output, seconds = run(["train", "--config", "study.yaml", "--no-report"], folder)
    out |= {"train_exit": code, "train_seconds": round(seconds, 1)}
    out["warnings"] = [line for line in output.splitlines() if line.startswith("warning:")]
    if code != 0:
        errors = [line for line in output.splitlines() if "error" in line]
        return out | {"error": errors[-1:]}
    agree = agreement(
        run_folder(output), folder / "clinical.csv", load_config(folder / "study.yaml")
    )
    out["agreement"] = {
        k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in agree.items()
    }
    out["agrees"] = (
        agree.get("cox_coef", 0) < 1e-6 and agree["harrell"] < 1e-9 and agree["uno"] < 1e-9
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[*DATASETS, *EXTRA])
    parser.add_argument("--models", nargs="+", default=["cox", "coxnet", "logistic", "rsf"])
    parser.add_argument("--bootstrap", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the runs in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        results = [
            bench(name, base / name, args.models, args.bootstrap, args.jobs)
            for name in args.datasets
        ]
    print(json.dumps({"models": args.models, "bootstrap": args.bootstrap, "runs": results},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
