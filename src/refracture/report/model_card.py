"""The model card logged with every trained model (template: ``models/model_card.md.j2``)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import jinja2

import refracture
from refracture.config import RunConfig
from refracture.files import shipped_file
from refracture.report.predictors import binary_coding, predictor_kinds, unit_of
from refracture.report.sample_size import MIN_EPV, events_per_parameter
from refracture.text import ci_text
from refracture.validation.catalogue import ESTIMATORS, metric_spec, metric_specs


def template_path(name: str) -> Path:
    """A template from ``models/`` of a source checkout, or its copy in the wheel."""
    path = shipped_file("models", name)
    if path is None:
        raise FileNotFoundError(f"template {name} is missing from the installation")
    return path


def metric_label(name: str, horizon: float = 365.0) -> str:
    """``brier_365d`` -> ``IPCW Brier score at the horizon (brier_365d)``: the registry's
    description of the metric, with its name."""
    try:
        spec = metric_spec(name, horizon)
    except KeyError:
        return name
    return f"{spec.description} (`{name}`)"


def render_model_card(
    cand: Any, cfg: RunConfig, dataset: Any, *, run_id: str, parent_run_id: str, digest: str
) -> str:
    from refracture.tracking import git_commit

    r = cand.result
    m = r.metrics
    metrics = [
        {
            "name": metric_label(spec.name(r.horizon), r.horizon),
            "valid": ci_text(m, spec.name(r.horizon), spec.digits),
            **{
                s: ci_text(m, f"{spec.name(r.horizon)}_{s}", spec.digits) if spec.resampled else ""
                for s in ESTIMATORS
            },
        }
        for spec in metric_specs()
    ]
    h = int(round(r.horizon))
    added = []
    if cand.added:
        a = cand.added
        lrt = "n/a" if not math.isfinite(a["lrt_p"]) else f"{a['lrt_p']:.3g}"
        added = [
            {"name": "delta Harrell's C", "value": ci_text(a, "delta_cindex")},
            {"name": f"continuous NRI at {h} d", "value": ci_text(a, f"nri_{h}d")},
            {"name": f"IDI at {h} d", "value": ci_text(a, f"idi_{h}d")},
            {"name": "likelihood-ratio test p (nested Cox)", "value": lrt},
        ]
    missing = {k: v for k, v in dataset.n_missing.items() if v}
    epv = events_per_parameter([cand], r.horizon).iloc[0]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(template_path("model_card.md.j2").read_text(encoding="utf-8"))
    sha = git_commit()
    return template.render(
        label=cand.label,
        model=cand.model,
        feature_set=cand.feature_set,
        horizon=h,
        run_id=run_id,
        parent_run_id=parent_run_id,
        version=refracture.__version__,
        git_commit=sha[:12] if sha else "",
        dataset_digest=digest,
        created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        imaging=cand.feature_set == "clinical+imaging",
        n_patients=len(dataset),
        n_sites=dataset.site.nunique(),
        n_train=r.n_train,
        n_valid=r.n_valid,
        events_train=r.events_train,
        events_valid=r.events_valid,
        split=r.split,
        competing_note=r.competing_risk_note,
        missing=", ".join(f"{k} {v}" for k, v in missing.items()) or "none",
        predictors=_predictors(dataset, cand.feature_set),
        metrics=metrics,
        added=added,
        n_terms=int(epv["model terms"]),
        epv_events=int(epv["events counted"]),
        events_counted=str(epv["counted from"]),
        epp=f"{epv['events per term']:.1f}",
        epv_low=bool(epv["below 10"]),
        min_epv=int(MIN_EPV),
        notes=list(r.notes),
        internal=ESTIMATORS[r.internal].label,
        oob="" if "cindex_oob" not in m else f"{m['cindex_oob']:.3f}",
        role=r.validation_role,
    )


def _predictors(dataset: Any, feature_set: str) -> list[str]:
    """``name (kind, unit or coding)`` per predictor of the feature set."""
    out = []
    for name, kind in predictor_kinds(dataset, feature_set).items():
        if kind == "numeric":
            detail = unit_of(name)
        elif kind == "binary":
            detail = binary_coding(name)
        else:
            detail = f"reference level {dataset.covariates.categorical.get(name)}"
        out.append(f"`{name}` ({kind}; {detail})")
    return out
