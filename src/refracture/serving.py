"""The registered model: an MLflow pyfunc around a fitted risk pipeline.

The model is logged from code (``models/refracture_pyfunc.py`` calls ``set_model`` on
:class:`RefractureModel`); its artifacts are the fitted pipeline (joblib) and a JSON *bundle*
with everything scoring needs: covariate types, imaging feature names, the extraction config
used in training (so new images are measured with the same ROI settings), risk-group thresholds
and plausible ranges.

:func:`predict_frame` is the one place that turns a table of covariates and imaging features into
the score columns of PRODUCT.md section 6. ``refracture score`` and the pyfunc's ``predict`` both
call it, so a batch score and a registry consumer get the same risks. Each row is checked on its
own: a row with a missing or impossible value gets ``status = "error"`` and a reason; the other
rows are scored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from refracture.ranges import plausible_range

BUNDLE_VERSION = 1


def risk_column(horizon_days: float) -> str:
    return f"risk_{int(round(horizon_days))}d"


def output_columns(horizon_days: float) -> list[str]:
    return [
        "patient_id",
        risk_column(horizon_days),
        "risk_group",
        "linear_predictor",
        "model_name",
        "model_version",
        "status",
        "error",
        "warnings",
    ]


@dataclass(frozen=True)
class InputColumns:
    """The columns a model needs, by type."""

    numeric: list[str]
    binary: list[str]
    categorical: dict[str, list[str]]  # name -> categories seen in training

    @classmethod
    def from_bundle(cls, bundle: Mapping[str, Any]) -> InputColumns:
        return cls(
            numeric=list(bundle["numeric"]),
            binary=list(bundle["binary"]),
            categorical={k: list(v) for k, v in bundle["categorical"].items()},
        )

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.binary, *self.categorical]


def missing_and_unexpected(
    columns: list[str], bundle: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """Model input columns absent from ``columns``, and columns the model does not use."""
    needed = InputColumns.from_bundle(bundle).names
    missing = [c for c in needed if c not in columns]
    ignorable = {"patient_id", "site"}
    unexpected = [c for c in columns if c not in needed and c not in ignorable]
    return missing, unexpected


def check_rows(
    df: pd.DataFrame, bundle: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Type and check every row; return (clean frame, error per row, warnings per row).

    Errors (the row is not scored): a missing covariate, a non-numeric number, a binary value
    other than 0/1, a category the model never saw. Warnings (the row is scored): a value outside
    the plausible range or outside the range seen in training, and a missing imaging feature
    (e.g. no untreated vertebra next to the treated one): the model's pipeline imputes it with
    the training median, as it did for such patients in training.
    """
    cols = InputColumns.from_bundle(bundle)
    n = len(df)
    errors: list[list[str]] = [[] for _ in range(n)]
    warns: list[list[str]] = [[] for _ in range(n)]
    clean = pd.DataFrame(index=df.index)
    training_range = bundle.get("training_range", {})
    imaging = set(bundle.get("imaging_features", []))
    overrides = bundle.get("ranges") or {}

    for c in [*cols.numeric, *cols.binary]:
        raw = df[c]
        values = pd.to_numeric(raw, errors="coerce")
        for i in np.flatnonzero(raw.isna().to_numpy()):
            if c in imaging:
                warns[i].append(f"no {c} (not measurable): imputed with the training median")
            else:
                errors[i].append(f"missing {c}")
        for i in np.flatnonzero((values.isna() & raw.notna()).to_numpy()):
            errors[i].append(f"{c} is not a number ({raw.iloc[i]!r})")
        if c in cols.binary:
            bad = values.notna() & ~values.isin([0, 1])
            for i in np.flatnonzero(bad.to_numpy()):
                errors[i].append(f"{c} must be 0 or 1 (got {values.iloc[i]:g})")
        else:
            rng = plausible_range(c, overrides)
            if rng is not None:
                out = values.notna() & ((values < rng[0]) | (values > rng[1]))
                for i in np.flatnonzero(out.to_numpy()):
                    warns[i].append(
                        f"{c}={values.iloc[i]:g} outside plausible {rng[0]:g}-{rng[1]:g}"
                    )
            if c in training_range:
                lo, hi = training_range[c]
                out = values.notna() & ((values < lo) | (values > hi))
                for i in np.flatnonzero(out.to_numpy()):
                    warns[i].append(f"{c}={values.iloc[i]:g} outside training range {lo:g}-{hi:g}")
        clean[c] = values.astype(float)
    for c, known in cols.categorical.items():
        raw = df[c]
        text = raw.astype("string").str.strip()
        for i in np.flatnonzero(raw.isna().to_numpy()):
            errors[i].append(f"missing {c}")
        unknown = raw.notna() & ~text.isin(known)
        for i in np.flatnonzero(unknown.to_numpy()):
            errors[i].append(
                f"{c} '{text.iloc[i]}' was not seen in training (known: {', '.join(known)})"
            )
        clean[c] = text.astype(object).where(~unknown & raw.notna(), known[0])
    err = pd.Series(["; ".join(e) for e in errors], index=df.index)
    warn = pd.Series(["; ".join(w) for w in warns], index=df.index)
    return clean, err, warn


