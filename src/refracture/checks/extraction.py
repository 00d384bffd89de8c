"""What only the measured images can tell: the training findings that scoring would refuse.

After extraction, a training patient is a problem when scoring would give that patient
``status=error``: the images could not be measured, an extraction QC finding listed in
``extraction.qc_errors`` (a misregistered label map, ...), an imaging feature that the physics
of marrow rules out in its unit (a PDFF of 0.53 %: a fraction read as percent). A patient whose
values contradict the unit decided for their site is a problem too: the site's unit was used,
but the patient's own values say another, so either reading may be wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from refracture.checks.problems import CheckReport, Problem
from refracture.config import RunConfig
from refracture.features.findings import qc_findings, split_findings
from refracture.ids import PATIENT_ID
from refracture.maps import MAPS
from refracture.ranges import unit_mistake

__all__ = ["extraction_problems"]

FIX_IMAGE = "fix the image or the manifest row, or leave the patient out (data.exclude)"
#: unit sources that are a decision, not a declaration
DECIDED = ("site", "model")


def _text(v: object) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()


def _units_contradicted(qc: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for kind in MAPS:
        note = _text(qc.get(f"qc_{kind}_units_note"))
        if note and _text(qc.get(f"qc_{kind}_units_source")) in DECIDED:
            out.append((f"qc_{kind}_units", note))
    return out


def extraction_problems(
    features: pd.DataFrame,
    errors: pd.DataFrame | None,
    cfg: RunConfig,
    manifest: str = "",
) -> CheckReport:
    """Every patient of an extraction that training must not use as measured (see the module
    docstring): one problem per finding, naming the patient and what to do."""
    report = CheckReport()
    for row in [] if errors is None else errors.to_dict("records"):
        pid = str(row[PATIENT_ID])
        message = str(row["message"]).removeprefix(f"patient {pid}: ")
        report.problems.append(
            Problem(pid, manifest, str(row.get("stage", "")), "",
                    f"the images could not be measured: {message}", FIX_IMAGE)
        )  # fmt: skip
    imaging = [c for c in cfg.imaging.features if c in features.columns]
    field = features.get("scanner_field_strength_t")
    for i, row in enumerate(features.to_dict("records")):
        pid = str(row[PATIENT_ID])
        error, _ = split_findings(qc_findings(row), cfg.extraction.qc_errors)
        if error:
            report.problems.append(
                Problem(pid, manifest, "qc", "", error,
                        "check the label map and the images (extract --qc-png draws them), fix "
                        "them, or leave the patient out")
            )  # fmt: skip
        tesla = float(field.iloc[i]) if field is not None and _text(field.iloc[i]) else None
        for col in imaging:
            value = pd.to_numeric(pd.Series([row[col]]), errors="coerce").iloc[0]
            why = unit_mistake(col, float(value), tesla) if np.isfinite(value) else None
            if why:
                report.problems.append(
                    Problem(pid, manifest, col, f"{value:.3g}", why,
                            "declare the map's unit (manifest pdff_units / r2star_units, or a "
                            "JSON sidecar) and train again")
                )  # fmt: skip
        for col, note in _units_contradicted(row):
            report.problems.append(
                Problem(pid, manifest, col, _text(row.get(col)),
                        f"the patient's values contradict the unit decided for the site: {note}",
                        "declare this patient's unit in the manifest (pdff_units / r2star_units)")
            )  # fmt: skip
    return report
