"""Benchmark ``refracture extract`` on a synthetic cohort, stage by stage; prints JSON.

Everything is measured in one run on the same cohort, as CPU time (``time.process_time``, and
the worker processes' own CPU for ``--jobs`` above 1) and wall time, because the machine may be
shared:

- ``reference_decode``: the three images of every patient decoded with plain nibabel
  (``np.asarray(nib.load(path).dataobj)``; SimpleITK's series reader for DICOM), the yardstick;
- ``stages``: every patient extracted in this process as ``--jobs 1`` does it (read and hash
  the files, decode, label QC, geometry, ROIs, units, features, morphometry, the registration
  check, scanner), each stage's CPU and wall time per patient and its ratio to the reference;
- ``extract``: the whole ``extract_cohort`` at each ``--jobs``, CPU summed over the main
  process and its workers, and the speed-up of ``--jobs 2`` over ``--jobs 1`` by wall time and
  by CPU accounting (the ``--jobs 1`` CPU over the CPU of the busiest of two cores, when the
  work of all processes is spread over two). The warm workers' fork server is started before
  the manifest is read, as the command line does; its imports (``cpu_pool_start_s``, once per
  process) are reported apart and counted in ``by_cpu_accounting_with_pool_start``;
- ``reference_commit`` (``--reference-commit REV``): the same measurements with the package as
  it was at ``REV`` (``git archive`` of its ``src/``, run in a subprocess on the same cohort),
  and ``after_over_before`` ratios.

    python scripts/bench_extract.py --n 120 --jobs 1 2
    python scripts/bench_extract.py --n 60 --jobs 1 --reference-commit main
    python scripts/bench_extract.py --cohort existing_cohort_dir --jobs 2 --repeat 3

Targets: extraction at most 0.17 s CPU per patient at ``--jobs 1`` with every check, and
``--jobs 2`` at least 1.85x faster than ``--jobs 1`` at 120 patients on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Stages in the order a patient goes through them (``Stage.name`` in features/patient.py).
STAGES = (
    "read",
    "load",
    "labels",
    "geometry",
    "roi",
    "units",
    "features",
    "morphometry",
    "registration",
    "scanner",
)
STAGE_TITLES = {
    "read": "read and hash the files",
    "load": "decode",
    "labels": "label QC",
    "geometry": "grids",
    "roi": "ROIs",
    "units": "units",
    "features": "features",
    "morphometry": "morphometry",
    "registration": "registration check",
    "scanner": "scanner",
}


class _Clock:
    """CPU and wall time spent under each stage name (a ``Stage`` that keeps the time)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self._name = ""
        self._t = (time.process_time(), time.perf_counter())

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self.switch(value)

    def switch(self, value: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        if self._name:
            self.cpu[self._name] = self.cpu.get(self._name, 0.0) + cpu - self._t[0]
            self.wall[self._name] = self.wall.get(self._name, 0.0) + wall - self._t[1]
        self._name, self._t = value, (cpu, wall)


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


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn()`` in this process."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def _proc_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every live descendant of this process, by pid (Linux
    /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()
    out = {}
    for pid in cpu:
        p = parent.get(pid)
        while p and p != me:
            p = parent.get(p)
        if p == me:
            out[pid] = cpu[pid]
    return out


def _children_rusage() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_extract(manifest, config, jobs: int) -> dict[str, Any]:
    """One ``extract_cohort`` run: wall, this process's CPU, each worker's CPU."""
    from refracture.features import extract_cohort

    before, reaped = _proc_cpu(), _children_rusage()
    c0, w0 = time.process_time(), time.perf_counter()
    result = extract_cohort(manifest, config, out_dir=None, jobs=jobs)
    wall, main_cpu = time.perf_counter() - w0, time.process_time() - c0
    after = _proc_cpu()
    workers = {pid: t - before.get(pid, 0.0) for pid, t in after.items()}
    workers = {pid: t for pid, t in workers.items() if t > 0}
    gone = _children_rusage() - reaped  # workers that ended during the run
    total = main_cpu + sum(workers.values()) + gone
    return {
        "wall": wall,
        "cpu_main": main_cpu,
        "cpu_workers": sorted(workers.values(), reverse=True),
        "cpu_ended_children": gone,
        "cpu_total": total,
        "failed": int(result.n_failed),
    }


def _stages(rows: list[dict], config) -> tuple[dict[str, float], dict[str, float]]:
    """Extract every row in this process as ``--jobs 1`` does, timing each stage."""
    from refracture.features.cache import read_inputs
    from refracture.features.patient import decide_alone, finish_patient, prepare_patient

    clock = _Clock()
    for row in rows:
        clock.switch("read")
        inputs = read_inputs(row)
        prep = prepare_patient(
            row, config, hashes=inputs.hashes, content=inputs.content, stage=clock
        )
        clock.switch("units")
        units = decide_alone(prep.evidence, config, row=row)
        finish_patient(prep, units, config, stage=clock)
        clock.switch("")
    return clock.cpu, clock.wall


def measure(cohort: Path, jobs_list: list[int], repeat: int, stages: bool) -> dict[str, Any]:
    """Every figure for ``cohort`` with the refracture importable here."""
    from refracture.config import ExtractionConfig
    from refracture.features.manifest import read_manifest

    pool_started = any(j > 1 for j in jobs_list) and _warm_pool()  # as the CLI does
    manifest = read_manifest(cohort / "manifest.csv")
    n = len(manifest)
    config = ExtractionConfig()
    rows = manifest.to_dict("records")
    paths = [str(r[k]) for r in rows for k in ("pdff", "r2star", "labels")]

    def reference() -> None:
        for path in paths:
            _reference_decode(path)

    reference()  # untimed: files in the page cache, modules imported
    _stages(rows[:2], config)
    refs: list[tuple[float, float]] = []
    stage_runs: list[tuple[dict, dict]] = []
    runs: dict[str, list[dict]] = {}
    pool_start_cpu = None
    for _ in range(repeat):
        if pool_started and pool_start_cpu is None:  # the fork server's imports, done by now
            pool_start_cpu = sum(_proc_cpu().values())
        refs.append(_timed(reference))
        if stages:
            stage_runs.append(_stages(rows, config))
        for jobs in jobs_list:
            runs.setdefault(f"jobs_{jobs}", []).append(_run_extract(manifest, config, jobs))

    ref_cpu = statistics.median(r[0] for r in refs) / n
    ref_wall = statistics.median(r[1] for r in refs) / n
    out: dict[str, Any] = {
        "n_patients": n,
        "reference_decode": {
            "what": "np.asarray(nib.load(path).dataobj) for the 3 images",
            "cpu_s_per_patient": round(ref_cpu, 4),
            "wall_s_per_patient": round(ref_wall, 4),
        },
    }
    if stage_runs:
        out.update(_stage_table(stage_runs, n, ref_cpu))
    out.update(_extract_figures(runs, n, ref_cpu, pool_start_cpu))
    return out


def _stage_table(stage_runs: list[tuple[dict, dict]], n: int, ref_cpu: float) -> dict[str, Any]:
    """Per stage: median CPU and wall ms per patient, and the CPU over the reference decode."""
    table = {}
    for name in STAGES:
        cpu = statistics.median(r[0].get(name, 0.0) for r in stage_runs) / n
        wall = statistics.median(r[1].get(name, 0.0) for r in stage_runs) / n
        table[name] = {
            "what": STAGE_TITLES[name],
            "cpu_ms_per_patient": round(1000 * cpu, 1),
            "wall_ms_per_patient": round(1000 * wall, 1),
            "cpu_ratio_to_reference_decode": round(cpu / ref_cpu, 2),
        }
    total = statistics.median(sum(r[0].values()) for r in stage_runs) / n
    return {
        "stages": table,
        "stages_total_cpu_s_per_patient": round(total, 4),
        "stages_total_cpu_ratio_to_reference_decode": round(total / ref_cpu, 2),
    }


def _extract_figures(
    runs: dict[str, list[dict]], n: int, ref_cpu: float, pool_start_cpu: float | None
) -> dict[str, Any]:
    """Per ``--jobs``: wall and CPU (all processes), and the speed-ups over ``--jobs 1``."""
    extract = {}
    for key, got in runs.items():
        cores = int(key.removeprefix("jobs_"))
        cpu = statistics.median(g["cpu_total"] for g in got)
        busiest = statistics.median(
            max(g["cpu_total"] / cores, g["cpu_main"], *g["cpu_workers"]) for g in got
        )
        wall = statistics.median(g["wall"] for g in got)
        extract[key] = {
            "wall_s": round(wall, 3),
            "wall_s_per_patient": round(wall / n, 4),
            "cpu_s": round(cpu, 3),
            "cpu_s_per_patient": round(cpu / n, 4),
            "cpu_main_s": round(statistics.median(g["cpu_main"] for g in got), 3),
            "cpu_workers_s": [round(t, 3) for t in got[-1]["cpu_workers"]],
            "cpu_busiest_core_s": round(busiest, 3),
            "cpu_ratio_to_reference_decode": round(cpu / n / ref_cpu, 2),
            "all_wall_s": [round(g["wall"], 2) for g in got],
            "failed": got[-1]["failed"],
        }
    out: dict[str, Any] = {"extract": extract}
    if pool_start_cpu is not None:
        out["cpu_pool_start_s"] = round(pool_start_cpu, 3)
    one = extract.get("jobs_1")
    for key, fig in extract.items():
        if one is None or key == "jobs_1":
            continue
        with_start = (fig["cpu_s"] + (pool_start_cpu or 0.0)) / int(key.removeprefix("jobs_"))
        out[f"speedup_{key}_vs_jobs_1"] = {
            "by_wall_time": round(one["wall_s"] / fig["wall_s"], 3),
            "by_cpu_accounting": round(one["cpu_s"] / fig["cpu_busiest_core_s"], 3),
            "by_cpu_accounting_with_pool_start": round(
                one["cpu_s"] / max(with_start, fig["cpu_busiest_core_s"]), 3
            ),
        }
    return out


def _warm_pool() -> bool:
    """Start the warm workers' fork server now, as ``refracture extract`` does before it reads
    the manifest (False for a version of the package without one)."""
    try:
        from refracture.features.pool import warm
    except ImportError:
        return False
    warm()
    return True


def _reference_run(rev: str, cohort: Path, args: argparse.Namespace, tmp: Path) -> dict:
    """:func:`measure` with ``src/`` as it was at ``rev``, in a subprocess."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = tmp / f"ref_{sha[:10]}"
    archive = tmp / "ref.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), sha, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    cmd = [sys.executable, __file__, "--cohort", str(cohort), "--repeat", str(args.repeat)]
    cmd += ["--jobs", *map(str, args.jobs)] + ([] if args.stages else ["--no-stages"])
    env = {**os.environ, "PYTHONPATH": str(dest / "src")}
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return {"commit": sha, **json.loads(got.stdout)}


def _ratios(after: dict, before: dict) -> dict[str, float]:
    """after / before for the per-patient CPU figures both runs have."""
    out = {}
    for name, fig in after.get("stages", {}).items():
        b = before.get("stages", {}).get(name, {}).get("cpu_ms_per_patient")
        if b:
            out[f"stage_{name}_cpu"] = round(fig["cpu_ms_per_patient"] / b, 3)
    for key in ("stages_total_cpu_s_per_patient",):
        if key in after and before.get(key):
            out["stages_total_cpu"] = round(after[key] / before[key], 3)
    for key, fig in after.get("extract", {}).items():
        b = before.get("extract", {}).get(key)
        if b:
            out[f"extract_{key}_cpu"] = round(fig["cpu_s"] / b["cpu_s"], 3)
            out[f"extract_{key}_wall"] = round(fig["wall_s"] / b["wall_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="patients to synthesise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="nifti", choices=["nifti", "dicom"])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cohort", type=Path, help="use this synthetic cohort instead of writing one")
    ap.add_argument("--workdir", type=Path, help="where to write the cohort (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of everything; medians reported")
    ap.add_argument("--no-stages", dest="stages", action="store_false", help="skip the stages")
    ap.add_argument("--reference-commit", help="also measure src/ as it was at this git revision")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        cohort = args.cohort
        synth_seconds = None
        if cohort is None:
            from refracture.synth import write_cohort

            cohort = (args.workdir or Path(tmp)) / f"cohort_{args.format}_{args.n}"
            t0 = time.perf_counter()
            write_cohort(cohort, n=args.n, seed=args.seed, image_format=args.format, jobs=2)
            synth_seconds = time.perf_counter() - t0
        report: dict[str, Any] = {
            "format": args.format if args.cohort is None else "as given",
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "repeats": args.repeat,
            "synth_seconds": None if synth_seconds is None else round(synth_seconds, 2),
        }
        if args.reference_commit:
            before = _reference_run(args.reference_commit, cohort, args, Path(tmp))
        report.update(measure(cohort, args.jobs, args.repeat, args.stages))
        if args.reference_commit:
            report["reference_commit"] = before
            report["after_over_before"] = _ratios(report, before)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
