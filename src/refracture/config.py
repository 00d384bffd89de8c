"""The run configuration: a validated YAML file (every key in configs/template.yaml).

Unknown keys and wrong types are errors that name the key. Relative paths under ``data`` are
relative to the working folder, as the MLflow store is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from refracture.config_edits import REQUIRED_EDIT, key_and_message, required_edits
from refracture.errors import ConfigError
from refracture.files import shipped_file
from refracture.ids import PATIENT_ID
from refracture.maps import MAP_SPECS
from refracture.meanings import MEANINGS, Role
from refracture.model_catalogue import MODELS

Estimand = Literal["cif", "net"]
FeatureSet = Literal["clinical", "clinical+imaging"]


def _registered_model(name: str) -> str:
    """A model name of the registry (not a copy of its names), so a model added there is one
    the config accepts."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}' (one of {', '.join(MODELS)})")
    return name


ModelName = Annotated[str, AfterValidator(_registered_model)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    manifest: Path | None = None
    clinical: Path
    id_column: str = Field(PATIENT_ID, min_length=1, description="the patient ID column")
    exclude: dict[str, str] = Field({}, description="patient ID -> reason, left out on purpose")
    cache_dir: Path = Path(".refracture-cache")

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude_ids_as_text(cls, v: Any) -> Any:  # YAML reads `42: reason` as a number
        return {str(k): str(r or "") for k, r in v.items()} if isinstance(v, dict) else v


class OutcomeConfig(_Strict):
    time: str = "time_days"
    event: str = "event"
    death: str | None = Field(
        None, description="a 0/1 death column, combined with a 0/1 event column into 0/1/2"
    )
    horizon_days: float = Field(365.0, gt=0)
    estimand: Estimand | None = Field(
        None,
        description="cif: cumulative incidence with death (event 2) competing; net: death "
        "censored. Unset: cif when the event column holds code 2, else net",
    )


class CovariatesConfig(_Strict):
    """Exactly the covariates a study declares: no defaults (a study's own names and kinds)."""

    numeric: list[str] = []
    binary: list[str] = []
    categorical: dict[str, str] = {}
    ranges: dict[str, tuple[float, float]] = Field(
        {},
        description="plausible [low, high] of numeric columns with study-specific names; "
        "training refuses values outside, scoring flags them (defaults cover age, bmi, ...)",
    )
    roles: dict[Role, str] = Field(
        {}, description="meaning -> the study's column: its plausible range, the analysis's role"
    )

    @model_validator(mode="after")
    def _no_duplicates(self) -> CovariatesConfig:
        names = [*self.numeric, *self.binary, *self.categorical]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"covariates listed twice: {', '.join(dup)}")
        bad = [k for k, (lo, hi) in self.ranges.items() if not lo < hi]
        if bad:
            raise ValueError(f"ranges must be [low, high] with low < high: {', '.join(bad)}")
        return self

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.binary, *self.categorical]

    @property
    def plausible_ranges(self) -> dict[str, tuple[float, float]]:
        """Ranges from the config: ``ranges``, else the role's (``Alter`` as age: 18 to 110);
        other columns keep the defaults by name (:func:`refracture.ranges.plausible_range`)."""
        out = {c: MEANINGS[r].range for r, c in self.roles.items() if MEANINGS[r].range}
        return {**out, **dict(self.ranges)}  # type: ignore[dict-item]

    @property
    def cell_units(self) -> dict[str, tuple[str, ...]]:
        """Unit suffixes a cell of each role column may carry ('27 kg/m2' in the bmi column)."""
        return {c: MEANINGS[r].units for r, c in self.roles.items() if MEANINGS[r].units}


class ImputationConfig(_Strict):
    """How missing covariates are filled in; ``imputation: multiple`` is short for
    ``{method: multiple}``."""

    method: Literal["single", "multiple"] = Field(
        "single",
        description="single: median / most frequent value; multiple: chained equations with "
        "the outcome, m imputations, predictions averaged",
    )
    m: int = Field(10, ge=2, le=100, description="imputations (multiple)")
    iterations: int = Field(5, ge=1, le=100, description="passes of the chained equations")


class ImagingConfig(_Strict):
    features: list[str] = []


