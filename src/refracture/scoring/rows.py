"""Scoring rows: the output columns and the one place a table of inputs becomes scores.

:func:`predict_frame` turns covariates and imaging features into the score columns.
``refracture score`` and the registered pyfunc's ``predict`` both call it, so a batch score and
a registry consumer get the same risks. Each row is checked on its own
(:func:`refracture.covariates.check_covariates`): a row with a missing or impossible value, or
an imaging value physics rules out in its unit (a unit mistake), gets ``status = "error"`` and a
reason; the other rows are scored in one vectorised call. A ``scanner_field_strength_t``
column, when the input has one, sharpens the R2* unit rule.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from refracture.bundle import ModelBundle
from refracture.covariates import MISSING, SCORING_ERRORS, check_covariates
from refracture.features.findings import qc_findings, split_findings
from refracture.ids import PATIENT_ID

__all__ = [
    "CONTEXT_COLUMNS",
    "FIELD_STRENGTH",
    "TEXT_COLUMNS",
    "assemble_scores",
    "check_rows",
    "estimate_new_batches",
    "harmonisation_rows",
    "join_text",
    "model_input",
    "normalise",
    "output_columns",
    "predict_frame",
    "qc_messages",
    "qc_warnings",
    "death_risk_column",
    "risk_column",
    "score_rows",
]

TEXT_COLUMNS = frozenset(
    {PATIENT_ID, "risk_group", "model_name", "model_version", "status", "error", "warnings"}
)
#: An optional input column: the scanner's field strength (tesla), for the R2* unit rule.
FIELD_STRENGTH = "scanner_field_strength_t"
#: Columns carried beside the model inputs when the input has them (a features file from
#: extraction, or measured from images): the site and the scanner, for the unit rule and for
#: steps that work per site or scanner.
CONTEXT_COLUMNS = ("site", FIELD_STRENGTH, "scanner_vendor", "scanner_id")


def risk_column(horizon_days: float) -> str:
    return f"risk_{int(round(horizon_days))}d"


def death_risk_column(horizon_days: float) -> str:
    """The risk of death before re-fracture by the horizon (models of estimand ``cif``)."""
    return f"risk_death_{int(round(horizon_days))}d"


def output_columns(horizon_days: float, estimand: str = "net") -> list[str]:
    """The score columns; a model of estimand ``cif`` adds the risk of death by the horizon."""
    death = [death_risk_column(horizon_days)] if estimand == "cif" else []
    return [
        PATIENT_ID,
        risk_column(horizon_days),
        *death,
        "risk_group",
        "linear_predictor",
        "model_name",
        "model_version",
        "status",
        "error",
        "warnings",
    ]


def check_rows(df: pd.DataFrame, bundle: ModelBundle) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Type and check every row; return (clean frame, error per row, warnings per row).

    Errors (the row is not scored): a missing covariate (a model with ``imputation:
    multiple`` imputes it instead, with a warning), a non-numeric number, a binary value other
    than 0/1, a category the model never saw. Warnings (the row is scored): a value outside
    the plausible range or outside the range seen in training, and a missing imaging feature
    (e.g. no untreated vertebra next to the treated one): the model's pipeline imputes it with
    the training median, as it did for such patients in training.
    """
    cov = bundle.covariates
    check = check_covariates(
        df,
        numeric=cov.numeric,
        binary=cov.binary,
        categorical=cov.categorical,
        imaging=cov.imaging,
        ranges=cov.ranges,
        training_range=bundle.training_range,
        field_strength=df[FIELD_STRENGTH].to_numpy() if FIELD_STRENGTH in df else None,
    )
    if "impute" not in getattr(bundle.pipeline, "named_steps", {}):
        err, warn = check.row_messages()
        return check.clean, err, warn
    # imputation: multiple: a missing covariate is imputed m times, the risks averaged
    err, warn = check.row_messages([k for k in SCORING_ERRORS if k != MISSING])
    warn = warn.str.replace(r"\bmissing ([^;]+)", r"missing \1: imputed", regex=True)
    return check.clean, err, warn


