"""The clinical table against the run config: IDs, outcome, covariates, roles, every cell.

Each rule gives one :class:`~refracture.checks.problems.Problem` per patient (or per file, for
a column that is missing), worded as training words its refusal, so one problem reads the same
in ``check.csv``, on the terminal and in ``refracture train``'s error line. The cell rules are
:func:`refracture.covariates.check_covariates`'s, the ones scoring applies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from refracture.checks.problems import CheckReport, Problem, value_text
from refracture.config import RunConfig
from refracture.covariates import (
    CONVERTED,
    IMPLAUSIBLE,
    NOT_BINARY,
    NOT_NUMBER,
    check_covariates,
    columns_hint,
)
from refracture.errors import InputError
from refracture.ids import PATIENT_ID, patient_id_text
from refracture.tables import read_patient_table

__all__ = ["check_clinical", "clinical_ids", "problem_of"]

FIX_CELL = "correct the value, or leave the cell empty (missing values are imputed)"
FIX_RANGE = (
    "correct it or leave it empty (missing); if the column's plausible range is another, set "
    "covariates.ranges"
)


def problem_of(err: InputError, what_to_do: str = "") -> Problem:
    """An input error of a reader as a problem row (its message says what is wrong; the
    table's what-to-do column gets ``what_to_do``, the one line does not repeat it)."""
    return Problem(
        patient_id=err.patient_id or "",
        file=err.file or "",
        column=err.key or "",
        value="",
        problem=err.message,
        what_to_do=what_to_do,
        key=bool(err.key),
        advise=False,
    )


def _fmt(v: object) -> str:
    if isinstance(v, float | np.floating) and np.isfinite(v):
        return f"{float(v):g}"
    return repr(v) if isinstance(v, str) else str(v)


def clinical_ids(table: pd.DataFrame, file: str, id_column: str) -> tuple[pd.Series, list[Problem]]:
    """The table's IDs as text ('' where empty) and the ID problems: rows without an ID (one
    problem), each duplicated ID (one problem per ID)."""
    if PATIENT_ID not in table.columns:
        close = [c for c in table.columns if str(c).strip().lower() == id_column.lower()]
        said = f" (did you mean '{close[0]}'?)" if close else ""
        return pd.Series([""] * len(table), index=table.index, dtype=object), [
            Problem("", file, "data.id_column", "",
                    f"the clinical table has no '{id_column}' column{said}",
                    "name the study's patient ID column with data.id_column", key=True)
        ]  # fmt: skip
    ids = table[PATIENT_ID].map(patient_id_text)
    problems = []
    line = pd.Series(np.asarray(table.index) + 2, index=table.index)  # CSV lines as read
    if (ids == "").any():
        lines = ", ".join(map(str, line[ids == ""].head(10)))
        problems.append(
            Problem("", file, id_column, "",
                    f"the clinical table has rows without a {id_column} (CSV lines {lines})",
                    "fill in the IDs or delete the rows")
        )  # fmt: skip
    dup = ids[(ids != "") & ids.duplicated(keep=False)]
    for pid in dict.fromkeys(dup):
        lines = ", ".join(map(str, line[ids == pid]))
        problems.append(
            Problem(pid, file, id_column, pid,
                    f"duplicated patient IDs in the clinical table: {pid} is on CSV lines {lines}",
                    "keep one row per patient")
        )  # fmt: skip
    return ids, problems


def _outcome(table: pd.DataFrame, ids: pd.Series, cfg: RunConfig, file: str) -> list[Problem]:
    oc = cfg.outcome
    columns = [(oc.time, "outcome.time"), (oc.event, "outcome.event")]
    columns += [(oc.death, "outcome.death")] if oc.death else []
    missing = [
        Problem("", file, key, "", f"outcome column '{col}' is missing from the clinical table",
                "set outcome.time / outcome.event to your column names", key=True)
        for col, key in columns if col not in table.columns
    ]  # fmt: skip
    if missing:
        return missing
    out = []
    time = pd.to_numeric(table[oc.time], errors="coerce")
    bad = time.isna() | ~np.isfinite(time.to_numpy(dtype=float, na_value=np.nan)) | (time < 0)
    for i in np.flatnonzero(bad.to_numpy()):
        v = table[oc.time].iloc[i]
        out.append(
            Problem(ids.iloc[i], file, oc.time, value_text(v),
                    f"'{oc.time}' must be a number >= 0, the time from surgery to the event or "
                    f"the last follow-up; found {_fmt(v) if value_text(v) else 'nothing'}",
                    "correct it (0 is allowed: an event or a loss on the day of surgery)")
        )  # fmt: skip
    allowed, meaning = (
        ((0, 1), "0 or 1 (outcome.death combines it with the death column)")
        if oc.death
        else ((0, 1, 2), "0 (censored), 1 (re-fracture) or 2 (death)")
    )
    for col in [oc.event, *([oc.death] if oc.death else [])]:
        codes = pd.to_numeric(table[col], errors="coerce")
        for i in np.flatnonzero(~codes.isin(allowed).to_numpy()):
            v = table[col].iloc[i]
            found = _fmt(v) if value_text(v) else "nothing"
            out.append(
                Problem(ids.iloc[i], file, col, value_text(v),
                        f"'{col}' must be {meaning}; found {found}", "recode it")
            )  # fmt: skip
    return out


def _cells(table: pd.DataFrame, ids: pd.Series, cfg: RunConfig, file: str, columns) -> CheckReport:
    """Every cell of the covariate (or role) columns, by the rules training and scoring share."""
    cov = cfg.covariates
    numeric, binary = columns
    check = check_covariates(
        table, numeric=numeric, binary=binary, ranges=cov.plausible_ranges, units=cov.cell_units
    )
    report = CheckReport()
    for f in check.findings:
        for j, row in enumerate(f.rows):
            v = f.values[j]
            pid = ids.iloc[row]
            if f.kind == NOT_NUMBER:
                text, fix = f.table_message_of(j), FIX_CELL
            elif f.kind == NOT_BINARY:
                text = f"binary column '{f.column}' must be 0 or 1; found {_fmt(v)}"
                fix = "recode it to 0/1, or list the column under covariates.numeric"
            elif f.kind == IMPLAUSIBLE:
                lo, hi = f.detail  # type: ignore[misc]
                text = (
                    f"column '{f.column}' has impossible values ({_fmt(v)}) outside the "
                    f"plausible {lo:g} to {hi:g}"
                )
                fix = FIX_RANGE
            else:
                continue
            report.problems.append(Problem(pid, file, f.column, value_text(v), text, fix))
        if f.kind == CONVERTED:
            shown = ", ".join(
                f"{ids.iloc[r]} {f.values[j]!r} -> {f.read_as(j)}" for j, r in enumerate(f.rows[:5])
            )
            more = f" and {len(f.rows) - 5} more" if len(f.rows) > 5 else ""
            report.notes.append(
                f"{Path(file).name}: column '{f.column}': {len(f.rows)} cell(s) read as numbers "
                f"({shown}{more}); check them"
            )
    return report


def _config_vs_table(table: pd.DataFrame, cfg: RunConfig, file: str) -> list[Problem]:
    cov = cfg.covariates
    out = []
    missing = [c for c in cov.names if c not in table.columns]
    if missing:
        out.append(
            Problem("", file, "covariates", "",
                    "columns missing from the table: " + ", ".join(missing)
                    + columns_hint(missing, [c for c in table.columns if c not in cov.names]),
                    "rename the column, or change covariates", key=True)
        )  # fmt: skip
    for role, col in cov.roles.items():
        if col not in table.columns:
            out.append(
                Problem("", file, f"covariates.roles.{role}", col,
                        f"the column '{col}' given the role {role} is not in the clinical table"
                        + columns_hint([col], table.columns),
                        "name the study's own column, or remove the role", key=True)
            )  # fmt: skip
    for col, ref in cov.categorical.items():
        if col not in table.columns:
            continue
        levels = sorted({str(v).strip() for v in table[col].dropna()} - {""})
        if ref not in levels:
            out.append(
                Problem("", file, f"covariates.categorical.{col}", ref,
                        f"reference level '{ref}' of '{col}' does not occur in the data "
                        f"(levels: {', '.join(levels) or 'none'})",
                        "use one of the levels it lists", key=True)
            )  # fmt: skip
    return out


def _events(table: pd.DataFrame, cfg: RunConfig, file: str) -> list[Problem]:
    """No re-fracture at all, or a horizon beyond every follow-up: nothing to learn."""
    oc = cfg.outcome
    time = pd.to_numeric(table[oc.time], errors="coerce")
    event = pd.to_numeric(table[oc.event], errors="coerce")
    if not time.notna().any():
        return []
    out = []
    if not (event == 1).any():
        counts = [f"{int((event == 0).sum())} censored"]
        counts += [f"{int((event == 2).sum())} died"] if (event == 2).any() else []
        out.append(
            Problem("", file, "outcome.event", "",
                    f"no re-fracture in the outcome (no event 1 among {len(table)} patients: "
                    f"{', '.join(counts)}), so no risk model can be fitted",
                    "check the event coding (outcome.event)", key=True)
        )  # fmt: skip
    if oc.horizon_days > time.max():
        out.append(
            Problem("", file, "outcome.horizon_days", f"{oc.horizon_days:g}",
                    f"the horizon ({oc.horizon_days:g}) is beyond the longest follow-up "
                    f"({time.max():g}, in the unit of '{oc.time}')",
                    f"choose a horizon of at most {time.max():g}", key=True)
        )  # fmt: skip
    return out


def check_clinical(cfg: RunConfig, path: str | Path, purpose: str = "train") -> CheckReport:
    """Every problem of the clinical table for ``purpose`` (train: IDs, outcome, covariates,
    roles; analyse: IDs and the role columns). ``counts['clinical']`` is its number of rows;
    ``tables['clinical']`` the table as read (its ID column renamed to patient_id)."""
    report = CheckReport()
    file = str(path)
    try:
        table = read_patient_table(
            path, "clinical table", id_column=cfg.data.id_column,
            text_columns=list(cfg.covariates.categorical),
        )  # fmt: skip
    except InputError as err:
        report.problems.append(problem_of(err, "fix data.clinical, or export the table again"))
        return report
    ids, problems = clinical_ids(table, file, cfg.data.id_column)
    report.problems += problems
    report.counts["clinical"] = len(table)
    report.tables["clinical"] = table.assign(**{PATIENT_ID: ids})
    cov = cfg.covariates
    if purpose == "train":
        report.problems += _config_vs_table(table, cfg, file)
        outcome = _outcome(table, ids, cfg, file)
        report.problems += outcome
        if not outcome:
            report.problems += _events(table, cfg, file)
        numeric = [c for c in cov.numeric if c in table.columns]
        binary = [c for c in cov.binary if c in table.columns]
    else:
        roles = {r: c for r, c in cfg.role_columns().items() if c in table.columns}
        numeric = [c for r, c in roles.items() if r != "sex"]
        binary = []
    report.extend(_cells(table, ids, cfg, file, (numeric, binary)))
    return report
