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
from refracture.validation.catalogue import ADDED_VALUE, METRICS

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


def version_description(cand: Candidate, cfg: RunConfig) -> str:
    m = cand.result.metrics
    h = int(round(cfg.outcome.horizon_days))
    parts = [
        f"{cand.label}; {cand.result.split}",
        f"Harrell C {ci_text(m, 'cindex_harrell')}",
        f"optimism-corrected C {ci_text(m, 'cindex_harrell_optcorr')}",
        f"AUC {h}d {ci_text(m, f'auc_{h}d')}",
        f"calibration slope {ci_text(m, 'calibration_slope')}",
        f"O/E {ci_text(m, f'oe_ratio_{h}d')}",
    ]
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
        for spec in METRICS:
            name = spec.name(h)
            for suffix in ("", "_lo", "_hi", "_optcorr", "_optcorr_lo", "_optcorr_hi"):
                row[name + suffix] = m.get(name + suffix, math.nan)
        if c.added:
            for spec in ADDED_VALUE:
                name = spec.name(h)
                suffixes = ("",) if not spec.headline else ("", "_lo", "_hi")
                for suffix in suffixes:
                    row[name + suffix] = c.added.get(name + suffix, math.nan)
        row["selected"] = c is result.selected
        rows.append(row)
    return pd.DataFrame(rows)
