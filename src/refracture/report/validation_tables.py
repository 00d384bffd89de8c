"""The report's validation tables and figures, all looping over the metric registry.

* the model comparison on the validation data and by internal validation (each candidate's
  estimator named), the C-index of every candidate by every estimator (what selection saw);
* the registered model's internal validation per metric: apparent, Harrell, .632+ and LOO
  bootstrap with their intervals, the interval method, and the measured coverage where it was
  below 90 %;
* smoothed calibration (ICI, E50, E90) next to the grouped calibration plot;
* stability: the prediction instability, MAPE and calibration instability plots and the
  stability measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.text import ci_parts
from refracture.validation.catalogue import (
    ESTIMATORS,
    estimator_of,
    headline_specs,
    horizon_label,
    metric_spec,
    metric_specs,
)
from refracture.validation.coverage import coverage_note
from refracture.validation.stability import threshold_key

__all__ = [
    "cindex_table",
    "comparison_table",
    "internal_comparison_table",
    "internal_metric_table",
    "per_site_rows",
    "smoothed_calibration_section",
    "stability_section",
    "summary_metrics",
]


def cell(values: Mapping[str, float], name: str, digits: int = 3, note: str = "") -> Any:
    """A value with its CI as two parts (shown on two lines), and a coverage note if any."""
    value, ci = ci_parts(values, name, digits)
    if not ci and not note:
        return value
    return {"value": value, "ci": ci, "note": note}


def _what(c: Any) -> dict[str, Any]:
    return {"model": c.model, "features": c.feature_set}


def comparison_table(candidates: list[Any], horizon: float) -> pd.DataFrame:
    """Every metric of the registry on each candidate's validation data, with its CI."""
    rows = []
    for c in candidates:
        r = c.result
        row = {**_what(c), "patients": r.n_valid, "events": r.events_valid}
        for spec in metric_specs():
            row[spec.label_at(horizon)] = cell(r.metrics, spec.name(horizon), spec.digits)
        rows.append(row)
    return pd.DataFrame(rows)


def internal_comparison_table(candidates: list[Any], horizon: float) -> pd.DataFrame:
    """Every resampled metric's internal-validation estimate by each candidate's estimator,
    with its interval (and the measured coverage where it fell below 90 %)."""
    rows = []
    for c in candidates:
        r = c.result
        row = {**_what(c), "estimate": ESTIMATORS[r.internal].label}
        for spec in metric_specs(resampled=True):
            name = f"{spec.name(horizon)}_{r.internal}"
            note = coverage_note(c.model, spec.name(horizon), r.internal)
            row[spec.label_at(horizon)] = cell(r.metrics, name, spec.digits, note)
        rows.append(row)
    return pd.DataFrame(rows)


def cindex_table(candidates: list[Any], selection_metric: str) -> pd.DataFrame:
    """The selection metric of every candidate, apparent and by every estimator, beside its
    value on the validation data: what the selection compared."""
    suffix = estimator_of(selection_metric)
    base = selection_metric.removesuffix(f"_{suffix}") if suffix else selection_metric
    spec = metric_spec(base)
    rows = []
    for c in candidates:
        r, m = c.result, c.result.metrics
        row = {**_what(c), "apparent": f"{r.apparent.get(base, math.nan):.{spec.digits}f}"}
        if spec.resampled:
            for s, est in ESTIMATORS.items():
                row[est.label] = cell(m, f"{base}_{s}", spec.digits)
        if base == "cindex_harrell":
            row["forest out-of-bag"] = cell(m, "cindex_oob") if "cindex_oob" in m else ""
        row["validation data"] = cell(m, base, spec.digits)
        row[selection_metric] = f"{m.get(selection_metric, math.nan):.{spec.digits}f}"
        rows.append(row)
    return pd.DataFrame(rows)


