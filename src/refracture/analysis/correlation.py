"""Correlations of a marker with one variable: Pearson, Spearman, partial, group difference.

Each function takes 1-D arrays (rows with a missing value in any argument are dropped) and
returns an :class:`~refracture.analysis.association.Estimate` (estimate, 95% CI, two-sided p,
n). Point estimates and p-values come from SciPy; the pieces SciPy does not offer (a CI for
Spearman's rho, the partial correlation with its CI) are written here and checked against
bootstrap and statsmodels OLS in tests/test_analysis.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from refracture.analysis.association import Estimate

__all__ = [
    "Z95",
    "covariate_design",
    "fisher_z_interval",
    "mean_difference",
    "partial_pearson",
    "pearson",
    "point_biserial",
    "spearman",
]

Z95 = float(stats.norm.ppf(0.975))


def _finite(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    cols = [np.asarray(a, dtype=float) for a in arrays]
    keep = np.ones(len(cols[0]), dtype=bool)
    for c in cols:
        keep &= np.isfinite(c) if c.ndim == 1 else np.isfinite(c).all(axis=1)
    return tuple(c[keep] for c in cols)


def fisher_z_interval(r: float, se: float) -> tuple[float, float]:
    """95% CI of a correlation by Fisher's z = atanh(r): tanh(z -/+ 1.96 se)."""
    if not (math.isfinite(r) and math.isfinite(se)) or abs(r) >= 1:
        return math.nan, math.nan
    z = math.atanh(r)
    return math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)


def pearson(x: np.ndarray, y: np.ndarray) -> Estimate:
    """Pearson's r with the Fisher-z 95% CI (SE = 1 / sqrt(n - 3)) and the t-test p.

    Both from :func:`scipy.stats.pearsonr` (its ``confidence_interval`` is the Fisher-z one).
    """
    x, y = _finite(x, y)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Estimate.empty(n)
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(0.95)
    return Estimate(float(res.statistic), float(ci.low), float(ci.high), float(res.pvalue), n)


def spearman(x: np.ndarray, y: np.ndarray) -> Estimate:
    """Spearman's rho and p from :func:`scipy.stats.spearmanr`; 95% CI by Fisher's z with the
    Bonett-Wright (2000) standard error sqrt((1 + rho^2 / 2) / (n - 3)).

    SciPy gives no CI for rho; the Bonett-Wright SE is the one their simulations found to keep
    coverage for |rho| up to about 0.9 (the plain 1 / sqrt(n - 3) is too narrow).
    """
    x, y = _finite(x, y)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Estimate.empty(n)
    res = stats.spearmanr(x, y)
    rho = float(res.statistic)
    lo, hi = fisher_z_interval(rho, math.sqrt((1 + rho**2 / 2) / (n - 3)))
    return Estimate(rho, lo, hi, float(res.pvalue), n)


def covariate_design(
    covariates: pd.DataFrame, categorical: Sequence[str] = ()
) -> tuple[np.ndarray, list[str]]:
    """Numeric design columns (no intercept) for the adjustment variables.

    Categorical columns become indicator columns against their first level in sorted order;
    a missing value stays missing (NaN in every indicator). Returns the matrix, shape
    ``(n, k)``, and its column names (``site[site_2]``).
    """
    parts: list[np.ndarray] = []
    names: list[str] = []
    for col in covariates.columns:
        values = covariates[col]
        if col in categorical:
            present = values.notna().to_numpy()
            text = values.astype(str)
            levels = sorted(text[present].unique())
            for level in levels[1:]:
                ind = (text == level).to_numpy(dtype=float)
                ind[~present] = np.nan
                parts.append(ind)
                names.append(f"{col}[{level}]")
        else:
            parts.append(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
            names.append(str(col))
    if not parts:
        return np.empty((len(covariates), 0)), []
    return np.column_stack(parts), names


def partial_pearson(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Estimate:
    """Partial correlation of ``x`` and ``y`` given the columns of ``z`` (shape (n, k)).

    Residual method: x and y are each regressed on [1, z] by least squares and the partial
    correlation is Pearson's r of the two residual vectors. With k the rank of z, the p-value
    is the t-test on df = n - 2 - k (t = r sqrt(df / (1 - r^2)), which equals the t of x's
    coefficient in the OLS of y on x and z) and the 95% CI is Fisher's z with
    SE = 1 / sqrt(n - 3 - k).
    """
    z = np.asarray(z, dtype=float).reshape(len(np.asarray(x)), -1)
    x, y, z = _finite(x, y, z)
    n = len(x)
    design = np.column_stack([np.ones(n), z])
    k = int(np.linalg.matrix_rank(design)) - 1 if n else 0
    df = n - 2 - k
    if df < 2:
        return Estimate.empty(n)
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    sx, sy = float(np.sqrt(rx @ rx)), float(np.sqrt(ry @ ry))
    if sx <= 1e-12 * max(1.0, float(np.abs(x).max())) or sy <= 1e-12 * max(
        1.0, float(np.abs(y).max())
    ):
        return Estimate.empty(n)  # x or y is fully explained by the covariates
    r = float(np.clip(rx @ ry / (sx * sy), -1.0, 1.0))
    t = r * math.sqrt(df / max(1.0 - r * r, 1e-300))
    p = float(2 * stats.t.sf(abs(t), df))
    lo, hi = fisher_z_interval(r, 1 / math.sqrt(df - 1))
    return Estimate(r, lo, hi, p, n)


def point_biserial(y: np.ndarray, group: np.ndarray) -> Estimate:
    """Pearson's r of ``y`` with a 0/1 indicator (the point-biserial correlation)."""
    return pearson(group, y)


def mean_difference(y: np.ndarray, group: np.ndarray) -> Estimate:
    """Mean of ``y`` where ``group`` is 1 minus where it is 0: Welch's t-test and its 95% CI
    (:func:`scipy.stats.ttest_ind` with unequal variances)."""
    y, group = _finite(y, group)
    a, b = y[group == 1], y[group == 0]
    n = len(y)
    if len(a) < 2 or len(b) < 2:
        return Estimate.empty(n)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    return Estimate(float(a.mean() - b.mean()), float(ci.low), float(ci.high), float(res.pvalue), n)