class AnalysisConfig(_Strict):
    """The biomarker analysis (``refracture analyse``): the study's own column names."""

    tscore: str | None = Field(None, description="clinical column with the BMD T-score")
    age: str | None = Field(None, description="clinical column with age in years")
    sex: str | None = Field(None, description="clinical column with sex (two values)")
    bmi: str | None = Field(None, description="clinical column with BMI in kg/m2")
    site: str | None = Field("site", description="column naming the site (clinical or manifest)")
    batch: Literal["scanner", "field_strength", "site"] | None = Field(
        "scanner", description="scanner batch the analysis adjusts for (R2* depends on it)"
    )
    osteoporosis_tscore: float = Field(-2.5, description="osteoporosis: T-score at or below")


class HarmonisationConfig(_Strict):
    """Scanner harmonisation of the imaging features, a step of the model pipeline."""

    method: Literal["none", "combat"] = "none"
    batch: Literal["site", "scanner", "field_strength"] = "scanner"
    preserve: list[str] = Field(
        [], description="covariates whose effects on the imaging features harmonisation keeps"
    )
    unseen_batch: Literal["refuse", "reference", "pooled", "estimate"] = "refuse"
    min_batch_patients: int = Field(
        20,
        ge=2,
        description="unseen_batch 'estimate': fewest scans of a new scanner to estimate its "
        "location and scale from (fewer are refused)",
    )
    reference_batch: str | None = Field(
        None, description="with unseen_batch 'reference': the batch whose scale new ones take"
    )


#: Extraction QC findings a score row can carry (refracture.features.findings words them).
QCKind = Literal[
    "missing_levels",
    "resampled",
    "small_roi",
    "adjacent_one_sided",
    "no_cement",
    "misregistration",
    "label_order",
    "label_gap",
    "label_duplicate",
    "label_size",
    "transitional",
    "morphometry",
    "units_converted",
    "units_disagree",
]
QC_KINDS: tuple[str, ...] = get_args(QCKind)
#: Findings that make a score row an error unless the config says otherwise: measurements that
#: certainly sit on the wrong tissue or the wrong level.
DEFAULT_QC_ERRORS = ("misregistration", "label_order", "label_duplicate")


class ExtractionConfig(_Strict):
    """How ROIs are built and features computed; stored inside every trained model."""

    label_convention: Literal["verse", "totalsegmentator", "custom"] = "verse"
    label_map: dict[int, str] | None = Field(
        None, description="custom convention: label value -> level name (e.g. 1: L1)"
    )
    erosion_mm: float = Field(2.0, ge=0)
    min_voxels: int = Field(30, ge=1)
    pdff_units: Literal["auto", "percent", "fraction", "per_mille"] = "auto"
    r2star_units: Literal["auto", "per_s", "t2star_ms"] = "auto"
    allow_resample: bool = True
    on_label_problem: Literal["warn", "fail"] = Field(
        "warn",
        description="label-map QC (levels out of order, gaps, a label used twice, implausible "
        "body size, transitional anatomy): warn in qc_* columns, or fail the patient",
    )
    qc_errors: list[QCKind] = Field(
        list(DEFAULT_QC_ERRORS),
        description="extraction QC findings that make a score row an error (status=error) "
        "instead of a warning: " + ", ".join(QC_KINDS),
    )
    pdff_range: tuple[float, float] = MAP_SPECS["pdff"].plausible
    r2star_range: tuple[float, float] = MAP_SPECS["r2star"].plausible
    cement_r2star_per_s: float = Field(
        400.0, gt=0, description="R2* above this (1/s) in a treated vertebra is cement"
    )
    max_voxels: int = Field(
        200_000_000, ge=1, description="refuse images whose header claims more voxels"
    )

    @model_validator(mode="after")
    def _custom_needs_map(self) -> ExtractionConfig:
        if self.label_convention == "custom" and not self.label_map:
            raise ValueError("label_convention 'custom' needs extraction.label_map")
        for name, (lo, hi) in (
            ("pdff_range", self.pdff_range),
            ("r2star_range", self.r2star_range),
        ):
            if not lo < hi:
                raise ValueError(f"{name} must be [low, high] with low < high")
        return self


