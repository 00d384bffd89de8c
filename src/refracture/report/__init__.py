"""The study report: an HTML page per training run (Jinja2, plots embedded), and a QC page.

``report.html`` is one self-contained page; the QC contact sheets, which are large, are on
``qc.html`` beside it (also self-contained), linked from the report's QC section.

Sections (each an element with a stable id, so the report can be checked by parsing it):
``summary``, ``flow`` (cohort flow), ``table1`` / ``table1-site`` / ``table1-role`` (baseline
characteristics by outcome, by site and by development / validation data), ``predictors``
(kind, unit, coding), ``sample-size`` (events per model term, small samples), ``hr``
(univariable and multivariable ratios, full specification of the registered model), ``models``
(model comparison and parameters), ``per-site`` (metrics per validation site),
``calibration``, ``decision-curve``, ``km`` (Kaplan-Meier by risk group), ``roc``
(time-dependent ROC), ``added-value``, ``nomogram`` (the registered model's), ``qc`` (data
preparation and the link to the QC pictures), ``methods``, ``limitations``, ``intended-use``
and ``tripod`` (TRIPOD+AI items, each answered one linking to the element that answers it).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

import refracture
from refracture.config import RunConfig
from refracture.files import write_text
from refracture.ids import PATIENT_ID
from refracture.models.outcome import EVENT
from refracture.report.cautions import run_warnings, selection_caution
from refracture.report.hazard_tables import univariable_cox
from refracture.report.nomogram import nomogram_for, nomogram_unavailable
from refracture.report.per_site import per_site_metrics, per_site_table, write_per_site
from refracture.report.predictors import AS_RECORDED, predictor_kinds, predictors_table, unit_of
from refracture.report.sample_size import (
    MIN_EPV,
    MIN_EVENTS,
    MIN_PATIENTS,
    events_per_parameter,
    riley_view,
    small_sample_warnings,
    small_samples,
)
from refracture.report.site_meta import site_meta_table
from refracture.report.spec import model_specification
from refracture.report.table1 import Variable, outcome_groups, table_one
from refracture.report.tripod import checklist
from refracture.text import ci_parts, ci_text
from refracture.validation.metrics import metric_names

__all__ = [
    "QC_PAGE",
    "SECTIONS",
    "build_context",
    "per_site_table",
    "render",
    "report_files",
    "run_warnings",
    "selection_caution",
    "small_sample_warnings",
    "write_per_site",
    "write_report",
]

SECTIONS = (
    "summary", "flow", "table1", "table1-site", "table1-role", "predictors", "sample-size", "hr",
    "models", "per-site", "calibration", "decision-curve", "km", "roc", "added-value",
    "nomogram", "qc", "methods", "limitations", "intended-use", "tripod",
)  # fmt: skip

#: The QC page written beside ``report.html``.
QC_PAGE = "qc.html"

_SHORT = {
    "cindex_harrell": "Harrell C",
    "cindex_uno": "Uno C",
    "auc": "AUC",
    "brier": "Brier",
    "ibs": "IBS",
    "calibration_slope": "calibration slope",
    "calibration_intercept": "calibration intercept",
    "oe_ratio": "O/E",
}


def _short(name: str) -> str:
    """``auc_365d`` -> ``AUC 365 d``."""
    for key, label in _SHORT.items():
        if name == key:
            return label
        if name.startswith(key + "_") and name.endswith("d"):
            return f"{label} {name.removeprefix(key + '_').removesuffix('d')} d"
    return name


def _png(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _ci(values: Mapping[str, float], name: str, digits: int = 3) -> dict[str, str] | str:
    """A value with its CI as two parts, shown on two lines (narrow table columns)."""
    value, ci = ci_parts(values, name, digits)
    return {"value": value, "ci": ci} if ci else value


def _table(df: pd.DataFrame, digits: int = 3) -> dict[str, Any]:
    def cell(v: Any) -> Any:
        if isinstance(v, dict):
            return v
        if isinstance(v, bool | np.bool_):
            return "yes" if v else ""
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
        "patients": c.result.n_valid,
        "events": c.result.events_valid,
        **{_short(n): _ci(m, n) for n in names},
        "Harrell C optimism-corrected": _ci(m, "cindex_harrell_optcorr"),
        "calibration slope optimism-corrected": _ci(m, "calibration_slope_optcorr"),
    }


def _added_row(c: Any, hd: int) -> dict[str, Any]:
    a = c.added
    p = a.get("lrt_p", math.nan)
    return {
        "model": c.model,
        "delta Harrell C": _ci(a, "delta_cindex"),
        f"continuous NRI {hd} d": _ci(a, f"nri_{hd}d"),
        f"IDI {hd} d": _ci(a, f"idi_{hd}d"),
        "LRT p (nested Cox)": "n/a" if not math.isfinite(p) else f"{p:.3g}",
    }


def _params_table(candidates: list[Any]) -> pd.DataFrame:
    rows, seen = [], set()
    for c in candidates:
        if c.model in seen:
            continue
        seen.add(c.model)
        est = c.result.final_model.model
        params = ", ".join(f"{k}={v}" for k, v in sorted(est.get_params().items()))
        rows.append(
            {
                "model": c.model,
                "estimator": type(est).__name__,
                "inputs standardised": "yes" if est.needs_scaling else "no",
                "parameters": params,
            }
        )
    return pd.DataFrame(rows)


def _per_site_rows(ps: pd.DataFrame, hd: int) -> pd.DataFrame:
    rows = []
    for r in ps.to_dict("records"):
        rows.append(
            {
                "site": r["site"],
                "patients": int(r["n"]),
                f"events by {hd} d": int(r["events_by_horizon"]),
                "Harrell C": _ci(r, "cindex_harrell"),
                f"AUC {hd} d": _ci(r, f"auc_{hd}d"),
                f"Brier {hd} d": _ci(r, f"brier_{hd}d"),
                "calibration slope": _ci(r, "calibration_slope"),
                f"O/E {hd} d": _ci(r, f"oe_ratio_{hd}d"),
                "sample": "too small to trust" if r["small_sample"] else "",
            }
        )
    return pd.DataFrame(rows)


def _per_site_of(sel: Any, cfg: RunConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The selected model's per-site metrics and meta-analysis: those computed in training
    when they describe its validation predictions, else computed now (no meta-analysis)."""
    ps = sel.per_site_metrics
    pred = sel.result.predictions
    if ps is not None and int(ps["n"].sum()) == len(pred):
        return ps, sel.site_meta or {}
    v = cfg.validation
    return per_site_metrics(sel.result, bootstrap=v.bootstrap, seed=v.seed), {}


