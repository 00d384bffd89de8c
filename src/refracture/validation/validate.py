"""Fit, validate and bootstrap one model on one feature set (TRIPOD-style internal and
external validation).

For a model and a feature set, :func:`validate`

1. splits the patients (:mod:`refracture.validation.splits`; by default none are held out and,
   with re-fractures at two or more sites, each site is predicted by the model refitted on the
   others) and fits the pipeline on the development data of each fold, predicting the held-out
   patients; the final model is fitted on all development patients;
2. computes the metrics on the validation predictions, with percentile 95 % CIs from a
   bootstrap of the validation patients (predictions fixed);
3. refits the whole pipeline - imputation, encoding, penalty choice, forests - on B resamples
   of the development data and scores each refit on its resample, on the original development
   data and on the patients it left out; from those one set of refits come Harrell's
   optimism-corrected, the leave-one-out bootstrap and the .632+ estimates of every metric
   with intervals that contain them (:mod:`refracture.validation.internal`), and the stability
   of the predictions (:mod:`refracture.validation.stability`);
4. for a bagged forest, scores the final forest's out-of-bag predictions (``cindex_oob``).

Every metric is in the estimand of the model (``net`` or ``cif``: the config's
``outcome.estimand``, unset: ``cif`` when the outcome has deaths) unless ``estimand`` says
otherwise, and estimates its censoring distribution on the patients it is computed on. A
metric the data cannot support is NaN, and ``ValidationResult.reasons`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from sklearn.base import clone

from refracture.config import ValidationConfig
from refracture.errors import ConfigError, InputError, ModelError
from refracture.ids import PATIENT_ID
from refracture.models.outcome import EVENT, check_estimand, check_outcome, estimand_note
from refracture.models.pipeline import RiskPipeline, fix_categories
from refracture.models.tables import coefficients_table, ph_test
from refracture.progress import Progress
from refracture.validation.bootstrap import (
    STREAM_CI,
    Replicate,
    dispatch,
    optimism_replicate,
    percentile_interval,
    predict_all,
    replicate_seeds,
    resample_metrics,
    run_parallel,
)
from refracture.validation.catalogue import INTERNAL_AUTO, metric_specs
from refracture.validation.concordance import concordance, ranking_score
from refracture.validation.death import death_metrics, death_risk
from refracture.validation.internal import no_information, summarise_internal
from refracture.validation.metrics import Evaluation, Metrics, Reasons, compute_metrics, time_grid
from refracture.validation.result import ValidationResult
from refracture.validation.splits import Fold, SplitPlan, plan_split
from refracture.validation.stability import stability_metrics
from refracture.validation.undefined import Undefined

__all__ = ["ValidationResult", "internal_estimator", "validate"]


def internal_estimator(setting: str, model: RiskPipeline) -> str:
    """The estimator suffix ``validation.internal`` means for this model: ``auto`` is .632+
    for a tree ensemble (it memorises its training patients) and Harrell's for the others."""
    if setting in ("auto", None):
        kind = "tree_ensemble" if model.model.tree_ensemble else "regression"
        return INTERNAL_AUTO[kind]
    return {"harrell": "optcorr"}.get(setting, setting)


def _fit(template: RiskPipeline, X: pd.DataFrame, y: np.ndarray, what: str) -> RiskPipeline:
    model = clone(template)
    try:
        return model.fit(X, y)
    except ModelError as err:
        raise ModelError(f"{template.model_name} on the {what}: {err.message}") from None


def _per_fold(
    y: np.ndarray, parts: list[tuple], times: np.ndarray, horizon: float, estimand: str
) -> pd.DataFrame:
    rows = []
    for fold, risk, lp, surv in parts:
        yv = y[fold.valid]
        m, _ = compute_metrics(yv, risk, surv, times, horizon, estimand=estimand, lp=lp)
        rows.append(
            {
                "fold": fold.label,
                "n": len(fold.valid),
                "events": int((yv["event"] == EVENT).sum()),
                "events_by_horizon": int(((yv["event"] == EVENT) & (yv["time"] <= horizon)).sum()),
                **m,
            }
        )
    return pd.DataFrame(rows)


