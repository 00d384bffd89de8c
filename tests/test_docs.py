"""Every ```bash and ```python block of README.md and docs/*.md runs, so the docs cannot drift.

Each page runs in its own folder of one shared sandbox, like a reader at a terminal: its blocks
run in page order, a ``cd`` in a bash block and the variables of a python block carry over to
the page's next block, and every block must finish with exit code 0. The files a page takes as
already there (a trained model in ``mlflow.db``, ``cohort/``, ``features/``, ...) are linked
into the page's folder from the sandbox (:data:`NEEDS`), which holds a small synthetic cohort
and a model trained on it and registered as ``refracture-1y@champion`` in a SQLite MLflow store.

Blocks that only illustrate (output samples, config fragments) are fenced ```text, ```yaml or
```json, never ```bash or ```python; a bare ``` fence is refused. A block that needs what a
test cannot start here (a long-running server, an external converter) is marked
``<!-- docs-test: skip (REASON) -->`` on the line before its fence, and REASON must name the
existing file that covers it. A block that is a script the page then runs is marked
``<!-- docs-test: save NAME -->``: it is written to NAME in the page's folder instead of run.
The few edits that make a block fast enough for a test are the explicit table
:data:`REWRITES`; each must still match its block.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared_build import built_once

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("bash", "python")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (?P<verb>skip|save) (?P<arg>.+?) -->$")

#: (page, text in the block, replacement, why). Nothing else in any block is changed.
REWRITES: list[tuple[str, str, str, str]] = [
    (
        "synthetic.md",
        "refracture synth --out cohort  ",
        "refracture synth --out cohort --n 4 ",
        "560 patients take about 80 s; the command is the same",
    ),
    (
        "synthetic.md",
        "--out cohort_dcm --format dicom",
        "--out cohort_dcm --format dicom --n 4",
        "as above",
    ),
    ("synthetic.md", "--out batch --n 50", "--out batch --n 4", "as above"),
    (
        "synthetic.md",
        "--out cohort_pacs --format dicom-export",
        "--out cohort_pacs --format dicom-export --n 4",
        "as above",
    ),
    (
        "training.md",
        "refracture synth --out cohort  ",
        "refracture synth --out cohort --n 80 ",
        "as above; 80 patients still have enough re-fractures for the config's covariates",
    ),
    (
        "training.md",
        "bootstrap: 20/' study.yaml",
        "bootstrap: 4/' study.yaml",
        "the same code with fewer replicates: the page shows the command, not the estimates",
    ),
    ("api.md", "n=80, n_sites=2", "n=40, n_sites=2", "half the images to write and measure"),
]

#: Files of the shared sandbox each page takes as already there, linked or copied into the
#: page's folder under the same name, or under "NAME=SHARED" another name. The demo and
#: training.md measure the same seed-0 images as the sandbox: its feature cache (keyed by file
#: content and settings) spares measuring them twice more, as it would for a user.
NEEDS: dict[str, list[str]] = {
    "README.md": ["refracture-demo/.refracture-cache=.refracture-cache"],
    "analysis.md": [],
    "api.md": [],
    "contributing.md": [],
    "data.md": ["labels.nii.gz"],
    "deploy.md": [],
    "errors.md": ["study.yaml", "cohort", ".refracture-cache", "mlflow.db"],
    "extract.md": ["manifest.csv", "images"],
    "harmonisation.md": [],
    "models.md": [],
    "morphometry.md": [],
    "registry.md": ["mlflow.db", "cohort", "features"],
    "scoring.md": ["mlflow.db", "manifest.csv", "clinical.csv", "images", "tonight", "new", "dcm"],
    "synthetic.md": [],
    "training.md": ["try-train/.refracture-cache=.refracture-cache"],
}
#: Copied, not linked: a page may change them (a `promote`, a new version).
COPIED = {"mlflow.db", "study.yaml"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: tuple[str, str] | None  # (verb, argument) of a docs-test comment before the fence


def read_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = MARKER.match(lines[i - 1].strip()) if i else None
        marker = (prev["verb"], prev["arg"]) if prev else None
        code = "\n".join(lines[i + 1 : j]) + "\n"
        blocks.append(Block(page.name, i + 1, m["lang"], code, marker))
        i = j + 1
    return blocks


ALL = [b for page in PAGES for b in read_blocks(page)]


def rewritten(block: Block) -> str:
    code = block.code
    for page, old, new, _why in REWRITES:
        if page == block.page and old in code:
            code = code.replace(old, new)
    return code


def test_every_fence_names_its_language() -> None:
    bare = [f"{b.page}:{b.line}" for b in ALL if not b.lang]
    assert not bare, f"fences without a language (use text for output samples): {bare}"


def test_every_skip_names_the_file_that_covers_it() -> None:
    for b in ALL:
        if b.marker and b.marker[0] == "skip":
            reason = b.marker[1]
            assert reason.startswith("(") and reason.endswith(")"), f"{b.page}:{b.line}"
            paths = [p for p in re.findall(r"[\w.-]+/[\w./-]+", reason) if (ROOT / p).is_file()]
            assert paths, f"{b.page}:{b.line}: the skip reason names no existing file: {reason}"
        if b.marker:
            assert b.lang in RUN, f"{b.page}:{b.line}: a docs-test marker on a {b.lang} block"


def test_every_rewrite_still_matches_a_block() -> None:
    for page, old, _new, _why in REWRITES:
        assert any(b.page == page and old in b.code for b in ALL), f"stale rewrite {page}: {old}"


def test_every_page_is_in_needs() -> None:
    assert sorted(NEEDS) == sorted(p.name for p in PAGES)


# --- the shared sandbox --------------------------------------------------------------------


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REFRACTURE_"))}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["COLUMNS"] = "160"
    return e


def sh(cmd: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", cmd],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


MORE_VERSIONS = """
from mlflow import MlflowClient
client = MlflowClient()
(first,) = client.search_model_versions("name = 'refracture-1y'")
for _ in range(2):
    client.create_model_version("refracture-1y", first.source, run_id=first.run_id,
                                tags=dict(first.tags))
