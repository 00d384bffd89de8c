"""Warnings about a training run as a whole, for the terminal and the report alike."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from refracture.report.sample_size import small_sample_warnings
from refracture.results import selection_pool
from refracture.validation.catalogue import selection_score

__all__ = ["run_warnings", "selection_caution"]


def run_warnings(result: Any) -> list[str]:
    """Every warning of a run: samples too small to trust, then a doubtful model choice."""
    caution = selection_caution(result)
    return [*small_sample_warnings(result), *([caution] if caution else [])]


def selection_caution(result: Any) -> str | None:
    """A warning when the choice rests on an optimism correction that failed for the chosen model.

    Harrell's bootstrap can under-estimate a model's optimism: a random survival forest
    memorises the duplicated patients of a resample, so its performance on the original data
    (which holds those patients) is optimistic too. The visible sign is an optimism-corrected
    value outside its own interval (Noma's interval is built from the resamples' apparent
    values). When held-out validation data exist, the warning also names the candidate that is
    best on them. ``None`` when the selection metric is not optimism-corrected or the chosen
    model's value lies inside its interval.
    """
    metric, sel = result.selection_metric, result.selected
    if not metric.endswith("_optcorr"):
        return None
    m = sel.result.metrics
    value, lo, hi = (m.get(k, math.nan) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
    if not np.all(np.isfinite([value, lo, hi])) or lo <= value <= hi:
        return None
    text = (
        f"the registered model {sel.label} was chosen on {metric} ({value:.3f}), which lies "
        f"outside its own 95% interval [{lo:.3f}, {hi:.3f}]: the bootstrap under-estimates "
        "this model's optimism (a forest memorises the duplicated patients of a resample), so "
        "the choice may favour it unfairly"
    )
    if sel.result.split_kind == "none":  # no held-out data to compare on
        return text
    base, h = metric.removesuffix("_optcorr"), float(result.dataset.horizon)
    scored = [
        (selection_score(base, c.result.metrics.get(base, math.nan), h), c)
        for c in selection_pool(result.candidates)
    ]
    scored = [(v, c) for v, c in scored if np.isfinite(v)]
    best = max(scored, key=lambda vc: vc[0])[1] if scored else sel
    if best is sel:
        return text
    return (
        f"{text}; on the validation data its {base} is {m.get(base, math.nan):.3f} against "
        f"{best.result.metrics[base]:.3f} for {best.label} (selection_metric: {base} chooses "
        "on the validation data)"
    )
