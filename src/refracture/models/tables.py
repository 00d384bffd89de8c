"""Coefficient tables and the proportional-hazards test, from the fitted models."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines.statistics import proportional_hazard_test

from refracture.errors import ModelError
from refracture.models.cox import _E, _T
from refracture.models.outcome import EVENT, check_outcome
from refracture.models.pipeline import RiskPipeline


def coefficients_table(pipeline: RiskPipeline) -> pd.DataFrame:
    """``term, coef, hr|or, lower95, upper95, p`` per model term.

    ``coef`` is on the log scale; ``hr`` (cox) or ``or`` (logistic) and its 95 % CI on the ratio
    scale; all per original unit of the covariate (the Cox and logistic pipelines do not scale).
    The logistic intercept is not a covariate term and is left out (``model.intercept_``).
    """
    model = pipeline.model
    if not model.has_coefficients:
        raise ModelError(f"the {pipeline.model_name} model has no coefficient table")
    s = model.coefficient_summary(alpha=0.05)
    with np.errstate(over="ignore"):  # a separated term's CI reaches inf
        return pd.DataFrame(
            {
                "term": [str(t) for t in s.index],
                "coef": s["coef"].to_numpy(),
                str(model.ratio_column): np.exp(s["coef"].to_numpy()),
                "lower95": np.exp(s["lower"].to_numpy()),
                "upper95": np.exp(s["upper"].to_numpy()),
                "p": s["p"].to_numpy(),
            }
        )


def ph_test(pipeline: RiskPipeline, X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Schoenfeld-residual test of proportional hazards per term (lifelines, rank time).

    ``X`` and ``y`` must be the data the Cox pipeline was fitted on. Columns: ``term``,
    ``test_statistic`` (chi-square, 1 df), ``p``.
    """
    model = pipeline.model
    if not model.has_ph_test:  # a capability of the estimator, not its class
        raise ModelError(
            f"the proportional-hazards test is for the cox model, not {pipeline.model_name}"
        )
    y = check_outcome(y)
    cph = model.lifelines_
    fitted_times = np.asarray(cph.durations, dtype=float)
    if len(y) != len(fitted_times) or not np.array_equal(np.sort(y["time"]), np.sort(fitted_times)):
        raise ValueError("ph_test needs the data the model was fitted on")
    data = pipeline.transform_features(X).astype(float).reset_index(drop=True)
    data[_T] = y["time"]
    data[_E] = (y["event"] == EVENT).astype(int)
    result = proportional_hazard_test(cph, data, time_transform="rank")
    s = result.summary
    return pd.DataFrame(
        {
            "term": [str(t[0] if isinstance(t, tuple) else t) for t in s.index],
            "test_statistic": s["test_statistic"].to_numpy(dtype=float),
            "p": s["p"].to_numpy(dtype=float),
        }
    )