def _scanner_table(ds: Any, variables: list[Variable], extraction: Any) -> pd.DataFrame | None:
    """Table 1 by site and scanner (field strength, vendor, scanner name or keyed hash), from
    what extraction recorded; None when images were not measured or there is one group."""
    if extraction is None or extraction.features is None or extraction.features.empty:
        return None
    from refracture.dataset import scanner_columns

    feats = extraction.features
    scanners = scanner_columns(feats).set_axis(feats[PATIENT_ID].astype(str).to_numpy())
    scanners = scanners.reindex(ds.X.index.astype(str))
    field = scanners["scanner_field_strength_t"].map(
        lambda v: f"{v:g} T" if pd.notna(v) else "field unknown"
    )
    label = (
        ds.site.reindex(ds.X.index).astype(str).to_numpy()
        + " / "
        + field.to_numpy()
        + " "
        + scanners["scanner_vendor"].fillna("").astype(str).to_numpy()
        + " "
        + scanners["scanner_id"].fillna("").astype(str).to_numpy()
    )
    groups = pd.Series([" ".join(x.split()) for x in label], index=ds.X.index)
    if groups.nunique() < 2:
        return None
    return table_one(ds.X, variables, groups)


def _harmonisation_tables(candidates: list[Any]) -> list[dict[str, Any]]:
    """Leave-one-site-out metrics without and with scanner harmonisation, per model."""
    out = []
    for c in candidates:
        t = getattr(c, "per_site_harmonisation", None)
        if t is None or not len(t):
            continue
        view = t.copy()
        for col in view.columns:
            if col not in ("site", "n", "events", "events_by_horizon"):
                view[col] = [f"{v:.3f}" if np.isfinite(v) else "NaN" for v in view[col]]
        out.append({"label": c.label, "table": _table(view)})
    return out


def _comparison_plots(result: Any, cfg: RunConfig, folder: Path) -> dict[str, Path | None]:
    """Calibration, ROC and decision curve of the selected model on both feature sets."""
    from refracture.validation import plots

    h = cfg.outcome.horizon_days
    sel = result.selected
    same = [c for c in result.candidates if c.model == sel.model]
    preds = {c.label: c.result.predictions for c in same}
    folder.mkdir(parents=True, exist_ok=True)
    est = sel.result.estimand
    return {
        "calibration": plots.plot_calibration(
            preds, folder / "calibration.png", horizon=h, estimand=est
        ),
        "roc": plots.plot_td_roc(preds, folder / "td_roc.png", horizon=h, estimand=est),
        "decision-curve": plots.plot_decision_curve(
            preds, folder / "decision_curve.png", horizon=h, estimand=est
        ),
    }


