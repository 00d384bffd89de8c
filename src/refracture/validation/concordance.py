"""Concordance of predictions with the outcome, in the run's estimand.

``net`` (death censors re-fracture): Harrell's C over the whole follow-up and Uno's IPCW C
truncated at the horizon, both scikit-survival's. ``cif`` (death competing): the
time-truncated C for competing risks, written here because no Python library has it:

* Harrell-type (Wolbers, Koller, Witteman & Steyerberg, Epidemiology 2009): among pairs in
  which patient i has a re-fracture at T_i <= h, patient j is comparable if j was still
  event-free after T_i (T_j > T_i, or censored at T_i) or j died of the competing cause at
  any T_j <= T_i (a patient who died never has the re-fracture, so i's risk should be higher);
  C = share of comparable pairs with score_i > score_j, ties counting 1/2.
* IPCW (Wolbers, Blanche, Koller, Witteman & Gerds, Biostatistics 2014; pec::cindex and
  riskRegression::Score with a cause): pairs with T_i < T_j weigh 1 / (G(T_i-) G(T_i)),
  pairs with a competing death of j at T_j <= T_i weigh 1 / (G(T_i-) G(T_j-)), G the
  Kaplan-Meier censoring survival of the evaluated data (only event 0 censors). Without
  deaths and without tied times it is Uno's C (the tests check it against scikit-survival).

Ranking score (issue 14, 5d): a 1-year risk 1 - exp(-H0(h) exp(lp)) saturates at 0 or 1 in
floating point for extreme linear predictors, which an overfit bootstrap model produces, and
makes artificial ties. Every model's ``linear_predictor`` is a monotone transform of its risk
for the net models, so concordance ranks by it when it orders the patients as the risk does
(:func:`ranking_score`); otherwise (a cause-specific pair, whose CIF depends on two linear
predictors) by the risk itself.
"""

from __future__ import annotations

import numpy as np
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw

from refracture.models.ipcw import censoring_survival, step_at, step_left
from refracture.models.outcome import (
    CENSORED,
    DEATH,
    EVENT,
    check_estimand,
    check_outcome,
    to_sksurv,
)
from refracture.validation.undefined import Undefined

__all__ = ["competing_concordance", "concordance", "ranking_score"]

#: Scores closer than this are tied (scikit-survival's default ``tied_tol``).
TIED_TOL = 1e-8
_BLOCK = 256  # rows of the case x patient comparison computed at once


def ranking_score(risk: np.ndarray, lp: np.ndarray | None) -> np.ndarray:
    """``lp`` if it ranks the patients as ``risk`` does (never reverses a pair), else ``risk``.

    Parameters
    ----------
    risk : (n,) predicted risk by the horizon.
    lp : (n,) the model's linear predictor, or None.
    """
    risk = np.asarray(risk, dtype=float)
    if lp is None:
        return risk
    lp = np.asarray(lp, dtype=float)
    if lp.shape != risk.shape or not np.all(np.isfinite(lp)):
        return risk
    order = np.argsort(lp, kind="mergesort")
    return lp if bool(np.all(np.diff(risk[order]) >= 0)) else risk


def _needs_cases(y: np.ndarray, horizon: float | None) -> None:
    ev, t = y["event"], y["time"]
    if horizon is None:
        if not (ev == EVENT).any():
            raise Undefined("no re-fracture in these data")
    elif not ((ev == EVENT) & (t <= horizon)).any():
        raise Undefined("no re-fracture in these data before the horizon")


def concordance(
    y: np.ndarray, score: np.ndarray, horizon: float, estimand: str = "net", ipcw: bool = False
) -> float:
    """``cindex_harrell`` (``ipcw=False``) or ``cindex_uno`` (``ipcw=True``) in the estimand."""
    y = check_outcome(y)
    score = np.asarray(score, dtype=float)
    if check_estimand(estimand) == "cif":
        return competing_concordance(y, score, horizon, ipcw=ipcw)
    s = to_sksurv(y)
    if not ipcw:
        _needs_cases(y, None)
        try:
            return float(concordance_index_censored(s["event"], s["time"], score)[0])
        except ZeroDivisionError:
            raise Undefined("no comparable pair of patients") from None
    # scikit-survival counts events strictly before tau
    if not (s["event"] & (s["time"] < horizon)).any():
        raise Undefined("no re-fracture in these data before the horizon")
    try:
        return float(concordance_index_ipcw(s, s, score, tau=horizon)[0])
    except ZeroDivisionError:
        raise Undefined("no comparable pair of patients") from None


def competing_concordance(
    y: np.ndarray, score: np.ndarray, horizon: float, ipcw: bool = False
) -> float:
    """Time-truncated C for competing risks (Wolbers 2009; IPCW: Wolbers 2014).

    Parameters
    ----------
    y : (n,) outcome (event 0/1/2, time).
    score : (n,) higher = higher predicted risk of re-fracture by ``horizon``.
    horizon : cases are re-fractures at or before it.
    ipcw : weight the pairs by the inverse censoring probabilities (see the module text).
    """
    y = check_outcome(y)
    score = np.asarray(score, dtype=float)
    t, ev = y["time"], y["event"]
    _needs_cases(y, horizon)
    cases = np.flatnonzero((ev == EVENT) & (t <= horizon))
    if ipcw:
        g_times, g_prob = censoring_survival(y, "competing")
        g_minus = step_left(g_times, g_prob, t)
        g_at = step_at(g_times, g_prob, t)
    num = den = 0.0
    for start in range(0, len(cases), _BLOCK):
        i = cases[start : start + _BLOCK]
        ti = t[i][:, None]
        later = t[None, :] > ti
        died_first = (ev[None, :] == DEATH) & (t[None, :] <= ti)
        if ipcw:
            # Wolbers 2014: A pairs need T_j > T_i strictly; if G(T_i) is 0 no such j exists
            with np.errstate(divide="ignore"):
                w_a = 1.0 / (g_minus[i] * g_at[i])
                w_b = 1.0 / (g_minus[i][:, None] * g_minus[None, :])
            w = np.where(later, w_a[:, None], 0.0) + np.where(died_first, w_b, 0.0)
        else:
            # Harrell's (and scikit-survival's) ties: a censoring at T_i comes after the event
            censored_then = (t[None, :] == ti) & (ev[None, :] == CENSORED)
            w = (later | censored_then | died_first).astype(float)
        diff = score[i][:, None] - score[None, :]
        tied = np.abs(diff) <= TIED_TOL
        credit = np.where(tied, 0.5, (diff > 0).astype(float))
        num += float((w * credit).sum())
        den += float(w.sum())
    if den <= 0:
        raise Undefined("no comparable pair of patients")
    return num / den
