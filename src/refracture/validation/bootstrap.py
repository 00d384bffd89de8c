"""Bootstrap replicates, run in parallel and reproducibly.

Every replicate draws from its own seed, spawned up front from the run's seed with
``np.random.SeedSequence(seed).spawn(B)``, and results are collected in replicate order, so
the output is identical for any number of workers. Each replicate runs with one BLAS thread
(threadpoolctl), which keeps floating-point sums in the same order in and out of workers and
stops workers from oversubscribing the cores.
"""

from __future__ import annotations

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
from refracture.validation.metrics import compute_metrics

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


def predict_all(
    model: RiskPipeline, X: pd.DataFrame, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Risk by the horizon, linear predictor and (if the model has one) survival at ``times``."""
    Xt = model.transform_features(X)
    m = model.model
    risk = m.predict_risk(Xt)
    lp = m.linear_predictor(Xt)
    surv = m.predict_survival(Xt, times) if m.supports_survival else None
    return risk, lp, surv


# InputError: a resample can hold too few patients of a small scanner batch for the
# harmonisation step (the same data fitted whole, so it is this resample's failure).
_FIT_FAILURES = (ModelError, InputError, ValueError, ArithmeticError, np.linalg.LinAlgError)


def optimism_replicate(
    ss: np.random.SeedSequence,
    *,
    template: RiskPipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    times: np.ndarray,
    horizon: float,
) -> tuple[dict[str, float], dict[str, float]] | None:
    """Harrell's bootstrap step: fit on a resample, score it there and on the original data.

    Returns (apparent on the resample, test on the original), or None if the model could not
    be fitted on this resample (counted and reported by the caller).
    """
    rng = np.random.default_rng(ss)
    idx = rng.integers(0, len(y), len(y))
    model = clone(template).set_params(model__random_state=model_seed(ss))
    Xb, yb = X.iloc[idx], y[idx]
    try:
        model.fit(Xb, yb)
        risk_b, _, surv_b = predict_all(model, Xb, times)
        risk_o, _, surv_o = predict_all(model, X, times)
    except _FIT_FAILURES:
        return None
    apparent = compute_metrics(yb, yb, risk_b, surv_b, times, horizon)
    test = compute_metrics(y, y, risk_o, surv_o, times, horizon)
    return apparent, test


def resample_metrics(
    ss: np.random.SeedSequence,
    *,
    y_train: np.ndarray,
    y: np.ndarray,
    risk: np.ndarray,
    surv: np.ndarray | None,
    times: np.ndarray,
    horizon: float,
) -> dict[str, float]:
    """Metrics of fixed predictions on a resample of the validation patients (percentile CI)."""
    rng = np.random.default_rng(ss)
    idx = rng.integers(0, len(y), len(y))
    s = None if surv is None else surv[idx]
    return compute_metrics(y_train, y[idx], risk[idx], s, times, horizon)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values (NaN if fewer than two)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return float(lo), float(hi)


def dispatch(item: tuple[str, np.random.SeedSequence], **workers: Callable[..., Any]) -> Any:
    """Run ``workers[kind](seed)`` for an item ``(kind, seed)``: lets different replicate kinds
    share one pool of worker processes."""
    kind, ss = item
    return workers[kind](ss)