class ValidationConfig(_Strict):
    split: Literal["none", "random", "site", "leave_one_site_out", "kfold"] = Field(
        "none",
        description="none: every patient develops the model, validated by bootstrap and, "
        "with re-fractures at two or more sites, leave-one-site-out; random | site | "
        "leave_one_site_out | kfold hold patients out",
    )
    internal: Literal["auto", "harrell", "632plus", "loo"] = Field(
        "auto",
        description="the internal-validation estimate tables show: auto (Harrell's for "
        "regression models, .632+ for tree ensembles), harrell, 632plus or loo",
    )
    test_fraction: float = Field(0.3, gt=0, lt=1)
    test_site: str | None = None
    folds: int = Field(5, ge=2)
    bootstrap: int = Field(200, ge=0)
    seed: int = 0
    jobs: int = Field(2, ge=1, description="worker processes for the bootstrap")

    @model_validator(mode="after")
    def _site_needs_name(self) -> ValidationConfig:
        if self.split == "site" and not self.test_site:
            raise ValueError("split 'site' needs validation.test_site (the external site)")
        return self


class MlflowConfig(_Strict):
    tracking_uri: str | None = None
    experiment: str = "refracture"
    registered_model: str = "refracture-1y"
    alias: str = "champion"
    promote_margin: Literal["auto"] | float = Field(
        "auto",
        description="how much better a new version must be to take the alias: 'auto' (beyond "
        "the 95% CI of the difference, from the bootstrap) or a number on the metric's scale",
    )

    @field_validator("promote_margin")
    @classmethod
    def _margin(cls, v: str | float) -> str | float:
        if not isinstance(v, str) and v < 0:
            raise ValueError("must be 'auto' or a number >= 0")
        return v


class RunConfig(_Strict):
    data: DataConfig
    outcome: OutcomeConfig = OutcomeConfig()
    covariates: CovariatesConfig = CovariatesConfig()
    imaging: ImagingConfig = ImagingConfig()
    imputation: ImputationConfig = ImputationConfig()
    harmonisation: HarmonisationConfig = HarmonisationConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    models: list[Annotated[str, AfterValidator(_registered_model)]] = [
        "cox",
        "coxnet",
        "logistic",
        "rsf",
    ]
    feature_sets: list[FeatureSet] = ["clinical", "clinical+imaging"]
    validation: ValidationConfig = ValidationConfig()
    selection_metric: str = Field(
        "auto",
        description="auto: the run's C-index by .632+ for every candidate; or a metric name, "
        "plain (validation data) or with _optcorr, _632plus or _loo",
    )
    risk_groups: tuple[float, float] = (0.10, 0.20)
    mlflow: MlflowConfig = MlflowConfig()

    @field_validator("imputation", mode="before")
    @classmethod
    def _imputation_word(cls, v: Any) -> Any:
        return {"method": v} if isinstance(v, str) else v

    @field_validator("models", "feature_sets")
    @classmethod
    def _non_empty_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must list at least one entry")
        if len(set(v)) != len(v):
            raise ValueError("lists an entry twice")
        return v

    @field_validator("risk_groups")
    @classmethod
    def _thresholds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1] < 1:
            raise ValueError("needs two risk thresholds with 0 < low < high < 1")
        return v

    @model_validator(mode="after")
    def _imaging_needs_manifest(self) -> RunConfig:
        if self.data.manifest is None and "clinical+imaging" in self.feature_sets:
            # A config without images trains clinical-only models (issue 4, item 1).
            self.feature_sets = [f for f in self.feature_sets if f != "clinical+imaging"] or [
                "clinical"
            ]
        return self

    @model_validator(mode="after")
    def _something_to_model(self) -> RunConfig:
        if "clinical+imaging" in self.feature_sets and not self.imaging.features:
            raise ValueError(
                "imaging.features: feature set 'clinical+imaging' needs the imaging columns "
                "to model, e.g. [pdff_mean_normal, r2star_mean_normal]"
            )
        if "clinical" in self.feature_sets and not self.covariates.names:
            raise ValueError(
                "covariates: no covariate is declared; list the study's own columns under "
                "covariates.numeric, covariates.binary or covariates.categorical"
            )
        return self

    def role_columns(self) -> dict[str, str]:
        """Meaning -> column: ``covariates.roles``, overridden by the ``analysis`` section."""
        a = self.analysis
        named = {"tscore": a.tscore, "age": a.age, "sex": a.sex, "bmi": a.bmi}
        return {**self.covariates.roles, **{r: c for r, c in named.items() if c}}

    @property
    def has_imaging(self) -> bool:
        return self.data.manifest is not None and "clinical+imaging" in self.feature_sets