def predict_frame(
    pipeline: Any, bundle: Mapping[str, Any], df: pd.DataFrame, *, explain: bool = False
) -> pd.DataFrame:
    """Score a table of covariates and imaging features (PRODUCT.md section 6 columns).

    Rows that fail their checks come back with ``status="error"`` and the reason; the others are
    scored in one vectorised call. With ``explain`` (cox and logistic), one column per model term
    holds its contribution to the linear predictor, relative to the average training patient.
    """
    horizon = float(bundle["horizon_days"])
    risk_col = risk_column(horizon)
    missing, _ = missing_and_unexpected(list(df.columns), bundle)
    if missing:
        raise KeyError(f"input lacks the model's columns: {', '.join(missing)}")
    df = df.reset_index(drop=True)
    clean, err, warn = check_rows(df, bundle)
    ok = (err == "").to_numpy()
    out = pd.DataFrame(
        {
            "patient_id": (
                df["patient_id"].astype("string")
                if "patient_id" in df
                else pd.Series([pd.NA] * len(df), dtype="string")
            ),
            risk_col: np.nan,
            "risk_group": pd.Series([None] * len(df), dtype=object),
            "linear_predictor": np.nan,
            "model_name": bundle["model_label"],
            "model_version": bundle.get("model_version", ""),
            "status": np.where(ok, "ok", "error"),
            "error": err,
            "warnings": warn,
        }
    )
    if ok.any():
        x = clean.loc[ok, InputColumns.from_bundle(bundle).names]
        risk = np.asarray(pipeline.predict_risk(x), dtype=float)
        out.loc[ok, risk_col] = risk
        out.loc[ok, "linear_predictor"] = np.asarray(pipeline.linear_predictor(x), dtype=float)
        low, high = bundle["risk_groups"]
        out.loc[ok, "risk_group"] = np.select(
            [risk < low, risk < high], ["low", "intermediate"], default="high"
        )
        if explain:
            contrib = _contributions(pipeline, x, bundle)
            for term in contrib.columns:
                out.loc[ok, f"contrib_{term}"] = contrib[term].to_numpy()
    elif explain:
        for term in bundle.get("terms", []):
            out[f"contrib_{term}"] = np.nan
    return out


def _contributions(pipeline: Any, x: pd.DataFrame, bundle: Mapping[str, Any]) -> pd.DataFrame:
    if not pipeline.model.supports_contributions:
        raise ValueError(f"the {bundle['model']} model has no per-term contributions")
    return pipeline.contributions(x)


class RefractureModel(mlflow.pyfunc.PythonModel):
    """The pyfunc logged for every registered refracture model.

    ``predict`` takes a DataFrame with ``patient_id`` (optional), the covariates and the imaging
    features, and returns the columns of PRODUCT.md section 6 (plus ``warnings``).
    """

    def load_context(self, context: Any) -> None:
        import joblib

        with open(context.artifacts["bundle"], encoding="utf-8") as fh:
            self.bundle: dict[str, Any] = json.load(fh)
        self.pipeline = joblib.load(context.artifacts["pipeline"])
        version = registered_version(
            self.bundle.get("model_version", ""), self.bundle.get("registered_model", "")
        )
        if version:
            self.bundle["model_version"] = version

    # pd.DataFrame is a type hint MLflow does not derive a schema from: the logged signature
    # stays the schema (and MLflow gives no advice about type hints).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return json_safe(predict_frame(self.pipeline, self.bundle, frame))


def registered_version(run_id: str, name: str) -> str | None:
    """The version of registered model ``name`` made from the training run ``run_id``, when
    there is exactly one.

    So ``model_version`` reads "3" whether the model is loaded by a registry consumer, served,
    or run by ``refracture score``; the run ID stays when the registry cannot be reached.
    """
    if not run_id or not name:
        return None
    try:
        from mlflow import MlflowClient

        query = f"name = '{name}' and run_id = '{run_id}'"
        versions = MlflowClient().search_model_versions(query)
    except Exception:  # noqa: BLE001 - no registry at hand: keep the run ID
        return None
    return str(versions[0].version) if len(versions) == 1 else None


def json_safe(out: pd.DataFrame) -> pd.DataFrame:
    """Rows that could not be scored hold None (not NaN) in their number columns.

    MLflow's scoring server writes NaN as a bare ``NaN`` token, which is not JSON (a browser's
    JSON.parse rejects the whole answer); None becomes ``null``. Columns stay floats when every
    row was scored.
    """
    failed = (out["status"] != "ok").to_numpy()
    if not failed.any():
        return out
    out = out.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            col = out[c].astype(object)
            col[failed & out[c].isna().to_numpy()] = None
            out[c] = col
    return out