def _fit_folds(
    template: RiskPipeline, X: pd.DataFrame, y: np.ndarray, plan: SplitPlan, predict, notes: list
) -> tuple[list[tuple], list[np.ndarray | None], RiskPipeline | None, SplitPlan]:
    """Fit every fold and predict its held-out patients (and, under ``cif``, their risk of
    death). Internal-external folds of the ``none`` split that cannot be fitted are dropped
    with a note (the bootstrap still validates); any other fold's failure is the run's."""
    parts: list[tuple[Fold, np.ndarray, np.ndarray, np.ndarray | None]] = []
    deaths: list[np.ndarray | None] = []  # risk of death of the validation rows (cif models)
    estimand = predict.keywords["estimand"]
    final = None
    try:
        for fold in plan.folds:
            model = _fit(template, X.iloc[fold.train], y[fold.train], f"data without {fold.label}"
                         if plan.per_site else f"training data of {fold.label}")  # fmt: skip
            parts.append((fold, *predict(model, X.iloc[fold.valid])))
            deaths.append(death_risk(model, X.iloc[fold.valid], estimand))
            if plan.kind in ("random", "site"):
                final = model  # the development data are this fold's training data
    except (ModelError, InputError) as err:
        if plan.kind != "none":
            raise
        notes.append(f"internal-external validation not done: {err.one_line()}")
        n = len(plan.development)
        desc = f"no hold-out: internal validation by bootstrap on all {n} patients"
        plan = SplitPlan("none", desc, plan.development, [], "apparent")
        parts, deaths = [], []
    return parts, deaths, final, plan


def _oob_cindex(final: RiskPipeline, X: pd.DataFrame, y: np.ndarray, ev_args: dict) -> float:
    """The run's C-index of the final forest's out-of-bag risks on its development patients."""
    Xt = final.transform_features(X)
    risk = np.asarray(final.model.oob_risk(Xt, y), dtype=float)
    try:
        return concordance(y, ranking_score(risk, None), ev_args["horizon"], ev_args["estimand"])
    except Undefined:
        return float("nan")


