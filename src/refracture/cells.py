"""One table cell read as a number, the way hospital exports write numbers.

Spreadsheets and registries write ``-2,7`` (a decimal comma), ``27 kg/m2`` (a unit after the
number), ``2021-03-04`` (a date in the wrong column) or ``#DIV/0!`` (an Excel error). Training,
scoring, ``refracture check`` and ``refracture init`` read every cell through
:func:`read_number`, so they agree on what a cell holds: a decimal comma and a unit suffix of
the column's own unit are read (and reported as a conversion), everything else that is not a
number is refused with the reason. pandas parses the plain numbers first; only the cells it
cannot read come here, so the rules are hand-written for those few cells.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CellNumber", "read_number"]

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # a typographic minus, an en dash
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
_WITH_UNIT = re.compile(r"(?P<number>[+-]?\d+(?:[.,]\d+)?)\s*(?P<unit>[^\d\s.,+-].*)")
_DATE = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2})?)?"
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}([ T]\d{1,2}:\d{2}(:\d{2})?)?"
)
_EXCEL_ERRORS = ("#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#N/A", "#####")


@dataclass(frozen=True)
class CellNumber:
    """What a cell holds: ``value`` (NaN when it is not a number), ``conversion`` (how a
    non-plain number was read, e.g. "decimal comma") or ``problem`` (why it is not a number)."""

    value: float
    conversion: str = ""
    problem: str = ""


def _unit_key(text: str) -> str:
    return text.lower().replace(" ", "").replace("²", "2").replace("³", "3").strip(".")


def read_number(cell: object, units: Sequence[str] = ()) -> CellNumber:
    """Read ``cell`` as a number; ``units`` are the unit suffixes the column's meaning allows
    (:attr:`refracture.meanings.Meaning.units`).

    >>> read_number("-2,7")
    CellNumber(value=-2.7, conversion='decimal comma', problem='')
    >>> read_number("27 kg/m2", ("kg/m2",)).value
    27.0
    >>> read_number("2021-03-04").problem
    'a date, not a number'
    """
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        value = float(cell)
        if math.isinf(value):
            return CellNumber(math.nan, problem="an infinite value")
        return CellNumber(value)
    text = str(cell).strip().translate(_MINUS)
    if not text:
        return CellNumber(math.nan)
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return CellNumber(value)
        if math.isnan(value):
            return CellNumber(math.nan)
        return CellNumber(math.nan, problem="an infinite value")
    if text.upper() in _EXCEL_ERRORS or text.startswith("#"):
        return CellNumber(math.nan, problem="a spreadsheet error value, not a number")
    if _DATE.fullmatch(text):
        return CellNumber(math.nan, problem="a date, not a number")
    if _DECIMAL_COMMA.fullmatch(text):
        return _decimal_comma(text)
    m = _WITH_UNIT.fullmatch(text)
    if m:
        number = m["number"]
        unit = _unit_key(m["unit"])
        read = _decimal_comma(number) if "," in number else CellNumber(float(number))
        if read.problem:
            return read
        if unit in {_unit_key(u) for u in units}:
            what = f"unit '{m['unit'].strip()}' dropped"
            conversion = f"{read.conversion}, {what}" if read.conversion else what
            return CellNumber(read.value, conversion=conversion)
        said = f" (this column's unit is {units[0]})" if units else ""
        return CellNumber(math.nan, problem=f"a number with the unit '{m['unit'].strip()}'{said}")
    return CellNumber(math.nan, problem="text, not a number")


def _decimal_comma(text: str) -> CellNumber:
    whole, _, frac = text.partition(",")
    if len(frac) == 3 and len(whole.lstrip("+-")) <= 3:
        # 1,234 is 1.234 with a decimal comma or 1234 with a thousands separator
        return CellNumber(
            math.nan, problem="a decimal comma or a thousands separator: cannot tell which"
        )
    return CellNumber(float(f"{whole}.{frac}"), conversion="decimal comma")