def config_errors(raw: Any) -> tuple[RunConfig | None, list[tuple[str, str]]]:
    """The validated config, or None and every (config key, what is wrong)."""
    if not isinstance(raw, dict):
        return None, [("(top level)", "the config must be a YAML mapping of sections")]
    said = "a required edit is not made yet: {}; replace " + REQUIRED_EDIT + " by your choice"
    if edits := [(k, said.format(w or "see its comment")) for k, w in required_edits(raw)]:
        return None, edits
    try:
        return RunConfig.model_validate(raw), []
    except ValidationError as err:
        return None, [key_and_message(e) for e in err.errors()]


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a config dictionary; errors name the offending key."""
    cfg, errors = config_errors(raw)
    if cfg is None:
        text = "; ".join(f"config key '{k}': {m}" for k, m in errors)
        raise ConfigError(text, file=source)
    return cfg


def packaged_config(name: str) -> Path | None:
    """A config shipped with the package (``configs/<name>.yaml``), or None."""
    stem = Path(name).name
    if not stem.endswith((".yaml", ".yml")):
        stem += ".yaml"
    return shipped_file("configs", stem)


def _read_yaml(path: Path) -> Any:
    """The parsed YAML file; a syntax error becomes one line with its line and column (PyYAML's
    own message spans several lines and quotes the text around the error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the config ({err})", file=path) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        parts = [" ".join(str(t).split()) for t in (err.context, err.problem) if t]
        what = ": ".join(parts) or "syntax error"
        raise ConfigError(f"not valid YAML{where}: {what}", file=path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({' '.join(str(err).split())})", file=path) from None


def _config_path(path: str | Path) -> Path:
    """The file to read: ``path``, or the shipped config it names (``configs/synthetic.yaml``
    typed in a folder that has no such file)."""
    path = Path(path)
    if not path.is_file():
        shipped = packaged_config(str(path))
        if shipped is None or path.parent not in (Path("."), Path("configs")):
            raise ConfigError("config file not found", file=path)
        path = shipped
    return path


def read_config_yaml(path: str | Path) -> tuple[Path, Any]:
    """(the file read, its parsed YAML): :func:`load_config` without the validation."""
    path = _config_path(path)
    return path, _read_yaml(path)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config.

    A path that does not exist but names a config shipped with the package (for example
    ``configs/synthetic.yaml`` typed in an empty folder) loads the shipped one.
    """
    path = _config_path(path)
    raw = _read_yaml(path)
    return parse_config(raw, source=str(path))


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (paths as strings), for logging and storage."""
    return cfg.model_dump(mode="json")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            if key in ("covariates.categorical",) or key.endswith("label_map"):
                out[key] = v
            else:
                out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_extraction_config(path: str | Path) -> tuple[ExtractionConfig, Path | None]:
    """The ``extraction`` section of a YAML file, and ``data.cache_dir`` when it is set.

    The file may be a full run config (its other sections are not validated here, only
    their names) or hold just ``extraction:``. Unknown top-level keys are errors naming the
    key; a missing ``extraction`` section means the defaults. Like :func:`load_config`, a
    missing ``configs/<name>.yaml`` falls back to the config shipped with the package.
    """
    path = _config_path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping of sections", file=path)
    unknown = [str(k) for k in raw if k not in RunConfig.model_fields]
    if unknown:
        raise ConfigError("unknown key", file=path, key=unknown[0])
    try:
        extraction = ExtractionConfig.model_validate(raw.get("extraction") or {})
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            key = ".".join(["extraction", *(str(p) for p in e["loc"])])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            msgs.append(f"config key '{key}': {msg}")
        raise ConfigError("; ".join(msgs), file=path) from None
    data = raw.get("data")
    cache_dir = data.get("cache_dir") if isinstance(data, dict) else None
    return extraction, (Path(cache_dir) if cache_dir else None)