def _variables(kinds: dict[str, str]) -> list[Variable]:
    out = []
    for name, kind in kinds.items():
        unit = unit_of(name) if kind == "numeric" else AS_RECORDED
        out.append(Variable(name, kind, f"{name} ({unit})" if unit != AS_RECORDED else None))
    return out


def _role_table(result: Any, variables: list[Variable], h: float) -> tuple[Any, str]:
    """Table 1 by development / validation data, or a sentence when they are not disjoint."""
    ds = result.dataset
    r = result.selected.result
    dev = pd.Index(r.development_ids)
    val = pd.Index(r.predictions[PATIENT_ID].astype(str))
    if len(dev.intersection(val)) == 0:
        ids = dev.append(val)
        X = ds.X.loc[ids].copy()
        role = pd.Series(["development"] * len(dev) + ["validation"] * len(val), index=ids)
        time = pd.Series(ds.y["time"], index=ds.X.index).loc[ids]
        event = pd.Series(ds.y["event"], index=ds.X.index).loc[ids]
        hd = int(round(h))
        X["__outcome"] = ((event == EVENT) & (time <= h)).astype(float)
        X["__death"] = (event == 2).astype(float)
        extra = [
            Variable("__outcome", "binary", f"re-fracture by {hd} d"),
            Variable("__death", "binary", "death (any time)"),
        ]
        return _table(table_one(X, [*variables, *extra], role)), ""
    if r.split_kind == "leave_one_site_out":
        note = (
            "Under leave-one-site-out validation each site is in turn the validation data and "
            "the other sites its development data, so Table 1b (by site) compares them."
        )
    else:
        note = (
            f"The development and validation data are the same patients ({r.split}), so "
            "their characteristics are those of Table 1."
        )
    return None, note


def _limitations(
    result: Any, epv: pd.DataFrame, warnings: list[str], caution: str, imaging: bool
) -> list[str]:
    sel = result.selected
    r = sel.result
    out = [r.competing_risk_note]
    row = epv[(epv["model"] == sel.model) & (epv["features"] == sel.feature_set)].iloc[0]
    out.append(
        f"The registered model has {row['events per term']:.1f} development events per model "
        f"term ({row['model terms']} terms): "
        + (
            "fewer than 10, so expect optimism (corrected by Harrell's bootstrap in the "
            "optimism-corrected metrics) and unstable coefficients."
            if row["below 10"]
            else "at least 10."
        )
    )
    out += [w[0].upper() + w[1:] + "." for w in warnings if "events per model term" not in w]
    if r.split_kind in ("random", "kfold", "none"):
        out.append(
            "Validation is internal (patients of the same sites as the development data): "
            "performance in other hospitals may differ."
        )
    if imaging:
        out.append(
            "R2* depends on field strength (about 1.7x at 3 T vs 1.5 T); a model trained on "
            "mixed 1.5 T / 3 T sites learns part of the scanner. Score only images from field "
            "strengths it has seen."
        )
    if caution:
        out.append(caution)
    out += [*r.notes, *getattr(result.dataset, "notes", [])]
    return out


