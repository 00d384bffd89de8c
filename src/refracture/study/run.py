"""``refracture train``: features -> data set -> models -> validation -> MLflow -> registry.

One parent MLflow run per call, one nested run per model and feature set. Everything is
computed first (extraction, validation, bootstrap), then logged, so a failure in the long part
leaves no half-logged nested runs; the parent run is marked FAILED with the error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd

from refracture.config import RunConfig
from refracture.dataset import Dataset, assemble
from refracture.errors import ConfigError, InputError, ModelError
from refracture.files import write_table
from refracture.ids import PATIENT_ID
from refracture.models import make_pipeline
from refracture.progress import Progress
from refracture.results import Candidate, TrainResult
from refracture.study.artifacts import cohort_flow, summary_table, version_description
from refracture.study.harmonisation import per_site_harmonisation
from refracture.study.selection import check_selection_metric, select, selection_score
from refracture.study.statistics import attach_statistics
from refracture.tables import read_patient_table
from refracture.validation import added_value, validate

__all__ = ["VALIDATION_UNSEEN_BATCH", "read_clinical", "train", "validate_candidate"]


def read_clinical(cfg: RunConfig) -> pd.DataFrame:
    """The study's clinical table, its ID column renamed to ``patient_id``."""
    return read_patient_table(
        cfg.data.clinical,
        "clinical table",
        id_column=cfg.data.id_column,
        text_columns=list(cfg.covariates.categorical),
    )


def _manifest(cfg: RunConfig, pseudonymiser: Any = None) -> pd.DataFrame:
    """The manifest's rows (for the scanner columns a feature table may lack)."""
    from refracture.features.manifest import read_manifest

    manifest = read_manifest(cfg.data.manifest)  # type: ignore[arg-type]
    return pseudonymiser.table(manifest) if pseudonymiser is not None else manifest


