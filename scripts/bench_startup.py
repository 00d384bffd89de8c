"""Benchmark how fast the commands start: every ``--help``, and ``init``, ``promote`` (and
``check`` where the command exists) doing their work; prints JSON.

Each command runs as a user runs it, in a fresh Python process (``refracture ...``), several
times; the figures are medians of its wall time and its CPU time (user + system of the child
process, the figure that a busy machine distorts least). One more run of each under
``python -X importtime`` lists the heaviest packages it imports and which of the heavy ones
(MLflow, scikit-survival, lifelines, PySpark, matplotlib, scikit-learn, SciPy) it loads.

- ``init`` drafts a config from a 560-patient clinical table (the synthetic cohort's);
- ``promote`` moves the champion alias in a copy of an MLflow store: ``--tracking-uri`` of an
  existing store (a demo's ``sqlite:///refracture-demo/mlflow.db``), else a store made by
  training a small model first (a minute or two);
- ``check`` (when the command exists) checks the drafted config and the clinical table.

    python scripts/bench_startup.py
    python scripts/bench_startup.py --repeat 5 --tracking-uri sqlite:///refracture-demo/mlflow.db

Targets: every ``--help`` under 1 s; ``init``, ``check`` and ``promote`` under 3 s for 560
patients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
#: Packages that a command should import only when its work needs them.
HEAVY = ("mlflow", "sksurv", "lifelines", "pyspark", "matplotlib", "sklearn", "scipy")
#: The console script's own code, run with this interpreter.
LAUNCH = "import sys; from refracture.cli import main; sys.argv[0] = 'refracture'; main()"


def _run(args: list[str], cwd: Path, importtime: bool = False) -> dict[str, Any]:
    """One ``refracture ARGS`` in a fresh process: wall and CPU seconds, exit code."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", LAUNCH, *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "code": run.returncode, "stderr": run.stderr}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("COLUMNS", "100")
    env.pop("MLFLOW_TRACKING_URI", None)  # the commands get their store explicitly
    return env


def _imports(stderr: str, top: int) -> dict[str, Any]:
    """The heaviest packages of a ``-X importtime`` log (the time spent in each top-level
    package's modules, its dependencies not counted) and the heavy ones loaded."""
    spent: dict[str, int] = {}
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        pkg = parts[2].strip().split(".")[0]
        spent[pkg] = spent.get(pkg, 0) + int(parts[0])
    heaviest = sorted(spent.items(), key=lambda kv: -kv[1])[:top]
    return {
        "heaviest_packages_s": {k: round(v / 1e6, 3) for k, v in heaviest},
        "heavy_loaded": [h for h in HEAVY if h in spent],
        "import_s": round(sum(spent.values()) / 1e6, 3),
    }


def _measure(args: list[str], cwd: Path, repeat: int, top: int) -> dict[str, Any]:
    runs = [_run(args, cwd) for _ in range(repeat)]
    traced = _run(args, cwd, importtime=True)
    codes = sorted({r["code"] for r in runs})
    out: dict[str, Any] = {
        "args": " ".join(args),
        "wall_s": round(statistics.median(r["wall"] for r in runs), 3),
        "cpu_s": round(statistics.median(r["cpu"] for r in runs), 3),
        "all_wall_s": [round(r["wall"], 2) for r in runs],
        "exit_codes": codes,
        **_imports(traced["stderr"], top),
    }
    if codes != [0]:
        out["stderr_tail"] = runs[-1]["stderr"][-400:]
    return out


def _commands() -> list[str]:
    import typer

    from refracture.cli import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _store(args: argparse.Namespace, root: Path) -> tuple[str, str]:
    """(tracking URI of a copy of the store, a registered model name with a version)."""
    if args.tracking_uri:
        src = Path(args.tracking_uri.removeprefix("sqlite:///"))
    else:
        sys.path.insert(0, str(SCRIPTS))
        from bench_score import train_small_model

        _, uri = train_small_model(root / "train", args.n_train, models="logistic")
        src = Path(uri.removeprefix("sqlite:///"))
    db = root / "store" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, db)  # promote writes into the copy only
    return f"sqlite:///{db}", "refracture-1y"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (medians)")
    ap.add_argument("--n", type=int, default=560, help="patients in the clinical table")
    ap.add_argument("--n-train", type=int, default=90, help="patients of the small model")
    ap.add_argument("--tracking-uri", help="an existing sqlite:/// store to promote in (a copy)")
    ap.add_argument("--no-promote", action="store_true", help="skip promote (no store needed)")
    ap.add_argument("--top", type=int, default=8, help="heaviest packages listed per command")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temp dir)")
    args = ap.parse_args(argv)

    from refracture.synth.cohort import simulate_cohort

    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        root = (args.workdir or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        clinical = root / "clinical.csv"
        simulate_cohort(args.n, 4, 0).clinical.to_csv(clinical, index=False)
        commands = _commands()
        report: dict[str, Any] = {
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "repeats": args.repeat,
            "commands": commands,
            "help": {"refracture --help": _measure(["--help"], root, args.repeat, args.top)},
        }
        for name in commands:
            report["help"][f"{name} --help"] = _measure(
                [name, "--help"], root, args.repeat, args.top
            )
        work: dict[str, Any] = {}
        drafts = root / "drafts"
        drafts.mkdir()
        init_args = ["init", "--clinical", str(clinical), "--out"]
        runs = []
        for i in range(args.repeat):  # init never overwrites: a new file each run
            runs.append(_run([*init_args, str(drafts / f"study_{i}.yaml")], root))
        traced = _run([*init_args, str(drafts / "traced.yaml")], root, importtime=True)
        work["init"] = {
            "args": f"init --clinical <{args.n}-patient clinical.csv> --out study.yaml",
            "wall_s": round(statistics.median(r["wall"] for r in runs), 3),
            "cpu_s": round(statistics.median(r["cpu"] for r in runs), 3),
            "exit_codes": sorted({r["code"] for r in runs}),
            **_imports(traced["stderr"], args.top),
        }
        if "check" in commands:
            work["check"] = _measure(
                ["check", "--config", str(drafts / "study_0.yaml"), "--clinical", str(clinical)],
                root,
                args.repeat,
                args.top,
            )
        if not args.no_promote:
            uri, model = _store(args, root)
            work["promote"] = _measure(
                ["promote", model, "1", "--reason", "benchmark", "--tracking-uri", uri],
                root,
                args.repeat,
                args.top,
            )
        report["work"] = work
        worst_help = max(v["wall_s"] for v in report["help"].values())
        report["targets"] = {
            "every_help_under_1s_wall": worst_help < 1.0,
            "slowest_help_wall_s": worst_help,
            "slowest_help_cpu_s": max(v["cpu_s"] for v in report["help"].values()),
            **{f"{k}_under_3s_wall": v["wall_s"] < 3.0 for k, v in work.items()},
        }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
