"""Leave-one-site-out performance with and without scanner harmonisation, side by side.

Harmonisation is judged where it matters: on hospitals the model did not see. For a model on
``clinical+imaging`` :func:`per_site_harmonisation` validates it leave-one-site-out twice on
the same patients, once with the config's ``harmonisation:`` step and once without, and puts
the held-out sites' metrics next to each other (the pooled held-out predictions first). The
training run logs the table as ``per_site_harmonisation.csv`` and as metrics
(:func:`harmonisation_metrics`), and the study report can show it.

Each held-out hospital is new to the harmonised model: with ``batch: site`` or ``scanner``
its scanners' location and scale are estimated from its own patients' scans, without their
outcomes (see :data:`refracture.study.run.VALIDATION_UNSEEN_BATCH`; a scanner with fewer than
``min_batch_patients`` held-out patients gets the pooled adjustment), with
``batch: field_strength`` by its field strength when another site shares it. The comparison
has no bootstrap (the per-site
values are point estimates on the held-out patients).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from refracture.config import RunConfig
from refracture.dataset import Dataset
from refracture.progress import Progress
from refracture.validation.catalogue import horizon_label

__all__ = [
    "COMPARED_METRICS",
    "HARMONISED_SUFFIX",
    "POOLED_ROW",
    "harmonisation_metrics",
    "per_site_harmonisation",
]

#: Metrics compared (``{h}``: the horizon label, e.g. ``365d``).
COMPARED_METRICS = ("cindex_harrell", "auc_{h}", "brier_{h}", "calibration_slope", "oe_ratio_{h}")
#: Column suffix of the harmonised model's values.
HARMONISED_SUFFIX = "_harmonised"
#: ``site`` of the row with the pooled held-out predictions of all sites.
POOLED_ROW = "all sites (pooled)"


def _names(horizon: float) -> list[str]:
    return [m.format(h=horizon_label(horizon)) for m in COMPARED_METRICS]


def per_site_harmonisation(
    name: str,
    dataset: Dataset,
    cfg: RunConfig,
    progress: Progress | None = None,
) -> pd.DataFrame | None:
    """Leave-one-site-out metrics of model ``name`` on ``clinical+imaging``, unharmonised and
    harmonised.

    Parameters
    ----------
    name : a model of the config (``cox``, ``coxnet``, ...).
    dataset : the modelling data set (:func:`refracture.dataset.assemble`).
    cfg : the run config; its ``harmonisation:`` section is the harmonised variant, its
        validation seed is used, its split and bootstrap are not.
    progress : ``progress(stage, done, total)``.

    Returns
    -------
    DataFrame or None
        One row per held-out site plus a first row ``site = "all sites (pooled)"``; columns
        ``site``, ``n``, ``events``, ``events_by_horizon``, then for each compared metric ``m``
        (:data:`COMPARED_METRICS`) ``m`` (without harmonisation) and ``m_harmonised``. None
        when harmonisation is off, there are no imaging features or fewer than two sites.

    Raises
    ------
    InputError, ModelError
        When a site's model cannot be fitted (e.g. the other sites have too few events);
        :func:`refracture.study.train` then notes it and goes on without the comparison.
    """
    from refracture.study.run import validate_candidate

    if dataset.harmonisation is None or not dataset.imaging_features:
        return None
    if dataset.site.nunique() < 2:
        return None
    loso = cfg.model_copy(deep=True)
    loso.validation.split = "leave_one_site_out"
    loso.validation.bootstrap = 0
    plain = dataclasses.replace(dataset, harmonisation=None)
    tables = []
    for data in (plain, dataset):
        stage = f"leave-one-site-out {name}, {'with' if data is dataset else 'without'} harmonising"
        result = validate_candidate(name, "clinical+imaging", data, loso, progress).result
        per_site = result.per_site if result.per_site is not None else pd.DataFrame()
        pooled = {
            "site": POOLED_ROW,
            "n": result.n_valid,
            "events": result.events_valid,
            "events_by_horizon": int(per_site["events_by_horizon"].sum()) if len(per_site) else 0,
            **{m: result.metrics.get(m, math.nan) for m in _names(result.horizon)},
        }
        if progress:
            progress(stage, 1, 1)
        tables.append(pd.concat([pd.DataFrame([pooled]), per_site], ignore_index=True))
    names = _names(dataset.horizon)
    counts = ["site", "n", "events", "events_by_horizon"]
    without, with_ = tables
    out = without[counts].copy()
    for m in names:
        out[m] = without[m].to_numpy(dtype=float)
        out[m + HARMONISED_SUFFIX] = with_.set_index("site")[m].reindex(out["site"]).to_numpy()
    return out


def harmonisation_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The comparison as MLflow metrics: ``loso_{m}`` and ``loso_{m}_harmonised`` for the
    pooled held-out predictions, ``loso_{m}.{site}`` and ``loso_{m}_harmonised.{site}`` per
    site (finite values only)."""
    out: dict[str, float] = {}
    metric_cols = [
        c for c in table.columns if c not in ("site", "n", "events", "events_by_horizon")
    ]
    for _, row in table.iterrows():
        site = str(row["site"])
        for c in metric_cols:
            v = float(row[c])
            if np.isfinite(v):
                key = f"loso_{c}" if site == POOLED_ROW else f"loso_{c}.{site}"
                out[key] = v
    return out
