"""``refracture demo``: the whole product on a laptop, with no data and no server.

synthesise a multi-site cohort -> train and validate (configs/synthetic.yaml) -> register the
champion -> synthesise a fresh batch of new patients with another seed -> score them from their
images with ``models:/refracture-1y@champion`` -> summary. Everything lands in one folder with its
own SQLite MLflow store, so the demo never touches a user's tracking server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from refracture.config import RunConfig, config_to_dict, load_config, parse_config
from refracture.errors import InputError
from refracture.files import write_text
from refracture.ids import PATIENT_ID
from refracture.progress import Progress, relabel
from refracture.results import TrainResult

DEMO_CONFIG = "configs/synthetic.yaml"


@dataclass
class DemoResult:
    workdir: Path
    cohort: Path
    new_batch: Path
    config: Path
    tracking_uri: str
    train: TrainResult
    scores_path: Path
    scores: pd.DataFrame
    score_exit: int
    risk_vs_truth: float  # Spearman correlation of scored risk with the true 1-year risk
    #: wall-clock seconds per stage, in the order the stages ran (see :class:`StageTimes`)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the whole demo."""
        return float(sum(self.stage_seconds.values()))

    @property
    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    @property
    def serve_command(self) -> str:
        cfg = load_config(self.config)
        return (
            f"MLFLOW_TRACKING_URI={self.tracking_uri} mlflow models serve "
            f'-m "models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}" '
            "--env-manager local -h 127.0.0.1 -p 5001"
        )

    @property
    def outputs_command(self) -> str:
        """The scores again with a DICOM SR + SEG (DICOM maps only), a FHIR RiskAssessment and
        a risk card per patient."""
        cfg = load_config(self.config)
        batch, work = self.new_batch, self.workdir
        dicom = f" --dicom-sr {work / 'sr'}" if any((batch / "images").rglob("*.dcm")) else ""
        return (
            f"refracture score --tracking-uri {self.tracking_uri} "
            f'--model "models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}" '
            f"--manifest {batch / 'manifest.csv'} --clinical {batch / 'clinical.csv'} "
            f"--out {self.scores_path} --cache-dir {work / '.refracture-cache'}{dicom} "
            f"--fhir {work / 'fhir'} --cards {work / 'cards'}"
        )

    @property
    def calculator_command(self) -> str:
        cfg = load_config(self.config)
        return (
            f"refracture calculator --tracking-uri {self.tracking_uri} "
            f'--model "models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}"'
        )


def demo_config(workdir: Path, *, bootstrap: int | None = None, jobs: int = 2) -> Path:
    """The shipped synthetic config, pointed at the demo folder (written as demo.yaml)."""
    raw = config_to_dict(load_config(DEMO_CONFIG))
    raw["data"] = {
        "manifest": str(workdir / "cohort" / "manifest.csv"),
        "clinical": str(workdir / "cohort" / "clinical.csv"),
        "cache_dir": str(workdir / ".refracture-cache"),
    }
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / 'mlflow.db'}"
    raw["validation"]["jobs"] = jobs
    if bootstrap is not None:
        raw["validation"]["bootstrap"] = bootstrap
    parse_config(raw)  # still valid
    path = workdir / "demo.yaml"
    header = "# refracture demo: configs/synthetic.yaml pointed at this folder\n"
    write_text(path, header + yaml.safe_dump(raw, sort_keys=False))
    return path


class StageTimes:
    """A progress callback that passes every report on and times the stages.

    A stage runs from its first report to the first report of the next one, so the time a
    stage spends before it reports (a model's final fit before its bootstrap) counts to the
    stage before it; the time before the first report is ``starting``. The seconds add up to
    the whole run.
    """

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._stage, self._since = "starting", time.perf_counter()

    def _close(self) -> None:
        now = time.perf_counter()
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._since = now

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._close()
            self._stage = stage
        if self.progress is not None:
            self.progress(stage, done, total)

    def finish(self) -> dict[str, float]:
        """Close the running stage; the seconds per stage."""
        self._close()
        self._stage = "finishing"
        return dict(self.seconds)


#: The smallest cohort whose re-fractures by one year outnumber the demo models' parameters
#: (seed 0; training refuses fewer events than parameters).
MIN_PATIENTS = 80


def run_demo(
    workdir: str | Path,
    *,
    n: int = 560,
    n_new: int = 50,
    seed: int = 0,
    jobs: int = 2,
    bootstrap: int | None = None,
    image_format: str = "nifti",
    progress: Progress | None = None,
) -> DemoResult:
    """Run every stage; ``progress(stage, done, total)`` drives the progress bars; the result
    holds the seconds each stage took."""
    from refracture.study import train
    from refracture.synth import write_cohort

    if n < MIN_PATIENTS:
        raise InputError(
            f"n must be at least {MIN_PATIENTS} (got {n}): the demo's clinical+imaging models "
            "have 18 parameters, and a smaller synthetic cohort has fewer re-fractures than that"
        )
    if n_new < 1:
        raise InputError(f"n_new must be at least 1 (got {n_new})")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    progress = clock = StageTimes(progress)

    cohort = workdir / "cohort"
    write_cohort(
        cohort,
        n=n,
        n_sites=4,
        seed=seed,
        jobs=jobs,
        progress=relabel(progress, "synthesising the cohort"),
    )
    config = demo_config(workdir, bootstrap=bootstrap, jobs=jobs)
    cfg = load_config(config)
    result = train(cfg, config_path=config, progress=progress)

    new_batch = workdir / "new_patients"
    write_cohort(
        new_batch,
        n=n_new,
        n_sites=min(4, n_new),
        seed=seed + 1000,
        id_prefix="N",
        image_format=image_format,
        jobs=jobs,
        progress=relabel(progress, "synthesising new patients"),
    )
    scores_path, score_exit, corr = _score_new_patients(workdir, new_batch, cfg, jobs, progress)
    return DemoResult(
        workdir=workdir,
        cohort=cohort,
        new_batch=new_batch,
        config=config,
        tracking_uri=cfg.mlflow.tracking_uri or "",
        train=result,
        scores_path=scores_path,
        scores=pd.read_csv(scores_path),
        score_exit=score_exit,
        risk_vs_truth=corr,
        stage_seconds=clock.finish(),
    )


def _score_new_patients(
    workdir: Path, new_batch: Path, cfg: RunConfig, jobs: int, progress: Progress
) -> tuple[Path, int, float]:
    """Score the new patients from their images with the champion: the scores file, the
    exit code of scoring and the Spearman correlation of the risks with the true ones."""
    from refracture.scoring import score

    scores_path = workdir / "scores.csv"
    uri = f"models:/{cfg.mlflow.registered_model}@{cfg.mlflow.alias}"
    outcome = score(
        uri,
        manifest=new_batch / "manifest.csv",
        clinical=new_batch / "clinical.csv",
        out=scores_path,
        tracking_uri=cfg.mlflow.tracking_uri,
        jobs=jobs,
        cache_dir=workdir / ".refracture-cache",
        progress=progress,
    )
    scores = pd.read_csv(scores_path)
    truth = pd.read_csv(new_batch / "truth.csv")[[PATIENT_ID, "risk_365d"]]
    both = scores.merge(truth, on=PATIENT_ID, suffixes=("", "_true"))
    ok = both[both["status"] == "ok"]
    corr = (
        float(ok["risk_365d"].corr(ok["risk_365d_true"], method="spearman"))
        if len(ok) > 2
        else np.nan
    )
    return scores_path, outcome.exit_code, corr
