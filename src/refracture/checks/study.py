"""The whole input check of a study: config, clinical table, manifest, image headers.

:func:`check_study` is what ``refracture check`` prints and what ``train`` and ``analyse`` run
before any work; :func:`check_config_file` reads a config without stopping at its first
problem. Patients excluded on purpose (``data.exclude``) are not checked further: their
problems are dropped and they are listed in ``CheckReport.excluded``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from refracture.checks.clinical import check_clinical
from refracture.checks.manifest import check_manifest
from refracture.checks.problems import CheckReport, Problem
from refracture.config import (
    ExtractionConfig,
    RunConfig,
    config_errors,
    read_config_yaml,
)
from refracture.errors import InputError
from refracture.ids import PATIENT_ID

__all__ = ["Purpose", "check_config_file", "check_study"]

Purpose = Literal["train", "analyse"]
Progress = Callable[[str, int, int], None]


def check_config_file(path: str | Path) -> tuple[RunConfig | None, dict[str, Any], CheckReport]:
    """(the config or None, the raw YAML mapping, its problems: every key that is wrong)."""
    report = CheckReport()
    try:
        source, raw = read_config_yaml(path)
    except InputError as err:
        report.problems.append(
            Problem("", err.file or str(path), "", "", err.message, "fix --config")
        )
        return None, {}, report
    cfg, errors = config_errors(raw)
    for key, message in errors:
        report.problems.append(
            Problem("", str(source), key, "", message, "see configs/template.yaml", key=True)
        )
    return cfg, raw if isinstance(raw, dict) else {}, report


def _cross(report: CheckReport, cfg: RunConfig, manifest: str, imaging: bool) -> None:
    """Patients in one table and not the other; exclusions that name nobody."""
    clin, man = report.tables.get("clinical"), report.tables.get("manifest")
    clin_ids = set(clin[PATIENT_ID]) - {""} if clin is not None else set()
    man_ids = set(man[PATIENT_ID]) - {""} if man is not None else set()
    if clin is not None and man is not None and imaging:
        for pid in man[PATIENT_ID]:
            if pid and pid not in clin_ids:
                report.problems.append(
                    Problem(pid, manifest, PATIENT_ID, pid,
                            "in the manifest but not in the clinical table (scoring would refuse "
                            "this patient: no clinical row)",
                            "add the patient's clinical row, check the IDs match exactly, or "
                            "leave the patient out with data.exclude")
                )  # fmt: skip
        no_images = sorted(clin_ids - man_ids - set(cfg.data.exclude))
        if no_images:
            shown = ", ".join(no_images[:5]) + (" ..." if len(no_images) > 5 else "")
            report.notes.append(
                f"{len(no_images)} patient(s) of the clinical table are not in the manifest "
                f"({shown}): the models leave them out (excluded.csv and the report's cohort "
                "flow list them)"
            )
    for pid in cfg.data.exclude:
        if (clin is not None or man is not None) and pid not in clin_ids | man_ids:
            report.problems.append(
                Problem("", "", "data.exclude", pid,
                        f"data.exclude names {pid}, who is in neither the clinical table nor "
                        "the manifest", "correct the ID (IDs are compared as written)", key=True)
            )  # fmt: skip


def check_study(
    config: RunConfig | str | Path,
    *,
    manifest: str | Path | None = None,
    clinical: str | Path | None = None,
    purpose: Purpose = "train",
    headers: bool = True,
    progress: Progress | None = None,
) -> CheckReport:
    """Every problem of a study's inputs, for ``purpose`` (train or analyse).

    Parameters
    ----------
    config : the run config, or the path of its YAML file (then every wrong key is a problem).
    manifest, clinical : other files to check against the config than ``data.manifest`` and
        ``data.clinical`` (e.g. a new batch).
    headers : read every image's header (``refracture check`` does; a few seconds for a
        560-patient study).
    progress : ``progress(stage, done, total)`` while the headers are read.
    """
    report = CheckReport()
    if isinstance(config, RunConfig):
        cfg: RunConfig | None = config
        raw: dict[str, Any] = {}
    else:
        cfg, raw, report = check_config_file(config)
    if cfg is None:
        # A broken config: the manifest and its images can still be checked.
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        man = manifest or data.get("manifest")  # type: ignore[union-attr]
        if isinstance(man, str | Path):
            try:
                extraction = ExtractionConfig.model_validate(raw.get("extraction") or {})
            except Exception:  # noqa: BLE001 - already reported as config problems
                extraction = ExtractionConfig()
            report.extend(check_manifest(man, extraction, headers=headers, progress=progress))
        return report
    clinical = clinical or cfg.data.clinical
    report.extend(check_clinical(cfg, clinical, purpose))
    manifest = manifest or cfg.data.manifest
    imaging = cfg.has_imaging if purpose == "train" else True
    if purpose == "analyse":
        if manifest is None:
            report.problems.append(
                Problem("", "", "data.manifest", "", "the biomarker analysis measures PDFF/R2* "
                        "from the images, and the config names no manifest",
                        "set data.manifest", key=True)
            )  # fmt: skip
        if "tscore" not in cfg.role_columns():
            report.problems.append(
                Problem("", "", "covariates.roles.tscore", "", "the analysis needs the BMD "
                        "T-score column, and no column has the role tscore",
                        "set covariates.roles.tscore to the study's T-score column", key=True)
            )  # fmt: skip
    if manifest is not None and imaging:
        report.extend(check_manifest(manifest, cfg.extraction, headers=headers, progress=progress))
    _cross(report, cfg, str(manifest or ""), imaging)
    known = set()
    for name in ("clinical", "manifest"):
        if name in report.tables:
            known |= set(report.tables[name][PATIENT_ID])
    exclude = {
        pid: f"excluded on purpose: {why}" for pid, why in cfg.data.exclude.items() if pid in known
    }
    report = report.without(exclude) if exclude else report
    if exclude:
        report.notes.append(
            f"{len(exclude)} patient(s) excluded on purpose (data.exclude): not checked further"
        )
    return report
