"""The image manifest (PRODUCT.md section 3): one row per patient, validated.

Structural problems (missing columns, empty or duplicate patient IDs, unknown level names)
make the whole manifest unusable and raise an InputError naming the rows (exit code 2).
Image paths that do not exist are not checked here: that is a per-patient error during
extraction, so one missing file never stops a batch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from refracture.errors import InputError
from refracture.levels import is_level, parse_level_list, sort_levels

REQUIRED_COLUMNS = ("patient_id", "site", "pdff", "r2star", "labels")
LEVEL_COLUMNS = ("treated_levels", "fractured_levels")
IMAGE_COLUMNS = ("pdff", "r2star", "labels")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Returns a DataFrame with string ``patient_id`` and ``site``, image paths resolved
    against the manifest's folder (absolute strings), and ``treated_levels`` /
    ``fractured_levels`` as lists of level names. Other columns are kept as read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", file=path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(
            f"not a readable CSV manifest ({' '.join(str(err).split())})", file=path
        ) from None
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
    df = df.reset_index(drop=True)
    line = df.index + 2  # CSV line numbers: header is line 1

    ids = df["patient_id"].map(_text)
    empty = list(line[ids == ""])
    if empty:
        raise InputError(f"manifest has empty patient_id on line(s) {_list(empty)}", file=source)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        groups = [f"{pid} (lines {_list(list(line[ids == pid]))})" for pid in dict.fromkeys(dup)]
        raise InputError(f"manifest has duplicate patient_id: {'; '.join(groups)}", file=source)
    df["patient_id"] = ids
    df["site"] = df["site"].map(_text)

    base = Path(base_dir)
    for col in IMAGE_COLUMNS:
        df[col] = df[col].map(lambda p: _resolve(p, base))

    bad: list[str] = []
    for col in LEVEL_COLUMNS:
        if col not in df.columns:
            df[col] = [[] for _ in range(len(df))]
            continue
        parsed = df[col].map(_levels)
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


def _levels(value: object) -> list[str]:
    if isinstance(value, list | tuple):  # already parsed (a validated manifest)
        return [str(v).strip().upper() for v in value]
    return parse_level_list(_text(value))


def _resolve(value: object, base: Path) -> str:
    text = _text(value)
    if not text:
        return ""  # reported per patient as a missing image
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _list(items: list[object], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
