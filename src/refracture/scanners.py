"""Each patient's scanner, and what scanner harmonisation reads besides the model's inputs.

The scanner comes from the feature table's ``scanner_*`` columns, else the manifest's
``field_strength_t``, ``vendor`` and ``scanner`` columns, else what the PDFF map's header said
(:func:`scanner_columns`, the rule of extraction and scoring alike). With harmonisation on, a
data set carries each patient's site, scanner and the preserved covariates that are not model
covariates (:func:`harmonisation_inputs`); every patient's batch must be known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import CovariatesConfig, HarmonisationConfig, RunConfig
from refracture.covariates import columns_hint
from refracture.errors import ConfigError, InputError
from refracture.ids import PATIENT_ID
from refracture.text import name_list

__all__ = [
    "check_preserve",
    "harmonisation_columns",
    "harmonisation_inputs",
    "harmonising",
    "scanner_columns",
]


#: What a manifest calls the scanner columns of the feature table.
_MANIFEST_SCANNER = {"field_strength_t": "scanner_field_strength_t", "vendor": "scanner_vendor",
                     "scanner": "scanner_id"}  # fmt: skip


def _text(values: pd.Series) -> pd.Series:
    return values.where(values.notna(), "").astype(str).str.strip()


def scanner_columns(table: pd.DataFrame, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each patient's scanner, one row per row of ``table`` (same index).

    Parameters
    ----------
    table : DataFrame, shape (n_patients, ...)
        A feature table (``features.parquet`` of ``refracture extract``, or a features file
        given to scoring) with ``patient_id`` as a column or as the index.
    manifest : DataFrame, optional
        The manifest the features were measured from (``patient_id`` column).

    Returns
    -------
    DataFrame, shape (n_patients, 3)
        ``scanner_field_strength_t`` (float, NaN when unknown), ``scanner_vendor`` and
        ``scanner_id`` (text, '' when unknown). The table's own ``scanner_*`` values come
        first; where one is missing (a table written before extraction recorded the scanner),
        the patient's manifest row (``field_strength_t``, ``vendor``, ``scanner``) and what
        the PDFF map's header said (``qc_field_strength_t``, ``qc_vendor``) fill it, by
        extraction's own rule (:func:`refracture.imaging.metadata.scanner_metadata`).
    """
    from refracture.imaging.metadata import SCANNER_COLUMNS, scanner_metadata

    n = len(table)
    ids = table[PATIENT_ID] if PATIENT_ID in table.columns else table.index.to_series()
    ids = _text(pd.Series(ids.to_numpy(), dtype=object)).to_numpy()
    blank = pd.Series([""] * n, index=table.index, dtype=object)
    field = pd.to_numeric(
        table.get("scanner_field_strength_t", pd.Series(np.nan, index=table.index)),
        errors="coerce",
    ).astype(float)
    vendor = _text(table["scanner_vendor"]) if "scanner_vendor" in table.columns else blank
    scanner = _text(table["scanner_id"]) if "scanner_id" in table.columns else blank.copy()
    rows: dict[str, dict] = {}
    if manifest is not None and PATIENT_ID in manifest.columns:
        cols = [c for c in _MANIFEST_SCANNER if c in manifest.columns]
        keys = _text(manifest[PATIENT_ID]).to_numpy()
        # a manifest with only the required columns has no scanner column: no record to add
        records = manifest[cols].to_dict("records") if cols else [{}] * len(keys)
        rows = dict(zip(keys, records, strict=True))
    field_v, vendor_v, scanner_v = field.to_numpy().copy(), vendor.to_numpy(), scanner.to_numpy()
    header_field = table.get("qc_field_strength_t")
    header_vendor = table.get("qc_vendor")
    for i in np.flatnonzero(~np.isfinite(field_v) | (vendor_v == "") | (scanner_v == "")):
        header = {
            "field_strength_t": None if header_field is None else header_field.iloc[i],
            "vendor": None if header_vendor is None else header_vendor.iloc[i],
        }
        meta = scanner_metadata(rows.get(ids[i], {}), {"pdff": header}, {})
        if not np.isfinite(field_v[i]):
            field_v[i] = meta["scanner_field_strength_t"]
        vendor_v[i] = vendor_v[i] or meta["scanner_vendor"]
        scanner_v[i] = scanner_v[i] or meta["scanner_id"]
    out = pd.DataFrame(
        {"scanner_field_strength_t": field_v, "scanner_vendor": vendor_v, "scanner_id": scanner_v},
        index=table.index,
    )
    return out[list(SCANNER_COLUMNS)]


