"""The full specification of a model with coefficients (TRIPOD+AI item 22): enough to compute a
new patient's risk by hand.

Every such model predicts through a linear predictor, lp = c + sum_j beta_j x_j over its terms
(after the pipeline's encoding), and a link from lp to the risk at the horizon. Both are read
from the fitted pipeline itself, not from the model's name: ``c`` is ``linear_predictor(x) -
design(x) . beta`` (checked equal on every development patient), and the link is recognised
numerically as the complementary log-log link of a proportional-hazards model,
risk = 1 - S^exp(lp), or the logit link, risk = 1 / (1 + exp(-(a + lp))). A link that is
neither is tabulated instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit

__all__ = ["ModelSpec", "model_specification"]

_PROBE = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])


@dataclass
class ModelSpec:
    """``terms``: term, beta (log scale), ratio (exp beta); ``constant``: c of the linear
    predictor; ``link``: the formula from lp to the risk, as text; ``table``: lp -> risk at
    percentiles of the development patients' lp (a check of the formula, or the link itself)."""

    terms: pd.DataFrame
    constant: float
    link: str
    table: pd.DataFrame


def _link_text(risk_from_lp: Any, horizon: int) -> str:
    f = np.asarray(risk_from_lp(_PROBE), dtype=float)
    f0 = float(np.asarray(risk_from_lp(np.array([0.0])), dtype=float)[0])
    if 0.0 < f0 < 1.0:
        s = 1.0 - f0
        if np.allclose(f, 1.0 - s ** np.exp(_PROBE), rtol=1e-9, atol=1e-12):
            return f"risk by {horizon} days = 1 - S^exp(lp), with S = {s:.6g}"
        a = float(logit(f0))
        if np.allclose(f, expit(a + _PROBE), rtol=1e-9, atol=1e-12):
            if abs(a) < 1e-12:
                return f"risk by {horizon} days = 1 / (1 + exp(-lp))"
            return f"risk by {horizon} days = 1 / (1 + exp(-({a:.6g} + lp)))"
    return f"risk by {horizon} days from lp as tabulated below"


def model_specification(validation: Any, X: pd.DataFrame) -> ModelSpec | None:
    """The specification of ``validation.final_model`` (a ``ValidationResult``), or None when
    the model has no coefficient table or its risk is not a function of its linear predictor
    alone (cause-specific models under the cif estimand). ``X``: the modelling table
    (development rows used)."""
    coef = validation.coefficients
    pipe = validation.final_model
    if coef is None or not pipe.model.has_coefficients or "impute" in pipe.named_steps:
        return None  # no coefficients, or risks averaged over imputation models
    if getattr(pipe.model, "estimand", "net") == "cif" and not pipe.model.cif_from_lp:
        return None  # the risk needs the death model's linear predictor too: no one link
    dev = X.loc[validation.development_ids]
    design = pipe.transform_features(dev)[list(coef["term"])].to_numpy(dtype=float)
    beta = coef["coef"].to_numpy(dtype=float)
    lp = np.asarray(pipe.linear_predictor(dev), dtype=float)
    constants = lp - design @ beta
    if not np.allclose(constants, constants[0], rtol=1e-8, atol=1e-8):
        return None  # lp is not linear in the listed terms: no closed form to give
    ratio = str(pipe.model.ratio_column or "ratio").upper()
    terms = pd.DataFrame({"term": coef["term"], "beta": beta, ratio: np.exp(beta)})
    q = np.percentile(lp, [1, 10, 25, 50, 75, 90, 99])
    h = int(round(float(validation.horizon)))
    table = pd.DataFrame(
        {
            "development percentile of lp": ["1st", "10th", "25th", "50th", "75th", "90th", "99th"],
            "lp": q,
            f"risk by {h} d": np.asarray(pipe.risk_from_lp(q), dtype=float),
        }
    )
    return ModelSpec(terms, float(constants[0]), _link_text(pipe.risk_from_lp, h), table)
