"""Performance per site (TRIPOD+AI items 12d and 23b: heterogeneity across clusters).

Under leave-one-site-out validation each site's metrics are those of the fold that held it
out (:attr:`ValidationResult.per_site`, computed by the validation step). Under any other
design they are computed here on the validation predictions of each site (for a random
hold-out: each site's share of the held-out patients), in the run's estimand, each site's
IPCW metrics weighting by that site's own censoring, as for the pooled metrics. The C-index
(``cindex_harrell``: Harrell's for ``net``, Wolbers' competing-risk C for ``cif``) gets a
percentile bootstrap 95 % CI per site (predictions fixed, patients resampled), because a
site's point estimate alone hides how little a small site says.

The sites' C and O/E are then meta-analysed by random effects
(:mod:`refracture.report.site_meta`): the average site and, more telling, the range a new
hospital's value is expected in.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.files import write_table
from refracture.models.outcome import EVENT, make_outcome
from refracture.report.sample_size import MIN_EVENTS, MIN_PATIENTS, events_by_horizon
from refracture.validation.bootstrap import percentile_interval, replicate_seeds
from refracture.validation.catalogue import horizon_label
from refracture.validation.concordance import concordance, ranking_score
from refracture.validation.meta_analysis import log_oe_se
from refracture.validation.metrics import compute_metrics, metric_names
from refracture.validation.undefined import Undefined

__all__ = ["per_site_metrics", "per_site_table", "write_per_site"]

# Seed stream of the per-site C-index bootstrap (the validation step uses streams 0-2).
STREAM_PER_SITE = 7


def _cindex_ci(
    y: np.ndarray, score: np.ndarray, horizon: float, estimand: str, bootstrap: int, seed: int
) -> tuple[float, float, float]:
    """Percentile 95 % CI of a site's C and the bootstrap SD of logit C (its standard error
    for the meta-analysis; NaN without resamples or when C is 0 or 1 in them)."""
    if bootstrap <= 0 or len(y) < 2:
        return float("nan"), float("nan"), float("nan")
    values = np.full(bootstrap, np.nan)
    for b, ss in enumerate(replicate_seeds(seed, bootstrap, STREAM_PER_SITE)):
        idx = np.random.default_rng(ss).integers(0, len(y), len(y))
        with contextlib.suppress(Undefined):  # no comparable pair in this resample
            values[b] = concordance(y[idx], score[idx], horizon, estimand)
    ok = values[np.isfinite(values)]
    se = float("nan")
    if len(ok) >= 2 and np.all((ok > 0) & (ok < 1)):
        se = float(np.std(np.log(ok / (1 - ok)), ddof=1))
    return (*percentile_interval(values), se)


def per_site_metrics(validation: Any, *, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per validation site: ``site``, ``n``, ``events``, ``events_by_horizon``, every
    metric of the run, ``cindex_harrell_lo`` / ``_hi`` and ``small_sample``.

    ``validation`` is a :class:`refracture.validation.ValidationResult`.
    """
    r = validation
    h = float(r.horizon)
    pred = r.predictions
    if r.per_site is not None:
        base = r.per_site.copy()
        base["site"] = base["site"].astype(str)
    else:
        rows = []
        for site, g in pred.groupby("site", sort=True):
            y = make_outcome(g["event"].to_numpy(), g["time"].to_numpy())
            rows.append(
                {
                    "site": str(site),
                    "n": int(len(g)),
                    "events": int((g["event"] == EVENT).sum()),
                    "events_by_horizon": events_by_horizon(g["time"], g["event"], h),
                    **compute_metrics(
                        y,
                        g["risk"].to_numpy(),
                        horizon=h,
                        estimand=getattr(r, "estimand", "net"),
                        lp=g["lp"].to_numpy() if "lp" in g else None,
                    )[0],
                }
            )
        base = pd.DataFrame(rows)
    lo, hi, se, oe_se = [], [], [], []
    estimand = getattr(r, "estimand", "net")
    for site in base["site"]:
        g = pred[pred["site"].astype(str) == site]
        y = make_outcome(g["event"].to_numpy(), g["time"].to_numpy(float))
        lp = g["lp"].to_numpy(float) if "lp" in g else None
        score = ranking_score(g["risk"].to_numpy(float), lp)
        ci = _cindex_ci(y, score, h, estimand, bootstrap, seed)
        lo.append(ci[0])
        hi.append(ci[1])
        se.append(ci[2])
        oe_se.append(log_oe_se(y, h, estimand))
    base["cindex_harrell_lo"], base["cindex_harrell_hi"] = lo, hi
    base["cindex_harrell_logit_se"] = se
    base[f"oe_ratio_{horizon_label(h)}_log_se"] = oe_se
    base["small_sample"] = (base["events_by_horizon"] < MIN_EVENTS) | (base["n"] < MIN_PATIENTS)
    names = [m for m in metric_names(h) if m in base]
    head = ["site", "n", "events", "events_by_horizon", "cindex_harrell", "cindex_harrell_lo",
            "cindex_harrell_hi"]  # fmt: skip
    ses = ["cindex_harrell_logit_se", f"oe_ratio_{horizon_label(h)}_log_se"]
    order = [*head, *[m for m in names if m != "cindex_harrell"], "small_sample", *ses]
    return base[order].reset_index(drop=True)


def per_site_table(result: Any, *, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per-site metrics of every model and feature set of a training run (``per_site.csv``):
    ``model``, ``feature_set`` then the columns of :func:`per_site_metrics`."""
    parts = []
    for c in result.candidates:
        t = getattr(c, "per_site_metrics", None)  # computed once during training
        if t is None:
            t = per_site_metrics(c.result, bootstrap=bootstrap, seed=seed)
        t = t.copy()
        t.insert(0, "feature_set", c.feature_set)
        t.insert(0, "model", c.model)
        parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_per_site(
    result: Any, path: str | Path | None = None, *, bootstrap: int = 200, seed: int = 0
) -> Path:
    """Write :func:`per_site_table` to ``path`` (default ``<run_dir>/per_site.csv``)."""
    path = Path(path) if path is not None else Path(result.run_dir) / "per_site.csv"
    return write_table(path, per_site_table(result, bootstrap=bootstrap, seed=seed))
