"""The selected candidate as a :class:`~refracture.bundle.ModelBundle`: what the registered
model carries besides its fitted pipeline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from refracture import __version__
from refracture.bundle import CovariateSpec, ModelBundle, TrainingSummary
from refracture.config import RunConfig
from refracture.dataset import Dataset, harmonisation_columns
from refracture.results import Candidate
from refracture.validation.catalogue import resolve_selection_metric

__all__ = ["make_bundle", "training_ranges"]


def training_ranges(dev: pd.DataFrame, numeric: list[str]) -> dict[str, tuple[float, float]]:
    """Per numeric input, the 1st-99th percentile of the development data widened by a tenth
    of its span (not min/max: one patient's value), so scoring flags extrapolation rather than
    every 50th ordinary patient."""
    ranges: dict[str, tuple[float, float]] = {}
    for c in numeric:
        x = pd.to_numeric(dev[c], errors="coerce").dropna()
        if len(x):
            lo, hi = np.percentile(x, [1, 99])
            pad = 0.1 * (hi - lo)
            ranges[c] = (float(f"{lo - pad:.4g}"), float(f"{hi + pad:.4g}"))
    return ranges


def make_bundle(
    cand: Candidate,
    cfg: RunConfig,
    dataset: Dataset,
    *,
    dataset_digest: str = "",
    site_units: dict[str, dict[str, str]] | None = None,
) -> ModelBundle:
    """The registered model of candidate ``cand``.

    ``site_units``: the units extraction read each training site's maps in
    (:attr:`refracture.features.ExtractionResult.site_units`); an imaging model pins them for
    scoring new patients of those sites.
    """
    r = cand.result
    imaging = cand.feature_set == "clinical+imaging"
    cov = cfg.covariates
    imaging_features = list(dataset.imaging_features) if imaging else []
    numbers = [*cov.numeric, *imaging_features]
    dev = dataset.X.loc[r.development_ids]
    typical: dict[str, Any] = {}
    for c in [*numbers, *cov.binary]:
        x = pd.to_numeric(dev[c], errors="coerce").dropna()
        typical[c] = float(x.median()) if c in numbers else float(x.mode().iloc[0])
    for c in cov.categorical:
        typical[c] = str(dev[c].mode().iloc[0])
    harmoniser = r.final_model.harmoniser
    batch: list[str] = []
    preserved: list[str] = []
    harmonisation: dict[str, Any] = {}
    if harmoniser is not None:
        batch, preserved = harmonisation_columns(cfg.harmonisation, cov)
        typical |= _typical_context(dataset, cand.feature_set, r.development_ids, batch, preserved)
        harmonisation = cfg.harmonisation.model_dump(mode="json") | {
            "batches": list(harmoniser.batches_),
            "n_per_batch": [int(k) for k in harmoniser.n_per_batch_],
        }
    return ModelBundle(
        pipeline=r.final_model,
        model=cand.model,
        feature_set=cand.feature_set,
        horizon_days=float(cfg.outcome.horizon_days),
        estimand=dataset.estimand,
        covariates=CovariateSpec(
            numeric=tuple(cov.numeric),
            binary=tuple(cov.binary),
            categorical={c: tuple(dataset.categories[c]) for c in cov.categorical},
            imaging=tuple(imaging_features),
            ranges={k: (float(a), float(b)) for k, (a, b) in cov.plausible_ranges.items()},
            batch=tuple(batch),
            preserved=tuple(preserved),
            roles=dict(cov.roles),
        ),
        extraction=cfg.extraction if imaging else None,
        risk_groups=(float(cfg.risk_groups[0]), float(cfg.risk_groups[1])),
        typical=typical,
        training_range=training_ranges(dev, numbers),
        terms=tuple(r.final_model.term_names),
        registered_model=cfg.mlflow.registered_model,
        model_version=cand.run_id or "",
        training=TrainingSummary(
            refracture_version=__version__,
            n_patients=r.n_train,
            n_events=r.events_train,
            split=r.split,
            selection_metric=resolve_selection_metric(cfg.selection_metric),
            selection_value=float(
                r.metrics.get(resolve_selection_metric(cfg.selection_metric), math.nan)
            ),
            dataset_digest=dataset_digest,
            competing_risk=r.competing_risk_note,
        ),
        harmonisation=harmonisation,
        site_units=dict(site_units or {}) if imaging else {},
        id_column=cfg.data.id_column,
    )


def _typical_context(
    dataset: Dataset, feature_set: str, ids: list[str], batch: list[str], preserved: list[str]
) -> dict[str, Any]:
    """Example values of the columns harmonisation reads: the batch columns of one patient of
    the largest development batch (so the example is a known batch), preserved covariates'
    medians or most frequent values."""
    from refracture.models.harmonise import batch_labels

    dev = dataset.model_input(feature_set).loc[ids]
    labels = batch_labels(dev, str(dataset.harmonisation.batch))  # type: ignore[union-attr]
    first = dev[labels == labels.mode().iloc[0]].iloc[0]
    out: dict[str, Any] = {}
    for c in batch:
        v = first[c]
        out[c] = float(v) if isinstance(v, int | float | np.number) else str(v)
    for c in preserved:
        x = dev[c].dropna()
        numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
        out[c] = float(x.median()) if numeric else str(x.astype(str).mode().iloc[0])
    return out
