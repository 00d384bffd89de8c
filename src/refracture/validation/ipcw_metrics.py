"""Time-dependent AUC and Brier scores at the horizon with IPC weights, in either estimand.

Written by hand, not taken from scikit-survival, for two reasons: scikit-survival's
``cumulative_dynamic_auc``, ``brier_score`` and ``integrated_brier_score`` refuse data whose
follow-up ends at the horizon (they evaluate the censoring survival at G(h), which is 0 when
every event-free patient is censored on the last day, and they want the evaluation time
strictly inside the follow-up), and they know no competing risks. Where scikit-survival works
(net risk, follow-up beyond the horizon, no censoring tied with an event) the values here are
equal to its own (tests/test_validation_metrics.py checks it).

Definitions, with the status and weights of :func:`refracture.models.ipcw.horizon_weights`
(cases D = 1: re-fracture by t, weight 1/G(T-); controls D = 0: event-free at t, weight
1/G(t-), plus, for ``cif``, deaths before t with 1/G(T-)):

* AUC(t), cumulative/dynamic (Heagerty 2000; Uno 2007; with competing risks Blanche, Dartigues
  & Jacqmin-Gadda, Stat Med 2013, definition 1: controls are the event-free patients and those
  who died first): sum_i sum_j w_i w_j [1(M_i > M_j) + 1/2 1(M_i = M_j)] / (sum_i w_i
  sum_j w_j), i over cases and j over controls.
* Brier(t) (Graf 1999): (1/n) sum_k w_k (D_k - risk_k(t))^2 over all n patients (weight 0 for
  an unknown status); for ``cif`` D is 1 for a re-fracture by t only, so the predicted
  cumulative incidence is scored against the observed one.
* IBS: the trapezoid integral of Brier(t) over the time grid, divided by its length.
"""

from __future__ import annotations

import numpy as np

from refracture.models.ipcw import CensoringWeights, deaths_for
from refracture.models.outcome import check_outcome
from refracture.validation.undefined import Undefined

__all__ = ["brier_score", "cumulative_dynamic_auc", "integrated_brier_score", "roc_points"]


def _followed_to(y: np.ndarray, t: float) -> None:
    if not np.any(y["time"] >= t):
        raise Undefined(
            f"no patient was followed to day {t:g} (longest follow-up {y['time'].max():g})"
        )


def _weights(y: np.ndarray, estimand: str, censoring: CensoringWeights | None) -> CensoringWeights:
    if censoring is None:
        return CensoringWeights(y, deaths_for(estimand))
    if censoring.deaths != deaths_for(estimand):
        raise ValueError("the censoring weights were estimated for the other estimand")
    return censoring


def _cases_controls(
    y: np.ndarray, t: float, estimand: str, censoring: CensoringWeights | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = check_outcome(y)
    _followed_to(y, t)
    status, w = _weights(y, estimand, censoring).at(y, t)
    case = (status == 1) & (w > 0)
    control = (status == 0) & (w > 0)
    if not case.any():
        raise Undefined("no re-fracture in these data before the horizon")
    if not control.any():
        raise Undefined(
            "no patient in these data is known to be free of re-fracture at the horizon"
        )
    return case, control, w


def cumulative_dynamic_auc(
    y: np.ndarray,
    score: np.ndarray,
    horizon: float,
    estimand: str = "net",
    censoring: CensoringWeights | None = None,
) -> float:
    """Cumulative/dynamic AUC at ``horizon`` (see the module text).

    Parameters
    ----------
    y : (n,) outcome; score : (n,) higher = higher risk; estimand : ``net`` or ``cif``.
    censoring : G already estimated on ``y`` for this estimand (else estimated here).
    """
    score = np.asarray(score, dtype=float)
    case, control, w = _cases_controls(y, horizon, estimand, censoring)
    sc, wc = score[control], w[control]
    order = np.argsort(sc, kind="mergesort")
    sc, cum = sc[order], np.r_[0.0, np.cumsum(wc[order])]
    si, wi = score[case], w[case]
    below = cum[np.searchsorted(sc, si, side="left")]
    tied = cum[np.searchsorted(sc, si, side="right")] - below
    return float(np.sum(wi * (below + 0.5 * tied)) / (wi.sum() * cum[-1]))


def roc_points(
    y: np.ndarray, score: np.ndarray, horizon: float, estimand: str = "net"
) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the cumulative/dynamic ROC at ``horizon``.

    One point per distinct score, from the highest down, starting at (0, 0): positive means
    score >= threshold. The trapezoid area under the points is :func:`cumulative_dynamic_auc`.
    """
    score = np.asarray(score, dtype=float)
    case, control, w = _cases_controls(y, horizon, estimand)
    order = np.argsort(-score, kind="mergesort")
    s_sorted = score[order]
    tp = np.cumsum(np.where(case, w, 0.0)[order])
    fp = np.cumsum(np.where(control, w, 0.0)[order])
    thresholds = np.unique(score)[::-1]
    last = np.searchsorted(-s_sorted, -thresholds, side="right") - 1
    return np.r_[0.0, fp[last] / fp[-1]], np.r_[0.0, tp[last] / tp[-1]]


def brier_score(
    y: np.ndarray,
    risk: np.ndarray,
    t: float,
    estimand: str = "net",
    censoring: CensoringWeights | None = None,
) -> float:
    """IPCW Brier score at time ``t`` of the predicted risk by ``t`` (see the module text)."""
    y = check_outcome(y)
    _followed_to(y, t)
    status, w = _weights(y, estimand, censoring).at(y, t)
    return float(np.mean(w * (status - np.asarray(risk, dtype=float)) ** 2))


def integrated_brier_score(
    y: np.ndarray,
    surv: np.ndarray,
    times: np.ndarray,
    estimand: str = "net",
    censoring: CensoringWeights | None = None,
) -> float:
    """Integrated Brier score over ``times`` (at least two, increasing).

    ``surv`` (n, len(times)) is the predicted probability of being free of re-fracture at each
    time, in the estimand (1 - cumulative incidence for ``cif``).
    """
    times = np.asarray(times, dtype=float)
    surv = np.asarray(surv, dtype=float)
    if len(times) < 2 or np.any(np.diff(times) <= 0):
        raise ValueError("the integrated Brier score needs at least two increasing times")
    y = check_outcome(y)
    g = _weights(y, estimand, censoring)
    scores = [brier_score(y, 1.0 - surv[:, k], t, estimand, g) for k, t in enumerate(times)]
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))