def internal_metric_table(candidate: Any, horizon: float) -> pd.DataFrame:
    """The registered model's metrics one per row: apparent, each internal estimate with its
    interval, the validation data, and how the intervals are computed."""
    r = candidate.result
    rows = []
    for spec in metric_specs():
        name = spec.name(horizon)
        row: dict[str, Any] = {
            "metric": spec.label_at(horizon),
            "better": spec.direction(),
            "apparent": f"{r.apparent.get(name, math.nan):.{spec.digits}f}",
        }
        for s, est in ESTIMATORS.items():
            note = coverage_note(candidate.model, name, s)
            value = cell(r.metrics, f"{name}_{s}", spec.digits, note)
            row[est.label] = value if spec.resampled else ""
        row["validation data"] = cell(r.metrics, name, spec.digits)
        row["intervals"] = (
            "internal: refits' percentiles, centred; validation: percentile bootstrap"
            if spec.resampled
            else "none (fitted once on the validation data)"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def summary_metrics(candidate: Any, horizon: float) -> dict[str, str]:
    """The registered model's headline metrics for the report summary: internal estimate by
    its estimator, and the validation-data value unless those are the development data."""
    from refracture.text import ci_text

    r = candidate.result
    est = ESTIMATORS[r.internal].label
    out = {}
    for spec in headline_specs():
        name = spec.name(horizon)
        if spec.resampled:
            out[f"{spec.label_at(horizon)} ({est})"] = ci_text(
                r.metrics, f"{name}_{r.internal}", spec.digits
            )
        if r.validation_role != "apparent":
            out[f"{spec.label_at(horizon)} (validation data)"] = ci_text(
                r.metrics, name, spec.digits
            )
    if "cindex_oob" in r.metrics:
        out["forest out-of-bag C"] = f"{r.metrics['cindex_oob']:.3f}"
    death = f"oe_ratio_death_{horizon_label(horizon)}"
    if death in r.metrics:  # under cif: death's calibration next to re-fracture's
        out[f"O/E of death {int(round(horizon))} d (validation data)"] = ci_text(r.metrics, death)
    return out


def per_site_rows(ps: pd.DataFrame, horizon: float) -> pd.DataFrame:
    """The per-site metrics table: counts, the headline metrics with CIs, small samples."""
    hd = int(round(horizon))
    rows = []
    for r in ps.to_dict("records"):
        row = {"site": r["site"], "patients": int(r["n"]),
               f"events by {hd} d": int(r["events_by_horizon"])}  # fmt: skip
        for spec in headline_specs():
            row[spec.label_at(horizon)] = cell(r, spec.name(horizon), spec.digits)
        row["sample"] = "too small to trust" if r["small_sample"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def smoothed_calibration_section(
    result: Any, horizon: float, plots_dir: Path, png: Any
) -> dict[str, Any]:
    """The smoothed calibration figure of the registered model on both feature sets and its
    ICI, E50 and E90 on the validation data."""
    from refracture.validation.stability_plots import plot_smoothed_calibration

    sel = result.selected
    same = [c for c in result.candidates if c.model == sel.model]
    preds = {c.label: c.result.predictions for c in same}
    path = plot_smoothed_calibration(
        preds, plots_dir / "calibration_smooth.png", horizon=horizon,
        estimand=sel.result.estimand,
    )  # fmt: skip
    names = [s for s in metric_specs(resampled=False)]
    table = pd.DataFrame(
        [
            {**_what(c), **{s.label_at(horizon): cell(c.result.metrics, s.name(horizon), s.digits)
                            for s in names}}
            for c in result.candidates
        ]
    )  # fmt: skip
    return {"plot": png(path), "table": table}


def stability_section(candidate: Any, cfg: Any, png: Any) -> dict[str, Any]:
    """The registered model's stability measures and figures (drawn with its plots)."""
    r = candidate.result
    m = r.metrics
    rows = [{"measure": "mean absolute prediction error (MAPE)",
             "value": f"{m.get('instability_mape', math.nan):.4f}"}]  # fmt: skip
    for t in cfg.risk_groups:
        rows.append({"measure": f"classification instability at {t:.0%}",
                     "value": f"{m.get(threshold_key(t), math.nan):.3f}"})  # fmt: skip
    rows.append({"measure": "risk group changed (low / intermediate / high)",
                 "value": f"{m.get('instability_group', math.nan):.3f}"})  # fmt: skip
    plots = candidate.plots
    return {
        "table": pd.DataFrame(rows),
        "refits": int(len(r.boot_risk)),
        "prediction": png(plots.get("prediction_instability")),
        "mape": png(plots.get("mape")),
        "calibration": png(plots.get("calibration_instability")),
    }
