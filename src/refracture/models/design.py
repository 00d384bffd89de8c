"""Design matrices an unpenalised model cannot fit, found before fitting and named.

A constant column or an exact linear dependence between columns leaves a coefficient of the
Cox or logistic model undetermined: lifelines then stops with "matrix inversion problems"
and scikit-learn with a singular information matrix, neither naming the columns. These
checks name them. They are a few lines of linear algebra (a singular value decomposition of
the standardised columns), written here because no library reports *which* columns are
dependent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["collinear_columns", "constant_columns", "design_problem"]

#: Columns are dependent when the smallest singular value of the standardised design is
#: below this share of the largest (well above rounding, far below any real data set).
RANK_TOL = 1e-8


def _plain_numeric(X: pd.DataFrame) -> bool:
    """Every column a NumPy number or bool (NaN the only missing value)."""
    return len(X.columns) > 0 and all(
        isinstance(t, np.dtype) and t.kind in "fiub" for t in X.dtypes
    )


def _is_constant(X: pd.DataFrame) -> np.ndarray:
    """Per column: are its non-missing values all the same (or absent)?

    Numeric frames (design matrices, refitted in every bootstrap replicate) are checked on
    one array, with the answer of ``Series.dropna().nunique() <= 1`` (-0.0 equals 0.0);
    other frames column by column with pandas.
    """
    if _plain_numeric(X):
        A = X.to_numpy(dtype=float)
        seen = ~np.isnan(A)
        first = A[np.argmax(seen, axis=0), np.arange(A.shape[1])]
        return np.all((first == A) | ~seen, axis=0)
    return np.array([X[c].dropna().nunique() <= 1 for c in X.columns], dtype=bool)


def constant_columns(X: pd.DataFrame) -> list[str]:
    """Columns whose non-missing values are all the same (or that have no values)."""
    return [str(c) for c, const in zip(X.columns, _is_constant(X), strict=True) if const]


def collinear_columns(X: pd.DataFrame) -> list[str]:
    """Columns of ``X`` involved in an exact linear dependence (intercept included), or [].

    Uses the rows without a missing value; with fewer such rows than columns the check
    cannot tell and returns []. Constant columns are the caller's business
    (:func:`constant_columns`) and are ignored here.
    """
    cols = [c for c, const in zip(X.columns, _is_constant(X), strict=True) if not const]
    if _plain_numeric(X):
        Z = X[cols].to_numpy(dtype=float)
        Z = Z[~np.isnan(Z).any(axis=1)]  # the complete rows, in order (DataFrame.dropna)
    else:
        Z = X[cols].dropna().to_numpy(dtype=float)
    if len(cols) < 2 or len(Z) <= len(cols):
        return []
    Z = Z - Z.mean(axis=0)  # centring: a dependence with the intercept shows as one here
    sd = Z.std(axis=0)
    if np.any(sd == 0):  # constant on the complete rows: not a dependence between columns
        return []
    _, s, vt = np.linalg.svd(Z / sd, full_matrices=False)
    if s[-1] > RANK_TOL * s[0]:
        return []
    weights = np.abs(vt[-1])
    return [str(c) for c, w in zip(cols, weights, strict=True) if w > 1e-6 * weights.max()]


def design_problem(X: pd.DataFrame) -> str | None:
    """Why an unpenalised model cannot estimate every coefficient on ``X``, naming the
    columns, or None."""
    const = constant_columns(X)
    if const:
        names = ", ".join(f"'{c}'" for c in const)
        return (
            f"{names} take{'s' if len(const) == 1 else ''} a single value in these patients (a "
            "rare level or value absent from them), so no coefficient can be estimated for it; "
            "merge rare levels or leave the covariate out"
        )
    dependent = collinear_columns(X)
    if dependent:
        names = ", ".join(f"'{c}'" for c in dependent)
        return (
            f"{names} are collinear in these patients (one is a linear combination of the "
            "others), so their coefficients cannot be estimated; leave one of them out"
        )
    return None
