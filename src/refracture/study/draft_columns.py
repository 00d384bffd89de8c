"""``refracture init``: one column of a study's clinical table, and what it looks like.

Every cell is read as ``refracture train`` will read it (:func:`refracture.cells.read_number`):
a decimal comma or the unit of the column's meaning is read, and said; a date or text in a
column of numbers is an unreadable cell, listed with its row and value. A column is numeric
when all but a few of its cells are numbers; the few are listed, never a reason to drop the
column silently. The meaning of a column (age, BMI, T-score, ...) comes from its name and
values (:func:`refracture.meanings.recognise`) and gives its plausible range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from refracture.cells import read_number
from refracture.covariates import category_label
from refracture.meanings import Meaning, recognise

__all__ = ["MAX_LEVELS", "ColumnGuess", "TableColumn", "fmt", "guess_kind", "words"]

MAX_LEVELS = 20  # more distinct texts than this: free text or an identifier, not a category
MAX_MISSING = 0.5  # a column missing for more patients than this is left out
FEW_CODES = 10  # integer columns with at most this many values may be codes
#: A column of numbers may hold this many unreadable cells (or this share of its cells)
#: and still be a column of numbers: each one is listed for the user to correct.
FEW_UNREADABLE, FEW_UNREADABLE_SHARE = 3, 0.05


def words(name: str) -> list[str]:
    """``Survival_in_days`` -> [survival, in, days]; ``horTh`` -> [hor, th]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.4g}"


@dataclass
class ColumnGuess:
    """What ``init`` made of one column of the clinical table.

    ``kind`` is one of id, time, event, death, site, numeric, binary, categorical or
    left_out; ``why`` the evidence shown to the user; ``reference`` the reference level of a
    categorical covariate; ``range`` its plausible range; ``role`` its meaning (age, sex,
    ...); ``cells`` the lines about single cells (unreadable, converted, out of range).
    """

    name: str
    kind: str
    why: str
    reference: str | None = None
    range: tuple[float, float] | None = None
    role: str | None = None
    cells: list[str] = field(default_factory=list)
    problems: int = 0  # cells that check and train refuse
    observed: tuple[float, float] = (float("nan"), float("nan"))  # numbers: min and max


@dataclass
class TableColumn:
    """One column's values: as text, as numbers, and the cells that are not plain numbers
    (``unreadable``: row position, value, why; ``converted``: row position, value, read as)."""

    name: str
    text: pd.Series  # category labels, NaN when missing
    number: pd.Series  # float, NaN when missing or not a number
    meaning: Meaning | None = None
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)
    converted: list[tuple[int, str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, raw: pd.Series) -> TableColumn:
        if raw.dtype == bool:
            raw = raw.astype(int)
        text = raw.map(category_label)
        lowered = text.str.lower() if text.notna().any() else text
        as_bool = lowered.map({"true": "1", "false": "0"}).fillna(text)
        number = pd.to_numeric(as_bool, errors="coerce").astype(float)
        named = recognise(name)
        units = named.units if named is not None else ()
        unreadable, converted = [], []
        for i in np.flatnonzero((number.isna() & text.notna()).to_numpy()):
            cell = read_number(text.iloc[i], units)
            if cell.conversion:
                number.iloc[i] = cell.value
                converted.append((int(i), str(text.iloc[i]), f"{cell.value:g} ({cell.conversion})"))
            else:
                unreadable.append((int(i), str(text.iloc[i]), cell.problem))
        col = cls(name, text, number, None, unreadable, converted)
        col.meaning = recognise(name, col.values) if col.is_numeric else named
        return col

    @property
    def present(self) -> pd.Series:
        return self.text.notna()

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())

    @property
    def is_numeric(self) -> bool:
        """Numbers in all but a few cells (the few are listed, see ``unreadable``)."""
        n_numbers = int(self.number.notna().sum())
        few = max(FEW_UNREADABLE, FEW_UNREADABLE_SHARE * int(self.present.sum()))
        return n_numbers > 0 and len(self.unreadable) <= few and n_numbers > len(self.unreadable)

    @property
    def values(self) -> np.ndarray:
        """The numbers of the column (unreadable and missing cells left out)."""
        return self.number.dropna().to_numpy(dtype=float)

    @property
    def levels(self) -> pd.Series:
        """Counts of each text value, the most frequent first (ties: alphabetical)."""
        counts = self.text[self.present].value_counts()
        return counts.sort_index().sort_values(ascending=False, kind="mergesort")

    def cell_lines(self, ids: pd.Series) -> tuple[list[str], int]:
        """One line per cell that is not a plain number (row, patient, value, what happens)
        and the number of those that check and train refuse."""
        line = self.text.index.to_numpy() + 2  # CSV lines as read (blank rows dropped)
        lines = [
            f"line {line[i]} ({ids.iloc[i]}): {v!r} is {why}: check and train refuse it; "
            "correct it or leave the cell empty"
            for i, v, why in self.unreadable
        ]
        lines += [
            f"line {line[i]} ({ids.iloc[i]}): {v!r} is read as {read}"
            for i, v, read in self.converted
        ]
        return lines, len(self.unreadable)


