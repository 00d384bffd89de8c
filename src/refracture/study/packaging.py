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
from refracture.dataset import Dataset
from refracture.results import Candidate

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
    return ModelBundle(
        pipeline=r.final_model,
        model=cand.model,
        feature_set=cand.feature_set,
        horizon_days=float(cfg.outcome.horizon_days),
        estimand="net",
        covariates=CovariateSpec(
            numeric=tuple(cov.numeric),
            binary=tuple(cov.binary),
            categorical={c: tuple(dataset.categories[c]) for c in cov.categorical},
            imaging=tuple(imaging_features),
            ranges={k: (float(a), float(b)) for k, (a, b) in cov.ranges.items()},
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
            selection_metric=cfg.selection_metric,
            selection_value=float(r.metrics.get(cfg.selection_metric, math.nan)),
            dataset_digest=dataset_digest,
            competing_risk=r.competing_risk_note,
        ),
        site_units=dict(site_units or {}) if imaging else {},
    )
