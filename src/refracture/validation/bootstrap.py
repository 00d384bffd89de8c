"""Bootstrap replicates, run in parallel and reproducibly.

Every replicate draws from its own seed, spawned up front from the run's seed with
``np.random.SeedSequence(seed).spawn(B)``, and results are collected in replicate order, so
the output is identical for any number of workers. Each replicate runs with one BLAS thread
(threadpoolctl), which keeps floating-point sums in the same order in and out of workers and
stops workers from oversubscribing the cores.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from refracture.errors import InputError, ModelError
from refracture.models.pipeline import RiskPipeline
from refracture.validation.metrics import Metrics, compute_metrics

T = TypeVar("T")
R = TypeVar("R")

# Seed streams: the optimism bootstrap uses SeedSequence(seed) itself; the other resampling
# schemes use their own streams so changing one never changes another.
STREAM_CI = 1
STREAM_ADDED_VALUE = 2


def replicate_seeds(seed: int, n: int, stream: int | None = None) -> list[np.random.SeedSequence]:
    root = (
        np.random.SeedSequence(seed) if stream is None else np.random.SeedSequence([seed, stream])
    )
    return root.spawn(n)


def model_seed(ss: np.random.SeedSequence) -> int:
    """An integer random_state for a replicate's model (forests, boosting, inner CV)."""
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1))


