"""The study report: one self-contained HTML page per training run (Jinja2, plots embedded).

Sections (each an element with a stable id, so the report can be checked by parsing it):
``summary``, ``flow`` (cohort flow), ``table1`` / ``table1-site`` (baseline characteristics by
outcome and by site), ``hr`` (univariable and multivariable hazard ratios, odds ratios),
``models`` (model comparison), ``calibration``, ``decision-curve``, ``km`` (Kaplan-Meier by risk
group), ``roc`` (time-dependent ROC), ``added-value``, ``nomogram``, ``qc`` (QC contact sheet),
``methods`` and ``tripod`` (TRIPOD+AI items and where each is answered).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

import refracture
from refracture.config import RunConfig
from refracture.files import write_text
from refracture.ids import PATIENT_ID
from refracture.report.hazard_tables import univariable_cox
from refracture.report.table1 import Variable, outcome_groups, table_one
from refracture.report.tripod import ITEMS
from refracture.text import ci_text
from refracture.validation.metrics import metric_names

SECTIONS = (
    "summary", "flow", "table1", "table1-site", "hr", "models", "calibration", "decision-curve",
    "km", "roc", "added-value", "nomogram", "qc", "methods", "tripod",
)  # fmt: skip


def _png(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table(df: pd.DataFrame, digits: int = 3) -> dict[str, Any]:
    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            if not math.isfinite(v):
                return ""
            if abs(v) < 0.001 and v != 0:
                return f"{v:.2e}"
            return f"{v:.{digits}f}"
        return "" if v is None else str(v)

    return {
        "columns": [str(c) for c in df.columns],
        "rows": [[cell(v) for v in r] for r in df.itertuples(index=False)],
    }


def _ratio_table(coef: pd.DataFrame, ratio: str) -> pd.DataFrame:
    out = coef[["term", ratio, "lower95", "upper95", "p"]].copy()
    out.columns = ["term", ratio.upper(), "lower 95%", "upper 95%", "p"]
    return out


def _exclusion_reasons(excluded: pd.DataFrame) -> pd.DataFrame:
    """Exclusions grouped by reason, with a few patient IDs each."""
    if not len(excluded):
        return pd.DataFrame(columns=["reason", "n", "patients"])
    reason = excluded["reason"].str.replace(r"^patient \S+: ", "", regex=True)

    def some(ids: pd.Series) -> str:
        ids = [str(i) for i in ids]
        return ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "")

    grouped = excluded.assign(reason=reason).groupby("reason")[PATIENT_ID]
    out = grouped.agg(n="count", patients=some).reset_index()
    return out.sort_values("n", ascending=False)


def _comparison_row(c: Any, names: list[str]) -> dict[str, Any]:
    m = c.result.metrics
    return {
        "model": c.model,
        "features": c.feature_set,
        "n validation": c.result.n_valid,
        "events": c.result.events_valid,
        **{n: ci_text(m, n) for n in names},
        "Harrell C optimism-corrected": ci_text(m, "cindex_harrell_optcorr"),
        "calibration slope optimism-corrected": ci_text(m, "calibration_slope_optcorr"),
    }


def _added_row(c: Any, hd: int) -> dict[str, Any]:
    a = c.added
    p = a.get("lrt_p", math.nan)
    return {
        "model": c.model,
        "delta Harrell C": ci_text(a, "delta_cindex"),
        f"continuous NRI {hd} d": ci_text(a, f"nri_{hd}d"),
        f"IDI {hd} d": ci_text(a, f"idi_{hd}d"),
        "LRT p (nested Cox)": "n/a" if not math.isfinite(p) else f"{p:.3g}",
    }


def _comparison_plots(result: Any, cfg: RunConfig, folder: Path) -> dict[str, Path]:
    """Calibration, ROC and decision curve of the selected model on both feature sets."""
    from refracture.validation import plots

    h = cfg.outcome.horizon_days
    sel = result.selected
    same = [c for c in result.candidates if c.model == sel.model]
    preds = {c.label: c.result.predictions for c in same}
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "calibration": plots.plot_calibration(preds, folder / "calibration.png", horizon=h),
        "roc": plots.plot_td_roc(
            preds, folder / "td_roc.png", horizon=h, y_train=sel.result.y_development
        ),
        "decision-curve": plots.plot_decision_curve(
            preds, folder / "decision_curve.png", horizon=h
        ),
    }


def build_context(result: Any, cfg: RunConfig, extraction: Any = None) -> dict[str, Any]:
    """Everything the template shows, as plain data."""

    ds = result.dataset
    h = cfg.outcome.horizon_days
    hd = int(round(h))
    sel = result.selected
    fs = sel.feature_set
    kinds = ds.covariate_kinds(fs)

    # Cohort flow
    flow = dict(result.flow)
    excluded: pd.DataFrame = flow.pop("excluded")
    reasons = _exclusion_reasons(excluded)

    # Table 1 (whole analysed cohort)
    variables = [Variable(c, k) for c, k in kinds.items()]
    time = pd.Series(ds.y["time"], index=ds.X.index)
    event = pd.Series(ds.y["event"], index=ds.X.index)
    t1_outcome = table_one(ds.X, variables, outcome_groups(time, event, h))
    t1_site = table_one(ds.X, variables, ds.site.reindex(ds.X.index))

    # Hazard ratios: univariable on the development patients of the selected model
    dev = sel.result.development_ids
    yd = sel.result.y_development
    uni = univariable_cox(
        ds.X.loc[dev], yd["time"], yd["event"], kinds, dict(cfg.covariates.categorical)
    )
    multi = {}
    for c in result.candidates:
        if c.feature_set == fs and c.result.coefficients is not None:
            ratio = c.result.final_model.model.ratio_column
            multi[c.label] = _table(_ratio_table(c.result.coefficients, ratio))

    # Model comparison
    names = metric_names(h)
    comparison = pd.DataFrame([_comparison_row(c, names) for c in result.candidates])
    added = pd.DataFrame([_added_row(c, hd) for c in result.candidates if c.added])

    plots_dir = result.run_dir / "report_plots"
    comp = _comparison_plots(result, cfg, plots_dir)
    nomograms = [
        {"label": c.label, "src": _png(c.plots.get("nomogram"))}
        for c in result.candidates
        if c.feature_set == fs and c.plots.get("nomogram")
    ]
    qc_sheets = []
    if extraction is not None and "qc_png" in getattr(extraction, "files", {}):
        qc_sheets = [
            _png(p) for p in sorted(Path(extraction.files["qc_png"]).glob("contact_sheet*.png"))
        ]

    m = sel.result.metrics
    decision = result.decision
    return {
        "title": f"refracture study report: {hd}-day vertebral re-fracture after PVP/PKP",
        "created": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "version": refracture.__version__,
        "run_id": result.parent_run_id,
        "tracking_uri": result.tracking_uri,
        "experiment": cfg.mlflow.experiment,
        "selected": sel.label,
        "selected_metrics": {
            "Harrell C": ci_text(m, "cindex_harrell"),
            "Harrell C optimism-corrected": ci_text(m, "cindex_harrell_optcorr"),
            f"AUC {hd} d": ci_text(m, f"auc_{hd}d"),
            "calibration slope": ci_text(m, "calibration_slope"),
            f"O/E {hd} d": ci_text(m, f"oe_ratio_{hd}d"),
        },
        "decision": decision.reason,
        "registered": f"{decision.model_name} version {decision.version}",
        "flow": flow,
        "n_excluded": int(len(excluded)),
        "reasons": _table(reasons),
        "split": sel.result.split,
        "n_train": sel.result.n_train,
        "n_valid": sel.result.n_valid,
        "events_train": sel.result.events_train,
        "events_valid": sel.result.events_valid,
        "table1_outcome": _table(t1_outcome),
        "table1_site": _table(t1_site),
        "hr_uni": _table(uni),
        "multi": multi,
        "comparison": _table(comparison),
        "added": _table(added) if len(added) else None,
        "plots": {
            "calibration": _png(comp["calibration"]),
            "roc": _png(comp["roc"]),
            "decision-curve": _png(comp["decision-curve"]),
            "km": _png(sel.plots.get("km_risk_groups")),
            "forest": _png(sel.plots.get("forest")),
        },
        "risk_groups": list(cfg.risk_groups),
        "nomograms": nomograms,
        "qc_sheets": [q for q in qc_sheets if q],
        "extraction": cfg.extraction.model_dump(mode="json") if cfg.has_imaging else None,
        "imaging_features": list(ds.imaging_features),
        "covariates": kinds,
        "n_missing": {k: v for k, v in ds.n_missing.items() if v},
        "competing": sel.result.competing_risk_note,
        "bootstrap": cfg.validation.bootstrap,
        "horizon": hd,
        "tripod": ITEMS,
    }


def render(context: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("refracture.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(**context)


def write_report(result: Any, cfg: RunConfig, *, extraction: Any = None) -> Path:
    """Write ``report.html`` into the run folder (beside the MLflow store); return its path."""
    path = result.run_dir / "report.html"
    write_text(path, render(build_context(result, cfg, extraction)))
    return path