def build_context(result: Any, cfg: RunConfig, extraction: Any = None) -> dict[str, Any]:
    """Everything the template shows, as plain data."""
    from refracture.tracking import git_commit

    ds = result.dataset
    h = cfg.outcome.horizon_days
    hd = int(round(h))
    sel = result.selected
    fs = sel.feature_set
    kinds = ds.covariate_kinds(fs)
    imaging_used = [c for c in ds.imaging_features if c in kinds]
    # anchors whose content every run has; the others are added below when present
    available: set[str] = {
        "flow", "table1", "table1-site", "table1-role", "predictors", "sample-size", "outcome",
        "missing", "validation-design", "predictor-handling", "model-params", "models",
        "model-output", "class-imbalance", "code", "limitations", "intended-use",
    }  # fmt: skip
    reasons: dict[str, str] = {}

    # Cohort flow
    flow = dict(result.flow)
    excluded: pd.DataFrame = flow.pop("excluded")
    reasons_table = _exclusion_reasons(excluded)
    sources = {"clinical table": Path(cfg.data.clinical).name}
    if cfg.data.manifest:
        sources["image manifest"] = Path(cfg.data.manifest).name

    # Table 1: whole analysed cohort by outcome, by site, and by data part
    all_kinds = predictor_kinds(ds, "clinical+imaging" if ds.imaging_features else "clinical")
    variables = _variables(all_kinds)
    time = pd.Series(ds.y["time"], index=ds.X.index)
    event = pd.Series(ds.y["event"], index=ds.X.index)
    t1_outcome = table_one(ds.X, variables, outcome_groups(time, event, h))
    t1_site = table_one(ds.X, variables, ds.site.reindex(ds.X.index))
    t1_scanner = _scanner_table(ds, variables, extraction)
    t1_role, role_note = _role_table(result, variables, h)

    # Sample size
    epv = events_per_parameter(result.candidates, h)
    epv_view = epv.assign(
        **{
            "events per term": [f"{v:.1f}" for v in epv["events per term"]],
            "below 10": ["below 10: overfitting likely" if b else "" for b in epv["below 10"]],
        }
    ).rename(columns={"below 10": "warning"})
    samples = small_samples(result)
    samples_view = samples.assign(
        small=["too small to trust" if s else "" for s in samples["small"]]
    ).rename(columns={"what": "validation data", "events": f"events by {hd} d", "small": ""})
    warnings = run_warnings(result)

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
    spec = model_specification(sel.result, ds.X)
    if spec is not None:
        available.add("model-spec")
    else:
        reasons["model-spec"] = (
            f"the registered model ({sel.model}) has no coefficients; it is specified by the "
            "fitted model stored in the registry"
            if not sel.result.final_model.model.has_coefficients
            else f"the registered model ({sel.model}) combines two cause-specific hazard models "
            "(re-fracture and death) into the cumulative incidence, so no single formula gives "
            "the risk; the hazard ratios above are the re-fracture model's, and the fitted "
            "model stored in the registry specifies it fully"
        )

    # Model comparison and per-site metrics
    names = metric_names(h)
    comparison = pd.DataFrame([_comparison_row(c, names) for c in result.candidates])
    added = pd.DataFrame([_added_row(c, hd) for c in result.candidates if c.added])
    ps, meta = _per_site_of(sel, cfg)
    if len(ps) >= 2:
        available.add("per-site")
    else:
        reasons["per-site"] = "the validation data come from one site"

    plots_dir = result.run_dir / "report_plots"
    comp = _comparison_plots(result, cfg, plots_dir)

    # Nomogram of the registered model
    nomo = nomogram_for(sel.result, ds.X, kinds, imaging_used, h, model_input=ds.model_input(fs))
    nomogram = None
    caution = ""
    if nomo is not None:
        caution = nomo.caution
        path = nomo.plot(plots_dir / "nomogram.png", title=f"Nomogram: {sel.label}")
        nomogram = {"label": sel.label, "src": _png(path), "caution": caution}
    nomogram_missing = nomogram_unavailable(sel.result.final_model)

    # QC pictures go on their own page
    qc_sheets = _qc_sheets(extraction)
    if cfg.has_imaging and qc_sheets:
        available.add("data-preparation")
    elif cfg.has_imaging:
        reasons["data-preparation"] = "no QC pictures were drawn in this run"
    else:
        reasons["data-preparation"] = "clinical-only run: no images were prepared"

    m = sel.result.metrics
    decision = result.decision
    sha = git_commit()
    imaging = fs == "clinical+imaging"
    return {
        "title": f"refracture study report: {hd}-day vertebral re-fracture after PVP/PKP",
        "created": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "version": refracture.__version__,
        "git_commit": sha[:12] if sha else "",
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
            **(
                {f"O/E of death {hd} d": ci_text(m, f"oe_ratio_death_{hd}d")}
                if f"oe_ratio_death_{hd}d" in m
                else {}
            ),
        },
        "decision": decision.reason,
        "registered": f"{decision.model_name} version {decision.version}",
        "warnings": warnings,
        "flow": flow,
        "sources": sources,
        "n_excluded": int(len(excluded)),
        "reasons": _table(reasons_table),
        "split": sel.result.split,
        "n_train": sel.result.n_train,
        "n_valid": sel.result.n_valid,
        "events_train": sel.result.events_train,
        "events_valid": sel.result.events_valid,
        "table1_outcome": _table(t1_outcome),
        "table1_site": _table(t1_site),
        "table1_scanner": None if t1_scanner is None else _table(t1_scanner),
        "harmonisation_comparison": _harmonisation_tables(result.candidates),
        "table1_role": t1_role,
        "role_note": role_note,
        "role_links_site": sel.result.split_kind == "leave_one_site_out",
        "predictors": _table(predictors_table(ds, list(cfg.feature_sets))),
        "epv": _table(epv_view),
        "min_epv": MIN_EPV,
        "min_events": MIN_EVENTS,
        "min_patients": MIN_PATIENTS,
        "samples": _table(samples_view),
        "hr_uni": _table(uni),
        "multi": multi,
        "spec": None
        if spec is None
        else {
            "terms": _table(spec.terms, digits=6),
            "constant": f"{spec.constant:.6g}",
            "link": spec.link,
            "table": _table(spec.table, digits=4),
        },
        "comparison": _table(comparison),
        "params": _table(_params_table(result.candidates)),
        "per_site": _table(_per_site_rows(ps, hd)),
        "site_meta": _table(site_meta_table(meta, sel.result.metrics, h)) if meta else None,
        "site_forest": _png(sel.plots.get("site_forest")),
        "riley": None if result.sample_size is None else _table(riley_view(result.sample_size, h)),
        "per_site_native": sel.result.per_site is not None,
        "added": _table(added) if len(added) else None,
        "plots": {
            "calibration": _png(comp["calibration"]),
            "roc": _png(comp["roc"]),
            "decision-curve": _png(comp["decision-curve"]),
            "km": _png(sel.plots.get("km_risk_groups")),
            "forest": _png(sel.plots.get("forest")),
        },
        "risk_groups": list(cfg.risk_groups),
        "nomogram": nomogram,
        "nomogram_missing": nomogram_missing,
        "biomarkers": getattr(result, "biomarkers", None),
        "estimand": sel.result.estimand,
        "qc_pages": len(qc_sheets),
        "qc_page": QC_PAGE if qc_sheets else None,
        "extraction": cfg.extraction.model_dump(mode="json") if cfg.has_imaging else None,
        "imaging_features": list(ds.imaging_features),
        "imaging": imaging,
        "covariates": kinds,
        "n_missing": {k: v for k, v in ds.n_missing.items() if v},
        "imputation": cfg.imputation.model_dump(),
        "competing": sel.result.competing_risk_note,
        "outcome": {"time": cfg.outcome.time, "event": cfg.outcome.event},
        "scaled_models": sorted(
            {c.model for c in result.candidates if c.result.final_model.model.needs_scaling}
        ),
        "horizon_only_models": sorted(
            {c.model for c in result.candidates if not c.result.final_model.supports_survival}
        ),
        "bootstrap": cfg.validation.bootstrap,
        "horizon": hd,
        "limitations": _limitations(result, epv, warnings, caution, imaging),
        "tripod": checklist(available, reasons),
        "_qc_sheets": qc_sheets,
    }


