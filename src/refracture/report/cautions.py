"""Warnings about a training run as a whole, for the terminal and the report alike."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from refracture.report.sample_size import small_sample_warnings
from refracture.results import selection_pool
from refracture.validation.catalogue import ESTIMATORS, estimator_of, selection_score

__all__ = ["design_cautions", "run_warnings", "selection_caution"]

#: What the validation predictions are, in words (``ValidationResult.validation_role``).
ROLE_WORDS = {
    "test": "the held-out patients",
    "external": "the external site",
    "internal-external": "the internal-external (leave-one-site-out) predictions",
    "out-of-fold": "the out-of-fold predictions",
}


def run_warnings(result: Any) -> list[str]:
    """Every warning of a run: samples too small to trust, the design, then a doubtful model
    choice."""
    caution = selection_caution(result)
    return [
        *small_sample_warnings(result),
        *design_cautions(result),
        *([caution] if caution else []),
    ]


def design_cautions(result: Any) -> list[str]:
    """A random hold-out wastes patients; choosing on held-out data biases their verdict."""
    r = result.selected.result
    out = []
    if r.split_kind == "random":
        p = r.predictions
        h = float(r.horizon)
        events = int(((p["event"] == 1) & (p["time"] <= h)).sum())
        out.append(
            f"validation.split random holds out {r.n_valid} patients with {events} re-fractures "
            f"by {h:g} days: the registered model is fitted on {r.n_train} of "
            f"{r.n_train + r.n_valid} patients and its held-out metrics rest on {events} events "
            "(Collins et al. 2016 recommend at least 100); split: none develops on every "
            "patient and validates by bootstrap and, across sites, leave-one-site-out"
        )
    metric = result.selection_metric
    if estimator_of(metric) is None and r.validation_role in ("test", "external"):
        out.append(
            f"selection_metric {metric} chooses the model on {ROLE_WORDS[r.validation_role]}, "
            "so the chosen model's value there is optimistic (Varma & Simon 2006); an "
            "internal-validation metric such as auto chooses on the development data"
        )
    return out


def selection_caution(result: Any) -> str | None:
    """A warning when the validation data rank another candidate above the chosen one.

    The registered model is chosen on the development data (an internal-validation estimate
    by default). Where validation data independent of that choice exist - held-out patients,
    an external site, or the out-of-site predictions of internal-external validation - the
    chosen model should also rank first on them; when it does not, the warning names the
    candidate best there, with both values. ``None`` when the model was chosen on the
    validation data themselves, when they are the apparent (development) predictions, or when
    the chosen model is the best on them.
    """
    metric, sel = result.selection_metric, result.selected
    suffix = estimator_of(metric)
    r = sel.result
    if suffix is None or r.validation_role not in ROLE_WORDS:
        return None
    base, h = metric.removesuffix("_" + suffix), float(result.dataset.horizon)
    scored = [
        (selection_score(base, c.result.metrics.get(base, math.nan), h), c)
        for c in selection_pool(result.candidates)
    ]
    scored = [(v, c) for v, c in scored if np.isfinite(v)]
    best = max(scored, key=lambda vc: vc[0])[1] if scored else sel
    if best is sel:
        return None
    m = r.metrics
    return (
        f"the registered model {sel.label}, chosen on {metric} "
        f"({ESTIMATORS[suffix].label} {m.get(metric, math.nan):.3f}), is not the best on "
        f"{ROLE_WORDS[r.validation_role]}: its {base} there is {m.get(base, math.nan):.3f} "
        f"against {best.result.metrics[base]:.3f} for {best.label} (compare their CIs before "
        "reading a difference into it)"
    )
