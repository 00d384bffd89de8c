"""Which candidate becomes the registered model: the best on the selection metric."""

from __future__ import annotations

import math

import numpy as np

from refracture.config import RunConfig
from refracture.errors import ConfigError, InputError
from refracture.results import Candidate, selection_pool
from refracture.validation.catalogue import metric_names, selection_score

__all__ = ["check_selection_metric", "select", "selection_score"]


def check_selection_metric(cfg: RunConfig) -> None:
    """Refuse, before any work, a selection metric that does not exist or cannot be computed."""
    names = metric_names(cfg.outcome.horizon_days)
    allowed = set(names) | {f"{n}_optcorr" for n in names}
    if cfg.selection_metric not in allowed:
        raise ConfigError(
            f"unknown metric '{cfg.selection_metric}' (one of {', '.join(sorted(allowed))})",
            key="selection_metric",
        )
    if cfg.selection_metric.endswith("_optcorr") and cfg.validation.bootstrap == 0:
        raise ConfigError(
            f"'{cfg.selection_metric}' needs the bootstrap: set validation.bootstrap above 0 or "
            f"select on '{cfg.selection_metric.removesuffix('_optcorr')}'",
            key="selection_metric",
        )


def select(candidates: list[Candidate], cfg: RunConfig) -> Candidate:
    """The best clinical+imaging model (or the best clinical one, without imaging)."""
    pool = selection_pool(candidates)
    metric = cfg.selection_metric
    h = cfg.outcome.horizon_days
    scored = [(selection_score(metric, c.result.metrics.get(metric, math.nan), h), c) for c in pool]
    scored = [(s, c) for s, c in scored if np.isfinite(s)]
    if not scored:
        raise InputError(f"no model has a finite {metric}; choose another selection_metric")
    return max(scored, key=lambda sc: sc[0])[1]
