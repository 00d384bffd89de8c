"""Run-level statistics computed once after validation: Riley's minimum sample size and the
per-site meta-analysis of every candidate (what the terminal, the report and MLflow show)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from refracture.config import RunConfig
from refracture.dataset import FEATURE_SETS, Dataset
from refracture.report.per_site import per_site_metrics
from refracture.report.sample_size import riley_metrics, riley_table, riley_warnings
from refracture.report.site_meta import site_meta, site_meta_metrics
from refracture.results import Candidate

__all__ = ["MI_THRESHOLD", "attach_statistics", "imputation_advice"]

#: Above this share of patients missing a covariate, single imputation is not advised.
MI_THRESHOLD = 0.05


def imputation_advice(dataset: Dataset, cfg: RunConfig) -> list[str]:
    """Under ``imputation: single``, one line when a modelled column is missing in more than
    5 % of the patients, recommending multiple imputation (also a note of the report)."""
    n = max(len(dataset), 1)
    heavy = {c: k / n for c, k in dataset.n_missing.items() if k / n > MI_THRESHOLD}
    if cfg.imputation.method != "single" or not heavy:
        return []
    cols = ", ".join(f"{c} ({100 * share:.0f}%)" for c, share in heavy.items())
    line = (
        f"missing in more than {100 * MI_THRESHOLD:.0f}% of patients: {cols}; single "
        "imputation (median / most frequent value, without the outcome) understates the "
        "uncertainty and can bias their coefficients: set imputation: multiple"
    )
    dataset.notes.append(line[0].upper() + line[1:] + " (White, Royston & Wood 2011).")
    return [line]


def attach_statistics(
    candidates: list[Candidate], dataset: Dataset, cfg: RunConfig
) -> pd.DataFrame | None:
    """Riley's sample-size table of the development data (returned; its shortfalls added to
    ``dataset.warnings``) and, per candidate, the per-site metrics and their random-effects
    meta-analysis; the ``samplesize_*`` and ``site_meta_*`` metrics go to each candidate's
    ``extra_metrics``."""
    table = None
    if candidates:
        dev = candidates[0].result.development_ids  # every candidate shares the split
        rows = dataset.X.index.get_indexer(pd.Index(dev, dtype=object))
        sets = [fs for fs in FEATURE_SETS if any(c.feature_set == fs for c in candidates)]
        try:
            table = riley_table(dataset, rows[rows >= 0], sets)
        except ValueError as err:  # an R2 outside what the outcome allows: said, not fatal
            dataset.warnings.append(f"sample size (Riley et al.) not computed: {err}")
        if table is not None:
            dataset.warnings.extend(riley_warnings(table, dataset.horizon))
    dataset.warnings.extend(imputation_advice(dataset, cfg))
    v = cfg.validation
    for c in candidates:
        if table is not None:
            c.extra_metrics |= riley_metrics(table, c.feature_set)
        c.per_site_metrics = per_site_metrics(c.result, bootstrap=v.bootstrap, seed=v.seed)
        if len(c.per_site_metrics) >= 2:
            c.site_meta = site_meta(c.per_site_metrics, dataset.horizon)
            c.extra_metrics |= site_meta_metrics(c.site_meta)
    return table if table is None else table.reset_index(drop=True).pipe(_ints)


def _ints(table: pd.DataFrame) -> pd.DataFrame:
    for col in table.columns:
        if col.startswith(("n_", "required_", "available_", "parameters")):
            table[col] = table[col].astype(np.int64)
    return table
