"""The modelling data set: the clinical table joined to the imaging features, checked, typed.

:func:`assemble` is the one place where raw tables become a modelling data set. It refuses
what cannot be modelled (missing columns, impossible outcomes, duplicated patients) with an
error that names the column, config key or patients, and it reports what it leaves out
(patients without images, images without a clinical record) in ``Dataset.excluded``.
Missing covariate values are only counted here: they are imputed inside the model pipeline,
after any split, so validation patients never inform the imputation.

With scanner harmonisation on, the data set also carries what the harmonisation step reads
besides the model's covariates (``Dataset.harmonisation_inputs``): the patient's site and
scanner (:func:`scanner_columns`) and any preserved covariate that is not a model covariate.
They go to the model pipeline with :meth:`Dataset.model_input` and are never model terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import CovariatesConfig, HarmonisationConfig, RunConfig
from refracture.covariates import (
    NOT_BINARY,
    NOT_NUMBER,
    TRAINING_ERRORS,
    check_covariates,
    columns_hint,
)
from refracture.errors import ConfigError, InputError
from refracture.ids import PATIENT_ID, patient_ids
from refracture.models.design import collinear_columns
from refracture.models.outcome import DEATH, EVENT, make_outcome, resolve_estimand
from refracture.text import name_list

__all__ = [
    "EPV_WARNING",
    "FEATURE_SETS",
    "Dataset",
    "assemble",
    "coerce_covariates",
    "harmonisation_columns",
    "scanner_columns",
]

FEATURE_SETS = ("clinical", "clinical+imaging")
#: Fewer events per model parameter than this is warned about (the rule of thumb of Peduzzi et
#: al. 1996 for Cox and logistic models; fewer events than parameters is refused).
EPV_WARNING = 10.0


@dataclass
class Dataset:
    """A modelling data set: one row per patient, indexed by ``patient_id``.

    ``X`` holds the covariates (typed: numeric and binary as floats, categorical as strings)
    and, when imaging is used, the imaging features; missing values are left as NaN.
    ``y`` is the structured outcome; ``site`` the hospital of each patient.
    """

    X: pd.DataFrame
    y: np.ndarray
    site: pd.Series
    covariates: CovariatesConfig
    imaging_features: list[str]
    categories: dict[str, list[str]]
    n_missing: dict[str, int]
    excluded: pd.DataFrame
    horizon: float
    notes: list[str] = field(default_factory=list)
    harmonisation: HarmonisationConfig | None = None
    harmonisation_inputs: pd.DataFrame | None = None
    #: ``net`` or ``cif``: the configured ``outcome.estimand``, else ``cif`` when the outcome
    #: has deaths (code 2). Every model and metric of a run on this data set uses it.
    estimand: str = "net"
    warnings: list[str] = field(default_factory=list)

    @property
    def ids(self) -> pd.Index:
        return self.X.index

    def model_input(self, feature_set: str) -> pd.DataFrame:
        """The table a model pipeline of ``feature_set`` takes: its columns of ``X``, and for
        'clinical+imaging' with harmonisation on, the columns the harmonisation step reads
        (batch columns, preserved covariates; the pipeline's ``prep`` step drops them)."""
        X = self.X[self.feature_names(feature_set)]
        if (
            feature_set == "clinical+imaging"
            and self.harmonisation is not None
            and self.harmonisation_inputs is not None
        ):
            extra = [c for c in self.harmonisation_inputs.columns if c not in X.columns]
            X = X.join(self.harmonisation_inputs[extra])
        return X

    @property
    def has_imaging(self) -> bool:
        return bool(self.imaging_features)

    def __len__(self) -> int:
        return len(self.X)

    def feature_names(self, feature_set: str) -> list[str]:
        """Columns of ``X`` a feature set uses ('clinical' or 'clinical+imaging')."""
        if feature_set == "clinical":
            return list(self.covariates.names)
        if feature_set == "clinical+imaging":
            if not self.imaging_features:
                raise ConfigError(
                    "feature set 'clinical+imaging' needs imaging features, but none were given",
                    key="feature_sets",
                )
            return [*self.covariates.names, *self.imaging_features]
        raise ConfigError(
            f"unknown feature set '{feature_set}' ({', '.join(FEATURE_SETS)})", key="feature_sets"
        )

    def covariate_kinds(self, feature_set: str) -> dict[str, str]:
        """Each column of a feature set and its kind: numeric, binary or categorical."""
        cov = self.covariates
        kinds = {c: "numeric" for c in cov.numeric}
        kinds |= {c: "binary" for c in cov.binary}
        kinds |= {c: "categorical" for c in cov.categorical}
        if feature_set == "clinical+imaging":
            kinds |= {c: "numeric" for c in self.imaging_features}
        return kinds

    def n_parameters(self, feature_set: str) -> int:
        """Model parameters of a feature set after encoding: one per numeric, binary and
        imaging column, one per non-reference level of each categorical covariate."""
        kinds = self.covariate_kinds(feature_set)
        return sum(
            len(self.categories.get(c, [])) - 1 if kind == "categorical" else 1
            for c, kind in kinds.items()
        )

    @property
    def n_events_by_horizon(self) -> int:
        """Re-fractures (event 1) at or before the horizon: the events the models learn from."""
        return _events_by(self.y, self.horizon)

    def events_per_parameter(self, feature_set: str) -> float:
        """Events by the horizon per model parameter of ``feature_set`` (the EPV); below
        :data:`EPV_WARNING` the run warns, as the terminal summary and the report show."""
        return self.n_events_by_horizon / max(self.n_parameters(feature_set), 1)

    @property
    def epv(self) -> dict[str, float]:
        """Events per model parameter of each feature set the data set can fit."""
        sets = ["clinical", *(["clinical+imaging"] if self.imaging_features else [])]
        return {fs: self.events_per_parameter(fs) for fs in sets}

    def subset(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        """The data set restricted to the given row positions (for splits)."""
        rows = np.asarray(rows)
        inputs = self.harmonisation_inputs
        return replace(
            self,
            X=self.X.iloc[rows],
            y=self.y[rows],
            site=self.site.iloc[rows],
            harmonisation_inputs=None if inputs is None else inputs.loc[self.X.index[rows]],
        )

    def summary(self) -> dict[str, float]:
        ev, t = self.y["event"], self.y["time"]
        return {
            "n_patients": len(self),
            "n_events": int((ev == EVENT).sum()),
            "n_deaths": int((ev == DEATH).sum()),
            "n_censored": int((ev == 0).sum()),
            "n_events_by_horizon": self.n_events_by_horizon,
            "n_sites": int(self.site.nunique()),
            "n_excluded": len(self.excluded),
            "median_follow_up_days": float(np.median(t)),
        }


def coerce_covariates(
    table: pd.DataFrame,
    covariates: CovariatesConfig,
    imaging_features: Sequence[str] = (),
    *,
    ids: pd.Series | None = None,
    source: str | Path | None = None,
    check_plausible: bool = False,
) -> pd.DataFrame:
    """Type the model columns for training: numeric/binary -> float (NaN missing), categorical
    -> text; the rules are :func:`refracture.covariates.check_covariates`'s.

    Raises InputError naming the patients and column for a value that is not a number, a
    binary value that is not 0/1, or a missing column (with a "did you mean" for a near
    namesake); with ``check_plausible`` also for a value outside the plausible range of its
    column (:mod:`refracture.ranges`).
    """
    needed = [*covariates.names, *imaging_features]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        key = "imaging.features" if set(missing) <= set(imaging_features) else "covariates"
        raise InputError(
            f"columns missing from the table: {', '.join(missing)}"
            + columns_hint(missing, [c for c in table.columns if c not in needed]),
            key=key,
            file=source,
        )
    ids = table[PATIENT_ID] if ids is None and PATIENT_ID in table.columns else ids
    labels = list(ids.to_numpy() if ids is not None else table.index.to_numpy())
    check = check_covariates(
        table,
        numeric=covariates.numeric,
        binary=covariates.binary,
        categorical=dict.fromkeys(covariates.categorical),
        imaging=imaging_features,
        ranges=covariates.ranges,
    )
    kinds = TRAINING_ERRORS if check_plausible else (NOT_NUMBER, NOT_BINARY)
    check.raise_errors(labels, source=source, kinds=kinds)
    return check.clean[needed]


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
        rows = dict(zip(keys, manifest[cols].to_dict("records"), strict=True))
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


def _harmonising(cfg: RunConfig) -> bool:
    return (
        cfg.harmonisation.method != "none"
        and "clinical+imaging" in cfg.feature_sets
        and bool(cfg.imaging.features)
    )


def _check_preserve(clinical: pd.DataFrame, cfg: RunConfig, source: str | Path | None) -> None:
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


def _outcome(
    table: pd.DataFrame, ids: pd.Series, cfg: RunConfig, source: str | Path | None
) -> np.ndarray:
    oc = cfg.outcome
    for col, key in ((oc.time, "outcome.time"), (oc.event, "outcome.event")):
        if col not in table.columns:
            raise InputError(
                f"outcome column '{col}' is missing from the clinical table", key=key, file=source
            )
    time = pd.to_numeric(table[oc.time], errors="coerce")
    # Zero is a time: an event or a loss on the day of surgery (real registries have them).
    bad = time.isna() | ~np.isfinite(time.to_numpy(dtype=float, na_value=np.nan)) | (time < 0)
    if bad.any():
        found = ", ".join(repr(v) for v in table[oc.time][bad].head(3))
        raise InputError(
            f"'{oc.time}' must be a number >= 0, the time from surgery to the event or the last "
            f"follow-up (missing, negative or not a number); found {found}",
            patient_id=name_list(ids[bad], 5),
            file=source,
        )
    event = pd.to_numeric(table[oc.event], errors="coerce")
    bad = ~event.isin([0, 1, 2])
    if bad.any():
        examples = ", ".join(repr(v) for v in table[oc.event][bad].head(3))
        raise InputError(
            f"'{oc.event}' must be 0 (censored), 1 (re-fracture) or 2 (death); found {examples}",
            patient_id=name_list(ids[bad], 5),
            file=source,
        )
    return make_outcome(event.to_numpy(dtype=np.int8), time.to_numpy(dtype=float))


def assemble(
    clinical: pd.DataFrame,
    features: pd.DataFrame | None,
    cfg: RunConfig,
    *,
    clinical_source: str | Path | None = None,
    features_source: str | Path | None = None,
    manifest: pd.DataFrame | None = None,
) -> Dataset:
    """Join the clinical table to the imaging features and check everything a model needs.

    Imaging is used when ``features`` is given and the config's feature sets include
    'clinical+imaging'; then patients without features are left out (listed in ``excluded``
    with the reason), as are feature rows without a clinical record. Without imaging, the
    clinical table alone makes the data set (a config with no manifest trains clinical-only
    models).

    With ``harmonisation.method`` other than none, the preserved covariates must be columns
    of the clinical table (ConfigError naming ``harmonisation.preserve`` otherwise), and when
    imaging is used every patient's batch must be known; the patient's site, scanner
    (:func:`scanner_columns`: the feature table's ``scanner_*`` columns, else ``manifest``'s
    ``field_strength_t``, ``vendor``, ``scanner``) and the preserved covariates outside the
    model go to ``Dataset.harmonisation_inputs``.
    """
    cov = cfg.covariates
    if len(clinical) == 0:
        raise InputError("no patients: the clinical table has no rows", file=clinical_source)
    harmonising = _harmonising(cfg)
    if harmonising:
        _check_preserve(clinical, cfg, clinical_source)
    clin_ids = patient_ids(clinical, "clinical table", clinical_source)
    y_all = _outcome(clinical, clin_ids, cfg, clinical_source)
    use_imaging = features is not None and "clinical+imaging" in cfg.feature_sets
    imaging = list(cfg.imaging.features) if use_imaging else []
    X_all = coerce_covariates(
        clinical, cov, ids=clin_ids, source=clinical_source, check_plausible=True
    )
    X_all.index = pd.Index(clin_ids.to_numpy(), name=PATIENT_ID)

    site = (
        clinical["site"].astype(str).to_numpy()
        if "site" in clinical.columns
        else np.full(len(clinical), "", dtype=object)
    )
    site = pd.Series(site, index=X_all.index, name="site")
    scanners: pd.DataFrame | None = None
    excluded: list[tuple[str, str]] = []
    keep = np.ones(len(X_all), dtype=bool)

    if features is not None:
        feat_ids = patient_ids(features, "feature table", features_source)
        feats = features.copy()
        feats.index = pd.Index(feat_ids.to_numpy(), name=PATIENT_ID)
        if "site" not in clinical.columns and "site" in feats.columns:
            site = feats["site"].astype(str).reindex(X_all.index).fillna("")
        if use_imaging:
            missing = [c for c in imaging if c not in feats.columns]
            if missing:
                raise InputError(
                    f"imaging features missing from the feature table: {', '.join(missing)}",
                    key="imaging.features",
                    file=features_source,
                )
            img = coerce_covariates(
                feats, CovariatesConfig(numeric=[], binary=[], categorical={}), imaging,
                ids=feat_ids.set_axis(feats.index), source=features_source,
            )  # fmt: skip
            # Name the files, so a user reading excluded.csv knows which table lacks whom.
            feats_name = Path(features_source).name if features_source else "the feature table"
            clin_name = "the clinical table" + (
                f" {Path(clinical_source).name}" if clinical_source else ""
            )
            no_features = ~X_all.index.isin(img.index)
            excluded += [
                (pid, f"no imaging features from {feats_name}") for pid in X_all.index[no_features]
            ]
            keep &= ~no_features
            orphans = img.index[~img.index.isin(X_all.index)]
            excluded += [(pid, f"in {feats_name} but not in {clin_name}") for pid in orphans]
            X_all = X_all.join(img, how="left")
            scanners = scanner_columns(feats, manifest).reindex(X_all.index)
    known_site = site.where(site != "")
    site = site.where(site != "", "all")

    X = X_all[keep]
    y = y_all[keep]
    site = site[keep]
    if len(X) == 0:
        raise InputError(
            "no patient has both a clinical record and imaging features", file=features_source
        )
    _check_events(y, cfg)

    categories: dict[str, list[str]] = {}
    for col, ref in cov.categorical.items():
        levels = sorted(X[col].dropna().unique().tolist())
        if ref not in levels:
            found = ", ".join(levels) if levels else "none"
            raise ConfigError(
                f"reference level '{ref}' of '{col}' does not occur in the data (levels: {found})",
                key=f"covariates.categorical.{col}",
            )
        categories[col] = [ref, *[lv for lv in levels if lv != ref]]

    n_missing = {c: int(X[c].isna().sum()) for c in X.columns}
    all_nan = [c for c, n in n_missing.items() if n == len(X)]
    if all_nan:
        raise InputError(f"columns with no values at all: {', '.join(all_nan)}", key="covariates")
    _check_design(X, cov, imaging, categories)
    inputs = None
    if harmonising and use_imaging:
        inputs = _harmonisation_inputs(clinical, clin_ids, X, known_site[keep], scanners, cfg)
    excluded_df = pd.DataFrame(excluded, columns=[PATIENT_ID, "reason"])
    notes = []
    if len(excluded_df):
        notes.append(f"{len(excluded_df)} patients excluded (see Dataset.excluded)")
    dataset = Dataset(
        X=X,
        y=y,
        site=site,
        covariates=cov,
        imaging_features=imaging,
        categories=categories,
        n_missing=n_missing,
        excluded=excluded_df,
        horizon=float(cfg.outcome.horizon_days),
        notes=notes,
        harmonisation=cfg.harmonisation if inputs is not None else None,
        harmonisation_inputs=inputs,
        estimand=resolve_estimand(cfg.outcome.estimand, y),
    )
    dataset.warnings.extend(_check_parameters(dataset, cfg))
    return dataset


def _check_design(
    X: pd.DataFrame,
    cov: CovariatesConfig,
    imaging: list[str],
    categories: dict[str, list[str]],
) -> None:
    """Refuse a covariate with one value for every patient, a category with one patient, and
    covariates that are exact linear combinations of each other: no model term can be
    estimated for them."""
    for col in X.columns:
        values = X[col].dropna().unique()
        if len(values) == 1:
            key = "imaging.features" if col in imaging else "covariates"
            raise InputError(
                f"column '{col}' has the same value ({values[0]}) for every patient, so it "
                f"cannot be modelled; leave it out of {key}",
                key=key,
            )
    for col in categories:
        counts = X[col].value_counts()
        single = sorted(str(lv) for lv in counts.index[counts == 1])
        if single:
            raise InputError(
                f"column '{col}' has {'a level' if len(single) == 1 else 'levels'} with one "
                f"patient ({', '.join(single)}): no model can estimate a term from one patient, "
                "and a split may leave it out of the training data; merge it with another level",
                key=f"covariates.categorical.{col}",
            )
    design = X[[*cov.numeric, *cov.binary, *imaging]].astype(float)
    for col, levels in categories.items():
        for level in levels[1:]:
            design[f"{col}[{level}]"] = (X[col] == level).astype(float).where(X[col].notna())
    dependent = collinear_columns(design)
    if dependent:
        names = ", ".join(f"'{c}'" for c in dependent)
        raise InputError(
            f"columns {names} are collinear (one is a linear combination of the others), so "
            "their coefficients cannot be estimated; leave one of them out of covariates",
            key="covariates",
        )


def _events_by(y: np.ndarray, horizon: float) -> int:
    return int(((y["event"] == EVENT) & (y["time"] <= horizon)).sum())


def _outcome_counts(y: np.ndarray) -> str:
    ev = y["event"]
    parts = [f"{int((ev == 0).sum())} censored"]
    if (ev == DEATH).any():
        parts.append(f"{int((ev == DEATH).sum())} died")
    return f"{len(y)} patients: {', '.join(parts)}"


def _harmonisation_inputs(
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


def _check_events(y: np.ndarray, cfg: RunConfig) -> None:
    """Refuse an outcome no model can learn from, with the counts: no event 1 at all, a
    horizon beyond every follow-up, no event 1 by the horizon.

    A horizon equal to the longest follow-up is accepted: a study that follows every patient
    for one year censors the event-free ones at exactly the horizon, and they are event-free
    at the horizon.
    """
    horizon = cfg.outcome.horizon_days
    ev, t = y["event"], y["time"]
    if not (ev == EVENT).any():
        raise InputError(
            f"no re-fracture in the outcome (no event 1 among {_outcome_counts(y)}), so no "
            "risk model can be fitted",
            key="outcome.event",
        )
    if horizon > t.max():
        raise ConfigError(
            f"the horizon ({horizon:g}) is beyond the longest follow-up ({t.max():g}, in the "
            f"unit of '{cfg.outcome.time}'); choose a horizon of at most {t.max():g}",
            key="outcome.horizon_days",
        )
    by_horizon = _events_by(y, horizon)
    if by_horizon == 0:
        raise InputError(
            f"no re-fracture by the horizon ({horizon:g}): the {int((ev == EVENT).sum())} "
            f"re-fractures all come later (first at {t[ev == EVENT].min():g}), so the risk by "
            "the horizon cannot be modelled; choose a longer outcome.horizon_days",
            key="outcome.horizon_days",
        )


def _check_parameters(dataset: Dataset, cfg: RunConfig) -> list[str]:
    """Refuse fewer events by the horizon than model parameters; warn below
    :data:`EPV_WARNING` events per parameter. Returns the warnings."""
    sets = [fs for fs in cfg.feature_sets if fs == "clinical" or dataset.imaging_features]
    events = dataset.n_events_by_horizon
    h = f"{dataset.horizon:g}"
    warnings = []
    for fs in sets:
        n_par = dataset.n_parameters(fs)
        if events < n_par:
            raise InputError(
                f"too few events to fit the models: {events} re-fractures by the horizon ({h}) "
                f"for {n_par} model parameters (feature set '{fs}'; a categorical covariate "
                "counts one per level beyond the reference); declare fewer covariates",
                key="covariates",
            )
        epv = events / max(n_par, 1)
        if epv < EPV_WARNING:
            warnings.append(
                f"{epv:.1f} events per model parameter ({events} re-fractures by the horizon "
                f"{h} for {n_par} parameters, feature set '{fs}'): fewer than "
                f"{EPV_WARNING:g}, so the models may over-fit; read the optimism-corrected "
                "metrics"
            )
    return warnings
