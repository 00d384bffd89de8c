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
from refracture.dataset import Dataset
from refracture.errors import ConfigError, InputError, ModelError
from refracture.files import write_table
from refracture.libwarnings import caught_warnings
from refracture.models import make_pipeline
from refracture.progress import Progress
from refracture.results import Candidate, TrainResult
from refracture.study.artifacts import cohort_flow, summary_table, version_description
from refracture.study.harmonisation import per_site_harmonisation
from refracture.study.inputs import StudyInputs, prepare_inputs, read_clinical
from refracture.study.selection import (
    check_selection_metric,
    select,
    selection_metric,
    selection_score,
)
from refracture.study.statistics import attach_statistics
from refracture.validation import added_value, validate

__all__ = ["VALIDATION_UNSEEN_BATCH", "read_clinical", "train", "validate_candidate"]


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

    a, roles = cfg.analysis, cfg.role_columns()
    out = run_dir / "biomarkers"
    try:
        analysis = run_analysis(
            clinical, extraction.features, extraction.vertebrae,
            tscore=roles["tscore"], age=roles.get("age"), sex=roles.get("sex"),
            bmi=roles.get("bmi"), site=a.site, batch=a.batch,
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
            internal=vcfg.internal,
            risk_groups=cfg.risk_groups,
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
    register: bool = True,
    exclude_invalid: bool = False,
) -> TrainResult:
    """Run a whole training job as the config says (see module docstring).

    The inputs are checked first (:func:`refracture.study.inputs.prepare_inputs`): a run that
    would be refused leaves nothing in MLflow. ``pseudonymise``: replace every patient_id by
    its keyed pseudonym before anything is computed, so no output, artifact or MLflow run
    carries the site's own IDs (:mod:`refracture.privacy`; the key comes from the
    environment). ``register=False`` logs the selected model in its run without registering
    a version (exploratory runs). ``exclude_invalid`` leaves out every patient with a
    problem, each with its reason in the cohort flow, instead of refusing.
    """
    import mlflow

    from refracture import tracking
    from refracture.privacy import Pseudonymiser

    check_selection_metric(cfg)
    pseudonymiser = Pseudonymiser.from_env() if pseudonymise else None
    uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    store = tracking.store_folder(uri)
    inputs = prepare_inputs(
        cfg,
        store=store,
        progress=progress,
        pseudonymiser=pseudonymiser,
        exclude_invalid=exclude_invalid,
        pictures=report,
    )
    try:
        exp_id = tracking.setup(uri, cfg.mlflow.experiment)
    except BaseException:
        inputs.discard()
        raise
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    run_name, tags = f"train {stamp}", tracking.process_tags()

    # MLflow's fluent API points at this store inside the block only (tracking.use_store)
    with (
        tracking.use_store(uri, exp_id) as client,
        mlflow.start_run(run_name=run_name, experiment_id=exp_id, tags=tags) as parent,
    ):
        tracking.close_orphaned_runs(exp_id, client)
        try:
            return _train_in_run(
                cfg, inputs, parent.info.run_id, exp_id, uri, config_path, progress,
                report=report, register=register, pseudonymised=pseudonymise, client=client,
            )  # fmt: skip
        except KeyboardInterrupt:
            # Ctrl-C: the run was stopped on purpose, not failed (the terminal says how to
            # start again; the feature cache keeps the measured patients).
            mlflow.end_run(status="KILLED")
            raise


def _train_in_run(
    cfg: RunConfig,
    inputs: StudyInputs,
    parent_id: str,
    exp_id: str,
    uri: str,
    config_path: str | Path | None,
    progress: Progress | None,
    *,
    report: bool,
    register: bool,
    pseudonymised: bool,
    client: Any = None,
) -> TrainResult:
    import mlflow

    from refracture import tracking
    from refracture.study import logging as log
    from refracture.study.inputs import runs_folder

    run_dir = runs_folder(tracking.store_folder(uri)) / parent_id
    inputs.move_to(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mlflow.log_params(log.run_params(cfg) | {"privacy.pseudonymised": str(pseudonymised).lower()})
    dataset, clinical, features = inputs.dataset, inputs.clinical, inputs.features
    flow = cohort_flow(clinical, dataset, inputs.extraction_errors, cfg)
    library: list[str] = []
    with caught_warnings(library):
        candidates = _validate_all(cfg, dataset, progress)
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
    extraction = inputs.extraction
    model_info = log.log_selected_model(
        selected, cfg, dataset, digest,
        site_units=extraction.site_units if extraction is not None else None,
    )  # fmt: skip
    decision = _register(
        cfg, selected, dataset, model_info.model_uri, parent_id, digest, register, client
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
        selection_metric=selection_metric(cfg),
        decision=decision,
        model_uri=(
            f"models:/{cfg.mlflow.registered_model}/{decision.version}"
            if register
            else model_info.model_uri
        ),
        dataset=dataset,
        flow=flow,
        sample_size=sample_size,
    )
    _finish(result, cfg, clinical, extraction, report, progress, [*inputs.notes, *library])
    if progress:
        progress(stage, len(candidates) + 1, len(candidates) + 1)
    return result


def _validate_all(cfg: RunConfig, dataset: Dataset, progress: Progress | None) -> list[Candidate]:
    """Every model on every feature set, validated; the added value of imaging."""
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
    return candidates


def _register(
    cfg: RunConfig,
    selected: Candidate,
    dataset: Dataset,
    model_uri: str,
    parent_id: str,
    digest: str,
    register: bool,
    client: Any = None,
) -> Any:
    """Register the selected model and move the alias if it is better; with ``register``
    False, a decision saying the model stays in its run."""
    from refracture import registry

    metric = selection_metric(cfg)
    value = float(selected.result.metrics[metric])
    if not register:
        return registry.AliasDecision(
            model_name=cfg.mlflow.registered_model, version="", alias=cfg.mlflow.alias,
            promoted=False, previous_version=None, previous_value=None, value=value,
            metric=metric,
            reason=f"not registered (train --no-register); the model is logged in its run as "
            f"{model_uri}",
        )  # fmt: skip
    return registry.register(
        model_uri,
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


def _finish(
    result: TrainResult,
    cfg: RunConfig,
    clinical: pd.DataFrame,
    extraction: Any,
    report: bool,
    progress: Progress | None,
    said: list[str],
) -> None:
    """summary.csv, per-site table, biomarker analysis and the study report, logged; ``said``:
    what the input check and the fitting libraries had to say, added to the run's warnings."""
    import mlflow

    from refracture.report import report_files, run_warnings, write_per_site, write_report

    run_dir = result.run_dir
    write_table(run_dir / "summary.csv", summary_table(result))
    mlflow.log_artifact(str(run_dir / "summary.csv"))
    result.warnings = run_warnings(result) + said
    per_site = write_per_site(result, bootstrap=cfg.validation.bootstrap, seed=cfg.validation.seed)
    mlflow.log_artifact(str(per_site))
    if not report:
        return
    if extraction is not None and cfg.role_columns().get("tscore") is not None:
        result.biomarkers = _biomarkers(clinical, extraction, cfg, run_dir, result)
    if progress:
        progress("writing the study report", 0, 1)
    result.report = write_report(result, cfg, extraction=extraction)
    for page in report_files(result):
        mlflow.log_artifact(str(page))
    if progress:
        progress("writing the study report", 1, 1)
