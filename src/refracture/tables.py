"""The one reader of patient tables (clinical tables, features files, manifests).

One dtype policy everywhere: the patient ID and every column that holds labels (categorical
covariates, a manifest's paths and level lists) are read as text, so '0042' stays '0042' and
category '1' stays '1'; numbers are read exactly (``float_precision='round_trip'``), so a
value written by one step and read by the next is the same float.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.text import clip

__all__ = ["TABLE_SUFFIXES", "read_patient_table"]

TABLE_SUFFIXES = (".csv", ".parquet")


def read_patient_table(
    path: str | Path,
    what: str,
    *,
    id_column: str = PATIENT_ID,
    text_columns: Iterable[str] = (),
    all_text: bool = False,
) -> pd.DataFrame:
    """Read a CSV or Parquet table of patients (by extension).

    ``what`` names the table in errors ("clinical table", "features file"). The study's own
    ``id_column`` is renamed to :data:`~refracture.ids.PATIENT_ID`. ``all_text`` reads every
    CSV cell as text with empty cells as "" (a manifest). A missing file, another extension or
    an unparsable file or a table with no rows is an :class:`~refracture.errors.InputError`
    naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", file=path.resolve())
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"the {what} must be a .csv or .parquet file", file=path)
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = _read_csv(path, all_text, [id_column, PATIENT_ID, *text_columns])
    except Exception as err:  # noqa: BLE001 - any parser error means an unreadable input
        raise InputError(f"cannot read the {what} ({clip(err, 200)})", file=path) from None
    table = _spreadsheet_leftovers(table)
    if len(table) == 0:
        # A header and no rows: nothing to do is an input error, not an empty result.
        raise InputError(f"no patients: the {what} has no rows", file=path)
    if id_column != PATIENT_ID and id_column in table.columns:
        if PATIENT_ID in table.columns:
            raise InputError(
                f"the {what} has both '{id_column}' (data.id_column) and '{PATIENT_ID}'; "
                "keep one patient ID column",
                file=path,
            )
        table = table.rename(columns={id_column: PATIENT_ID})
    return table


def _read_csv(path: Path, all_text: bool, text_columns: list[str]) -> pd.DataFrame:
    """A CSV as spreadsheets export it: a byte-order mark, ';' between cells (a European
    Excel), or the Windows code page instead of UTF-8."""
    head = path.read_bytes()[:4096]
    try:
        encoding = "utf-8-sig"
        first = head.decode(encoding).splitlines()[0] if head else ""
    except UnicodeDecodeError:
        encoding = "cp1252"
        first = head.decode(encoding).splitlines()[0] if head else ""
    sep = ";" if first.count(";") > first.count(",") else ","
    options = {"sep": sep, "encoding": encoding}
    if all_text:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, **options)
    text = dict.fromkeys(text_columns, str)
    return pd.read_csv(path, dtype=text, float_precision="round_trip", **options)


def _blank(table: pd.DataFrame) -> pd.DataFrame:
    return table.isna() | table.astype(str).apply(lambda c: c.str.strip() == "")


def _spreadsheet_leftovers(table: pd.DataFrame) -> pd.DataFrame:
    """Column names stripped; rows with no value at all and unnamed empty columns (what a
    spreadsheet leaves below and beside its data) dropped. The index keeps each row's
    position in the file, so messages name CSV lines (index + 2) as the user sees them."""
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    if table.empty:
        return table
    blank = _blank(table)
    unnamed = [c for c in table.columns if c.startswith("Unnamed:") and blank[c].all()]
    table = table.drop(columns=unnamed)
    return table[~blank.drop(columns=unnamed).all(axis=1)]
