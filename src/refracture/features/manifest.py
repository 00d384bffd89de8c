"""The image manifest: one row per patient, validated.

Structural problems (missing columns, empty or duplicate patient IDs, unknown level names)
make the whole manifest unusable and raise an InputError naming the rows (exit code 2).
Image paths that do not exist are not checked here: that is a per-patient error during
extraction, so one missing file never stops a batch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.levels import is_level, level_list, sort_levels
from refracture.maps import MAPS
from refracture.tables import read_patient_table
from refracture.text import name_list

__all__ = [
    "IMAGE_COLUMNS",
    "LEVEL_COLUMNS",
    "REQUIRED_COLUMNS",
    "read_manifest",
    "validate_manifest",
]

REQUIRED_COLUMNS = (PATIENT_ID, "site", *MAPS, "labels")
LEVEL_COLUMNS = ("treated_levels", "fractured_levels")
IMAGE_COLUMNS = (*MAPS, "labels")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Returns a DataFrame with string ``patient_id`` and ``site``, image paths resolved
    against the manifest's folder (absolute strings), and ``treated_levels`` /
    ``fractured_levels`` as lists of level names. Other columns are kept as read.
    """
    path = Path(path)
    df = read_patient_table(path, "manifest", all_text=True)
    return validate_manifest(df, base_dir=path.parent, source=path)


def validate_manifest(
    df: pd.DataFrame, base_dir: str | Path = ".", source: str | Path | None = None
) -> pd.DataFrame:
    """Validate a manifest DataFrame (see :func:`read_manifest`); returns a new frame."""
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"manifest is missing the column(s) {', '.join(missing)} (needs "
            f"{', '.join(REQUIRED_COLUMNS)}; optional {', '.join(LEVEL_COLUMNS)})",
            file=source,
        )
    rows = df.index if pd.api.types.is_integer_dtype(df.index) else range(len(df))
    df = df.reset_index(drop=True)
    line = pd.Index(rows) + 2  # CSV line numbers (header is line 1), as the file was read

    ids = df[PATIENT_ID].map(_text)
    empty = list(line[ids == ""])
    if empty:
        raise InputError(
            f"manifest has empty patient_id on line(s) {name_list(empty)}", file=source
        )
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        groups = [
            f"{pid} (lines {name_list(list(line[ids == pid]))})" for pid in dict.fromkeys(dup)
        ]
        raise InputError(f"manifest has duplicate patient_id: {'; '.join(groups)}", file=source)
    df[PATIENT_ID] = ids
    df["site"] = df["site"].map(_text)

    base = Path(base_dir)
    for col in IMAGE_COLUMNS:
        df[col] = df[col].map(lambda p: _resolve(p, base))

    bad: list[str] = []
    for col in LEVEL_COLUMNS:
        if col not in df.columns:
            df[col] = [[] for _ in range(len(df))]
            continue
        parsed = df[col].map(lambda v: [x.upper() for x in level_list(v)])
        for i, levels in parsed.items():
            unknown = [lv for lv in levels if not is_level(lv)]
            if unknown:
                bad.append(f"line {line[i]} {col}: {', '.join(unknown)}")
        df[col] = parsed.map(
            lambda lv: sort_levels(list(dict.fromkeys(x for x in lv if is_level(x))))
        )
    if bad:
        raise InputError(f"manifest names unknown vertebral levels: {'; '.join(bad)}", file=source)
    return df


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _resolve(value: object, base: Path) -> str:
    text = _text(value)
    if not text:
        return ""  # reported per patient as a missing image
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
