"""What a training run logs to MLflow: parameters, data sets, per-candidate metrics, tables,
plots and model cards, and the selected model (a :class:`~refracture.bundle.ModelBundle`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from refracture.config import RunConfig, config_to_dict, flatten
from refracture.dataset import Dataset
from refracture.files import write_table, write_text
from refracture.ids import PATIENT_ID
from refracture.results import Candidate
from refracture.study.artifacts import candidate_plots
from refracture.study.harmonisation import harmonisation_metrics
from refracture.study.packaging import make_bundle
from refracture.validation.catalogue import horizon_label

__all__ = ["log_candidate", "log_parent", "log_selected_model", "run_params"]


def run_params(cfg: RunConfig) -> dict[str, str]:
    out = {}
    for k, v in flatten(config_to_dict(cfg)).items():
        text = v if isinstance(v, str) else json.dumps(v)
        out[k] = text[:6000]
    return out


def log_parent(
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
        feats = features[[PATIENT_ID, *[c for c in cfg.imaging.features if c in features]]]
        tracking.log_dataset(
            feats, name="imaging-features", source=str(Path(cfg.data.manifest).resolve())
        )
    modelling = dataset.X.reset_index().assign(time=dataset.y["time"], event=dataset.y["event"])
    digest = tracking.log_dataset(
        modelling, name="modelling-data", source="refracture.dataset.assemble", targets="event"
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


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and np.isfinite(v)}


def log_candidate(
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
                "refracture.estimand": r.estimand,
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
        if cand.extra_metrics:  # samplesize_*, site_meta_*
            mlflow.log_metrics(_finite(cand.extra_metrics))
        if r.per_site is not None:
            for _, row in r.per_site.iterrows():
                site = str(row.get("site", ""))
                for k in ("cindex_harrell", f"auc_{horizon_label(r.horizon)}"):
                    if k in row and np.isfinite(row[k]):
                        mlflow.log_metric(f"{k}.{site}", float(row[k]))
        write_table(folder / "metrics.csv", r.metrics_frame())
        # The validation predictions the metrics were computed from, so anyone can recompute
        # them (or check them against another library).
        write_table(folder / "predictions.csv", r.predictions)
        if r.coefficients is not None:
            write_table(folder / "coefficients.csv", r.coefficients)
        if r.ph_test is not None:
            write_table(folder / "ph_test.csv", r.ph_test)
        if cand.added:
            write_table(folder / "added_value.csv", pd.DataFrame([cand.added]))
        if r.per_site is not None:
            write_table(folder / "per_site.csv", r.per_site)
        if cand.per_site_harmonisation is not None:
            write_table(folder / "per_site_harmonisation.csv", cand.per_site_harmonisation)
            mlflow.log_metrics(harmonisation_metrics(cand.per_site_harmonisation))
        cand.plots = candidate_plots(cand, cfg, dataset, folder / "plots")
        if cand.site_meta and cand.per_site_metrics is not None:
            from refracture.report.site_meta import plot_site_forest

            forest = plot_site_forest(
                cand.per_site_metrics, cand.site_meta, folder / "plots" / "site_forest.png",
                horizon=r.horizon, title=f"Performance per site: {cand.label}",
            )  # fmt: skip
            if forest is not None:
                cand.plots["site_forest"] = forest
        write_text(
            folder / "model_card.md",
            render_model_card(
                cand, cfg, dataset, run_id=cand.run_id, parent_run_id=parent_id, digest=digest
            ),
        )
        # a NaN metric is not logged; its reason is (metric or figure name -> why)
        undefined = {**r.reasons, **cand.reasons}
        if undefined:
            write_text(folder / "undefined.json", json.dumps(undefined, indent=2, sort_keys=True))
        mlflow.log_artifacts(str(folder))


def log_selected_model(
    cand: Candidate,
    cfg: RunConfig,
    dataset: Dataset,
    digest: str,
    site_units: dict[str, dict[str, str]] | None = None,
) -> Any:
    import mlflow

    from refracture.scoring.pyfunc import log_model

    bundle = make_bundle(cand, cfg, dataset, dataset_digest=digest, site_units=site_units)
    with mlflow.start_run(run_id=cand.run_id, nested=True):
        info = log_model(bundle)
        mlflow.set_tag("refracture.registered", "true")
    return info
