"""Patient IDs: the one column name and the one way IDs are read.

Every table refracture reads or writes names its patients in :data:`PATIENT_ID`; a study whose
clinical table uses another name says so in ``data.id_column`` and the column is renamed as it
is read (:func:`refracture.tables.read_patient_table`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from refracture.errors import InputError
from refracture.text import name_list

#: The patient ID column of every table refracture reads and writes.
PATIENT_ID = "patient_id"

__all__ = ["PATIENT_ID", "patient_id_text", "patient_ids"]


def patient_id_text(v: object) -> str:
    """A patient ID as text: '' when missing; 1001.0 (a numeric column) -> '1001'."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def patient_ids(
    table: pd.DataFrame,
    what: str,
    source: str | Path | None,
    *,
    column: str = PATIENT_ID,
    hint: str = "",
) -> pd.Series:
    """The table's patient IDs as text; a missing column, empty or duplicated IDs are input
    errors naming the CSV lines or the patients (training and scoring read IDs the same way).

    ``column`` is the study's own ID column name (``data.id_column``) when the table has not
    been renamed yet; ``hint`` is added to the message when the column is missing (how to
    name another column).
    """
    if column not in table.columns:
        close = [c for c in table.columns if str(c).strip().lower() == column.lower()]
        said = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(f"the {what} has no '{column}' column{said}{hint}", file=source)
    ids = table[column].map(patient_id_text)
    empty = ids == ""  # missing, or only blanks: a blank ID would match nothing, silently
    if empty.any():
        rows = [str(i + 2) for i in _file_rows(table)[empty.to_numpy()][:5]]
        raise InputError(
            f"the {what} has rows without a {column} (CSV lines {', '.join(rows)})", file=source
        )
    dup = ids[ids.duplicated(keep=False)].unique()
    if len(dup):
        raise InputError(
            f"duplicated patient IDs in the {what} ({len(dup)}); each patient must have one row",
            patient_id=name_list(sorted(dup), 5),
            file=source,
        )
    return ids


def _file_rows(table: pd.DataFrame) -> np.ndarray:
    """Each row's position in its file (the index as read), else its position here."""
    index = table.index
    if pd.api.types.is_integer_dtype(index) and index.is_unique:
        return np.asarray(index, dtype=np.int64)
    return np.arange(len(table))