def validate(
    estimator: RiskPipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    site: pd.Series | np.ndarray | None = None,
    split: str = "none",
    test_fraction: float = 0.3,
    test_site: str | None = None,
    folds: int = 5,
    bootstrap: int = 200,
    seed: int = 0,
    jobs: int = 1,
    feature_set: str = "",
    progress: Progress | None = None,
    stage: str = "validating",
    estimand: str | None = None,
    internal: str = "auto",
    risk_groups: Sequence[float] = (0.10, 0.20),
) -> ValidationResult:
    """Develop and validate an unfitted ``estimator`` on ``X``, ``y``.

    Parameters
    ----------
    estimator : an unfitted :class:`~refracture.models.RiskPipeline`
        (:func:`~refracture.models.make_pipeline`); its horizon is the metrics' horizon.
    X : DataFrame, shape (n_patients, n_columns)
        The covariates (and imaging features) the pipeline takes, one row per patient.
    y : structured array, shape (n_patients,)
        The outcome (:func:`~refracture.models.make_outcome`).
    site : array of str, shape (n_patients,), optional
        Each patient's hospital (for ``split="site"``, ``"leave_one_site_out"`` and the
        internal-external validation of ``"none"``).
    split : ``none`` | ``random`` | ``site`` | ``leave_one_site_out`` | ``kfold``
    test_fraction, test_site, folds, seed : the split's settings.
    bootstrap : refits of the internal validation and resamples of the CI bootstrap (0: none).
    jobs : worker processes for the bootstrap (1: in this process).
    feature_set : a label for the result (``clinical``, ``clinical+imaging``).
    progress : ``progress(stage, done, total)`` as bootstrap replicates finish (2 B in all).
    estimand : ``net`` | ``cif``, the estimand every metric reads the outcome in; by default
        the estimator's own (a net-risk model can be judged against the cumulative incidence).
    internal : ``auto`` | ``harrell`` | ``632plus`` | ``loo``: the internal-validation estimate
        the result's tables show (all three are computed).
    risk_groups : the risk thresholds the classification instability is measured at.

    Returns
    -------
    ValidationResult
    """
    y = check_outcome(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    try:
        vcfg = ValidationConfig(
            split=split, test_fraction=test_fraction, test_site=test_site, folds=folds,
            bootstrap=bootstrap, seed=seed, jobs=jobs, internal=internal,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(" ".join(str(err).split())) from None
    horizon = float(estimator.horizon)
    # an 'auto' estimand is decided once, from every patient, so all refits share it
    template = fix_categories(clone(estimator).resolve_estimand(y), X)
    site = np.full(len(y), "all", dtype=object) if site is None else np.asarray(site)
    ids = np.asarray(X.index, dtype=object)
    times = time_grid(horizon)
    estimand = check_estimand(estimand or template.estimand)
    predict = partial(predict_all, times=times, estimand=estimand)
    score = partial(compute_metrics, times=times, horizon=horizon, estimand=estimand)

    notes: list[str] = []
    parts, deaths, final, plan = _fit_folds(
        template, X, y, plan_split(y, site, vcfg, horizon), predict, notes
    )
    dev = plan.development
    if final is None:
        final = _fit(template, X.iloc[dev], y[dev], "development data")
    risk_dev, lp_dev, surv_dev = predict(final, X.iloc[dev])
    if not parts:
        parts = [(Fold("all", dev, dev), risk_dev, lp_dev, surv_dev)]
        deaths = [death_risk(final, X.iloc[dev], estimand)]
    predictions, (y_v, risk_v, lp_v, surv_v) = _pooled(parts, ids, site, y, plan.role)
    if all(d is not None for d in deaths):
        order = np.argsort(np.concatenate([p[0].valid for p in parts]), kind="mergesort")
        predictions["risk_death"] = np.concatenate(deaths)[order]  # type: ignore[arg-type]

    # every metric estimates its censoring distribution on the patients it is computed on
    valid_metrics, valid_why = score(y_v, risk_v, surv_v, lp=lp_v)
    ev_dev = Evaluation(y[dev], risk_dev, surv_dev, times, horizon, estimand, lp_dev)
    apparent, apparent_why = score(y[dev], risk_dev, surv_dev, lp=lp_dev)
    per_fold = _per_fold(y, parts, times, horizon, estimand) if len(parts) > 1 else None
    per_site = None
    if plan.per_site and per_fold is not None:
        per_site = per_fold.rename(columns={"fold": "site"})

    B = vcfg.bootstrap
    resampled = metric_specs(resampled=True)
    common = {"times": times, "horizon": horizon, "estimand": estimand, "specs": resampled}
    items = [("optimism", ss) for ss in replicate_seeds(vcfg.seed, B)]
    items += [("ci", ss) for ss in replicate_seeds(vcfg.seed, B, STREAM_CI)]
    worker = partial(
        dispatch,
        optimism=partial(optimism_replicate, template=template, X=X.iloc[dev], y=y[dev], **common),
        ci=partial(resample_metrics, y=y_v, risk=risk_v, lp=lp_v, surv=surv_v, **common),
    )

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    tick(0, max(len(items), 1))
    results = run_parallel(worker, items, vcfg.jobs, tick)
    names = [s.name(horizon) for s in resampled]
    done: list[Replicate] = [r for r in results[:B] if r is not None]
    frame = lambda rows: pd.DataFrame(rows, columns=names)  # noqa: E731
    boot_app = frame([r.apparent for r in done])
    boot_test = frame([r.test for r in done])
    inside = summarise_internal(
        names, (apparent, apparent_why), no_information(resampled, ev_dev),
        boot_app, boot_test, frame([r.oob for r in done]),
    )  # fmt: skip
    metrics, reasons = _validation_intervals(
        (valid_metrics, valid_why), pd.DataFrame(results[B:], columns=names), names
    )
    metrics |= inside.values
    reasons |= inside.reasons
    if "risk_death" in predictions:  # O/E of death next to re-fracture's
        death_values, death_why = death_metrics(y_v, predictions["risk_death"], horizon)
        metrics |= death_values
        reasons |= death_why
    boot_risk = np.array([r.risk for r in done]).reshape(len(done), len(dev))
    metrics |= stability_metrics(risk_dev, boot_risk, risk_groups)
    metrics["n_development"] = float(len(dev))
    if final.model.has_oob_predictions:
        metrics["cindex_oob"] = _oob_cindex(final, X.iloc[dev], y[dev], common)

    n_failed = B - len(done)
    notes += _notes(valid_why, n_failed, B)
    return ValidationResult(
        model_name=template.model_name,
        feature_set=feature_set,
        features=list(X.columns),
        horizon=horizon,
        split=plan.description,
        split_kind=plan.kind,
        metrics=metrics,
        apparent=apparent,
        optimism=inside.optimism,
        final_model=final,
        predictions=predictions,
        per_site=per_site,
        per_fold=per_fold,
        n_train=len(dev),
        n_valid=len(y_v),
        events_train=int((y[dev]["event"] == EVENT).sum()),
        events_valid=int((y_v["event"] == EVENT).sum()),
        development_ids=[str(i) for i in ids[dev]],
        y_development=y[dev].copy(),
        coefficients=coefficients_table(final) if final.model.has_coefficients else None,
        ph_test=ph_test(final, X.iloc[dev], y[dev]) if final.model.has_ph_test else None,
        bootstrap=B,
        n_boot_failed=n_failed,
        boot_apparent=boot_app,
        boot_test=boot_test,
        times=times,
        estimand=estimand,
        competing_risk_note=estimand_note(estimand),
        reasons=reasons,
        notes=notes,
        internal=internal_estimator(vcfg.internal, final),
        boot_oob=inside.boot_oob,
        development_risk=risk_dev,
        boot_risk=boot_risk,
        boot_drawn=np.array([r.drawn for r in done], dtype=np.uint16).reshape(len(done), len(dev)),
        validation_role=plan.role,
    )


def _pooled(
    parts: list[tuple], ids: np.ndarray, site: np.ndarray, y: np.ndarray, role: str
) -> tuple[pd.DataFrame, tuple]:
    """The validation predictions of every fold in patient order, as a table and as arrays
    (outcome, risk, linear predictor, curve or None)."""
    rows = np.concatenate([p[0].valid for p in parts])
    order = np.argsort(rows, kind="mergesort")
    rows = rows[order]
    risk_v = np.concatenate([p[1] for p in parts])[order]
    lp_v = np.concatenate([p[2] for p in parts])[order]
    has_surv = all(p[3] is not None for p in parts)
    surv_v = np.concatenate([p[3] for p in parts])[order] if has_surv else None
    fold_of = np.concatenate([[p[0].label] * len(p[0].valid) for p in parts])[order]
    y_v = y[rows]
    predictions = pd.DataFrame(
        {
            PATIENT_ID: ids[rows],
            "site": site[rows],
            "risk": risk_v,
            "lp": lp_v,
            "time": y_v["time"],
            "event": y_v["event"].astype(int),
            "fold": fold_of,
            "role": role,
        }
    )
    return predictions, (y_v, risk_v, lp_v, surv_v)


def _notes(valid_why: Reasons, n_failed: int, B: int) -> list[str]:
    """What a reader should know: failed refits and NaN metrics."""
    notes = []
    if n_failed:
        notes.append(f"{n_failed} of {B} bootstrap refits failed and were left out")
    notes += [f"{k} is NaN: {why}" for k, why in valid_why.items()]
    return notes


def _validation_intervals(
    valid: tuple[Metrics, Reasons], boot_ci: pd.DataFrame, names: list[str]
) -> tuple[Metrics, Reasons]:
    """Validation-data values with their percentile CIs (resampled metrics only; a CI that
    misses its estimate is not given), and the reason for every NaN among them."""
    values, why = valid
    metrics: Metrics = dict(values)
    reasons: Reasons = dict(why)
    for k in names:
        lo, hi = percentile_interval(boot_ci[k].to_numpy(float)) if k in boot_ci else (np.nan,) * 2
        why_ci = why.get(k) or (
            "no bootstrap resample was run"
            if boot_ci.empty
            else "undefined in the bootstrap resamples of the validation patients"
        )
        if np.isfinite(lo) and np.isfinite(values[k]) and not lo <= values[k] <= hi:
            lo = hi = float("nan")
            why_ci = (
                "the percentile interval of the resamples misses the estimate (a skewed "
                "resampling distribution), so it is not given"
            )
        metrics[f"{k}_lo"], metrics[f"{k}_hi"] = lo, hi
        if not np.isfinite(lo):
            reasons[f"{k}_lo"] = reasons[f"{k}_hi"] = why_ci
    return metrics, reasons