def _run_chunk(func: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # lifelines and scikit-survival warn about near-singular resamples; failures are
        # counted by the caller, so the warnings would only repeat B times.
        warnings.simplefilter("ignore")
        return [func(item) for item in chunk]


def run_parallel(
    func: Callable[[T], R],
    items: Sequence[T],
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    chunks_per_worker: int = 6,
) -> list[R]:
    """``[func(item) for item in items]`` on ``jobs`` worker processes, in order.

    ``func`` and the items must pickle (module-level functions, ``functools.partial``).
    ``progress(done, total)`` is called in this process as chunks complete.
    """
    total = len(items)
    if total == 0:
        return []
    n_chunks = max(1, min(total, jobs * chunks_per_worker))
    bounds = np.linspace(0, total, n_chunks + 1).astype(int)
    chunks = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    out: list[R] = []
    if jobs == 1:
        results: Any = (_run_chunk(func, c) for c in chunks)
    else:
        results = Parallel(n_jobs=jobs, backend="loky", return_as="generator")(
            delayed(_run_chunk)(func, c) for c in chunks
        )
    for res in results:
        out.extend(res)
        if progress is not None:
            progress(len(out), total)
    return out


Prediction = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def predict_all(
    model: RiskPipeline, X: pd.DataFrame, times: np.ndarray, estimand: str = "net"
) -> Prediction:
    """Risk by the horizon, linear predictor and the predicted curve at ``times``.

    The curve is the probability of being free of re-fracture at each time in the model's
    own estimand (``predict_survival``: S(t | x) for a net-risk model, 1 - CIF(t | x) for a
    cumulative-incidence model), scored in the evaluation's ``estimand``; None for a model
    with no curve, or one that does not end at the predicted risk at the horizon
    (``times[-1]``), which would score another quantity.
    """
    return predict_design(model, model.transform_features(X), times, estimand)


def predict_design(
    model: RiskPipeline, Xt: pd.DataFrame, times: np.ndarray, estimand: str = "net"
) -> Prediction:
    """:func:`predict_all` from the design matrix ``Xt = model.transform_features(X)``."""
    m = model.model
    risk = np.asarray(m.predict_risk(Xt), dtype=float)
    lp = np.asarray(m.linear_predictor(Xt), dtype=float)
    curve = None
    if m.supports_survival:
        curve = np.asarray(m.predict_survival(Xt, times), dtype=float)
    if curve is not None and not np.allclose(curve[:, -1], 1.0 - risk, rtol=0, atol=1e-6):
        curve = None
    return risk, lp, curve


# InputError: a resample can hold too few patients of a small scanner batch for the
# harmonisation step (the same data fitted whole, so it is this resample's failure).
_FIT_FAILURES = (ModelError, InputError, ValueError, ArithmeticError, np.linalg.LinAlgError)


def _fit_params(model: RiskPipeline, groups: np.ndarray) -> dict[str, Any]:
    """``model__groups``: the original patient of every resampled row, for a model whose
    ``fit`` takes ``groups`` (inner cross-validation that keeps a patient's copies together);
    ``model__inference=False`` for a model that can skip what only inference reads (a
    replicate only predicts)."""
    accepts = inspect.signature(model.model.fit).parameters
    params: dict[str, Any] = {}
    if "groups" in accepts:
        params["model__groups"] = groups
    if "inference" in accepts:
        params["model__inference"] = False
    return params


def optimism_replicate(
    ss: np.random.SeedSequence,
    *,
    template: RiskPipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    times: np.ndarray,
    horizon: float,
    estimand: str = "net",
) -> tuple[Metrics, Metrics] | None:
    """Harrell's bootstrap step: fit on a resample, score it there and on the original data.

    Returns (apparent on the resample, test on the original), or None if the model could not
    be fitted on this resample (counted and reported by the caller). A model whose ``fit``
    takes ``groups`` receives the original row of every resampled row.
    """
    rng = np.random.default_rng(ss)
    idx = rng.integers(0, len(y), len(y))
    model = clone(template).set_params(model__random_state=model_seed(ss))
    Xb, yb = X.iloc[idx], y[idx]
    try:
        model.fit(Xb, yb, **_fit_params(model, idx))
        Xt = model.transform_features(X)
        # Imputation, encoding and scaling act row by row with exact arithmetic, so the
        # resample's design is the original's rows idx; a scanner harmonisation step's
        # matrix products are not (their sums depend on the rows beside), so it transforms
        # the resample itself, as does multiple imputation (m stacked copies per row).
        own = model.harmoniser is not None or "impute" in model.named_steps
        Xt_b = model.transform_features(Xb) if own else Xt.iloc[idx]
        risk_b, lp_b, surv_b = predict_design(model, Xt_b, times, estimand)
        risk_o, lp_o, surv_o = predict_design(model, Xt, times, estimand)
    except _FIT_FAILURES:
        return None
    apparent, _ = compute_metrics(yb, risk_b, surv_b, times, horizon, estimand=estimand, lp=lp_b)
    test, _ = compute_metrics(y, risk_o, surv_o, times, horizon, estimand=estimand, lp=lp_o)
    return apparent, test


def resample_metrics(
    ss: np.random.SeedSequence,
    *,
    y: np.ndarray,
    risk: np.ndarray,
    lp: np.ndarray | None,
    surv: np.ndarray | None,
    times: np.ndarray,
    horizon: float,
    estimand: str = "net",
) -> Metrics:
    """Metrics of fixed predictions on a resample of the validation patients (percentile CI)."""
    rng = np.random.default_rng(ss)
    idx = rng.integers(0, len(y), len(y))
    s = None if surv is None else surv[idx]
    lp_b = None if lp is None else lp[idx]
    return compute_metrics(y[idx], risk[idx], s, times, horizon, estimand=estimand, lp=lp_b)[0]


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values (NaN if fewer than two)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return float(lo), float(hi)


def optimism_corrected(
    apparent: float, boot_apparent: np.ndarray, boot_test: np.ndarray, level: float = 0.95
) -> tuple[float, float, float, float]:
    """Harrell's optimism-corrected estimate with Noma et al.'s location-shifted interval.

    optimism = mean over replicates of (apparent on the resample - test on the original);
    estimate = ``apparent`` - optimism; interval = the percentile interval of the resamples'
    apparent values, each minus the optimism (Noma, Shinozaki, Iba, Teramukai & Furukawa,
    Stat Med 2021, "location-shifted bootstrap confidence interval"; R package predboot).
    Replicates where either value is NaN are left out of the optimism.

    Returns
    -------
    (estimate, lower, upper, optimism), NaN where undefined.
    """
    app = np.asarray(boot_apparent, dtype=float)
    diffs = app - np.asarray(boot_test, dtype=float)
    if not np.isfinite(diffs).any():
        nan = float("nan")
        return nan, nan, nan, nan
    optimism = float(np.nanmean(diffs))
    lo, hi = percentile_interval(app[np.isfinite(diffs)], level)
    return float(apparent) - optimism, lo - optimism, hi - optimism, optimism


def dispatch(item: tuple[str, np.random.SeedSequence], **workers: Callable[..., Any]) -> Any:
    """Run ``workers[kind](seed)`` for an item ``(kind, seed)``: lets different replicate kinds
    share one pool of worker processes."""
    kind, ss = item
    return workers[kind](ss)
