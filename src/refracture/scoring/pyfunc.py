"""The registered model: an MLflow pyfunc around a :class:`~refracture.bundle.ModelBundle`.

The model is logged from code (``models/refracture_pyfunc.py`` calls ``set_model`` on
:class:`RefractureModel`); its one artifact is the bundle folder (the fitted pipeline and
everything scoring needs: covariate kinds, imaging feature names, the extraction config used
in training, thresholds, ranges). Nothing is cloudpickled.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from refracture.bundle import ModelBundle
from refracture.errors import ModelError
from refracture.files import shipped_file
from refracture.ids import PATIENT_ID
from refracture.scoring.rows import FIELD_STRENGTH, output_columns, predict_frame

__all__ = [
    "RUNTIME_PACKAGES",
    "RefractureModel",
    "input_example",
    "json_safe",
    "log_model",
    "registered_version",
    "signature_for",
]

# What a registered model needs at predict time, pinned to the versions it was trained with.
RUNTIME_PACKAGES = [
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "lifelines",
    "joblib",
]


class RefractureModel(mlflow.pyfunc.PythonModel):
    """The pyfunc logged for every registered refracture model.

    ``predict`` takes a DataFrame with ``patient_id`` (optional), the covariates and the imaging
    features, and returns the score columns (plus ``warnings``).
    """

    def load_context(self, context: Any) -> None:
        bundle = ModelBundle.from_dir(context.artifacts["bundle"])
        version = registered_version(bundle.model_version, bundle.registered_model)
        self.bundle: ModelBundle = bundle.with_version(version) if version else bundle

    # pd.DataFrame is a type hint MLflow does not derive a schema from: the logged signature
    # stays the schema (and MLflow gives no advice about type hints).
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return json_safe(predict_frame(self.bundle, frame))


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


# --- logging a model ----------------------------------------------------------------------


def signature_for(bundle: ModelBundle) -> Any:
    """Input: patient_id (optional), every covariate and imaging feature by name; categorical
    covariates as strings. Numbers are typed ``Any``: MLflow refuses int64 where a double is
    declared ("not safe"), and an age of 73 is an integer; the model checks and types each row
    itself (a non-number is an error for that row only). Output: the score columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    cov = bundle.covariates
    inputs = [ColSpec("string", PATIENT_ID, required=False)]
    inputs += [ColSpec(AnyType(), c) for c in [*cov.numbers, *cov.binary]]
    inputs += [ColSpec("string", c) for c in cov.categorical]
    # What scanner harmonisation reads: the batch columns (a site may be written as a number)
    # and preserved covariates outside the model; the harmonisation step reads them as text
    # or numbers itself.
    inputs += [ColSpec(AnyType(), c) for c in [*cov.batch, *cov.preserved]]
    # Optional: the scanner's field strength sharpens the R2* unit rule (an input without it is
    # checked by the wider rule), so a consumer that has it gets the checks `score` makes.
    if FIELD_STRENGTH not in cov.batch:
        inputs += [ColSpec(AnyType(), FIELD_STRENGTH, required=False)]
    kinds = {
        PATIENT_ID: "string",
        "risk_group": "string",
        "model_name": "string",
        "model_version": "string",
        "status": "string",
        "error": "string",
        "warnings": "string",
    }
    outputs = [
        ColSpec(kinds.get(c, "double"), c, required=c != "risk_group")
        for c in output_columns(bundle.horizon_days, bundle.estimand)
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(bundle: ModelBundle) -> pd.DataFrame:
    """A made-up example built from training medians and reference levels: no patient's row."""
    cov = bundle.covariates
    typical = bundle.typical
    row: dict[str, Any] = {PATIENT_ID: "example-1"}
    row.update({c: float(typical[c]) for c in [*cov.numbers, *cov.binary]})
    row.update({c: str(typical[c]) for c in cov.categorical})
    row.update({c: typical[c] for c in [*cov.batch, *cov.preserved] if c in typical})
    return pd.DataFrame([row])


def pinned_requirements() -> list[str]:
    reqs = []
    for pkg in RUNTIME_PACKAGES:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            reqs.append(pkg)
    return reqs


def model_code_path() -> Path:
    """``models/refracture_pyfunc.py`` from a source checkout, or its copy in the wheel."""
    path = shipped_file("models", "refracture_pyfunc.py")
    if path is None:
        raise ModelError(
            "the model entry point refracture_pyfunc.py is missing from the installation"
        )
    return path


def log_model(bundle: ModelBundle, *, name: str = "model") -> Any:
    """Log the bundle as a models-from-code pyfunc in the active run; return its ModelInfo."""
    import refracture

    package_dir = Path(refracture.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        folder = bundle.to_dir(Path(tmp) / "bundle")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code_path()),
            artifacts={"bundle": str(folder)},
            code_paths=[str(package_dir)],
            signature=signature_for(bundle),
            input_example=input_example(bundle),
            pip_requirements=pinned_requirements(),
        )
