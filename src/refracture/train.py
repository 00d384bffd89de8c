"""``refracture train``: features -> data set -> models -> validation -> MLflow -> registry.

One parent MLflow run per call, one nested run per model and feature set. Everything is
computed first (extraction, validation, bootstrap), then logged, so a failure in the long part
leaves no half-logged nested runs; the parent run is marked FAILED with the error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from refracture import __version__
from refracture.config import RunConfig, config_to_dict, flatten
from refracture.data import Dataset, assemble
from refracture.errors import ConfigError, InputError
from refracture.files import read_table, write_table, write_text
from refracture.text import ci_text
from refracture.validation.metrics import metric_names

PROGRESS = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Candidate:
    """One model fitted and validated on one feature set."""

    model: str
    feature_set: str
    result: Any  # refracture.validation.ValidationResult
    added: dict[str, float] | None = None
    run_id: str | None = None
    folder: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} ({self.feature_set})"


@dataclass
class TrainResult:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    run_dir: Path
    candidates: list[Candidate]
    selected: Candidate
    selection_metric: str
    decision: Any  # tracking.AliasDecision
    model_uri: str
    dataset: Dataset
    flow: dict[str, Any]
    report: Path | None = None


# --- selection -----------------------------------------------------------------------------


def selection_score(metric: str, value: float) -> float:
    """Orient a metric so that larger is better (Brier and IBS are losses; calibration and O/E
    are best at their ideal value)."""
    base = metric.removesuffix("_optcorr")
    if base.startswith(("brier_", "ibs_")):
        return -value
    if base == "calibration_slope" or base.startswith("oe_ratio_"):
        return -abs(value - 1.0)
    if base == "calibration_intercept":
        return -abs(value)
    return value


def check_selection_metric(cfg: RunConfig) -> None:
    names = metric_names(cfg.outcome.horizon_days)
    allowed = set(names) | {f"{n}_optcorr" for n in names}
    if cfg.selection_metric not in allowed:
        raise ConfigError(
            f"unknown metric '{cfg.selection_metric}' (one of {', '.join(sorted(allowed))})",
            key="selection_metric",
        )
    if cfg.selection_metric.endswith("_optcorr") and cfg.validation.bootstrap == 0:
        raise ConfigError(
            f"'{cfg.selection_metric}' needs the bootstrap: set validation.bootstrap above 0 or "
            f"select on '{cfg.selection_metric.removesuffix('_optcorr')}'",
            key="selection_metric",
        )


def select(candidates: list[Candidate], cfg: RunConfig) -> Candidate:
    """The best clinical+imaging model (or the best clinical one, without imaging)."""
    pool = [c for c in candidates if c.feature_set == "clinical+imaging"] or candidates
    metric = cfg.selection_metric
    scored = [(selection_score(metric, c.result.metrics.get(metric, math.nan)), c) for c in pool]
    scored = [(s, c) for s, c in scored if np.isfinite(s)]
    if not scored:
        raise InputError(f"no model has a finite {metric}; choose another selection_metric")
    return max(scored, key=lambda sc: sc[0])[1]


# --- inputs --------------------------------------------------------------------------------


def read_clinical(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise InputError("clinical table not found", file=path)
    try:
        return read_table(path)
    except Exception as err:  # noqa: BLE001 - any parser error is a bad input file
        msg = " ".join(str(err).split())[:200]
        raise InputError(f"cannot read the clinical table ({msg})", file=path) from None


def _extract(
    cfg: RunConfig, run_dir: Path, progress: PROGRESS | None, pseudonymiser: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    from refracture.extract import extract_cohort

    result = extract_cohort(
        cfg.data.manifest,  # type: ignore[arg-type]
        cfg.extraction,
        out_dir=run_dir / "extraction",
        jobs=cfg.validation.jobs,
        cache_dir=cfg.data.cache_dir,
        qc_png=True,
        progress=(lambda d, t: progress("extracting features", d, t)) if progress else False,
        pseudonymiser=pseudonymiser,
    )
    if result.features.empty:
        first = result.errors["message"].iloc[0] if len(result.errors) else "no patients"
        raise InputError(f"no patient's images could be measured (first error: {first})")
    return result.features, result.errors, result


# --- the run -------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    *,
    config_path: str | Path | None = None,
    progress: PROGRESS | None = None,
    report: bool = True,
    pseudonymise: bool = False,
) -> TrainResult:
    """Run a whole training job as the config says (see module docstring).

    ``pseudonymise``: replace every patient_id by its keyed pseudonym before anything is
    computed, so no output, artifact or MLflow run carries the site's own IDs
    (:mod:`refracture.privacy`; the key comes from the environment).
    """
    import mlflow

    from refracture import tracking
    from refracture.privacy import Pseudonymiser
    from refracture.validation import added_value, validate

    check_selection_metric(cfg)
    pseudonymiser = Pseudonymiser.from_env() if pseudonymise else None
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    clinical = read_clinical(cfg.data.clinical)
    if pseudonymiser is not None and "patient_id" in clinical:
        clinical = pseudonymiser.table(clinical)
    if cfg.data.manifest is not None and not Path(cfg.data.manifest).is_file():
        raise InputError("manifest not found", file=cfg.data.manifest)
    # The clinical table's columns, outcome and horizon are checked now, so a typo is reported
    # in seconds, not after the images are measured.
    assemble(clinical, None, cfg, clinical_source=cfg.data.clinical)
    exp_id = tracking.setup(uri, cfg.mlflow.experiment)
    tracking.close_orphaned_runs(exp_id)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")

    with mlflow.start_run(run_name=f"train {stamp}", tags=tracking.process_tags()) as parent:
        parent_id = parent.info.run_id
        run_dir = tracking.store_folder(uri) / "refracture-runs" / parent_id
        run_dir.mkdir(parents=True, exist_ok=True)
        mlflow.log_params(_params(cfg) | {"privacy.pseudonymised": str(pseudonymise).lower()})

        features, extraction_errors, extraction = None, None, None
        if cfg.has_imaging:
            features, extraction_errors, extraction = _extract(
                cfg, run_dir, progress, pseudonymiser
            )
        dataset = assemble(
            clinical,
            features,
            cfg,
            clinical_source=cfg.data.clinical,
            features_source=cfg.data.manifest,
        )
        flow = cohort_flow(clinical, dataset, extraction_errors, cfg)

        candidates: list[Candidate] = []
        for fs in cfg.feature_sets:
            for name in cfg.models:
                stage = f"validating {name} ({fs})"

                def tick(done: int, total: int, stage: str = stage) -> None:
                    if progress:
                        progress(stage, done, total)

                tick(0, 1)
                candidates.append(
                    Candidate(name, fs, validate(name, dataset, fs, cfg, progress=tick))
                )
        by_key = {(c.model, c.feature_set): c for c in candidates}
        for name in cfg.models:
            clin, img = by_key.get((name, "clinical")), by_key.get((name, "clinical+imaging"))
            if clin and img:
                img.added = added_value(clin.result, img.result, dataset, cfg)
        selected = select(candidates, cfg)

        if progress:
            progress("logging to MLflow", 0, len(candidates) + 1)
        digest = _log_parent(cfg, clinical, features, dataset, flow, run_dir, config_path)
        base_tags = tracking.run_tags(digest) | tracking.process_tags()
        mlflow.set_tags(
            {**base_tags, "refracture.competing_risk": selected.result.competing_risk_note}
        )
        for i, cand in enumerate(candidates, 1):
            _log_candidate(cand, cfg, dataset, run_dir, base_tags, parent_id, digest)
            if progress:
                progress("logging to MLflow", i, len(candidates) + 1)

        model_info = _log_selected_model(selected, cfg, dataset, digest)
        metric = cfg.selection_metric
        value = float(selected.result.metrics[metric])
        decision = tracking.register(
            model_info.model_uri,
            name=cfg.mlflow.registered_model,
            alias=cfg.mlflow.alias,
            metric=metric,
            value=value,
            score=selection_score(metric, value),
            description=_version_description(selected, cfg),
            tags={
                "refracture.model": selected.model,
                "refracture.feature_set": selected.feature_set,
                "refracture.parent_run_id": parent_id,
                "refracture.dataset_digest": digest,
            },
        )
        mlflow.set_tags(
            {
                "refracture.selected": selected.label,
                "refracture.registered_version": decision.version,
                "refracture.alias_decision": decision.reason,
            }
        )
        result = TrainResult(
            parent_run_id=parent_id,
            experiment_id=exp_id,
            tracking_uri=uri,
            run_dir=run_dir,
            candidates=candidates,
            selected=selected,
            selection_metric=metric,
            decision=decision,
            model_uri=f"models:/{cfg.mlflow.registered_model}/{decision.version}",
            dataset=dataset,
            flow=flow,
        )
        write_table(run_dir / "summary.csv", summary_table(result))
        mlflow.log_artifact(str(run_dir / "summary.csv"))
        if report:
            if progress:
                progress("writing the study report", 0, 1)
            from refracture.report import write_report

            result.report = write_report(result, cfg, extraction=extraction)
            mlflow.log_artifact(str(result.report))
            if progress:
                progress("writing the study report", 1, 1)
        if progress:
            progress("logging to MLflow", len(candidates) + 1, len(candidates) + 1)
    return result


# --- what gets logged ------------------------------------------------------------------------


def _params(cfg: RunConfig) -> dict[str, str]:
    out = {}
    for k, v in flatten(config_to_dict(cfg)).items():
        text = v if isinstance(v, str) else json.dumps(v)
        out[k] = text[:6000]
    return out


def cohort_flow(
    clinical: pd.DataFrame, dataset: Dataset, extraction_errors: pd.DataFrame | None, cfg: RunConfig
) -> dict[str, Any]:
    """Patients in, excluded with reasons, analysed (TRIPOD+AI 20a)."""
    excluded = dataset.excluded.copy()
    if extraction_errors is not None and len(extraction_errors):
        reasons = extraction_errors.set_index("patient_id")["message"]
        excluded["reason"] = [
            f"images could not be measured: {reasons[p]}" if p in reasons.index else r
            for p, r in zip(excluded["patient_id"], excluded["reason"], strict=True)
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


def _log_parent(
    cfg: RunConfig,
    clinical: pd.DataFrame,
    features: pd.DataFrame | None,
    dataset: Dataset,
    flow: dict[str, Any],
    run_dir: Path,
    config_path: str | Path | None,
) -> str:
    import mlflow

    from refracture import tracking

    tracking.log_dataset(
        clinical,
        name="clinical",
        source=str(Path(cfg.data.clinical).resolve()),
        targets=cfg.outcome.event,
    )
    if features is not None:
        feats = features[["patient_id", *[c for c in cfg.imaging.features if c in features]]]
        tracking.log_dataset(
            feats, name="imaging-features", source=str(Path(cfg.data.manifest).resolve())
        )
    modelling = dataset.X.reset_index().assign(time=dataset.y["time"], event=dataset.y["event"])
    digest = tracking.log_dataset(
        modelling, name="modelling-data", source="refracture.data.assemble", targets="event"
    )
    resolved = run_dir / "config.yaml"
    header = f"# resolved config (from {config_path})\n" if config_path else ""
    write_text(resolved, header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    mlflow.log_artifact(str(resolved))
    excluded = flow["excluded"]
    write_table(run_dir / "excluded.csv", excluded)
    mlflow.log_artifact(str(run_dir / "excluded.csv"))
    mlflow.log_dict(
        {k: v for k, v in flow.items() if k != "excluded"} | {"n_excluded": int(len(excluded))},
        "cohort_flow.json",
    )
    return digest


def metrics_table(result: Any) -> pd.DataFrame:
    """One row per metric: validation value and CI, optimism-corrected value and CI."""
    m = result.metrics
    rows = []
    for name in metric_names(result.horizon):
        rows.append(
            {
                "metric": name,
                "value": m.get(name, math.nan),
                "lower95": m.get(f"{name}_lo", math.nan),
                "upper95": m.get(f"{name}_hi", math.nan),
                "apparent": result.apparent.get(name, math.nan),
                "optimism": result.optimism.get(name, math.nan),
                "optcorr": m.get(f"{name}_optcorr", math.nan),
                "optcorr_lower95": m.get(f"{name}_optcorr_lo", math.nan),
                "optcorr_upper95": m.get(f"{name}_optcorr_hi", math.nan),
            }
        )
    return pd.DataFrame(rows)


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and np.isfinite(v)}


def candidate_plots(
    cand: Candidate, cfg: RunConfig, dataset: Dataset, folder: Path
) -> dict[str, Path]:
    from refracture.validation import plots

    r = cand.result
    h = cfg.outcome.horizon_days
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "calibration": plots.plot_calibration(
            {cand.label: r.predictions}, folder / "calibration.png", horizon=h
        ),
        "km_risk_groups": plots.plot_km_risk_groups(
            r.predictions, cfg.risk_groups, folder / "km_risk_groups.png", horizon=h
        ),
        "td_roc": plots.plot_td_roc(
            {cand.label: r.predictions}, folder / "td_roc.png", horizon=h, y_train=r.y_development
        ),
        "decision_curve": plots.plot_decision_curve(
            {cand.label: r.predictions}, folder / "decision_curve.png", horizon=h
        ),
    }
    if r.coefficients is not None:
        ratio = r.final_model.model.ratio_name
        out["forest"] = plots.plot_forest(
            r.coefficients, folder / "forest.png", title=f"{cand.label}: {ratio} ratios (95% CI)"
        )
        from refracture.report.nomogram import Nomogram

        dev = dataset.X.loc[r.development_ids]
        nomo = Nomogram.from_pipeline(
            r.final_model, dev, covariate_kinds(dataset, cand.feature_set), h
        )
        out["nomogram"] = nomo.plot(folder / "nomogram.png", title=f"Nomogram: {cand.label}")
    return out


def covariate_kinds(dataset: Dataset, feature_set: str) -> dict[str, str]:
    cov = dataset.covariates
    kinds = {c: "numeric" for c in cov.numeric}
    kinds |= {c: "binary" for c in cov.binary}
    kinds |= {c: "categorical" for c in cov.categorical}
    if feature_set == "clinical+imaging":
        kinds |= {c: "numeric" for c in dataset.imaging_features}
    return kinds


def _log_candidate(
    cand: Candidate,
    cfg: RunConfig,
    dataset: Dataset,
    run_dir: Path,
    base_tags: dict[str, str],
    parent_id: str,
    digest: str,
) -> None:
    import mlflow

    from refracture.report.model_card import render_model_card

    r = cand.result
    folder = run_dir / f"{cand.model}_{cand.feature_set.replace('+', '_')}"
    folder.mkdir(parents=True, exist_ok=True)
    cand.folder = folder
    with mlflow.start_run(run_name=cand.label, nested=True) as child:
        cand.run_id = child.info.run_id
        mlflow.set_tags(
            {
                **base_tags,
                "refracture.model": cand.model,
                "refracture.feature_set": cand.feature_set,
                "refracture.competing_risk": r.competing_risk_note,
            }
        )
        params = {f"model.{k}": str(v)[:500] for k, v in r.final_model.model.get_params().items()}
        params |= {
            k: str(v)[:500] for k, v in r.summary().items() if k not in ("model", "feature_set")
        }
        params["features"] = ", ".join(r.features)[:6000]
        mlflow.log_params(params)
        mlflow.log_metrics(_finite(r.metrics))
        if cand.added:
            mlflow.log_metrics(_finite(cand.added))
        if r.per_site is not None:
            for _, row in r.per_site.iterrows():
                site = str(row.get("site", ""))
                for k in ("cindex_harrell", metric_names(r.horizon)[2]):
                    if k in row and np.isfinite(row[k]):
                        mlflow.log_metric(f"{k}.{site}", float(row[k]))
        write_table(folder / "metrics.csv", metrics_table(r))
        if r.coefficients is not None:
            write_table(folder / "coefficients.csv", r.coefficients)
        if r.ph_test is not None:
            write_table(folder / "ph_test.csv", r.ph_test)
        if cand.added:
            write_table(folder / "added_value.csv", pd.DataFrame([cand.added]))
        if r.per_site is not None:
            write_table(folder / "per_site.csv", r.per_site)
        cand.plots = candidate_plots(cand, cfg, dataset, folder / "plots")
        write_text(
            folder / "model_card.md",
            render_model_card(
                cand, cfg, dataset, run_id=cand.run_id, parent_run_id=parent_id, digest=digest
            ),
        )
        mlflow.log_artifacts(str(folder))


def make_bundle(cand: Candidate, cfg: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """What the registered model needs besides the fitted pipeline (see refracture.serving)."""
    r = cand.result
    imaging = cand.feature_set == "clinical+imaging"
    cov = cfg.covariates
    numeric = [*cov.numeric, *(dataset.imaging_features if imaging else [])]
    dev = dataset.X.loc[r.development_ids]
    typical: dict[str, Any] = {}
    ranges: dict[str, list[float]] = {}
    for c in [*numeric, *cov.binary]:
        x = pd.to_numeric(dev[c], errors="coerce").dropna()
        typical[c] = float(x.median()) if c in numeric else float(x.mode().iloc[0])
        if c in numeric and len(x):
            # 1st-99th percentile (not min/max: one patient's value) widened by a tenth of its
            # span, so scoring flags extrapolation rather than every 50th ordinary patient
            lo, hi = np.percentile(x, [1, 99])
            pad = 0.1 * (hi - lo)
            ranges[c] = [float(f"{lo - pad:.4g}"), float(f"{hi + pad:.4g}")]
    for c in cov.categorical:
        typical[c] = str(dev[c].mode().iloc[0])
    return {
        "bundle_version": 1,
        "refracture_version": __version__,
        "model": cand.model,
        "feature_set": cand.feature_set,
        "model_label": f"{cand.model} ({cand.feature_set})",
        "model_version": cand.run_id or "",
        "horizon_days": float(cfg.outcome.horizon_days),
        "numeric": numeric,
        "binary": list(cov.binary),
        "categorical": {c: list(dataset.categories[c]) for c in cov.categorical},
        "reference_levels": dict(cov.categorical),
        "imaging_features": list(dataset.imaging_features) if imaging else [],
        "extraction": cfg.extraction.model_dump(mode="json") if imaging else None,
        "risk_groups": list(cfg.risk_groups),
        "registered_model": cfg.mlflow.registered_model,
        "ranges": {k: list(v) for k, v in cov.ranges.items()},
        "typical": typical,
        "training_range": ranges,
        "terms": r.final_model.term_names,
        "competing_risk": r.competing_risk_note,
        "selection_metric": cfg.selection_metric,
        "selection_value": float(r.metrics.get(cfg.selection_metric, math.nan)),
    }


def _log_selected_model(cand: Candidate, cfg: RunConfig, dataset: Dataset, digest: str) -> Any:
    import mlflow

    from refracture import tracking

    bundle = make_bundle(cand, cfg, dataset)
    bundle["dataset_digest"] = digest
    with mlflow.start_run(run_id=cand.run_id, nested=True):
        info = tracking.log_model(cand.result.final_model, bundle)
        mlflow.set_tag("refracture.registered", "true")
    return info


def _version_description(cand: Candidate, cfg: RunConfig) -> str:
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
    h = int(round(result.dataset.horizon))
    for c in result.candidates:
        m = c.result.metrics
        row = {"model": c.model, "feature_set": c.feature_set, "run_id": c.run_id}
        for name in ("cindex_harrell", "cindex_uno", f"auc_{h}d", f"brier_{h}d", f"ibs_{h}d",
                     "calibration_slope", "calibration_intercept", f"oe_ratio_{h}d"):  # fmt: skip
            for suffix in ("", "_lo", "_hi", "_optcorr", "_optcorr_lo", "_optcorr_hi"):
                row[name + suffix] = m.get(name + suffix, math.nan)
        if c.added:
            for k in ("delta_cindex", "delta_cindex_lo", "delta_cindex_hi", f"nri_{h}d",
                      f"nri_{h}d_lo", f"nri_{h}d_hi", f"idi_{h}d", f"idi_{h}d_lo", f"idi_{h}d_hi",
                      "lrt_p"):  # fmt: skip
                row[k] = c.added.get(k, math.nan)
        row["selected"] = c is result.selected
        rows.append(row)
    return pd.DataFrame(rows)
