"""Univariable hazard ratios (one lifelines Cox model per covariate), for the study report.

The multivariable table is the fitted cox model's own ``coefficients.csv``; the univariable one
fits each covariate alone on the same development patients (complete cases for that covariate),
coded as in the model: per original unit, binary 0/1, categorical against its reference level.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter


def univariable_cox(
    X: pd.DataFrame,
    time: np.ndarray,
    event: np.ndarray,
    kinds: dict[str, str],
    references: dict[str, str],
) -> pd.DataFrame:
    """term, hr, lower95, upper95, p, n per covariate term (event: 1 = re-fracture)."""
    rows = []
    for cov, kind in kinds.items():
        col = X[cov]
        if kind == "categorical":
            ref = references.get(cov)
            levels = [lv for lv in sorted(col.dropna().astype(str).unique()) if lv != ref]
            design = pd.DataFrame(
                {f"{cov}[{lv}]": (col.astype(str) == lv).astype(float) for lv in levels},
                index=X.index,
            )
            design[col.isna().to_numpy()] = np.nan
        else:
            design = pd.DataFrame({cov: pd.to_numeric(col, errors="coerce")}, index=X.index)
        data = design.assign(__t=time, __e=(event == 1).astype(int)).dropna()
        if data.empty or data.drop(columns=["__t", "__e"]).nunique().min() < 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cph = CoxPHFitter().fit(data, duration_col="__t", event_col="__e")
        except Exception:  # noqa: BLE001 - a covariate that cannot be fitted alone is skipped
            continue
        s = cph.summary
        for term in s.index:
            rows.append(
                {
                    "term": term,
                    "hr": float(s.loc[term, "exp(coef)"]),
                    "lower95": float(s.loc[term, "exp(coef) lower 95%"]),
                    "upper95": float(s.loc[term, "exp(coef) upper 95%"]),
                    "p": float(s.loc[term, "p"]),
                    "n": int(len(data)),
                }
            )
    return pd.DataFrame(rows, columns=["term", "hr", "lower95", "upper95", "p", "n"])
