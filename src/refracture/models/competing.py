"""Cause-specific hazards combined into cumulative incidence (estimand ``cif``).

Under ``cif`` the Cox-type models (``cox``, ``coxnet``, ``gbsa``) fit the cause-specific hazard
of re-fracture as they do under ``net`` and add a Cox model of the cause-specific hazard of
death on the same columns, shrunk so that its risks hold on new patients
(:mod:`refracture.models.death`); the two are combined into the cumulative incidence of
each cause as R's ``riskRegression::CSC`` does (Benichou & Gail 1990; Ozenne et al. 2017).

With Breslow baseline hazard increments dH1(s), dH2(s) at the event times s and relative
hazards r1 = exp(lp1(x)), r2 = exp(lp2(x)), riskRegression's default (``product.limit = TRUE``)
is the product-limit form::

    S(s- | x) = prod_{u < s} (1 - r1 dH1(u) - r2 dH2(u))        (event-free survival)
    CIF1(t | x) = sum_{s <= t} S(s- | x) r1 dH1(s)
    CIF2(t | x) = sum_{s <= t} S(s- | x) r2 dH2(s)

We use this form: it makes CIF1 + CIF2 + S = 1 exactly and, for a patient with lp = 0 in a
model without covariates, it is the Aalen-Johansen estimator the metrics compare with. One
addition: where r1 dH1 + r2 dH2 exceeds 1 at a jump (only for extreme linear predictors) the
patient leaves with probability 1 there, split between the causes in proportion to their
hazards, so the curves stay in [0, 1] (riskRegression's product would turn negative).

With no deaths the product-limit CIF differs from the net risk 1 - exp(-H1) of the ``net``
model by second-order terms in the jumps (at most sum (r1 dH1)^2 / 2).

This module is hand-written because no Python library combines cause-specific Cox fits into
absolute risks; it is checked in the tests against a hand computation on a small table and
against the Aalen-Johansen estimator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from refracture.errors import ModelError
from refracture.models.base import ProportionalHazardsMixin
from refracture.models.death import DeathHazard, fit_death_hazard
from refracture.models.ipcw import step_at

__all__ = ["CauseSpecificHazardsMixin", "cause_specific_cif"]


def cause_specific_cif(
    jump_times: np.ndarray,
    dh1: np.ndarray,
    dh2: np.ndarray,
    r1: np.ndarray,
    r2: np.ndarray,
    times: np.ndarray,
) -> np.ndarray:
    """Cumulative incidence of both causes from cause-specific hazards (product-limit form).

    Parameters
    ----------
    jump_times : (T,) sorted times at which a baseline hazard jumps.
    dh1, dh2 : (T,) baseline hazard increments of cause 1 (re-fracture) and 2 (death).
    r1, r2 : (n,) relative hazards exp(lp) of each patient for each cause.
    times : (m,) times at which to evaluate the curves.

    Returns
    -------
    (n, 2, m) array: [:, 0, :] the CIF of cause 1, [:, 1, :] that of cause 2.
    """
    times = np.atleast_1d(np.asarray(times, dtype=float))
    r1 = np.atleast_1d(np.asarray(r1, dtype=float))
    r2 = np.atleast_1d(np.asarray(r2, dtype=float))
    out = np.zeros((r1.shape[0], 2, times.shape[0]))
    if times.size == 0 or jump_times.size == 0:
        return out
    keep = jump_times <= times.max()  # later jumps cannot change the curves at ``times``
    t = np.asarray(jump_times, dtype=float)[keep]
    a1 = r1[:, None] * np.asarray(dh1, dtype=float)[keep][None, :]
    a2 = r2[:, None] * np.asarray(dh2, dtype=float)[keep][None, :]
    total = a1 + a2
    leave = np.minimum(total, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, leave / total, 0.0)  # 1 except where total > 1
    surv = np.cumprod(1.0 - leave, axis=1)
    before = np.hstack([np.ones((surv.shape[0], 1)), surv[:, :-1]])  # S(s-)
    c1 = np.cumsum(before * a1 * share, axis=1)
    c2 = np.cumsum(before * a2 * share, axis=1)
    idx = np.searchsorted(t, times, side="right") - 1
    seen = idx >= 0
    out[:, 0, seen] = c1[:, idx[seen]]
    out[:, 1, seen] = c2[:, idx[seen]]
    return out


class CauseSpecificHazardsMixin(ProportionalHazardsMixin):
    """Absolute risks of a Cox-type model under either estimand.

    The host class fits the re-fracture hazard, sets its Breslow baseline with
    ``_set_baseline`` and defines ``linear_predictor``; under ``cif`` it then calls
    ``_fit_death(X, y)``, which fits the cause-specific Cox model of death, shrunk by the
    heuristic factor of :mod:`refracture.models.death` (``death_model_``, a
    :class:`~refracture.models.death.DeathHazard`; ``None`` when no patient died), and the
    common grid of baseline jumps.

    Under ``cif``: ``predict_risk`` is CIF1 at the horizon; ``predict_survival`` is
    1 - CIF1(t), the probability of being free of re-fracture by t whether alive or dead (so
    ``predict_risk == 1 - predict_survival(horizon)`` holds in both estimands); the event-free
    survival is 1 - CIF1 - CIF2 from ``predict_cif``. ``linear_predictor`` stays the
    re-fracture cause-specific log relative hazard.
    """

    has_death_hazard = True
    estimand: str
    alpha: float
    death_model_: DeathHazard | None
    cif_times_: np.ndarray
    cif_dh1_: np.ndarray
    cif_dh2_: np.ndarray

    def _fit_death(self, X: pd.DataFrame, y: np.ndarray, inference: bool = True) -> None:
        """Fit the shrunk cause-specific Cox model of death and the common grid of jumps.
        ``inference`` is accepted for the host's bootstrap refits; the death model computes no
        summaries to skip."""
        if self.estimand != "cif":
            self.death_model_ = None
            return
        death = fit_death_hazard(X, y)  # shrunk: see refracture.models.death
        self.death_model_ = death
        t1, h1 = self.baseline_times_, self.baseline_cumhaz_
        if death is None:
            grid = t1
            h2 = np.zeros_like(t1)
        else:
            grid = np.union1d(t1, death.baseline_times_)
            h2 = step_at(death.baseline_times_, death.baseline_cumhaz_, grid, 0.0)
        h1 = step_at(t1, h1, grid, 0.0)
        dh1 = np.diff(h1, prepend=0.0)
        dh2 = np.diff(h2, prepend=0.0)
        jumps = (dh1 > 0) | (dh2 > 0)
        self.cif_times_, self.cif_dh1_, self.cif_dh2_ = grid[jumps], dh1[jumps], dh2[jumps]

    def death_linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Log relative hazard of death (shrunk cause-specific Cox; 0 when nobody died)."""
        self._require_cif("death model")
        if self.death_model_ is None:
            return np.zeros(len(X))
        return self.death_model_.linear_predictor(self._design(X))

    def cif_from_lps(self, lp: np.ndarray, lp_death: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(n, 2, len(times)) cumulative incidences for given linear predictors of both causes."""
        return cause_specific_cif(
            self.cif_times_,
            self.cif_dh1_,
            self.cif_dh2_,
            np.exp(np.asarray(lp, dtype=float)),
            np.exp(np.asarray(lp_death, dtype=float)),
            times,
        )

    def predict_cif(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """CIF of re-fracture ([:, 0]) and death ([:, 1]) at ``times``: (n, 2, len(times))."""
        self._require_cif("cumulative incidence of death")
        return self.cif_from_lps(self.linear_predictor(X), self.death_linear_predictor(X), times)

    def risk_from_lp(self, lp: np.ndarray, lp_death: np.ndarray | None = None) -> np.ndarray:
        """Risk by the horizon from the linear predictor (and, under cif, that of death)."""
        if self.estimand != "cif":
            return super().risk_from_lp(lp)
        if lp_death is None:
            raise ModelError(
                f"under estimand cif the {self.name} model's risk depends on the death model "
                "too: pass lp_death (or use finegray, whose risk is a function of one linear "
                "predictor)"
            )
        return self.cif_from_lps(lp, lp_death, np.array([float(self.horizon)]))[:, 0, 0]

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.estimand != "cif":
            return super().predict_risk(X)
        return self.predict_cif(X, np.array([float(self.horizon)]))[:, 0, 0]

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """Net: S(t | x). Cif: 1 - CIF1(t | x), free of re-fracture by t (alive or dead)."""
        if self.estimand != "cif":
            return super().predict_survival(X, times)
        return 1.0 - self.predict_cif(X, np.atleast_1d(times))[:, 0, :]
