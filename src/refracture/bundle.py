"""The trained model as one typed, versioned object: :class:`ModelBundle`.

Training builds it, MLflow logs it (a folder artifact written by :meth:`ModelBundle.to_dir`),
and scoring and the registered pyfunc read it back with :meth:`ModelBundle.from_dir`. A bundle
written by another bundle version is refused with both versions named, never half-read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from refracture.config import ExtractionConfig
from refracture.errors import ModelError
from refracture.files import atomic_path, write_text
from refracture.ids import PATIENT_ID

__all__ = ["BUNDLE_VERSION", "CovariateSpec", "ModelBundle", "TrainingSummary"]

#: Bump when the bundle's fields change meaning; older bundles are refused by name.
BUNDLE_VERSION = 3
_JSON, _PIPELINE = "bundle.json", "pipeline.joblib"


@dataclass(frozen=True)
class CovariateSpec:
    """The model's input columns by kind, as training saw them.

    ``categorical`` maps each categorical covariate to its levels, reference level first;
    ``imaging`` lists the imaging features (numbers measured on the images); ``ranges`` are
    the study's plausible ranges for its own column names (``covariates.ranges``).

    A model with scanner harmonisation also reads, without making them model terms,
    ``batch`` (the columns that say which scanner measured the images, e.g. ``site`` and
    ``scanner_id``) and ``preserved`` (covariates whose effect harmonisation keeps that are
    not model covariates, from the clinical data).
    """

    numeric: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    imaging: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    batch: tuple[str, ...] = ()
    preserved: tuple[str, ...] = ()
    #: meaning -> column (``covariates.roles``): the unit a cell may carry ("27 kg/m2")
    roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def cell_units(self) -> dict[str, tuple[str, ...]]:
        """Unit suffixes a cell of each role column may carry, as training read them."""
        from refracture.meanings import MEANINGS

        return {c: MEANINGS[r].units for r, c in self.roles.items() if r in MEANINGS}

    @property
    def numbers(self) -> list[str]:
        """Numeric inputs: clinical numeric covariates, then imaging features."""
        return [*self.numeric, *self.imaging]

    @property
    def names(self) -> list[str]:
        """Every input column, in the model's order."""
        return [*self.numeric, *self.imaging, *self.binary, *self.categorical]

    @property
    def clinical(self) -> list[str]:
        """Inputs that come from the clinical data (not measured on the images)."""
        return [*self.numeric, *self.binary, *self.categorical, *self.preserved]

    @property
    def input_columns(self) -> list[str]:
        """Every column scoring needs: the model's inputs, then what harmonisation reads."""
        return [*self.names, *self.preserved, *self.batch]

    @property
    def reference_levels(self) -> dict[str, str]:
        return {c: levels[0] for c, levels in self.categorical.items()}

    def missing_and_unexpected(self, columns: list[str]) -> tuple[list[str], list[str]]:
        """Model inputs absent from ``columns``, and columns the model does not use."""
        from refracture.ids import PATIENT_ID

        needed = self.input_columns
        missing = [c for c in needed if c not in columns]
        ignorable = {PATIENT_ID, "site"}
        unexpected = [c for c in columns if c not in needed and c not in ignorable]
        return missing, unexpected


@dataclass(frozen=True)
class TrainingSummary:
    """How the model was developed and chosen (for the model card and registry readers)."""

    refracture_version: str = ""
    n_patients: int = 0
    n_events: int = 0
    split: str = ""
    selection_metric: str = ""
    selection_value: float = float("nan")
    dataset_digest: str = ""
    competing_risk: str = ""