"""


def build_sandbox(root: Path) -> Path:
    """The shared sandbox: an 80-patient synthetic cohort (4 sites, seed 0), its features, a
    quick copy of configs/synthetic.yaml (cox and logistic, 4 bootstrap replicates), one
    `refracture train` into ./mlflow.db and two more registered versions of the same model (so
    a page can promote version 3 and roll back to 1), four new patients in tonight/ and new/,
    a manifest of two of them in the sandbox itself, and one patient with DICOM maps in dcm/."""
    shared = root / "shared"
    shared.mkdir(parents=True)
    steps = [
        "refracture synth --out cohort --n 80",
        "refracture synth --out tonight --n 4 --seed 1 --id-prefix N",
        "cp -r tonight new",
        "refracture synth --out dcm --n 1 --sites 1 --seed 2 --format dicom",
        "cp cohort/images/P0001/labels.nii.gz labels.nii.gz",
        "cp -r tonight/images images && cp tonight/clinical.csv clinical.csv"
        " && head -3 tonight/manifest.csv > manifest.csv",
        'python -c "import shutil; from refracture.config import packaged_config; '
        "shutil.copy(packaged_config('synthetic'), 'study.yaml')\"",
        "sed -i -e 's/^models: .*/models: [cox, logistic]/' "
        "-e 's/^  bootstrap: .*/  bootstrap: 4/' study.yaml",
        "refracture extract --manifest cohort/manifest.csv --out features --config study.yaml",
        "refracture train --config study.yaml --no-report",
    ]
    for step in steps:
        done = sh(step, shared)
        assert done.returncode == 0, f"{step}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    # in a child process in the sandbox: MLflow resolves the version's logged model through
    # the process-wide tracking URI, which is sqlite:///mlflow.db of the working folder there
    done = sh(f"python -c {shlex.quote(MORE_VERSIONS)}", shared)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session, shared by both workers (each page has its own folder)."""
    root, _ = built_once(tmp_path_factory, "docs-sandbox", build_sandbox)
    return root


def page_dir(root: Path, page: str) -> Path:
    here = root / "pages" / Path(page).stem
    if not here.exists():
        here.mkdir(parents=True)
        for need in NEEDS[page]:
            name, _, shared = need.partition("=")
            src = root / "shared" / (shared or name)
            assert src.exists(), f"{page} needs {need}, which the sandbox lacks"
            (here / name).parent.mkdir(parents=True, exist_ok=True)
            if name in COPIED:
                shutil.copy(src, here / name)
            else:
                (here / name).symlink_to(src)
    return here


# --- the blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", [p.name for p in PAGES])
def test_page_blocks_run(page: str, sandbox: Path) -> None:
    run_page(page, sandbox)


def run_page(page: str, sandbox: Path) -> None:
    """Run the blocks of one page in order in its folder of the sandbox."""
    blocks = [b for b in ALL if b.page == page and b.lang in RUN]
    cwd = page_dir(sandbox, page)
    namespace: dict = {"__name__": "__docs__"}
    for b in blocks:
        where = f"{b.page}:{b.line}"
        code = rewritten(b)
        if b.marker and b.marker[0] == "skip":
            continue
        if b.marker and b.marker[0] == "save":
            (cwd / b.marker[1]).write_text(code)
            continue
        if b.lang == "bash":
            state = cwd / ".docs-test-cwd"
            done = sh(f"{code}\npwd > {state}", cwd)
            assert done.returncode == 0, f"{where} exit {done.returncode}\n{code}\n{done.stderr}"
            cwd = Path(state.read_text().strip())
        else:
            with contextlib.chdir(cwd):
                exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
