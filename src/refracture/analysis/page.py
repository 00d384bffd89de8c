"""The outputs of the biomarker analysis: associations.csv, the plots and biomarkers.html.

:func:`analysis_section` turns an :class:`~refracture.analysis.runner.AnalysisResult` into
plain data (tables, base64-inlined images, notes, a methods paragraph and a ready HTML
fragment, ``<section id="biomarkers">``) that the study report of ``train`` can embed;
biomarkers.html is that fragment in a page of its own.
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
from refracture.analysis.association import Estimate
from refracture.analysis.mixed import OPTIMIZERS
from refracture.analysis.runner import (
    STATUS,
    AnalysisResult,
    Progress,
    level_order,
    write_associations,
)
from refracture.files import write_text

__all__ = ["analysis_section", "methods_text", "render_page", "write_outputs"]


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("refracture.analysis", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def _png(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ci(row: Any, digits: int = 3) -> str:
    if not math.isfinite(row.estimate):
        return "n/a"
    if not (math.isfinite(row.lower95) and math.isfinite(row.upper95)):
        return _num(row.estimate, digits)
    return f"{row.estimate:.{digits}f} ({row.lower95:.{digits}f} to {row.upper95:.{digits}f})"


def _table(df: pd.DataFrame) -> dict[str, Any]:
    return {
        "columns": [str(c) for c in df.columns],
        "rows": [["" if v is None else str(v) for v in r] for r in df.itertuples(index=False)],
    }


def _correlation_table(a: pd.DataFrame, sex_terms: set[str]) -> pd.DataFrame:
    """One row per marker and variable: Pearson, Spearman and partial side by side."""
    rows = []
    keys = a[a["method"].isin(["pearson", "spearman", "partial_pearson"])]
    keys = keys[~keys["versus"].isin(sex_terms)]
    for (marker, versus), grp in keys.groupby(["marker", "versus"], sort=False):
        by = {r.method: r for r in grp.itertuples(index=False)}
        row = {"marker": marker, "versus": versus}
        for method, label in (("pearson", "Pearson r"), ("spearman", "Spearman rho")):
            r = by.get(method)
            row[f"{label} (95% CI)"] = _ci(r) if r is not None else "n/a"
            row[f"p ({label.split()[0]})"] = _p(r.p) if r is not None else "n/a"
        r = by.get("partial_pearson")
        row["partial r (95% CI)"] = _ci(r) if r is not None else "n/a"
        row["p (partial)"] = _p(r.p) if r is not None else "n/a"
        row["adjusted for"] = r.adjusted_for.replace(";", ", ") if r is not None else ""
        row["n"] = max(int(x.n) for x in grp.itertuples(index=False))
        rows.append(row)
    return pd.DataFrame(rows)


def _sex_table(a: pd.DataFrame, sex_terms: set[str]) -> pd.DataFrame:
    rows = []
    patient_level = ["mean_difference", "point_biserial", "partial_pearson"]
    keys = a[a["versus"].isin(sex_terms) & a["method"].isin(patient_level)]
    for (marker, versus), grp in keys.groupby(["marker", "versus"], sort=False):
        by = {r.method: r for r in grp.itertuples(index=False)}
        row = {"marker": marker, "group": versus}
        for method, label in (
            ("mean_difference", "mean difference (95% CI)"),
            ("point_biserial", "point-biserial r (95% CI)"),
            ("partial_pearson", "partial r (95% CI)"),
        ):
            r = by.get(method)
            row[label] = _ci(r) if r is not None else "n/a"
            row[f"p ({method.split('_')[0]})"] = _p(r.p) if r is not None else "n/a"
        row["n"] = max(int(x.n) for x in grp.itertuples(index=False))
        rows.append(row)
    return pd.DataFrame(rows)


def _roc_table(result: AnalysisResult) -> pd.DataFrame:
    rows = []
    for marker, r in result.auc.items():
        rows.append(
            {
                "marker": marker,
                "values pointing to osteoporosis": r.direction,
                "AUC (DeLong 95% CI)": _ci(r.estimate),
                "SE": _num(r.se),
                "p (AUC = 0.5)": _p(r.p),
                "with / without osteoporosis": f"{r.n_positive} / {r.n_negative}",
            }
        )
    return pd.DataFrame(rows)


def _model_block(name: str, model: Any, title: str) -> dict[str, Any]:
    terms = model.terms
    table = pd.DataFrame(
        {
            "term": terms["term"],
            "estimate (95% CI)": [_ci(r) for r in terms.itertuples(index=False)],
            "p": [_p(p) for p in terms["p"]],
        }
    )
    refs = ", ".join(f"{k}: {v}" for k, v in model.references.items())
    return {
        "name": name,
        "title": title,
        "table": _table(table),
        "facts": {
            "vertebrae / patients": f"{model.n_obs} / {model.n_groups}",
            "between-patient SD": _num(math.sqrt(max(model.group_variance, 0.0))),
            "within-patient SD": _num(math.sqrt(max(model.residual_variance, 0.0))),
            "intraclass correlation": _num(model.icc),
            "reference levels": refs,
            "converged": (
                f"yes ({model.optimizer})" if model.converged else "NO (estimates not reliable)"
            ),
        },
        "warnings": list(model.warnings),
    }


def _fracture_table(a: pd.DataFrame) -> pd.DataFrame:
    rows = []
    keys = a[a["versus"].str.startswith(f"{STATUS}[")]
    for (marker, versus), grp in keys.groupby(["marker", "versus"], sort=False):
        by = {r.method: r for r in grp.itertuples(index=False)}
        row = {"marker": marker, "compared with intact": versus}
        for method, label in (
            ("mixed_model", "mixed model, adjusted for level"),
            ("paired_difference", "paired difference of patient means"),
        ):
            r = by.get(method)
            row[f"{label} (95% CI)"] = _ci(r, 2) if r is not None else "n/a"
            row[f"p ({method.split('_')[0]})"] = _p(r.p) if r is not None else "n/a"
            n = "" if r is None else int(r.n)
            if r is not None and not pd.isna(r.n_vertebrae):
                n = f"{int(r.n)} patients, {int(r.n_vertebrae)} vertebrae"
            row[f"n ({method.split('_')[0]})"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def methods_text(result: AnalysisResult) -> str:
    """The methods paragraph, stating the columns, adjustments and settings actually used."""
    c = result.columns
    batch = c.get("batch") or c["site"]  # the scanner batch nests the site
    adjust = [x for x in (c["age"], c["sex"], batch) if x]
    variables = [x for x in (c["tscore"], c["age"], c["bmi"]) if x]
    parts = [
        f"Patient-level markers ({', '.join(result.markers)}) were related to "
        f"{', '.join(variables)}"
        + (f" and {c['sex']}" if c["sex"] else "")
        + f" in {result.n_patients} patients ({result.n_vertebrae} vertebrae in the "
        "per-vertebra models). Pearson's r is given with a 95% confidence "
        "interval (CI) from Fisher's z transformation (standard error 1/sqrt(n-3)); Spearman's "
        "rho with a Fisher-z interval using the Bonett-Wright standard error "
        "sqrt((1+rho^2/2)/(n-3)).",
    ]
    if adjust:
        parts.append(
            f"Partial correlations adjusted for {', '.join(adjust)} (each variable's own "
            "column left out of its adjustment set) correlate the residuals of the marker and "
            "the variable after least-squares regression on the adjustment variables "
            "(categorical ones as indicator variables); p-values use Student's t with n-2-k "
            "degrees of freedom and CIs Fisher's z with standard error 1/sqrt(n-3-k), where k "
            "is the number of adjustment columns."
        )
    if c["sex"]:
        parts.append(
            f"Differences between the two {c['sex']} groups are Welch's t-test mean "
            "differences, with the point-biserial correlation alongside."
        )
    if result.mixed:
        m = next(iter(result.mixed.values()))
        terms = ", ".join(dict.fromkeys(t.split("[", 1)[0] for t in m.terms["term"][1:]))
        refs = ", ".join(f"{k} {v}" for k, v in m.references.items())
        parts.append(
            "Per vertebra, the marker of intact vertebrae (neither fractured nor treated) was "
            f"modelled by a linear mixed model with fixed effects {terms} (categorical ones "
            f"against the reference levels {refs}) "
            "and a random intercept per patient (Laird and Ware 1982), fitted by restricted "
            "maximum likelihood with statsmodels MixedLM (optimizers tried in turn until one "
            f"converges: {', '.join(OPTIMIZERS)}); CIs and p-values are Wald (normal) ones."
        )
    if result.fracture:
        parts.append(
            "Fractured and intact vertebrae of the same patients were compared by a mixed model "
            "of all vertebrae with a fracture-status term (treated, or fractured and not "
            "treated, against intact) and level, random intercept per patient; and by the "
            "paired difference of each patient's mean over fractured and over intact "
            "vertebrae (one-sample t-test), each value first centred on the mean of intact "
            "vertebrae at its level."
        )
    if result.auc:
        directions = ", ".join(f"{k}: {v.direction} values" for k, v in result.auc.items())
        parts.append(
            f"Discrimination of osteoporosis ({c['tscore']} <= "
            f"{result.osteoporosis_threshold:g}) is the area under the ROC curve with "
            "DeLong's variance (DeLong, DeLong and Clarke-Pearson 1988) and the CI "
            f"AUC -/+ 1.96 SE; which values point to osteoporosis was fixed beforehand "
            f"({directions})."
        )
    parts.append(
        "The analysis is cross-sectional; no correction for multiple testing was applied, so "
        "p-values are descriptive."
    )
    return " ".join(parts)


def analysis_section(result: AnalysisResult) -> dict[str, Any]:
    """The analysis as plain data for a report: ``id``, ``title``, ``summary``, ``tables``
    (``{"columns": [...], "rows": [[...]]}``), ``models``, ``images`` (PNG data URIs),
    ``notes``, ``methods`` and ``html`` (the rendered ``<section id="biomarkers">``)."""
    a = result.associations
    sex = result.columns["sex"]
    sex_terms = {v for v in a["versus"].unique() if sex and str(v).startswith(f"{sex}[")}
    t = result.patients[result.columns["tscore"]]
    n_op = int((t <= result.osteoporosis_threshold).sum())
    summary = {
        "patients": str(result.n_patients),
        "vertebrae": str(result.n_vertebrae) if result.vertebrae is not None else "not given",
        "markers": ", ".join(result.markers),
        "columns": ", ".join(f"{k}: {v}" for k, v in result.columns.items() if v),
        "osteoporosis": f"{n_op} of {int(t.notna().sum())} "
        f"({result.columns['tscore']} <= {result.osteoporosis_threshold:g})",
    }
    corr_table = _correlation_table(a, sex_terms)
    sex_table = _sex_table(a, sex_terms)
    roc_table = _roc_table(result)
    fracture_table = _fracture_table(a)
    models = [
        _model_block(name, m, f"{name}: marker of intact vertebrae, random intercept per patient")
        for name, m in result.mixed.items()
    ]
    models += [
        _model_block(
            f"{name}-fracture", m, f"{name}: fractured versus intact vertebrae, within patients"
        )
        for name, m in result.fracture.items()
    ]
    section: dict[str, Any] = {
        "id": "biomarkers",
        "title": "Marrow fat, R2* and bone mass",
        "summary": summary,
        "tables": {
            "correlations": _table(corr_table) if len(corr_table) else None,
            "sex": _table(sex_table) if len(sex_table) else None,
            "roc": _table(roc_table) if len(roc_table) else None,
            "fracture": _table(fracture_table) if len(fracture_table) else None,
        },
        "models": models,
        "images": {k: v for k, p in result.plots.items() if (v := _png(p))},
        "notes": list(result.notes),
        "methods": methods_text(result),
    }
    section["html"] = _env().get_template("_biomarkers_section.html.j2").render(s=section)
    return section


def render_page(result: AnalysisResult) -> str:
    """biomarkers.html: the section in a self-contained page (images inlined)."""
    return (
        _env()
        .get_template("biomarkers.html.j2")
        .render(
            section=analysis_section(result),
            created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            version=refracture.__version__,
        )
    )


def write_outputs(
    result: AnalysisResult, out_dir: Path, *, progress: Progress | None = None
) -> dict[str, Path]:
    """Write associations.csv, plots/*.png and biomarkers.html into ``out_dir``; the paths
    are also stored in ``result.files`` and ``result.plots``."""
    from refracture.analysis import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    files = {"associations": write_associations(result, out_dir / "associations.csv")}
    jobs = 3
    tscore = result.columns["tscore"]
    site = result.columns["site"]
    pearson = {
        r.marker: r
        for r in result.associations.itertuples(index=False)
        if r.method == "pearson" and r.versus == tscore
    }
    result.plots["scatter"] = plots.plot_scatter(
        result.patients, result.markers, tscore, plot_dir / "scatter_tscore.png",
        group=site, estimates={k: _estimate(v) for k, v in pearson.items()},
        versus_label=f"{tscore} (BMD T-score)",
    )  # fmt: skip
    if progress:
        progress("plots and page", 1, jobs)
    if result.auc:
        t = result.patients[tscore].to_numpy(float)
        condition = np.where(np.isfinite(t), (t <= result.osteoporosis_threshold), np.nan)
        result.plots["roc"] = plots.plot_roc(
            condition,
            {m: result.patients[m].to_numpy(float) for m in result.auc},
            result.auc,
            plot_dir / "roc_osteoporosis.png",
            title=f"osteoporosis ({tscore} <= {result.osteoporosis_threshold:g})",
        )
    if progress:
        progress("plots and page", 2, jobs)
    if result.vertebrae is not None:
        v = result.vertebrae
        maps = sorted(v["map"].unique(), key=lambda m: (m not in ("pdff", "r2star"), m))
        result.plots["levels"] = plots.plot_levels(
            v, maps, level_order(v["level"]), plot_dir / "levels.png", status=STATUS
        )
    files.update({f"plot_{k}": p for k, p in result.plots.items()})
    files["html"] = write_text(out_dir / "biomarkers.html", render_page(result))
    if progress:
        progress("plots and page", 3, jobs)
    result.files.update(files)
    return files


def _estimate(row: Any) -> Estimate:
    return Estimate(row.estimate, row.lower95, row.upper95, row.p, int(row.n))
