"""Warm worker processes for ``--jobs N`` (refracture.features.pool): they start with the
extraction modules imported, never run the caller's script, keep the order of the results, and
a worker that dies costs only the patient that killed it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

import pool_probe
from refracture.features.pool import chunk_size, map_ordered, parts

ROOT = Path(__file__).resolve().parents[1]


def test_workers_start_with_the_extraction_modules_imported() -> None:
    got = list(map_ordered(pool_probe.loaded, [0, 1, 2, 3], 2, on_lost=pool_probe.lost))
    assert len(got) == 4
    for modules in got:  # imported by the fork server once, inherited by every worker
        assert modules == list(pool_probe.HEAVY), modules


def test_results_keep_their_order_and_a_dying_worker_loses_only_its_patient() -> None:
    items = list(range(40))
    assert chunk_size(len(items), 2) == 4  # several patients per task
    tasks = parts(items, 2)  # guided: full chunks first, single patients at the end
    assert sum(tasks, []) == items and [len(t) for t in tasks[-4:]] == [1] * 4
    assert [len(t) for t in tasks] == sorted((len(t) for t in tasks), reverse=True)
    got = list(map_ordered(pool_probe.double_or_die, items, 2, on_lost=pool_probe.lost))
    expected = [2 * i for i in items]
    expected[17] = "lost 17: the worker process measuring it died"
    assert got == expected
    # the pool came back: the next batch runs normally
    assert list(map_ordered(pool_probe.double_or_die, [1, 2], 2, on_lost=pool_probe.lost)) == [2, 4]


def test_parallel_extraction_from_a_script_without_main_guard(
    synth_nifti: Path, tmp_path: Path
) -> None:
    two = pd.read_csv(synth_nifti / "manifest.csv").head(2)
    for kind in ("pdff", "r2star", "labels"):
        two[kind] = [str(synth_nifti / p) for p in two[kind]]
    two.to_csv(tmp_path / "two.csv", index=False)
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import refracture as rf\n"
        f"r = rf.extract_cohort(r'{tmp_path / 'two.csv'}', jobs=2)\n"
        "print('patients', len(r.features) + len(r.errors))\n"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("patients") == 1, run.stdout  # not again in each worker
    assert "patients 2" in run.stdout
