"""The one set of covariate rules, for training and for scoring.

:func:`check_covariates` types a table's model columns and finds every problem, per row and
column. Training and scoring apply the same rules and differ only in what stops them:

* training (:meth:`CovariateCheck.raise_errors`) refuses values that are not numbers, binary
  values other than 0/1 and values outside the plausible range (an age of 400 is a typo); a
  missing value is imputed inside the model pipeline;
* scoring (:meth:`CovariateCheck.row_messages`) makes a row an error for a missing covariate,
  a non-number, a binary value other than 0/1, a category the model never saw, or an imaging
  feature that the physics of marrow rules out in its unit (a unit mistake:
  :func:`refracture.ranges.unit_mistake`), and only warns for values outside the plausible or
  training range and for an imaging feature that could not be measured (imputed with the
  training median, as in training).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.cells import read_number
from refracture.errors import InputError
from refracture.ranges import plausible_range, unit_mistake
from refracture.text import name_list

__all__ = [
    "CovariateCheck",
    "Finding",
    "category_label",
    "check_covariates",
    "columns_hint",
    "near_namesakes",
]

# Kinds of finding, in the order training reports them.
NOT_NUMBER = "not_number"
NOT_BINARY = "not_binary"
IMPLAUSIBLE = "implausible"
MISSING = "missing"
UNMEASURED = "unmeasured"  # an imaging feature with no value
UNKNOWN_CATEGORY = "unknown_category"
OUTSIDE_TRAINING = "outside_training"
UNIT_MISTAKE = "unit_mistake"  # an imaging feature physics rules out in its unit
CONVERTED = "converted"  # a number read from a decimal comma or with its unit (a note)

TRAINING_ERRORS = (NOT_NUMBER, IMPLAUSIBLE, NOT_BINARY)
SCORING_ERRORS = (MISSING, NOT_NUMBER, NOT_BINARY, UNKNOWN_CATEGORY, UNIT_MISTAKE)


@dataclass(frozen=True)
class Finding:
    """One rule broken in one column: the row positions and their offending values."""

    kind: str
    column: str
    rows: np.ndarray
    values: list[object]
    detail: tuple[float, float] | tuple[str, ...] | None = None

    def message(self, i: int) -> str:
        """The message for the ``i``-th offending row (as a score row's ``error``/``warnings``)."""
        c, v = self.column, self.values[i]
        if self.kind == MISSING:
            return f"missing {c}"
        if self.kind == UNMEASURED:
            return f"no {c} (not measurable): imputed with the training median"
        if self.kind == NOT_NUMBER:
            return f"{c} is not a number ({v!r}{_why_not(v)})"
        if self.kind == CONVERTED:
            return f"{c} {v!r} read as {self.read_as(i)}"
        if self.kind == NOT_BINARY:
            return f"{c} must be 0 or 1 (got {v:g})"
        if self.kind == IMPLAUSIBLE:
            lo, hi = self.detail  # type: ignore[misc]
            return f"{c}={v:g} outside plausible {lo:g}-{hi:g}"
        if self.kind == OUTSIDE_TRAINING:
            lo, hi = self.detail  # type: ignore[misc]
            return f"{c}={v:g} outside training range {lo:g}-{hi:g}"
        if self.kind == UNKNOWN_CATEGORY:
            known = ", ".join(self.detail or ())  # type: ignore[arg-type]
            return f"{c} '{v}' was not seen in training (known: {known})"
        if self.kind == UNIT_MISTAKE:
            return str(v)  # the rule's own sentence, naming the column and value
        return f"{c}: {self.kind}"  # pragma: no cover - every kind is listed above

    def read_as(self, i: int) -> str:
        """``-2.7 (decimal comma)``: the number a converted cell was read as, and how."""
        read = read_number(self.values[i], self.detail or ())  # type: ignore[arg-type]
        return f"{read.value:g} ({read.conversion})"

    def table_message_of(self, i: int) -> str:
        """The ``i``-th offending row as training words it (one patient's problem)."""
        if self.kind == NOT_NUMBER:
            v = self.values[i]
            return f"column '{self.column}' must hold numbers; found {v!r}{_why_not(v)}"
        return self.message(i)

    def table_message(self) -> str:
        """All offending rows of this column in one line (training refuses the table)."""
        c = self.column
        if self.kind == NOT_NUMBER:
            found = ", ".join(f"{v!r}{_why_not(v)}" for v in self.values[:3])
            return f"column '{c}' must hold numbers; found {found}"
        if self.kind == NOT_BINARY:
            found = ", ".join(repr(float(v)) for v in self.values[:3])  # type: ignore[arg-type]
            return f"binary column '{c}' must be 0 or 1; found {found}"
        if self.kind == IMPLAUSIBLE:
            lo, hi = self.detail  # type: ignore[misc]
            found = ", ".join(f"{v:g}" for v in self.values[:3])  # type: ignore[str-format]
            return (
                f"column '{c}' has impossible values ({found}) outside the plausible {lo:g} to "
                f"{hi:g}; correct them or leave them empty (missing)"
            )
        return self.message(0)


@dataclass
class CovariateCheck:
    """The typed model columns (``clean``) and every rule broken (``findings``)."""

    clean: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)

    def of_kind(self, kinds: Iterable[str]) -> list[Finding]:
        kinds = tuple(kinds)
        order = {k: i for i, k in enumerate(kinds)}
        found = [f for f in self.findings if f.kind in order]
        return sorted(found, key=lambda f: order[f.kind])

    def raise_errors(
        self,
        ids: Sequence[object],
        *,
        source: str | Path | None = None,
        kinds: Iterable[str] = TRAINING_ERRORS,
    ) -> None:
        """Training: an InputError naming the column and patients of the first problem."""
        for f in self.of_kind(kinds):
            patients = [ids[i] for i in f.rows]
            raise InputError(f.table_message(), patient_id=name_list(patients, 5), file=source)

    def row_messages(
        self, error_kinds: Iterable[str] = SCORING_ERRORS
    ) -> tuple[pd.Series, pd.Series]:
        """Scoring: ('; '-joined errors, '; '-joined warnings) per row, in column order."""
        error_kinds = set(error_kinds)
        n = len(self.clean)
        errors: list[list[str]] = [[] for _ in range(n)]
        warns: list[list[str]] = [[] for _ in range(n)]
        for f in self.findings:
            target = errors if f.kind in error_kinds else warns
            for i, row in enumerate(f.rows):
                target[row].append(f.message(i))
        index = self.clean.index
        return (
            pd.Series(["; ".join(e) for e in errors], index=index, dtype=object),
            pd.Series(["; ".join(w) for w in warns], index=index, dtype=object),
        )


