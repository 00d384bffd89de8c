"""Linear mixed models with a random intercept per patient (Laird and Ware 1982).

Per vertebra, ``marker ~ level + age + sex + T-score (+ site)`` estimates how a vertebra's
PDFF or R2* relates to the patient's bone mass while the patient's own level (the random
intercept) absorbs what their vertebrae share; the same model with a fracture-status term
estimates the within-patient difference between fractured and intact vertebrae. Fitted by
statsmodels' :class:`~statsmodels.regression.mixed_linear_model.MixedLM` (REML); estimates,
Wald 95% CIs and z-test p-values are statsmodels'. The design matrix is built here (indicator
columns named ``name[level]`` against a stated reference) so term names do not depend on
formula parsing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.tools.sm_exceptions import ConvergenceWarning

__all__ = ["OPTIMIZERS", "MixedModelResult", "fit_random_intercept", "indicator_columns"]

#: Optimizers tried in turn until one converges.
OPTIMIZERS = ("lbfgs", "bfgs", "cg", "powell")


@dataclass
class MixedModelResult:
    """A fitted random-intercept model.

    ``terms`` has one row per fixed effect: ``term``, ``estimate``, ``lower95``, ``upper95``,
    ``p``. ``group_variance`` is the variance of the patient intercepts, ``residual_variance``
    that of vertebrae around their patient; ``icc`` their ratio to the total. ``converged`` is
    statsmodels' flag; ``warnings`` holds every warning the fit raised, verbatim.
    """

    response: str
    terms: pd.DataFrame
    n_obs: int
    n_groups: int
    converged: bool
    group_variance: float
    residual_variance: float
    optimizer: str = ""
    references: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def icc(self) -> float:
        total = self.group_variance + self.residual_variance
        return self.group_variance / total if total > 0 else math.nan

    @property
    def on_boundary(self) -> bool:
        """The patient-intercept variance was estimated at (or next to) zero."""
        return self.group_variance <= 1e-6 * max(self.residual_variance, 1e-12)


def indicator_columns(
    values: pd.Series, name: str, reference: str, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """0/1 columns ``name[level]`` for every level of ``values`` but ``reference``, in
    ``order`` when given (levels it omits follow, sorted), else sorted. Missing values stay
    missing."""
    text = values.astype("string")
    present = sorted(str(v) for v in text.dropna().unique() if v != reference)
    first = [lv for lv in (order or []) if lv in present]
    levels = first + [lv for lv in present if lv not in first]
    return pd.DataFrame(
        {f"{name}[{lv}]": (text == lv).astype("Float64") for lv in levels}, index=values.index
    )


def fit_random_intercept(
    data: pd.DataFrame,
    response: str,
    *,
    group: str,
    numeric: Sequence[str] = (),
    categorical: Mapping[str, str] | None = None,
    level_order: Mapping[str, Sequence[str]] | None = None,
) -> MixedModelResult:
    """Fit ``response ~ numeric + categorical`` with a random intercept per ``group``.

    ``categorical`` maps each categorical column to its reference level; ``level_order``
    optionally fixes the order of a column's other levels in the output. Rows with a missing
    value in any model column are dropped. Returns a :class:`MixedModelResult`.
    """
    categorical = dict(categorical or {})
    level_order = dict(level_order or {})
    cols = [response, group, *numeric, *categorical]
    df = data[cols].dropna().copy()
    parts = [pd.DataFrame({"Intercept": np.ones(len(df))}, index=df.index)]
    model_cols = set(numeric) | set(categorical)
    for name in [c for c in data.columns if c in model_cols]:  # terms in the table's order
        if name in categorical:
            parts.append(
                indicator_columns(df[name], name, categorical[name], level_order.get(name))
            )
        else:
            parts.append(df[[name]].astype(float))
    exog = pd.concat(parts, axis=1).astype(float)
    exog = exog.loc[:, (exog != 0).any(axis=0)]  # an absent level has no column
    endog = df[response].astype(float)
    model = MixedLM(endog, exog, groups=df[group].astype(str))
    fit, optimizer, messages = _fit_first_converging(model)
    n_fixed = exog.shape[1]
    if fit is None:  # every optimizer raised: no estimates, the messages say why
        est = lo = hi = p = np.full(n_fixed, np.nan)
        group_var = resid_var = math.nan
    else:
        est = np.asarray(fit.fe_params, dtype=float)
        ci = np.asarray(fit.conf_int(alpha=0.05), dtype=float)[:n_fixed]
        lo, hi = ci[:, 0], ci[:, 1]
        p = np.asarray(fit.pvalues, dtype=float)[:n_fixed]
        group_var = float(np.asarray(fit.cov_re).ravel()[0])
        resid_var = float(fit.scale)
    terms = pd.DataFrame(
        {"term": list(exog.columns), "estimate": est, "lower95": lo, "upper95": hi, "p": p}
    )
    return MixedModelResult(
        response=response,
        terms=terms,
        n_obs=int(len(df)),
        n_groups=int(df[group].nunique()),
        converged=bool(fit is not None and fit.converged),
        group_variance=group_var,
        residual_variance=resid_var,
        optimizer=optimizer,
        references={name: str(ref) for name, ref in categorical.items()},
        warnings=messages,
    )


def _fit_first_converging(model: MixedLM) -> tuple[Any, str, list[str]]:
    """REML fit by each optimizer of :data:`OPTIMIZERS` in turn until one converges.

    statsmodels' own retry loop stops at an exception (a singular matrix when the patient
    variance heads to zero), so the loop is here: an optimizer that raises or does not
    converge is recorded and the next one tried. Returns the converged fit (else the last
    fit that ran, or None), the optimizer's name and every message, verbatim.
    """
    messages: list[str] = []
    last: tuple[Any, str] = (None, "")
    for name in OPTIMIZERS:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                fit = model.fit(reml=True, method=name)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError) as err:
                messages.append(f"{name}: {type(err).__name__}: {err}")
                continue
        for w in record:
            if issubclass(w.category, ConvergenceWarning | RuntimeWarning | UserWarning):
                messages.append(f"{name}: {' '.join(str(w.message).split())}")
        last = (fit, name)
        if fit.converged:
            break
    return last[0], last[1], list(dict.fromkeys(messages))