def _range_cells(col: TableColumn, ids: pd.Series, lo: float, hi: float) -> list[str]:
    number = col.number
    out = np.flatnonzero(((number < lo) | (number > hi)).to_numpy())
    line = number.index.to_numpy() + 2
    return [
        f"line {line[i]} ({ids.iloc[i]}): {number.iloc[i]:g} is outside the plausible {fmt(lo)} "
        f"to {fmt(hi)}: check and train refuse it; correct it, leave it empty, or widen the range"
        for i in out
    ]


def _numeric_guess(c: TableColumn, ids: pd.Series, missing: str) -> ColumnGuess:
    v = c.values
    distinct = np.unique(v)
    if len(distinct) == 2 and set(distinct) == {0.0, 1.0} and not c.unreadable:
        n1 = int((v == 1).sum())
        guess = ColumnGuess(c.name, "binary", f"0/1 ({n1} of {len(v)} are 1{missing})")
        if c.meaning is not None and c.meaning.range is None:  # sex coded 0/1
            guess.role = c.meaning.role
            guess.why += f"; {c.meaning.label} by its name"
        return guess
    why = f"{len(distinct)} distinct values {fmt(distinct[0])}..{fmt(distinct[-1])}"
    if len(distinct) <= FEW_CODES and np.all(distinct == np.round(distinct)):
        why += " (if these are codes, not amounts, move it to categorical)"
    guess = ColumnGuess(c.name, "numeric", why + missing)
    guess.observed = (float(distinct[0]), float(distinct[-1]))
    guess.cells, guess.problems = c.cell_lines(ids)
    if c.unreadable:
        guess.why += f"; {len(c.unreadable)} cell(s) not numbers (listed below)"
    m = c.meaning
    if m is not None and m.range is not None:
        guess.role, guess.range = m.role, m.range
        guess.why += f"; {m.label} by its name and values"
        outside = _range_cells(c, ids, *m.range)
        guess.cells += outside
        guess.problems += len(outside)
    return guess


def guess_kind(c: TableColumn, n: int, ids: pd.Series) -> ColumnGuess:
    """Numeric, binary, categorical or left out, from the values (and the meaning the name
    gives: the role and plausible range)."""
    present = int(c.present.sum())
    if present == 0:
        return ColumnGuess(c.name, "left_out", "no values at all")
    if c.n_missing > MAX_MISSING * n:
        return ColumnGuess(
            c.name, "left_out", f"missing for {c.n_missing} of {n} patients (more than half)"
        )
    missing = f"; {c.n_missing} missing, imputed" if c.n_missing else ""
    levels = c.levels
    if len(levels) == 1:
        return ColumnGuess(c.name, "left_out", f"a single value ({levels.index[0]})")
    distinct = np.unique(c.values) if c.is_numeric else np.array([])
    if len(distinct) > 2 or (len(distinct) == 2 and set(distinct) == {0.0, 1.0}):
        return _numeric_guess(c, ids, missing)  # two other codes (1/2): categorical below
    if len(levels) > min(MAX_LEVELS, max(2, present // 2)):
        shown = "; ".join(f"line {i + 2}: {v!r}" for i, v, _ in c.unreadable[:3])
        return ColumnGuess(
            c.name, "left_out", f"{len(levels)} distinct texts: free text or an identifier?"
            + (f" (e.g. {shown})" if shown else "")
        )  # fmt: skip
    shown = ", ".join(f"{lv} {k}" for lv, k in levels.head(6).items())
    more = f", ... ({len(levels)} levels)" if len(levels) > 6 else ""
    rare = [str(lv) for lv, k in levels.items() if k < 5]
    why = f"levels {shown}{more}; reference {levels.index[0]}, the most frequent{missing}"
    if rare:
        why += f" (few patients in {', '.join(rare[:3])}: consider merging levels)"
    guess = ColumnGuess(c.name, "categorical", why, reference=str(levels.index[0]))
    if c.meaning is not None and c.meaning.range is None:
        guess.role = c.meaning.role
        guess.why += f"; {c.meaning.label} by its name"
    return guess