def predict_frame(bundle: ModelBundle, df: pd.DataFrame, *, explain: bool = False) -> pd.DataFrame:
    """Score a table of covariates and imaging features (the score columns).

    Rows that fail their checks come back with ``status="error"`` and the reason; the others are
    scored in one vectorised call. With ``explain`` (models with per-term contributions), one
    column per model term holds its contribution to the linear predictor, relative to the
    average training patient.
    """
    risk_col = risk_column(bundle.horizon_days)
    missing, _ = bundle.covariates.missing_and_unexpected(list(df.columns))
    if missing:
        raise KeyError(f"input lacks the model's columns: {', '.join(missing)}")
    if explain and not bundle.estimator.supports_contributions:
        raise ValueError(f"the {bundle.model} model has no per-term contributions")
    df = df.reset_index(drop=True)
    clean, err, warn = check_rows(df, bundle)
    err, warn = harmonisation_rows(bundle, df, clean, err, warn)
    ok = (err == "").to_numpy()
    out = pd.DataFrame(
        {
            PATIENT_ID: (
                df[PATIENT_ID].astype("string")
                if PATIENT_ID in df
                else pd.Series([pd.NA] * len(df), dtype="string")
            ),
            risk_col: np.nan,
            "risk_group": pd.Series([None] * len(df), dtype=object),
            "linear_predictor": np.nan,
            "model_name": bundle.label,
            "model_version": bundle.model_version,
            "status": np.where(ok, "ok", "error"),
            "error": err,
            "warnings": warn,
        }
    )
    if bundle.estimand == "cif":
        out.insert(2, death_risk_column(bundle.horizon_days), np.nan)
    pipeline = bundle.pipeline
    if ok.any():
        x = model_input(bundle, df, clean, ok)
        risk = np.asarray(pipeline.predict_risk(x), dtype=float)
        out.loc[ok, risk_col] = risk
        if bundle.estimand == "cif":
            death_col = death_risk_column(bundle.horizon_days)
            out.loc[ok, death_col] = np.asarray(pipeline.predict_death_risk(x), dtype=float)
        out.loc[ok, "linear_predictor"] = np.asarray(pipeline.linear_predictor(x), dtype=float)
        low, high = bundle.risk_groups
        out.loc[ok, "risk_group"] = np.select(
            [risk < low, risk < high], ["low", "intermediate"], default="high"
        )
        if explain:
            contrib = pipeline.contributions(x)
            for term in contrib.columns:
                out.loc[ok, f"contrib_{term}"] = contrib[term].to_numpy()
    elif explain:
        for term in bundle.terms:
            out[f"contrib_{term}"] = np.nan
    return out


def model_input(
    bundle: ModelBundle, df: pd.DataFrame, clean: pd.DataFrame, rows: np.ndarray
) -> pd.DataFrame:
    """The pipeline's input for ``rows``: the checked model inputs, plus the columns scanner
    harmonisation reads as given (batch columns, preserved covariates outside the model)."""
    cov = bundle.covariates
    x = clean.loc[rows, cov.names]
    extra = [c for c in [*cov.preserved, *cov.batch] if c not in x.columns]
    return x.join(df.loc[rows, extra]) if extra else x