def _extract(
    cfg: RunConfig, run_dir: Path, progress: Progress | None, pseudonymiser: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
    from refracture.features import extract_cohort

    result = extract_cohort(
        cfg.data.manifest,  # type: ignore[arg-type]
        cfg.extraction,
        out_dir=run_dir / "extraction",
        jobs=cfg.validation.jobs,
        cache_dir=cfg.data.cache_dir,
        qc_png=True,
        progress=progress,
        pseudonymiser=pseudonymiser,
    )
    if result.features.empty:
        first = result.errors["message"].iloc[0] if len(result.errors) else "no patients"
        raise InputError(f"no patient's images could be measured (first error: {first})")
    return result.features, result.errors, result


#: How validation harmonises a held-out patient whose batch the development part of that fit
#: did not contain (see :func:`validate_candidate`): from the held-out scanner's own scans,
#: outcome-free, as a new hospital can once it has ``min_batch_patients`` patients; a batch
#: with fewer gets the pooled adjustment (validation must predict every patient).
VALIDATION_UNSEEN_BATCH = "estimate"


def _biomarkers(
    clinical: pd.DataFrame, extraction: Any, cfg: RunConfig, run_dir: Path, result: TrainResult
) -> dict[str, Any] | None:
    """The study's marrow-fat / bone-mass analysis on the patients just measured, written to
    ``<run>/biomarkers`` and logged, as a section of the report. A failure is a warning: the
    models are trained and registered already."""
    import mlflow

    from refracture.analysis import analysis_section, run_analysis

    a = cfg.analysis
    out = run_dir / "biomarkers"
    try:
        analysis = run_analysis(
            clinical, extraction.features, extraction.vertebrae,
            tscore=a.tscore, age=a.age, sex=a.sex, bmi=a.bmi, site=a.site, batch=a.batch,  # type: ignore[arg-type]
            osteoporosis_threshold=a.osteoporosis_tscore, out_dir=out,
        )  # fmt: skip
    except (InputError, ModelError) as err:
        result.warnings.append(f"biomarker analysis not done: {err.one_line()}")
        return None
    mlflow.log_artifacts(str(out), artifact_path="biomarkers")
    return analysis_section(analysis)


def validate_candidate(
    name: str, feature_set: str, dataset: Dataset, cfg: RunConfig, progress: Progress | None
) -> Candidate:
    """Validate model ``name`` on ``feature_set`` as the config says: the config-driven
    wrapper of :func:`refracture.validation.validate`.

    With scanner harmonisation on (``dataset.harmonisation``) the pipeline starts with the
    ComBat step, refitted with the model in every fold and bootstrap replicate. Validation
    must predict every held-out patient; one whose batch the fit did not see (always the case
    for the held-out hospital of a leave-one-site-out or site split) is harmonised with its
    scanner's own location and scale, estimated from the held-out patients' scans without
    their outcomes (:data:`VALIDATION_UNSEEN_BATCH`), unless the config says ``reference``
    (then as deployed). The registered model (``result.final_model``) applies the config's
    ``unseen_batch`` again.
    """
    cols = dataset.feature_names(feature_set)
    imaging = [c for c in cols if c in dataset.imaging_features]
    vcfg = cfg.validation
    harmonisation = dataset.harmonisation if imaging else None
    template = make_pipeline(
        name,
        cfg.covariates,
        imaging,
        horizon=cfg.outcome.horizon_days,
        random_state=vcfg.seed,
        categories=dataset.categories,
        harmonisation=harmonisation,
        imputation=cfg.imputation,
        estimand=dataset.estimand,
    )
    policy = harmonisation.unseen_batch if harmonisation is not None else None
    if template.harmoniser is not None:
        # a fold without the reference batch's site: that fit uses the pooled scale
        template.set_params(harmonise__require_reference=False)
        if policy != "reference":
            template.set_params(
                harmonise__unseen_batch=VALIDATION_UNSEEN_BATCH, harmonise__unseen_fallback="pooled"
            )
    try:
        result = validate(
            template,
            dataset.model_input(feature_set),
            dataset.y,
            site=dataset.site.to_numpy(),
            split=vcfg.split,
            test_fraction=vcfg.test_fraction,
            test_site=vcfg.test_site,
            folds=vcfg.folds,
            bootstrap=vcfg.bootstrap,
            seed=vcfg.seed,
            jobs=vcfg.jobs,
            feature_set=feature_set,
            progress=progress,
            stage=f"validating {name} ({feature_set})",
        )
    except ModelError as err:
        # A model that cannot be fitted on these data: the config entry to change is models.
        raise ModelError(err.message, key=err.key or "models") from None
    result.features = cols  # the model's columns, not the batch columns harmonisation reads
    final = result.final_model.harmoniser
    if final is not None:
        final.set_params(unseen_batch=policy, unseen_fallback="refuse", require_reference=True)
        wanted = harmonisation.reference_batch  # type: ignore[union-attr]
        if wanted is not None and final.reference_batch_ != wanted:
            raise ConfigError(
                f"the reference batch {wanted} is not in the development data (only in the "
                f"held-out patients of {result.split}); choose a reference batch of the "
                "development sites",
                key="harmonisation.reference_batch",
            )
    return Candidate(name, feature_set, result)


def train(
    cfg: RunConfig,
    *,
    config_path: str | Path | None = None,
    progress: Progress | None = None,
    report: bool = True,
    pseudonymise: bool = False,
) -> TrainResult:
    """Run a whole training job as the config says (see module docstring).

    ``pseudonymise``: replace every patient_id by its keyed pseudonym before anything is
    computed, so no output, artifact or MLflow run carries the site's own IDs
    (:mod:`refracture.privacy`; the key comes from the environment).
    """
    import mlflow

    from refracture import registry, tracking
    from refracture.privacy import Pseudonymiser
    from refracture.study import logging as log

    check_selection_metric(cfg)
    pseudonymiser = Pseudonymiser.from_env() if pseudonymise else None
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    clinical = read_clinical(cfg)
    if pseudonymiser is not None and PATIENT_ID in clinical:
        clinical = pseudonymiser.table(clinical)
    if cfg.data.manifest is not None and not Path(cfg.data.manifest).is_file():
        raise InputError("manifest not found", file=Path(cfg.data.manifest).resolve())
    # The clinical table's columns, outcome and horizon are checked now, so a typo is reported
    # in seconds, not after the images are measured.
    assemble(clinical, None, cfg, clinical_source=cfg.data.clinical)
    exp_id = tracking.setup(uri, cfg.mlflow.experiment)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    run_name, tags = f"train {stamp}", tracking.process_tags()

    # MLflow's fluent API points at this store inside the block only (tracking.use_store)
    with (
        tracking.use_store(uri, exp_id) as client,
        mlflow.start_run(run_name=run_name, experiment_id=exp_id, tags=tags) as parent,
    ):
        tracking.close_orphaned_runs(exp_id, client)
        parent_id = parent.info.run_id
        run_dir = tracking.store_folder(uri) / "refracture-runs" / parent_id
        run_dir.mkdir(parents=True, exist_ok=True)
        mlflow.log_params(
            log.run_params(cfg) | {"privacy.pseudonymised": str(pseudonymise).lower()}
        )

        features, extraction_errors, extraction = None, None, None
        manifest = None
        if cfg.has_imaging:
            features, extraction_errors, extraction = _extract(
                cfg, run_dir, progress, pseudonymiser
            )
            manifest = _manifest(cfg, pseudonymiser)
        dataset = assemble(
            clinical,
            features,
            cfg,
            clinical_source=cfg.data.clinical,
            features_source=cfg.data.manifest,
            manifest=manifest,
        )
        flow = cohort_flow(clinical, dataset, extraction_errors, cfg)

        candidates = [
            validate_candidate(name, fs, dataset, cfg, progress)
            for fs in cfg.feature_sets
            for name in cfg.models
        ]
        for cand in candidates:
            if cand.feature_set == "clinical+imaging" and dataset.harmonisation is not None:
                try:
                    cand.per_site_harmonisation = per_site_harmonisation(
                        cand.model, dataset, cfg, progress
                    )
                except (InputError, ModelError) as err:  # a side table: note it, go on
                    cand.result.notes.append(
                        "leave-one-site-out with and without harmonisation not computed: "
                        + err.one_line()
                    )
        by_key = {(c.model, c.feature_set): c for c in candidates}
        for name in cfg.models:
            clin, img = by_key.get((name, "clinical")), by_key.get((name, "clinical+imaging"))
            if clin and img:
                img.added = added_value(
                    clin.result,
                    img.result,
                    bootstrap=cfg.validation.bootstrap,
                    seed=cfg.validation.seed,
                    reasons=img.reasons,
                )
        selected = select(candidates, cfg)
        sample_size = attach_statistics(candidates, dataset, cfg)  # Riley, site meta-analysis

        stage = "logging to MLflow"
        if progress:
            progress(stage, 0, len(candidates) + 1)
        digest = log.log_parent(cfg, clinical, features, dataset, flow, run_dir, config_path)
        base_tags = tracking.run_tags(digest) | tracking.process_tags()
        mlflow.set_tags(
            {
                **base_tags,
                "refracture.estimand": dataset.estimand,
                "refracture.competing_risk": selected.result.competing_risk_note,
            }
        )
        for i, cand in enumerate(candidates, 1):
            log.log_candidate(cand, cfg, dataset, run_dir, base_tags, parent_id, digest)
            if progress:
                progress(stage, i, len(candidates) + 1)

        model_info = log.log_selected_model(
            selected,
            cfg,
            dataset,
            digest,
            site_units=extraction.site_units if extraction is not None else None,
        )
        metric = cfg.selection_metric
        value = float(selected.result.metrics[metric])
        decision = registry.register(
            model_info.model_uri,
            name=cfg.mlflow.registered_model,
            alias=cfg.mlflow.alias,
            metric=metric,
            value=value,
            score=selection_score(metric, value, cfg.outcome.horizon_days),
            description=version_description(selected, cfg),
            tags={
                "refracture.model": selected.model,
                "refracture.feature_set": selected.feature_set,
                "refracture.parent_run_id": parent_id,
                "refracture.dataset_digest": digest,
            },
            design=registry.Design.from_config(cfg, estimand=dataset.estimand),
            uncertainty=registry.Uncertainty.from_metrics(selected.result.metrics, metric),
            margin=cfg.mlflow.promote_margin,
            client=client,
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
            sample_size=sample_size,
        )
        write_table(run_dir / "summary.csv", summary_table(result))
        mlflow.log_artifact(str(run_dir / "summary.csv"))
        from refracture.report import (
            report_files,
            run_warnings,
            write_per_site,
            write_report,
        )

        result.warnings = run_warnings(result)
        per_site = write_per_site(
            result, bootstrap=cfg.validation.bootstrap, seed=cfg.validation.seed
        )
        mlflow.log_artifact(str(per_site))
        if report:
            if extraction is not None and cfg.analysis.tscore is not None:
                result.biomarkers = _biomarkers(clinical, extraction, cfg, run_dir, result)
            if progress:
                progress("writing the study report", 0, 1)
            result.report = write_report(result, cfg, extraction=extraction)
            for page in report_files(result):
                mlflow.log_artifact(str(page))
            if progress:
                progress("writing the study report", 1, 1)
        if progress:
            progress(stage, len(candidates) + 1, len(candidates) + 1)
    return result
