"""Parametric empirical Bayes of ComBat (Johnson, Li & Rabinovic 2007), for one batch.

Split from :mod:`refracture.models.harmonise`: the same shrinkage serves the development
batches and a new scanner's own scans (``unseen_batch: estimate``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["eb_batch"]

# neuroCombat/sva stop the empirical-Bayes iteration when the largest relative change is below
# this; we do the same so the results agree, and cap the iterations (sva has no cap).
_EB_TOLERANCE = 1e-4
_EB_MAX_ITER = 1000


def eb_batch(
    z: np.ndarray,
    g_hat: np.ndarray,
    d_hat: np.ndarray,
    n: np.ndarray,
    mean_only: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Parametric empirical Bayes for one batch (Johnson 2007, as sva/neuroCombat).

    Priors across the features: gamma_ig ~ N(gamma_bar, t2), delta_ig ~ InvGamma(a, b) by the
    method of moments, then the posterior means by the iteration of ``it.sol``.
    """
    g_bar = float(np.mean(g_hat))
    t2 = float(np.var(g_hat, ddof=1))
    if not math.isfinite(t2) or t2 <= 0:
        return g_hat.copy(), d_hat.copy()  # nothing to shrink towards
    if mean_only:
        # sva: gamma.star <- postmean(gamma.hat, gamma.bar, 1, 1, t2)
        return (t2 * g_hat + g_bar) / (t2 + 1.0), np.ones_like(d_hat)
    m = float(np.mean(d_hat))
    s2 = float(np.var(d_hat, ddof=1))
    if not math.isfinite(s2) or s2 <= 0:
        return (t2 * n * g_hat + d_hat * g_bar) / (t2 * n + d_hat), d_hat.copy()
    a = (2 * s2 + m**2) / s2
    b = (m * s2 + m**3) / s2
    g_old, d_old = g_hat.copy(), d_hat.copy()
    for _ in range(_EB_MAX_ITER):
        g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
        sum2 = np.nansum((z - g_new[None, :]) ** 2, axis=0)
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # sva's rule, signs included: max(abs(g.new - g.old) / g.old, ...)
            change = max(
                np.max(np.abs(g_new - g_old) / g_old), np.max(np.abs(d_new - d_old) / d_old)
            )
        g_old, d_old = g_new, d_new
        if not change > _EB_TOLERANCE:
            break
    return g_old, d_old


def batch_effects(z: np.ndarray, eb: bool, mean_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Additive and multiplicative effects of one batch from its standardised values ``z``
    (rows: the batch's patients, missing values allowed), shrunk across the features by
    :func:`eb_batch` as ComBat does for a development batch. Needs no outcome."""
    n = np.isfinite(z).sum(axis=0).astype(float)
    g_hat = np.nanmean(z, axis=0)
    d_hat = np.ones_like(g_hat) if mean_only else np.nanvar(z, axis=0, ddof=1)
    d_hat = np.where(np.isfinite(d_hat) & (d_hat > 0), d_hat, 1.0)
    if eb and z.shape[1] >= 2:
        return eb_batch(z, g_hat, d_hat, n, mean_only)
    return g_hat, d_hat