def harmonisation_rows(
    bundle: ModelBundle, df: pd.DataFrame, clean: pd.DataFrame, err: pd.Series, warn: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """A row whose scanner batch the model's development data did not contain (or whose batch
    is unknown) follows the model's ``harmonisation.unseen_batch``: ``refuse`` makes it an error
    naming the batch and the key; ``reference`` and ``pooled`` score it with a warning saying
    what was assumed; ``estimate`` scores it with its batch's own effects and says from how
    many patients, or makes it an error when its batch has too few. Models without
    harmonisation: unchanged."""
    harmoniser = getattr(bundle.pipeline, "harmoniser", None)
    rows = (err == "").to_numpy()
    if harmoniser is None or not rows.any():
        return err, warn
    x = model_input(bundle, df, clean, rows)
    messages = pd.Series(harmoniser.row_warnings(x), index=err.index[rows])
    refused = pd.Series(harmoniser.row_refused(x), index=err.index[rows])
    hit = messages.index[messages != ""]
    if not len(hit):
        return err, warn
    err, warn = err.copy(), warn.copy()
    bad = hit[refused[hit].to_numpy()]
    err[bad] = messages[bad]
    fine = hit[~refused[hit].to_numpy()]
    warn[fine] = join_text(warn[fine].to_numpy(dtype=object), messages[fine].to_numpy(dtype=object))
    return err, warn


def estimate_new_batches(bundle: ModelBundle, rows: pd.DataFrame) -> ModelBundle:
    """A model with ``harmonisation.unseen_batch: estimate`` and the whole scoring input:
    the bundle whose ComBat step also knows every new scanner batch with enough patients in
    ``rows`` (those that pass their checks), its effects estimated once from all of them, so
    every chunk of a batch score harmonises a patient the same way. Other models: unchanged."""
    harmoniser = getattr(bundle.pipeline, "harmoniser", None)
    if harmoniser is None or harmoniser.unseen_batch != "estimate" or not len(rows):
        return bundle
    rows = rows.reset_index(drop=True)
    clean, err, _ = check_rows(rows, bundle)
    ok = (err == "").to_numpy()
    if not ok.any():
        return bundle
    fitted = harmoniser.with_estimated_batches(model_input(bundle, rows, clean, ok))
    if fitted is harmoniser:
        return bundle
    pipeline = copy.copy(bundle.pipeline)
    pipeline.steps = [(n, fitted if n == "harmonise" else s) for n, s in bundle.pipeline.steps]
    return dataclasses.replace(bundle, pipeline=pipeline)


def normalise(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Fixed column order and dtypes, so a chunk computed now, one read back from the
    checkpoint and one read back from an earlier output file write the same bytes."""
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        values = df[c].to_numpy() if c in df else np.full(n, np.nan)
        if c not in TEXT_COLUMNS:
            if values.dtype != np.float64:
                values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
            out[c] = values
            continue
        values = np.asarray(values, dtype=object)
        blank = pd.isna(values)
        if c == "risk_group":  # no group for an error row: None (empty in CSV, null in Parquet)
            blank |= values == ""
            out[c] = np.where(blank, None, values)
        else:
            out[c] = np.where(blank, "", values) if blank.any() else values
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def join_text(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise '; '-join of two text arrays, skipping empty parts."""
    a = a.astype(str)
    b = b.astype(str)
    both = (a != "") & (b != "")
    return np.where(both, np.char.add(np.char.add(a, "; "), b), np.char.add(a, b)).astype(object)


def score_rows(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    pre_error: np.ndarray,
    extra_warnings: np.ndarray | None,
    *,
    explain: bool,
    columns: list[str],
) -> pd.DataFrame:
    """Score one chunk: rows with a ``pre_error`` are error rows as they are; the others go
    through :func:`predict_frame` (per-row checks, then one vectorised prediction)."""
    todo = np.flatnonzero(np.asarray(pre_error) == "")
    pred = None
    if len(todo):
        pred = predict_frame(bundle, rows.iloc[todo].reset_index(drop=True), explain=explain)
    return assemble_scores(
        bundle, rows[PATIENT_ID], pre_error, extra_warnings, pred, explain=explain, columns=columns
    )


def assemble_scores(
    bundle: ModelBundle,
    ids: pd.Series | np.ndarray,
    pre_error: np.ndarray,
    extra_warnings: np.ndarray | None,
    pred: pd.DataFrame | None,
    *,
    explain: bool,
    columns: list[str],
) -> pd.DataFrame:
    """The output rows of a chunk from ``pred``, the :func:`predict_frame` columns of its rows
    without a ``pre_error`` (in order; None when there are none).

    Model name and version come from ``bundle``, whoever computed ``pred`` (the Spark engine
    computes it on executors with the registered model).
    """
    risk_col = risk_column(bundle.horizon_days)
    n = len(ids)
    death = [death_risk_column(bundle.horizon_days)] if bundle.estimand == "cif" else []
    out: dict[str, np.ndarray] = {
        PATIENT_ID: np.asarray(ids, dtype=object),
        risk_col: np.full(n, np.nan),
        **{c: np.full(n, np.nan) for c in death},
        "risk_group": np.full(n, None, dtype=object),
        "linear_predictor": np.full(n, np.nan),
        "model_name": np.full(n, bundle.label, dtype=object),
        "model_version": np.full(n, bundle.model_version, dtype=object),
        "status": np.full(n, "error", dtype=object),
        "error": np.asarray(pre_error, dtype=object).copy(),
        "warnings": np.full(n, "", dtype=object),
    }
    for c in columns[len(out) :]:
        out[c] = np.full(n, np.nan)
    todo = np.flatnonzero(np.asarray(pre_error) == "")
    if len(todo):
        assert pred is not None and len(pred) == len(todo)
        for c in columns:
            if c not in (PATIENT_ID, "model_name", "model_version") and c in pred:
                out[c][todo] = pred[c].to_numpy()
        if explain and (pred["status"] == "ok").any():
            out["lp_reference"][todo] = np.where(
                pred["status"].to_numpy() == "ok",
                bundle.pipeline.contribution_baseline,
                np.nan,
            )
    if extra_warnings is not None:
        out["warnings"] = join_text(np.asarray(extra_warnings, dtype=object), out["warnings"])
    return normalise(pd.DataFrame(out), columns)


def qc_messages(qc: dict[str, Any], error_kinds: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """An extraction's QC findings as (error, warnings) of its score row: the kinds listed in
    ``error_kinds`` (the model's ``extraction.qc_errors``) make the row an error."""
    return split_findings(qc_findings(qc), error_kinds)


def qc_warnings(qc: dict[str, Any]) -> str:
    """Every QC finding of an extraction as one warnings text (none an error)."""
    return qc_messages(qc, ())[1]
