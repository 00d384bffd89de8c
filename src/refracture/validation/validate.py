"""Fit, validate and bootstrap one model on one feature set (TRIPOD-style internal and
external validation).

For a model and a feature set, :func:`validate`

1. splits the patients (:mod:`refracture.validation.splits`) and fits the pipeline on the
   development data of each fold, predicting the held-out patients;
2. computes the metrics on the validation predictions, with percentile 95 % CIs from a
   bootstrap of the validation patients (predictions fixed);
3. runs Harrell's bootstrap on the development data (Harrell, Lee & Mark 1996; Steyerberg
   2019 ch. 17): in each of B resamples the whole pipeline - imputation, encoding, penalty
   choice - is refitted, scored on the resample (apparent) and on the original data (test);
   the mean difference is the optimism, subtracted from the apparent performance of the final
   model. Its 95 % CI is the location-shifted percentile interval of Noma et al. (Stat Med
   2021): the percentiles of the bootstrap apparent values, shifted by the optimism.

Every metric is in the estimand of the model (``net`` or ``cif``: the config's
``outcome.estimand``, unset: ``cif`` when the outcome has deaths) unless ``estimand`` says
otherwise, and estimates its censoring distribution on the patients it is computed on. A
metric the data cannot support is NaN, and ``ValidationResult.reasons`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from sklearn.base import clone

from refracture.config import ValidationConfig
from refracture.errors import ConfigError, ModelError
from refracture.ids import PATIENT_ID
from refracture.models.outcome import (
    EVENT,
    check_estimand,
    check_outcome,
    estimand_note,
    make_outcome,
)
from refracture.models.pipeline import RiskPipeline, fix_categories
from refracture.models.tables import coefficients_table, ph_test
from refracture.progress import Progress
from refracture.validation.bootstrap import (
    STREAM_CI,
    dispatch,
    optimism_corrected,
    optimism_replicate,
    percentile_interval,
    predict_all,
    replicate_seeds,
    resample_metrics,
    run_parallel,
)
from refracture.validation.death import death_metrics, death_risk
from refracture.validation.metrics import Metrics, Reasons, compute_metrics, metric_names, time_grid
from refracture.validation.splits import Fold, plan_split

__all__ = ["ValidationResult", "validate"]


@dataclass
class ValidationResult:
    """Everything one model x feature set validation produced.

    ``metrics`` holds, per metric name ``m``: ``m`` (validation data), ``m_lo`` /
    ``m_hi`` (percentile 95 % CI, bootstrap of the validation patients), ``m_optcorr``
    (apparent minus Harrell's bootstrap optimism, development data) and ``m_optcorr_lo`` /
    ``m_optcorr_hi`` (location-shifted percentile CI, Noma 2021). ``reasons`` maps every NaN
    entry of ``metrics`` to why the data could not support it; ``estimand`` is ``net`` or
    ``cif``.
    """

    model_name: str
    feature_set: str
    features: list[str]
    horizon: float
    split: str
    split_kind: str
    metrics: dict[str, float]
    apparent: dict[str, float]
    optimism: dict[str, float]
    final_model: RiskPipeline
    predictions: pd.DataFrame
    per_site: pd.DataFrame | None
    per_fold: pd.DataFrame | None
    n_train: int
    n_valid: int
    events_train: int
    events_valid: int
    development_ids: list[str]
    y_development: np.ndarray
    coefficients: pd.DataFrame | None
    ph_test: pd.DataFrame | None
    bootstrap: int
    n_boot_failed: int
    boot_apparent: pd.DataFrame
    boot_test: pd.DataFrame
    times: np.ndarray
    estimand: str = "net"
    competing_risk_note: str = field(default_factory=lambda: estimand_note("net"))
    reasons: Reasons = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        c = self.metrics.get("cindex_harrell", float("nan"))
        return (
            f"ValidationResult({self.model_name!r}, {self.feature_set!r}, "
            f"split={self.split_kind!r}, n_train={self.n_train}, n_valid={self.n_valid}, "
            f"cindex_harrell={c:.3f})"
        )

    def metrics_frame(self) -> pd.DataFrame:
        """One row per metric: validation value and 95% CI, apparent value, optimism,
        optimism-corrected value and its 95% CI (a tidy table)."""
        m = self.metrics
        rows = []
        for name in metric_names(self.horizon):
            rows.append(
                {
                    "metric": name,
                    "value": m.get(name, np.nan),
                    "lower95": m.get(f"{name}_lo", np.nan),
                    "upper95": m.get(f"{name}_hi", np.nan),
                    "apparent": self.apparent.get(name, np.nan),
                    "optimism": self.optimism.get(name, np.nan),
                    "optcorr": m.get(f"{name}_optcorr", np.nan),
                    "optcorr_lower95": m.get(f"{name}_optcorr_lo", np.nan),
                    "optcorr_upper95": m.get(f"{name}_optcorr_hi", np.nan),
                }
            )
        return pd.DataFrame(rows)

    @property
    def y_valid(self) -> np.ndarray:
        """Outcome of the validation patients, in ``predictions`` order."""
        return make_outcome(
            self.predictions["event"].to_numpy(), self.predictions["time"].to_numpy()
        )

    def summary(self) -> dict[str, object]:
        """Flat description for logging (parameters, counts, notes)."""
        return {
            "model": self.model_name,
            "feature_set": self.feature_set,
            "split": self.split,
            "n_train": self.n_train,
            "n_valid": self.n_valid,
            "events_train": self.events_train,
            "events_valid": self.events_valid,
            "bootstrap": self.bootstrap,
            "n_boot_failed": self.n_boot_failed,
            "estimand": self.estimand,
            "competing_risks": self.competing_risk_note,
            "notes": "; ".join(self.notes),
        }


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


def validate(
    estimator: RiskPipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    site: pd.Series | np.ndarray | None = None,
    split: str = "random",
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
        Each patient's hospital (needed for ``split="site"`` and ``"leave_one_site_out"``).
    split : ``random`` | ``site`` | ``leave_one_site_out`` | ``kfold`` | ``none``
    test_fraction, test_site, folds, seed : the split's settings.
    bootstrap : replicates of Harrell's optimism bootstrap and of the CI bootstrap (0: none).
    jobs : worker processes for the bootstrap (1: in this process).
    feature_set : a label for the result (``clinical``, ``clinical+imaging``).
    progress : ``progress(stage, done, total)`` as bootstrap replicates finish (2 B in all).
    estimand : ``net`` | ``cif``, the estimand every metric reads the outcome in; by default
        the estimator's own (a net-risk model can be judged against the cumulative incidence).

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
            bootstrap=bootstrap, seed=seed, jobs=jobs,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(" ".join(str(err).split())) from None
    horizon = float(estimator.horizon)
    template = fix_categories(clone(estimator), X)
    model_name = template.model_name
    cols = list(X.columns)
    site_arr = np.full(len(y), "all", dtype=object) if site is None else np.asarray(site)
    ids = np.asarray(X.index, dtype=object)
    plan = plan_split(y, site_arr, vcfg, horizon)
    times = time_grid(horizon)
    dev = plan.development
    site = site_arr

    estimand = check_estimand(estimand or template.estimand)
    predict = partial(predict_all, times=times, estimand=estimand)
    score = partial(compute_metrics, times=times, horizon=horizon, estimand=estimand)

    parts: list[tuple[Fold, np.ndarray, np.ndarray, np.ndarray | None]] = []
    deaths: list[np.ndarray | None] = []  # risk of death of the validation rows (cif models)
    final: RiskPipeline | None = None
    for fold in plan.folds:
        model = _fit(template, X.iloc[fold.train], y[fold.train], f"training data of {fold.label}")
        parts.append((fold, *predict(model, X.iloc[fold.valid])))
        deaths.append(death_risk(model, X.iloc[fold.valid], estimand))
        if plan.kind in ("random", "site"):
            final = model  # the development data are this fold's training data
    if final is None:
        final = _fit(template, X.iloc[dev], y[dev], "development data")
    risk_dev, lp_dev, surv_dev = predict(final, X.iloc[dev])
    if plan.kind == "none":
        parts = [(Fold("all", dev, dev), risk_dev, lp_dev, surv_dev)]
        deaths = [death_risk(final, X.iloc[dev], estimand)]

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
            "role": plan.role,
        }
    )
    if all(d is not None for d in deaths):
        predictions["risk_death"] = np.concatenate(deaths)[order]  # type: ignore[arg-type]

    # every metric estimates its censoring distribution on the patients it is computed on
    valid_metrics, valid_why = score(y_v, risk_v, surv_v, lp=lp_v)
    apparent, apparent_why = score(y[dev], risk_dev, surv_dev, lp=lp_dev)
    per_fold = _per_fold(y, parts, times, horizon, estimand) if len(parts) > 1 else None
    per_site = None
    if plan.kind == "leave_one_site_out" and per_fold is not None:
        per_site = per_fold.rename(columns={"fold": "site"})

    B = vcfg.bootstrap
    items = [("optimism", ss) for ss in replicate_seeds(vcfg.seed, B)]
    items += [("ci", ss) for ss in replicate_seeds(vcfg.seed, B, STREAM_CI)]
    common = {"times": times, "horizon": horizon, "estimand": estimand}
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
    names = metric_names(horizon)
    done = [r for r in results[:B] if r is not None]
    boot_app = pd.DataFrame([a for a, _ in done], columns=names)
    boot_test = pd.DataFrame([t for _, t in done], columns=names)
    boot_ci = pd.DataFrame(results[B:], columns=names)
    n_failed = B - len(done)
    metrics, optimism, reasons = _summarise(
        names, (valid_metrics, valid_why), (apparent, apparent_why), boot_ci, boot_app, boot_test
    )

    if "risk_death" in predictions:  # O/E of death next to re-fracture's
        death_values, death_why = death_metrics(y_v, predictions["risk_death"], horizon)
        metrics |= death_values
        reasons |= death_why
    notes = _notes(names, metrics, valid_why, n_failed, B)
    coefficients = coefficients_table(final) if final.model.has_coefficients else None
    ph = ph_test(final, X.iloc[dev], y[dev]) if final.model.has_ph_test else None

    return ValidationResult(
        model_name=model_name,
        feature_set=feature_set,
        features=cols,
        horizon=horizon,
        split=plan.description,
        split_kind=plan.kind,
        metrics=metrics,
        apparent=apparent,
        optimism=optimism,
        final_model=final,
        predictions=predictions,
        per_site=per_site,
        per_fold=per_fold,
        n_train=len(dev),
        n_valid=len(rows),
        events_train=int((y[dev]["event"] == EVENT).sum()),
        events_valid=int((y_v["event"] == EVENT).sum()),
        development_ids=[str(i) for i in ids[dev]],
        y_development=y[dev].copy(),
        coefficients=coefficients,
        ph_test=ph,
        bootstrap=B,
        n_boot_failed=n_failed,
        boot_apparent=boot_app,
        boot_test=boot_test,
        times=times,
        estimand=estimand,
        competing_risk_note=estimand_note(estimand),
        reasons=reasons,
        notes=notes,
    )


def _notes(
    names: list[str], metrics: Metrics, valid_why: Reasons, n_failed: int, B: int
) -> list[str]:
    """What a reader should know: failed refits, NaN metrics and intervals off their estimate."""
    notes = []
    if n_failed:
        notes.append(f"{n_failed} of {B} bootstrap refits failed and were left out")
    notes += [f"{k} is NaN: {why}" for k, why in valid_why.items()]
    outside = [
        k
        for k in names
        if np.isfinite(metrics[f"{k}_optcorr_lo"])
        and not metrics[f"{k}_optcorr_lo"] <= metrics[f"{k}_optcorr"] <= metrics[f"{k}_optcorr_hi"]
    ]
    if outside:
        notes.append(
            f"the optimism-corrected {', '.join(outside)} lie outside their 95% intervals: the "
            "model's apparent performance on bootstrap resamples differs systematically from "
            "that on the original data (a forest or a tuned penalty fits duplicated patients), "
            "so the location-shifted interval is off-centre"
        )
    return notes


def _summarise(
    names: list[str],
    valid: tuple[Metrics, Reasons],
    apparent: tuple[Metrics, Reasons],
    boot_ci: pd.DataFrame,
    boot_app: pd.DataFrame,
    boot_test: pd.DataFrame,
) -> tuple[Metrics, Metrics, Reasons]:
    """Validation values with percentile CIs, optimism-corrected values with Noma's interval,
    and the reason for every NaN among them."""
    (values, why), (app, app_why) = valid, apparent
    metrics: Metrics = {}
    optimism: Metrics = {}
    reasons: Reasons = {}
    for k in names:
        metrics[k] = values[k]
        metrics[f"{k}_lo"], metrics[f"{k}_hi"] = percentile_interval(boot_ci[k].to_numpy())
        est, lo, hi, optimism[k] = optimism_corrected(
            app[k], boot_app[k].to_numpy(), boot_test[k].to_numpy()
        )
        metrics[f"{k}_optcorr"], metrics[f"{k}_optcorr_lo"], metrics[f"{k}_optcorr_hi"] = (
            (est, lo, hi) if np.isfinite(app[k]) else (float("nan"),) * 3
        )
        ci_why = why.get(k) or (
            "no bootstrap resample was run"
            if boot_ci.empty
            else "undefined in the bootstrap resamples of the validation patients"
        )
        opt_why = (
            f"on the development data: {app_why[k]}"
            if k in app_why
            else "no bootstrap resample was run"
            if boot_app.empty
            else "undefined in every bootstrap resample of the development data"
        )
        candidates = {"": why.get(k, "undefined on these data"), "_lo": ci_why, "_hi": ci_why}
        candidates |= {s: opt_why for s in ("_optcorr", "_optcorr_lo", "_optcorr_hi")}
        for suffix, reason in candidates.items():
            if not np.isfinite(metrics[f"{k}{suffix}"]):
                reasons[f"{k}{suffix}"] = reason
    return metrics, optimism, reasons