def _why_not(value: object) -> str:
    """': a date, not a number' for a cell whose problem is more than being text."""
    why = read_number(value).problem
    return f": {why}" if why and why != "text, not a number" else ""


def category_label(v: object) -> object:
    """A categorical value as text (NaN when missing); 1.0 from a numeric column -> '1'."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    text = str(v).strip()
    return text if text else np.nan


def near_namesakes(missing: Sequence[str], available: Iterable[object]) -> list[tuple[str, str]]:
    """(available column, missing column) pairs that look like a renamed or mistyped column:
    the same name in another case, or a close spelling."""
    pool = [str(c) for c in available]
    lower = {c.lower(): c for c in pool}
    pairs: list[tuple[str, str]] = []
    for m in missing:
        close = [lower[m.lower()]] if m.lower() in lower else []
        close += difflib.get_close_matches(m, pool, n=2, cutoff=0.75)
        pairs += [(c, m) for c in dict.fromkeys(close) if c != m]
    return pairs


def columns_hint(missing: Sequence[str], available: Iterable[object]) -> str:
    """`` (did you mean 'Age' for 'age'?)`` for missing columns with a near namesake."""
    hints = [f"'{c}' for '{m}'" for c, m in near_namesakes(missing, available)]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def check_covariates(
    table: pd.DataFrame,
    *,
    numeric: Sequence[str] = (),
    binary: Sequence[str] = (),
    categorical: Mapping[str, Sequence[str] | None] | None = None,
    imaging: Sequence[str] = (),
    ranges: Mapping[str, Sequence[float]] | None = None,
    training_range: Mapping[str, Sequence[float]] | None = None,
    field_strength: Sequence[float] | np.ndarray | None = None,
    units: Mapping[str, Sequence[str]] | None = None,
) -> CovariateCheck:
    """Type ``table``'s model columns and find every problem (see the module docstring).

    ``numeric`` and ``imaging`` columns become floats, ``binary`` floats 0/1, ``categorical``
    text; a value that breaks a rule is NaN (numbers) or the first known level (unknown
    categories) in ``clean``. ``categorical`` maps each name to its known levels (training's)
    or None (not checked). ``ranges`` overrides the plausible ranges of
    :mod:`refracture.ranges`; ``training_range`` gives the range seen in training.
    ``field_strength`` (tesla per row, NaN when unknown) sharpens the R2* unit rule; imaging
    values physics rules out in their unit are ``unit_mistake`` findings (not also reported as
    implausible or outside training). A cell pandas cannot read as a number is read by
    :func:`refracture.cells.read_number` (a decimal comma; a unit suffix in ``units[column]``,
    the column's meaning's units): read, it is a ``converted`` finding (a note; a score
    warning), otherwise ``not_number`` with the reason (a date, text, ...). The table must
    hold every column (check with :func:`columns_hint` first).
    """
    units = dict(units or {})
    categorical = dict(categorical or {})
    index = table.index
    out: dict[str, object] = {}
    findings: list[Finding] = []
    imaging_set = set(imaging)
    training_range = training_range or {}
    tesla = (
        np.full(len(table), np.nan)
        if field_strength is None
        else pd.to_numeric(pd.Series(np.asarray(field_strength)), errors="coerce").to_numpy(float)
    )

    def add(kind: str, column: str, mask: np.ndarray, values: object, detail=None) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            vals = list(np.asarray(values, dtype=object)[rows])
            findings.append(Finding(kind, column, rows, vals, detail))

    for col in [*numeric, *imaging, *binary]:
        raw = table[col]
        if raw.dtype == bool:
            raw = raw.astype(float)
        values = pd.to_numeric(raw, errors="coerce").astype(float).to_numpy()
        missing = raw.isna().to_numpy()
        raw_values = raw.to_numpy(dtype=object)
        converted = np.zeros(len(values), dtype=bool)
        for i in np.flatnonzero((np.isnan(values) & ~missing) | np.isinf(values)):
            read = read_number(raw_values[i], units.get(col, ()))
            values[i] = read.value
            if read.conversion:
                converted[i] = True
            elif not read.problem:  # only blanks: an empty cell
                missing[i] = True
        bad = np.isnan(values) & ~missing
        add(UNMEASURED if col in imaging_set else MISSING, col, missing, raw_values)
        add(NOT_NUMBER, col, bad, raw_values)
        add(CONVERTED, col, converted, raw_values, tuple(units.get(col, ())))
        values = np.where(bad, np.nan, values)
        if col in imaging_set:
            why = np.array(
                [
                    unit_mistake(col, float(v), float(t)) or ""
                    for v, t in zip(values, tesla, strict=True)
                ],
                dtype=object,
            )
            add(UNIT_MISTAKE, col, why != "", why)
            values = np.where(why != "", np.nan, values)  # reported once, as a unit mistake
        if col in binary:
            add(NOT_BINARY, col, ~np.isnan(values) & ~np.isin(values, (0.0, 1.0)), values)
        else:
            limits = plausible_range(col, ranges)
            if limits is not None:
                with np.errstate(invalid="ignore"):
                    out_of = (values < limits[0]) | (values > limits[1])
                add(IMPLAUSIBLE, col, out_of, values, (float(limits[0]), float(limits[1])))
            if col in training_range:
                lo, hi = training_range[col]
                with np.errstate(invalid="ignore"):
                    out_of = (values < lo) | (values > hi)
                add(OUTSIDE_TRAINING, col, out_of, values, (float(lo), float(hi)))
        out[col] = values
    for col, known in categorical.items():
        text = table[col].map(category_label).astype(object)
        missing = text.isna().to_numpy()
        add(MISSING, col, missing, text)
        if known is not None:
            unknown = ~missing & ~text.isin(list(known)).to_numpy()
            add(UNKNOWN_CATEGORY, col, unknown, text, tuple(known))
            text = text.where(~unknown, known[0])
        out[col] = text.to_numpy(dtype=object)
    clean = pd.DataFrame(out, index=index)
    return CovariateCheck(clean, findings)
