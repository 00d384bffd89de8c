"""The modelling data set: the clinical table joined to the imaging features, checked, typed.

:func:`assemble` is the one place where raw tables become a modelling data set. It refuses
what cannot be modelled (missing columns, impossible outcomes, duplicated patients) with an
error that names the column, config key or patients, and it reports what it leaves out
(patients without images, images without a clinical record) in ``Dataset.excluded``.
Missing covariate values are only counted here: they are imputed inside the model pipeline,
after any split, so validation patients never inform the imputation.

With scanner harmonisation on, the data set also carries what the harmonisation step reads
besides the model's covariates (``Dataset.harmonisation_inputs``): the patient's site and
scanner (:func:`refracture.scanners.scanner_columns`) and any preserved covariate that is not
a model covariate. They go to the model pipeline with :meth:`Dataset.model_input` and are
never model terms. The rules themselves are in :mod:`refracture.data_rules` (outcome, events,
design) and :mod:`refracture.scanners` (scanners, harmonisation inputs).
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
from refracture.data_rules import check_design, check_events, events_by, read_outcome
from refracture.errors import ConfigError, InputError
from refracture.ids import PATIENT_ID, patient_id_text, patient_ids
from refracture.models.outcome import DEATH, EVENT, resolve_estimand
from refracture.scanners import (
    check_preserve,
    harmonisation_columns,
    harmonisation_inputs,
    harmonising,
    scanner_columns,
)

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
        return events_by(self.y, self.horizon)

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
        ranges=covariates.plausible_ranges,
        units=covariates.cell_units,
    )
    kinds = TRAINING_ERRORS if check_plausible else (NOT_NUMBER, NOT_BINARY)
    check.raise_errors(labels, source=source, kinds=kinds)
    return check.clean[needed]


def assemble(
    clinical: pd.DataFrame,
    features: pd.DataFrame | None,
    cfg: RunConfig,
    *,
    clinical_source: str | Path | None = None,
    features_source: str | Path | None = None,
    manifest: pd.DataFrame | None = None,
    exclude: dict[str, str] | None = None,
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

    ``exclude`` (patient ID -> reason; default ``data.exclude``, each reason prefixed with
    "excluded on purpose") leaves patients out before anything is checked: they are listed in
    ``excluded`` with the reason.
    """
    cov = cfg.covariates
    if len(clinical) == 0:
        raise InputError("no patients: the clinical table has no rows", file=clinical_source)
    if exclude is None:
        exclude = {p: f"excluded on purpose: {why}" for p, why in cfg.data.exclude.items()}
    on_purpose: list[tuple[str, str]] = []
    if exclude and PATIENT_ID in clinical.columns:
        text_ids = clinical[PATIENT_ID].map(patient_id_text)
        out = text_ids.isin(list(exclude)).to_numpy()
        on_purpose = [(pid, exclude[pid]) for pid in text_ids[out]]
        clinical = clinical[~out]
        if features is not None and PATIENT_ID in features.columns:
            features = features[~features[PATIENT_ID].map(patient_id_text).isin(list(exclude))]
        if len(clinical) == 0:
            raise InputError(
                "no patients left: data.exclude leaves out every patient of the clinical table",
                key="data.exclude",
            )
    harmonise = harmonising(cfg)
    if harmonise:
        check_preserve(clinical, cfg, clinical_source)
    clin_ids = patient_ids(clinical, "clinical table", clinical_source)
    y_all = read_outcome(clinical, clin_ids, cfg, clinical_source)
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
    excluded: list[tuple[str, str]] = list(on_purpose)
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
    check_events(y, cfg)

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
    check_design(X, cov, imaging, categories)
    inputs = None
    if harmonise and use_imaging:
        inputs = harmonisation_inputs(clinical, clin_ids, X, known_site[keep], scanners, cfg)
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