def harmonisation_columns(
    harmonisation: HarmonisationConfig, covariates: CovariatesConfig
) -> tuple[list[str], list[str]]:
    """(batch columns, preserved covariates that are not model covariates): what the
    harmonisation step reads besides the model's own inputs, e.g. (['site', 'scanner_id'],
    [])."""
    from refracture.models.harmonise import BATCH_SOURCES  # scikit-learn: only when used

    batch = list(BATCH_SOURCES[harmonisation.batch])
    preserved = [c for c in harmonisation.preserve if c not in covariates.names]
    return batch, preserved


def harmonising(cfg: RunConfig) -> bool:
    return (
        cfg.harmonisation.method != "none"
        and "clinical+imaging" in cfg.feature_sets
        and bool(cfg.imaging.features)
    )


def check_preserve(clinical: pd.DataFrame, cfg: RunConfig, source: str | Path | None) -> None:
    preserve = cfg.harmonisation.preserve
    imaging = [c for c in preserve if c in cfg.imaging.features]
    if imaging:
        raise ConfigError(
            f"{', '.join(imaging)} are imaging features, which harmonisation adjusts; preserve "
            "lists clinical covariates whose effect on them is kept",
            key="harmonisation.preserve",
        )
    missing = [c for c in preserve if c not in clinical.columns]
    if missing:
        raise ConfigError(
            f"the covariate(s) {', '.join(missing)} to preserve are not columns of the clinical "
            "table" + columns_hint(missing, list(clinical.columns)),
            key="harmonisation.preserve",
            file=source,
        )


def harmonisation_inputs(
    clinical: pd.DataFrame,
    clin_ids: pd.Series,
    X: pd.DataFrame,
    site: pd.Series,
    scanners: pd.DataFrame | None,
    cfg: RunConfig,
) -> pd.DataFrame:
    """Site, scanner columns and the preserved covariates outside the model, indexed like X;
    refuses a patient whose batch is unknown, naming them."""
    inputs = pd.DataFrame({"site": site.reindex(X.index)}, index=X.index)
    if scanners is not None:
        inputs = inputs.join(scanners)
    _, preserved = harmonisation_columns(cfg.harmonisation, cfg.covariates)
    if preserved:
        raw = clinical[preserved].set_axis(pd.Index(clin_ids.to_numpy(), name=PATIENT_ID))
        inputs = inputs.join(raw)
    batch = cfg.harmonisation.batch
    probe = inputs.join(X[[c for c in X.columns if c not in inputs.columns]])
    from refracture.models.harmonise import batch_labels

    labels = batch_labels(probe, batch)
    unknown = labels.isna().to_numpy()
    if unknown.any():
        where = {
            "site": "the site column",
            "scanner": "the manifest's scanner column (or the images' scanner headers)",
            "field_strength": "the manifest's field_strength_t column (or the images' headers)",
        }[batch]
        raise InputError(
            f"harmonisation by {batch} needs every patient's {batch.replace('_', ' ')}, "
            f"unknown for {int(unknown.sum())} patient(s); fill {where} or choose another "
            "harmonisation.batch",
            patient_id=name_list(X.index[unknown], 5),
            key="harmonisation.batch",
        )
    return inputs
