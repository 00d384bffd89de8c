"""One problem found in the inputs, and the report of a whole check.

Every problem is one row of one table (``check.csv``): the patient (empty for a problem of a
whole file or of the config), the file, the column or config key, the value found, what is
wrong and what to do. A report is refused as a whole (:meth:`CheckReport.raise_problems`) or,
on purpose, turned into exclusions (:meth:`CheckReport.exclude_patients`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.errors import CheckError
from refracture.ids import PATIENT_ID
from refracture.text import clip

__all__ = ["CHECK_COLUMNS", "CheckReport", "Problem"]

#: The columns of ``check.csv``, in order.
CHECK_COLUMNS = (PATIENT_ID, "file", "column", "value", "problem", "what_to_do")


@dataclass(frozen=True)
class Problem:
    """One problem. ``column`` is a table column, or a config key when ``key`` is True."""

    patient_id: str
    file: str
    column: str
    value: str
    problem: str
    what_to_do: str
    key: bool = False
    #: the one line carries the what-to-do (False when the problem text already says it)
    advise: bool = True

    @property
    def patient_level(self) -> bool:
        """A problem of one patient's data (excluding the patient removes it)."""
        return bool(self.patient_id)

    def row(self) -> dict[str, str]:
        column = f"config key '{self.column}'" if self.key and self.column else self.column
        return dict(zip(CHECK_COLUMNS, (self.patient_id, self.file, column, self.value,
                                        self.problem, self.what_to_do), strict=True))  # fmt: skip

    def one_line(self) -> str:
        """``patient P3: file clinical.csv: column 'age' ...; what to do``: what training
        prints when this is the only problem."""
        parts = [f"patient {self.patient_id}"] if self.patient_id else []
        parts += [f"file {self.file}"] if self.file else []
        parts += [f"config key '{self.column}'"] if self.key and self.column else []
        tail = f"; {self.what_to_do}" if self.what_to_do and self.advise else ""
        return ": ".join([*parts, self.problem]) + tail


def value_text(value: object) -> str:
    """A cell as the table shows it: '' for missing, else its text (clipped)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return clip(str(value), 80)


@dataclass
class CheckReport:
    """Everything one check found.

    ``problems`` must be fixed (or their patients excluded) before any work; ``notes`` say
    what was read in a non-plain way (a decimal comma) or left out on purpose; ``excluded``
    maps each patient left out to the reason; ``counts`` how much was checked.
    """

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: the tables as read ("clinical", "manifest"), for the caller to reuse
    tables: dict[str, Any] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:  # a report is "truthy" when there is something to fix
        return bool(self.problems)

    def extend(self, other: CheckReport) -> None:
        self.problems += other.problems
        self.notes += other.notes
        self.excluded |= other.excluded
        self.tables |= other.tables
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.row() for p in self.problems], columns=list(CHECK_COLUMNS))

    def write(self, path: str | Path) -> Path:
        """``check.csv`` (atomically; a header only when nothing was found)."""
        from refracture.files import write_table

        return write_table(Path(path), self.frame())

    @property
    def patients(self) -> list[str]:
        """Patients with at least one problem, in the order found."""
        return list(dict.fromkeys(p.patient_id for p in self.problems if p.patient_level))

    def without(self, patients: Mapping[str, str]) -> CheckReport:
        """The report with ``patients`` (ID -> reason) excluded: their problems dropped."""
        keep = [p for p in self.problems if p.patient_id not in patients]
        out = replace(self, problems=keep, excluded={**self.excluded, **patients})
        return out

    def exclude_patients(self) -> CheckReport:
        """Every patient with a problem excluded, the first problem as the reason
        (``train --exclude-invalid``); problems of a whole file or of the config stay."""
        reasons: dict[str, str] = {}
        for p in self.problems:
            if p.patient_level and p.patient_id not in reasons:
                reasons[p.patient_id] = f"invalid input: {p.problem}" + (
                    f" ({p.column})" if p.column and p.column not in p.problem else ""
                )
        return self.without(reasons)

    def pseudonymised(self, pseudonymiser: Any) -> CheckReport:
        """The report with every patient ID replaced by its keyed pseudonym, in the ID column
        and inside the texts (``train --pseudonymise``)."""
        ids = {p.patient_id for p in self.problems if p.patient_id}

        def hide(text: str) -> str:
            return pseudonymiser.scrub(text, ids) if text else text

        problems = [
            replace(p, patient_id=pseudonymiser(p.patient_id) if p.patient_id else "",
                    file=hide(p.file), value=hide(p.value), problem=hide(p.problem))
            for p in self.problems
        ]  # fmt: skip
        return replace(self, problems=problems, notes=[hide(n) for n in self.notes])

    def raise_problems(self, doing: str, csv: Path | None = None) -> None:
        """Refuse ``doing`` (e.g. "training") with every problem: a :class:`CheckError` whose
        message is the one problem, or how many there are and where they are listed."""
        if not self.problems:
            return
        rows = [p.row() for p in self.problems]
        if len(self.problems) == 1:
            raise CheckError(self.problems[0].one_line(), rows=rows)
        n_patients = len(self.patients)
        who = f" of {n_patients} patient(s)" if n_patients else ""
        where = f"; all listed above and in {csv}" if csv is not None else "; all listed above"
        fix = (
            "; fix them, or leave the patients out with data.exclude or train --exclude-invalid"
            if doing == "training" and n_patients
            else ""
        )
        raise CheckError(
            f"{len(self.problems)} problems in the inputs{who}: nothing was started for "
            f"{doing}{where}{fix}",
            rows=rows,
        )


def problems_of(rows: Iterable[Problem]) -> CheckReport:
    return CheckReport(problems=list(rows))