def _qc_sheets(extraction: Any) -> list[Path]:
    if extraction is None or "qc_png" not in getattr(extraction, "files", {}):
        return []
    return sorted(Path(extraction.files["qc_png"]).glob("contact_sheet*.png"))


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("refracture.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def render(context: dict[str, Any]) -> str:
    """The report page for a :func:`build_context` context."""
    return _environment().get_template("report.html.j2").render(**context)


def render_qc(context: dict[str, Any]) -> str:
    """The QC page: every contact sheet, embedded."""
    sheets = [s for s in (_png(p) for p in context["_qc_sheets"]) if s]
    return (
        _environment()
        .get_template("qc.html.j2")
        .render(title=context["title"], run_id=context["run_id"], sheets=sheets)
    )


def write_report(result: Any, cfg: RunConfig, *, extraction: Any = None) -> Path:
    """Write ``report.html`` into the run folder (beside the MLflow store), and ``qc.html``
    beside it when images were measured; return the report's path."""
    context = build_context(result, cfg, extraction)
    path = result.run_dir / "report.html"
    if context["_qc_sheets"]:
        write_text(result.run_dir / QC_PAGE, render_qc(context))
    write_text(path, render(context))
    return path


def report_files(result: Any) -> list[Path]:
    """The pages :func:`write_report` wrote for a run (``report.html`` and, when images were
    measured, ``qc.html``), to log as MLflow artifacts side by side."""
    folder = Path(result.run_dir)
    return [p for p in (folder / "report.html", folder / QC_PAGE) if p.is_file()]
