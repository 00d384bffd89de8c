"""Which candidate becomes the registered model: the best on the selection metric.

``selection_metric: auto`` (the default) compares every candidate on the run's C-index
(Wolbers' under ``cif``) by the .632+ bootstrap: one estimate valid for regression models and
tree ensembles alike (Harrell's optimism correction favours a forest, which memorises the
resampled patients it is tested on). Internal-validation estimates come from the development
data only, so with a held-out or site split the held-out patients never take part in the
choice and judge the chosen model once (Varma & Simon 2006); a plain metric name chooses on
the validation data instead, and the run warns when those are held-out patients.
"""

from __future__ import annotations

import math

import numpy as np

from refracture.config import RunConfig
from refracture.errors import ConfigError, InputError
from refracture.results import Candidate, selection_pool
from refracture.validation.catalogue import (
    ESTIMATORS,
    estimator_of,
    resolve_selection_metric,
    selection_choices,
    selection_score,
)

__all__ = ["check_selection_metric", "select", "selection_metric", "selection_score"]


def selection_metric(cfg: RunConfig) -> str:
    """The metric name the config selects on (``auto`` resolved)."""
    return resolve_selection_metric(cfg.selection_metric)


def check_selection_metric(cfg: RunConfig) -> None:
    """Refuse, before any work, a selection metric that does not exist or cannot be computed."""
    h = cfg.outcome.horizon_days
    allowed = selection_choices(h)
    metric = cfg.selection_metric
    if metric not in allowed:
        raise ConfigError(
            f"unknown metric '{metric}' (auto, or one of {', '.join(sorted(allowed[1:]))})",
            key="selection_metric",
        )
    suffix = estimator_of(selection_metric(cfg))
    if suffix and cfg.validation.bootstrap == 0:
        base = selection_metric(cfg).removesuffix("_" + suffix)
        raise ConfigError(
            f"'{metric}' needs the bootstrap ({ESTIMATORS[suffix].label}): set "
            f"validation.bootstrap above 0 or select on '{base}'",
            key="selection_metric",
        )


def select(candidates: list[Candidate], cfg: RunConfig) -> Candidate:
    """The best clinical+imaging model (or the best clinical one, without imaging)."""
    pool = selection_pool(candidates)
    if len(pool) == 1:  # nothing to choose between, whatever the metric could be computed
        return pool[0]
    metric = selection_metric(cfg)
    h = cfg.outcome.horizon_days
    scored = [(selection_score(metric, c.result.metrics.get(metric, math.nan), h), c) for c in pool]
    scored = [(s, c) for s, c in scored if np.isfinite(s)]
    if not scored:
        raise InputError(f"no model has a finite {metric}; choose another selection_metric")
    return max(scored, key=lambda sc: sc[0])[1]
