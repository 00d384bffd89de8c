"""A loaded refracture model: where it came from, its version and its bundle."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from refracture.bundle import CovariateSpec, ModelBundle
from refracture.errors import InputError
from refracture.scoring.rows import output_columns
from refracture.text import clip

__all__ = ["ScoringModel", "load_model"]


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model: the bundle (``model_version`` set to what the output reports), where it
    came from, and how long loading took."""

    uri: str
    version: str
    bundle: ModelBundle
    load_seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.bundle.label

    @property
    def pipeline(self) -> Any:
        return self.bundle.pipeline

    @property
    def uses_images(self) -> bool:
        return self.bundle.uses_images

    @property
    def inputs(self) -> CovariateSpec:
        return self.bundle.covariates

    @property
    def covariates(self) -> list[str]:
        """Model inputs that come from the clinical data (not measured on the images)."""
        return self.bundle.covariates.clinical

    def columns(self, explain: bool) -> list[str]:
        cols = output_columns(self.bundle.horizon_days, self.bundle.estimand)
        if explain:
            cols += ["lp_reference", *[f"contrib_{t}" for t in self.bundle.terms]]
        return cols


def load_model(uri: str, tracking_uri: str | None = None) -> ScoringModel:
    """Load any MLflow model URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``, a
    folder). For registry URIs ``model_version`` becomes the registry version number, otherwise
    the training run ID kept in the bundle. Raises InputError (exit 2) when it cannot be used."""
    from refracture.tracking import quiet_mlflow, resolve_tracking_uri, use_store

    quiet_mlflow()
    store = resolve_tracking_uri(tracking_uri)
    start = time.perf_counter()
    with use_store(store) as client:
        bundle, version = _load_bundle(uri, store, client)
    bundle = bundle.with_version(version)
    return ScoringModel(uri, version, bundle, time.perf_counter() - start)


def _load_bundle(uri: str, store: str, client: Any) -> tuple[ModelBundle, str]:
    """The bundle inside the MLflow model at ``uri`` and its version (registry number for
    ``models:/`` URIs, else the training run ID kept in the bundle)."""
    import mlflow.pyfunc

    from refracture.errors import ModelError

    try:
        loaded = mlflow.pyfunc.load_model(uri)
        python_model = loaded.unwrap_python_model()
    except ModelError as err:  # a bundle of another version: its message says which
        raise InputError(f"cannot load the model '{uri}': {err.message}") from None
    except Exception as err:  # noqa: BLE001 - MLflow raises many types for a bad URI
        msg = getattr(err, "message", None) or str(err) or type(err).__name__
        raise InputError(
            f"cannot load the model '{uri}' (tracking URI {store}): {clip(msg)}"
        ) from None
    bundle = getattr(python_model, "bundle", None)
    if not isinstance(bundle, ModelBundle):
        raise InputError(f"the model '{uri}' is not a refracture model (no scoring bundle)")
    version = bundle.model_version
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        try:
            _, number = get_model_name_and_version(client, uri)
        except Exception as err:  # noqa: BLE001
            msg = getattr(err, "message", None) or str(err)
            raise InputError(f"cannot resolve the model version of '{uri}': {clip(msg)}") from None
        version = str(number)
    return bundle, version
