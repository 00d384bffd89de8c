"""What ``refracture score`` reads: a features file or a manifest, and a clinical table.

Everything that would stop every patient (unreadable tables, columns that do not match the
model, duplicate IDs) is checked here, before any patient is processed (InputError: exit 2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from refracture.covariates import columns_hint, near_namesakes
from refracture.dataset import scanner_columns
from refracture.errors import InputError
from refracture.files import hash_file
from refracture.ids import PATIENT_ID, patient_ids
from refracture.privacy import Pseudonymiser
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import CONTEXT_COLUMNS, FIELD_STRENGTH
from refracture.tables import read_patient_table
from refracture.text import name_list

__all__ = ["ScoreInput", "columns_message", "measured_scanner", "read_input"]

ID = PATIENT_ID


@dataclass
class ScoreInput:
    """The rows to score, in input order.

    ``rows`` holds ``patient_id`` and every model input known before scoring (for a manifest
    and an imaging model, the imaging features are filled in later, chunk by chunk).
    ``pre_error`` is the reason a row cannot be scored before looking at its values (no
    clinical row), "" otherwise. ``manifest`` holds the validated manifest records when images
    are to be measured.
    """

    kind: Literal["features", "manifest"]
    rows: pd.DataFrame
    pre_error: np.ndarray
    digest: str
    manifest: list[dict[str, Any]] | None = None
    manifest_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)  # the site's own IDs, if pseudonymised

    @property
    def ids(self) -> np.ndarray:
        return self.rows[ID].to_numpy(dtype=object)


def _patient_ids(table: pd.DataFrame, what: str, path: Path, id_column: str = ID) -> pd.Series:
    """Normalised text IDs, positionally indexed; empty or duplicate IDs stop the run (exit 2)."""
    hint = (
        f" (the model was trained with the ID column '{id_column}'; name another with --id-column)"
        if id_column != ID
        else "; name the ID column with --id-column"
    )
    if ID not in table.columns:
        return patient_ids(table, what, path, column=id_column, hint=hint)  # raises
    return patient_ids(table, what, path).astype(object).reset_index(drop=True)


def columns_message(what: str, missing: list[str], unexpected: list[str]) -> str:
    """'lacks X; unexpected Y' with likely typos first, so a renamed column is easy to spot."""
    likely = list(dict.fromkeys(c for c, _ in near_namesakes(missing, unexpected)))
    ordered = [*likely, *[c for c in unexpected if c not in likely]]
    text = f"model column(s) missing from the {what}: {', '.join(missing)}"
    text += f"; unexpected column(s): {name_list(ordered, 15)}" if ordered else ""
    return text + columns_hint(missing, unexpected)


def _digest(*parts: Path | str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(hash_file(part).encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def read_input(
    model: ScoringModel,
    *,
    manifest: Path | None = None,
    clinical: Path | None = None,
    features: Path | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    id_column: str | None = None,
) -> ScoreInput:
    """Read and check the inputs before any patient is processed (InputError: exit 2).

    The clinical table and the features file name their patients in ``id_column``, by
    default the ID column the model was trained with (its config's ``data.id_column``); the
    output calls it ``patient_id``. With a ``pseudonymiser`` every patient_id is replaced by
    its keyed pseudonym as it is read.
    """
    id_column = id_column or model.bundle.id_column
    if (manifest is None) == (features is None):
        raise InputError("give exactly one of --manifest and --features")
    categorical = list(model.inputs.categorical)
    notes: list[str] = []
    originals: list[str] = []
    clin: pd.DataFrame | None = None
    if clinical is not None:
        clin = read_patient_table(
            Path(clinical), "clinical table", id_column=id_column, text_columns=categorical
        )
        clin_ids = _patient_ids(clin, "clinical table", Path(clinical), id_column)
        if pseudonymiser is not None:
            clin_ids = clin_ids.map(pseudonymiser)
        clin.index = pd.Index(clin_ids, name=ID)

    if features is not None:
        path = Path(features)
        table = read_patient_table(
            path, "features file", id_column=id_column, text_columns=categorical
        )
        ids = _patient_ids(table, "features file", path, id_column)
        if pseudonymiser is not None:
            originals = list(ids.astype(str))
            ids = ids.map(pseudonymiser)
        table = table.reset_index(drop=True)
        if set(model.inputs.batch) - {"site"}:
            # The scanner as training found it: scanner_* columns, else what the PDFF map's
            # header said (a features file made before extraction recorded the scanner).
            table = table.assign(**scanner_columns(table).to_dict("series"))
        # Imaging features come from the features file; covariates from --clinical if given.
        own = [c for c in model.inputs.input_columns if c in table.columns]
        needed_from_clin = [] if clin is None else [c for c in model.covariates if c in clin]
        own = [c for c in own if c not in needed_from_clin]
        what = "features file and clinical table" if clin is not None else "features file"
        pool = list(table.columns)
        kind: Literal["features", "manifest"] = "features"
        records = None
        base_dir = None
    elif manifest is not None:
        from refracture.features.manifest import IMAGE_COLUMNS, LEVEL_COLUMNS, read_manifest

        path = Path(manifest)
        table = read_manifest(path).reset_index(drop=True)
        if pseudonymiser is not None:
            originals = list(table[ID].astype(str))
            table = pseudonymiser.table(table)
        ids = table[ID].astype(object)
        structural = {"site", *IMAGE_COLUMNS, *LEVEL_COLUMNS}
        needed_from_clin = [] if clin is None else [c for c in model.covariates if c in clin]
        own = [c for c in model.covariates if c in table.columns and c not in needed_from_clin]
        what = "manifest and clinical table" if clin is not None else "manifest"
        pool = [c for c in table.columns if c not in structural]
        kind = "manifest"
        records = table.to_dict("records") if model.uses_images else None
        base_dir = path.parent.resolve()

    available = [*own, *needed_from_clin]
    if kind == "manifest" and model.uses_images:
        available += list(model.inputs.imaging)  # measured on the images
        available += list(model.inputs.batch)  # the manifest's site; the scanner as measured
    pool = [*pool, *([] if clin is None else list(clin.columns))]
    missing, unexpected = model.inputs.missing_and_unexpected(available)
    if missing:
        _, unexpected = model.inputs.missing_and_unexpected(list(dict.fromkeys(pool)))
        msg = columns_message(what, missing, unexpected)
        if kind == "manifest" and clin is None:
            msg += "; give the covariates with --clinical"
        raise InputError(msg)

    if len(ids) == 0:
        raise InputError(f"no patients: the {what.split(' and ')[0]} has a header but no rows")
    rows = pd.DataFrame({ID: ids.to_numpy(dtype=object)})
    for c in own:
        rows[c] = table[c].to_numpy()
    # The site and scanner ride along when the input has them (features.parquet does): the R2*
    # unit rule is sharper knowing the field strength (refracture.ranges.unit_mistake).
    for c in CONTEXT_COLUMNS:
        if c in table.columns and c not in own:
            rows[c] = table[c].to_numpy()
    if FIELD_STRENGTH in rows:
        rows[FIELD_STRENGTH] = pd.to_numeric(rows[FIELD_STRENGTH], errors="coerce")
    pre_error = np.full(len(rows), "", dtype=object)
    if clin is not None and clinical is not None and needed_from_clin:
        found = pd.Index(rows[ID]).isin(clin.index)
        pre_error[~found] = f"no row in the clinical table {Path(clinical).name}"
        picked = clin[needed_from_clin].reindex(rows[ID])  # NaN rows for unknown patients
        for c in needed_from_clin:
            rows[c] = picked[c].to_numpy()
        extra = int((~clin.index.isin(rows[ID])).sum())
        if extra:
            notes.append(
                f"{extra} patient(s) of the clinical table are not in the input; not scored"
            )
    if kind == "manifest" and model.uses_images:
        for c in model.inputs.imaging:
            rows[c] = np.nan
        for c in model.inputs.batch:  # the scanner is filled in once the images are read
            blank = np.nan if c == "scanner_field_strength_t" else ""
            rows[c] = table[c].to_numpy() if c == "site" else np.full(len(rows), blank, object)
    digest = _digest(kind, path, None if clinical is None else Path(clinical))
    if pseudonymiser is not None:
        digest = _digest(digest, "pseudonymised")
    return ScoreInput(kind, rows, pre_error, digest, records, base_dir, notes, originals)


def measured_scanner(record: dict[str, Any], result: Any) -> dict[str, Any]:
    """The scanner columns of a patient whose images were just measured, by the rule training
    used (:func:`refracture.dataset.scanner_columns`: the extraction's scanner columns, else
    the manifest row, else the PDFF map's header)."""
    one = pd.DataFrame([{**result.features, **result.qc, ID: record[ID]}])
    return scanner_columns(one, pd.DataFrame([record])).iloc[0].to_dict()
