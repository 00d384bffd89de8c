"""The tables and plots of a training run: cohort flow, summary table, per-candidate plots and
the registry description. Everything here is computed from results; nothing is logged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.config import RunConfig
from refracture.dataset import Dataset
from refracture.ids import PATIENT_ID
from refracture.results import Candidate, TrainResult
from refracture.text import ci_text
from refracture.validation.catalogue import ADDED_VALUE, ESTIMATORS, headline_specs, metric_specs

__all__ = [
    "candidate_plots",
    "cohort_flow",
    "summary_table",
    "version_description",
]


def cohort_flow(
    clinical: pd.DataFrame, dataset: Dataset, extraction_errors: pd.DataFrame | None, cfg: RunConfig
) -> dict[str, Any]:
    """Patients in, excluded with reasons, analysed (TRIPOD+AI 20a)."""
    excluded = dataset.excluded.copy()
    if extraction_errors is not None and len(extraction_errors):
        reasons = extraction_errors.set_index(PATIENT_ID)["message"]
        excluded["reason"] = [
            f"images could not be measured: {reasons[p]}" if p in reasons.index else r
            for p, r in zip(excluded[PATIENT_ID], excluded["reason"], strict=True)
        ]
    return {
        "clinical_rows": int(len(clinical)),
        "manifest": str(cfg.data.manifest) if cfg.data.manifest else None,
        "images_failed": 0 if extraction_errors is None else int(len(extraction_errors)),
        "excluded": excluded,
        "analysed": int(len(dataset)),
        "events": int((dataset.y["event"] == 1).sum()),
        "events_by_horizon": int(
            ((dataset.y["event"] == 1) & (dataset.y["time"] <= cfg.outcome.horizon_days)).sum()
        ),
        "deaths": int((dataset.y["event"] == 2).sum()),
        "sites": sorted(map(str, dataset.site.unique())),
        "n_missing": dict(dataset.n_missing),
    }


def candidate_plots(
    cand: Candidate, cfg: RunConfig, dataset: Dataset, folder: Path
) -> dict[str, Path]:
    from refracture.validation import plots

    r = cand.result
    h = cfg.outcome.horizon_days
    folder.mkdir(parents=True, exist_ok=True)
    est = r.estimand
    why = cand.reasons
    preds = {cand.label: r.predictions}
    out = {
        "calibration": plots.plot_calibration(
            preds, folder / "calibration.png", horizon=h, estimand=est, reasons=why
        ),
        "km_risk_groups": plots.plot_km_risk_groups(
            r.predictions,
            cfg.risk_groups,
            folder / "km_risk_groups.png",
            horizon=h,
            estimand=est,
            reasons=why,
        ),  # fmt: skip
        "td_roc": plots.plot_td_roc(
            preds, folder / "td_roc.png", horizon=h, estimand=est, reasons=why
        ),
        "decision_curve": plots.plot_decision_curve(
            preds, folder / "decision_curve.png", horizon=h, estimand=est, reasons=why
        ),
    }
    out |= _validation_plots(cand, cfg, folder)
    if r.coefficients is not None:
        ratio = r.final_model.model.ratio_name
        out["forest"] = plots.plot_forest(
            r.coefficients,
            folder / "forest.png",
            title=f"{cand.label}: {ratio} ratios (95% CI)",
            reasons=why,
        )
    from refracture.report.nomogram import nomogram_for, nomogram_unavailable

    kinds = dataset.covariate_kinds(cand.feature_set)
    imaging = [c for c in dataset.imaging_features if c in kinds]
    model_input = dataset.model_input(cand.feature_set)
    nomo = nomogram_for(r, dataset.X, kinds, imaging, h, model_input=model_input)
    if nomo is not None:
        out["nomogram"] = nomo.plot(folder / "nomogram.png", title=f"Nomogram: {cand.label}")
    elif (why_not := nomogram_unavailable(r.final_model)) is not None:
        why["nomogram"] = why_not
    return {k: p for k, p in out.items() if p is not None}


def _validation_plots(cand: Candidate, cfg: RunConfig, folder: Path) -> dict[str, Path | None]:
    """Smoothed calibration on the validation data and the stability figures of the refits."""
    from refracture.validation import stability_plots as sp

    r, h, why = cand.result, cfg.outcome.horizon_days, cand.reasons
    common = {"thresholds": cfg.risk_groups, "reasons": why}
    return {
        "calibration_smooth": sp.plot_smoothed_calibration(
            {cand.label: r.predictions}, folder / "calibration_smooth.png", horizon=h,
            estimand=r.estimand, reasons=why,
        ),
        "prediction_instability": sp.plot_prediction_instability(
            r.development_risk, r.boot_risk, folder / "prediction_instability.png", **common
        ),
        "mape": sp.plot_mape(r.development_risk, r.boot_risk, folder / "mape.png", **common),
        "calibration_instability": sp.plot_calibration_instability(
            r.y_development, r.development_risk, r.boot_risk,
            folder / "calibration_instability.png", horizon=h, estimand=r.estimand, reasons=why,
        ),
    }  # fmt: skip


def version_description(cand: Candidate, cfg: RunConfig) -> str:
    """The registry's description of a version: its design, the headline metrics by its
    internal-validation estimator and on the validation data, what imaging adds."""
    r, m = cand.result, cand.result.metrics
    h = cfg.outcome.horizon_days
    est = ESTIMATORS[r.internal].label
    parts = [f"{cand.label}; {r.split}"]
    for spec in headline_specs():
        name = spec.name(h)
        if spec.resampled:
            value = ci_text(m, f"{name}_{r.internal}", spec.digits)
            parts.append(f"{spec.label_at(h)} {est} {value}")
        if r.validation_role != "apparent":
            parts.append(f"{spec.label_at(h)} validation {ci_text(m, name, spec.digits)}")
    if cand.added:
        a = cand.added
        parts.append(
            f"imaging adds delta C {a['delta_cindex']:.3f} "
            f"({a['delta_cindex_lo']:.3f}-{a['delta_cindex_hi']:.3f})"
        )
    return "; ".join(parts)


def summary_table(result: TrainResult) -> pd.DataFrame:
    """Per model and feature set: the headline metrics with CIs (what `train` prints)."""
    rows = []
    h = result.dataset.horizon
    for c in result.candidates:
        m = c.result.metrics
        row = {"model": c.model, "feature_set": c.feature_set, "run_id": c.run_id}
        row["internal"] = c.result.internal
        for spec in metric_specs():
            name = spec.name(h)
            ests = [f"_{s}" for s in ESTIMATORS] if spec.resampled else []
            for est in ("", *ests):
                for suffix in ("", "_lo", "_hi"):
                    row[name + est + suffix] = m.get(name + est + suffix, math.nan)
        stability = sorted(k for k in m if k.startswith("instability_"))
        for extra in ("cindex_oob", "n_development", *stability):
            row[extra] = m.get(extra, math.nan)
        if c.added:
            for spec in ADDED_VALUE:
                name = spec.name(h)
                suffixes = ("",) if not spec.headline else ("", "_lo", "_hi")
                for suffix in suffixes:
                    row[name + suffix] = c.added.get(name + suffix, math.nan)
        row["selected"] = c is result.selected
        rows.append(row)
    return pd.DataFrame(rows)
