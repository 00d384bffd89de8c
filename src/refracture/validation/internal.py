"""Internal validation from one set of bootstrap refits: three estimates and their intervals.

Each of B refits is fitted on a resample of the development data and scored on the resample
(apparent), on the original data (test) and on the original patients the resample left out
(out of bag) (:func:`refracture.validation.bootstrap.optimism_replicate`). From those:

* ``_optcorr``, Harrell's optimism correction (Harrell, Lee & Mark 1996; Steyerberg 2019):
  apparent performance of the final model minus mean(apparent_b - test_b). Valid for regression
  models; a model that memorises its training patients (a random forest: about 63 % of the
  original patients are in each resample) scores almost as well on the original data as on
  the resample, so its optimism is under-estimated (Efron & Tibshirani 1997).
* ``_loo``, the leave-one-out bootstrap: the mean over refits of the metric on their
  out-of-bag patients. Efron & Tibshirani average a per-patient loss over the refits that left
  each patient out; C-indices, AUCs and calibration regressions are not per-patient losses, so
  each refit's out-of-bag patients are scored as one validation set and the values averaged
  (the bootstrap cross-validation of Gerds & Schumacher 2007, R's ``pec``; as Noma et al. 2021
  do for the C-statistic). Pessimistic: each refit sees about 63 % of the distinct patients.
* ``_632plus``, Efron & Tibshirani's .632+ (JASA 1997): (1 - w) apparent + w LOO with
  w = .632 / (1 - .368 R), R = (LOO - apparent) / (no-information - apparent) the relative
  overfitting rate, clipped to [0, 1] (LOO capped at the no-information value). The
  no-information value is the metric's value when predictions are unrelated to outcomes: 0.5
  for a C-index or AUC, 0 for the calibration slope, the mean over all patient x prediction
  pairs for the Brier scores; for calibration-in-the-large (intercept, O/E), which pairing
  does not change, R = 0 and .632+ is the .632 estimate.

Intervals (``_lo``, ``_hi``) contain their estimate by construction: the 2.5th and 97.5th
percentiles of the refits' apparent values, shifted so that their median falls on the estimate
(the spread Noma, Shinozaki, Iba, Teramukai & Furukawa, Stat Med 2021, use, centred; their
location shift by the mean optimism can miss its own estimate). An interval with no width (a
metric every refit reproduces exactly, such as the apparent calibration slope of an
unpenalised logistic model) is not given. How often each interval contains the truth was
measured by simulation (``scripts/coverage_optcorr.py``, docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from refracture.validation.catalogue import ESTIMATORS, MetricSpec
from refracture.validation.metrics import Evaluation, Metrics, Reasons

__all__ = [
    "INTERVAL_METHODS",
    "InternalValidation",
    "centred_interval",
    "harrell",
    "loo_bootstrap",
    "no_information",
    "plus632",
    "summarise_internal",
]

#: How each kind of interval is computed (named next to the intervals in tables).
INTERVAL_METHODS = {
    "validation": "percentile bootstrap of the validation patients, predictions fixed (not "
    "shown when it misses its estimate)",
    "internal": "2.5th-97.5th percentiles of the refits' apparent values, centred on the "
    "estimate by their median",
}


def harrell(
    apparent: float, boot_apparent: np.ndarray, boot_test: np.ndarray
) -> tuple[float, float]:
    """(estimate, optimism): apparent minus the mean of apparent_b - test_b over the refits
    where both are defined; NaN when none is."""
    diffs = np.asarray(boot_apparent, dtype=float) - np.asarray(boot_test, dtype=float)
    if not np.isfinite(diffs).any() or not np.isfinite(apparent):
        return float("nan"), float("nan")
    optimism = float(np.nanmean(diffs))
    return float(apparent) - optimism, optimism


def loo_bootstrap(boot_oob: np.ndarray) -> float:
    """The mean of the refits' out-of-bag values (NaN when none is defined)."""
    v = np.asarray(boot_oob, dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def plus632(apparent: float, loo: float, no_info: float | None) -> float:
    """Efron & Tibshirani's .632+ estimate from the apparent, LOO bootstrap and no-information
    values (see the module text); ``no_info`` None: R = 0 (the .632 estimate)."""
    if not (np.isfinite(apparent) and np.isfinite(loo)):
        return float("nan")
    rate, loo1 = 0.0, loo
    if no_info is not None and np.isfinite(no_info):
        gap, drop = no_info - apparent, loo - apparent
        if gap != 0 and drop * gap > 0:  # LOO lies on the no-information side of apparent
            rate = min(drop / gap, 1.0)
            loo1 = apparent + rate * gap
    w = 0.632 / (1.0 - 0.368 * rate)
    return float((1.0 - w) * apparent + w * loo1)


def centred_interval(
    boot_apparent: np.ndarray, estimate: float, level: float = 0.95
) -> tuple[float, float, str | None]:
    """(lower, upper, why-not): the refits' apparent-value percentiles shifted so their median
    is ``estimate``; NaN with the reason when there are fewer than two values or no spread."""
    v = np.asarray(boot_apparent, dtype=float)
    v = v[np.isfinite(v)]
    nan = float("nan")
    if not np.isfinite(estimate):
        return nan, nan, None
    if len(v) < 2:
        return nan, nan, "fewer than two bootstrap refits have this metric"
    a = (1 - level) / 2 * 100
    lo, mid, hi = np.percentile(v, [a, 50, 100 - a])
    if hi - lo <= 1e-9 * max(1.0, abs(mid)):
        return (
            nan,
            nan,
            (
                "every refit has the same apparent value (the model reproduces it on its own "
                "training data by construction), so this interval would have no width"
            ),
        )
    return float(estimate + lo - mid), float(estimate + hi - mid), None


def no_information(specs: tuple[MetricSpec, ...], ev: Evaluation) -> dict[str, float | None]:
    """Each metric's no-information value for the final model's apparent predictions."""
    out: dict[str, float | None] = {}
    for spec in specs:
        try:
            out[spec.name(ev.horizon)] = spec.no_information_value(ev)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            out[spec.name(ev.horizon)] = float("nan")
    return out


@dataclass
class InternalValidation:
    """``values``: ``m_<estimator>`` and its ``_lo``/``_hi`` for every metric and estimator;
    ``optimism``: Harrell's optimism per metric; ``reasons``: why any of them is NaN;
    ``boot_oob``: the refits' out-of-bag values (one row per refit)."""

    values: Metrics
    optimism: Metrics
    reasons: Reasons = field(default_factory=dict)
    boot_oob: pd.DataFrame = field(default_factory=pd.DataFrame)


def _why_nan(name: str, apparent_why: Reasons, boot: pd.DataFrame, what: str) -> str:
    if name in apparent_why:
        return f"on the development data: {apparent_why[name]}"
    if boot.empty:
        return "no bootstrap refit was run"
    return f"undefined in every bootstrap refit {what}"


def summarise_internal(
    names: list[str],
    apparent: tuple[Metrics, Reasons],
    no_info: dict[str, float | None],
    boot_apparent: pd.DataFrame,
    boot_test: pd.DataFrame,
    boot_oob: pd.DataFrame,
) -> InternalValidation:
    """The three estimates of every metric in ``names`` with their intervals (module text)."""
    app, app_why = apparent
    values: Metrics = {}
    optimism: Metrics = {}
    reasons: Reasons = {}
    for k in names:
        a = app.get(k, float("nan"))
        boot_a = boot_apparent[k].to_numpy(float) if k in boot_apparent else np.array([])
        est_h, optimism[k] = harrell(a, boot_a, boot_test[k].to_numpy(float) if k in boot_test
                                     else np.array([]))  # fmt: skip
        loo = loo_bootstrap(boot_oob[k].to_numpy(float)) if k in boot_oob else float("nan")
        estimates = {"optcorr": est_h, "loo": loo, "632plus": plus632(a, loo, no_info.get(k))}
        for suffix in ESTIMATORS:
            est = estimates[suffix]
            name = f"{k}_{suffix}"
            lo, hi, why_not = centred_interval(boot_a, est)
            values[name], values[f"{name}_lo"], values[f"{name}_hi"] = est, lo, hi
            if not np.isfinite(est):
                what = "on its out-of-bag patients" if suffix != "optcorr" else ""
                why = _why_nan(k, app_why, boot_apparent, what).rstrip()
                reasons.update({name: why, f"{name}_lo": why, f"{name}_hi": why})
            elif why_not:
                reasons.update({f"{name}_lo": why_not, f"{name}_hi": why_not})
    return InternalValidation(values, optimism, reasons, boot_oob)