@dataclass(frozen=True)
class ModelBundle:
    """Everything a fitted refracture model needs to score a new patient.

    Parameters
    ----------
    pipeline : the fitted :class:`~refracture.models.RiskPipeline` (preprocessing + model).
    model, feature_set : model name (``cox``, ...) and feature set (``clinical+imaging``).
    horizon_days : prediction horizon; risks are ``risk_{horizon}d``.
    estimand : ``net`` or ``cif``.
    covariates : the input columns by kind (:class:`CovariateSpec`).
    extraction : how images are measured (None for a clinical-only model), including which
        extraction QC findings make a score row an error (``qc_errors``).
    site_units : per training site and map, the unit the site's maps were read in (e.g.
        ``{"site_1": {"pdff": "percent", "r2star": "per_s"}}``): a new patient of a known site
        whose units are not declared is read in them.
    risk_groups : (low, high) thresholds of the risk groups.
    typical : a made-up typical value per input (training medians and modes).
    training_range : per numeric input, the range seen in training (for warnings).
    terms : the model's terms after encoding (``age``, ``sex[M]``).
    registered_model, model_version : registry name, and the version (or run ID).
    training : :class:`TrainingSummary`.
    id_column : the study's patient ID column (``data.id_column``), which scoring reads.
    harmonisation : the ``harmonisation:`` settings the pipeline's ComBat step was fitted with
        and its known ``batches`` (empty without harmonisation); for readers of the bundle,
        the step itself is in ``pipeline``.
    """

    VERSION: ClassVar[int] = BUNDLE_VERSION

    pipeline: Any
    model: str
    feature_set: str
    horizon_days: float
    covariates: CovariateSpec
    estimand: str = "net"
    extraction: ExtractionConfig | None = None
    risk_groups: tuple[float, float] = (0.10, 0.20)
    typical: Mapping[str, float | str] = field(default_factory=dict)
    training_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    terms: tuple[str, ...] = ()
    registered_model: str = ""
    model_version: str = ""
    training: TrainingSummary = field(default_factory=TrainingSummary)
    harmonisation: Mapping[str, Any] = field(default_factory=dict)
    site_units: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the patient ID column of the training data (``data.id_column``): scoring reads a
    #: clinical table or features file by it
    id_column: str = PATIENT_ID

    @property
    def label(self) -> str:
        """``cox (clinical+imaging)``: how outputs name the model."""
        return f"{self.model} ({self.feature_set})"

    @property
    def uses_images(self) -> bool:
        return self.extraction is not None and bool(self.covariates.imaging)

    @property
    def estimator(self) -> Any:
        """The fitted estimator (the pipeline's last step): its capabilities say what it can do."""
        return self.pipeline.model

    def with_version(self, version: str) -> ModelBundle:
        return dataclasses.replace(self, model_version=str(version))

    # --- storage ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything but the pipeline, as plain JSON data."""
        cov = self.covariates
        return {
            "bundle_version": self.VERSION,
            "model": self.model,
            "feature_set": self.feature_set,
            "horizon_days": float(self.horizon_days),
            "estimand": self.estimand,
            "covariates": {
                "numeric": list(cov.numeric),
                "binary": list(cov.binary),
                "categorical": {k: list(v) for k, v in cov.categorical.items()},
                "imaging": list(cov.imaging),
                "ranges": {k: [float(a), float(b)] for k, (a, b) in cov.ranges.items()},
                "batch": list(cov.batch),
                "preserved": list(cov.preserved),
                "roles": dict(cov.roles),
            },
            "extraction": None
            if self.extraction is None
            else self.extraction.model_dump(mode="json"),
            "risk_groups": [float(x) for x in self.risk_groups],
            "typical": dict(self.typical),
            "training_range": {
                k: [float(a), float(b)] for k, (a, b) in self.training_range.items()
            },
            "terms": list(self.terms),
            "registered_model": self.registered_model,
            "model_version": self.model_version,
            "training": dataclasses.asdict(self.training),
            "harmonisation": dict(self.harmonisation),
            "site_units": {s: dict(u) for s, u in self.site_units.items()},
            "id_column": self.id_column,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], pipeline: Any) -> ModelBundle:
        version = data.get("bundle_version")
        if version != cls.VERSION:
            raise ModelError(
                f"this model was saved as bundle version {version}, but this refracture "
                f"({_version()}) reads bundle version {cls.VERSION}; score it with the "
                "refracture version that trained it, or train it again"
            )
        cov = data["covariates"]
        extraction = data.get("extraction")
        return cls(
            pipeline=pipeline,
            model=str(data["model"]),
            feature_set=str(data["feature_set"]),
            horizon_days=float(data["horizon_days"]),
            estimand=str(data.get("estimand", "net")),
            covariates=CovariateSpec(
                numeric=tuple(cov["numeric"]),
                binary=tuple(cov["binary"]),
                categorical={k: tuple(v) for k, v in cov["categorical"].items()},
                imaging=tuple(cov["imaging"]),
                ranges={k: (float(a), float(b)) for k, (a, b) in cov["ranges"].items()},
                batch=tuple(cov.get("batch", ())),
                preserved=tuple(cov.get("preserved", ())),
                roles=dict(cov.get("roles") or {}),
            ),
            extraction=None if extraction is None else ExtractionConfig(**extraction),
            risk_groups=(float(data["risk_groups"][0]), float(data["risk_groups"][1])),
            typical=dict(data["typical"]),
            training_range={
                k: (float(a), float(b)) for k, (a, b) in data["training_range"].items()
            },
            terms=tuple(data["terms"]),
            registered_model=str(data.get("registered_model", "")),
            model_version=str(data.get("model_version", "")),
            training=TrainingSummary(**data.get("training", {})),
            harmonisation=dict(data.get("harmonisation") or {}),
            site_units={
                str(s): {str(k): str(v) for k, v in u.items()}
                for s, u in (data.get("site_units") or {}).items()
            },
            id_column=str(data.get("id_column") or PATIENT_ID),
        )

    def to_dir(self, folder: str | Path) -> Path:
        """Write ``bundle.json`` and ``pipeline.joblib`` into ``folder`` (created)."""
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / _PIPELINE) as tmp:
            joblib.dump(self.pipeline, tmp)
        write_text(folder / _JSON, json.dumps(self.to_json(), indent=2, default=_plain))
        return folder

    @classmethod
    def from_dir(cls, folder: str | Path) -> ModelBundle:
        """Read a bundle written by :meth:`to_dir`; another bundle version is a ModelError."""
        import joblib

        folder = Path(folder)
        path = folder / _JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read the model bundle {path}: {err}") from None
        if not isinstance(data, dict) or "bundle_version" not in data:
            raise ModelError(f"{path} is not a refracture model bundle")
        if data["bundle_version"] != cls.VERSION:
            cls.from_json(data, None)  # raises, naming both versions
        return cls.from_json(data, joblib.load(folder / _PIPELINE))


def _version() -> str:
    from refracture import __version__

    return __version__


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
