"""Inverse probability of censoring weights at a horizon.

scikit-survival estimates the censoring distribution G (reverse Kaplan-Meier) but applies the
weights only inside its metrics, and it evaluates G where a study whose follow-up ends at the
horizon has G = 0; the IPCW logistic model, the calibration measures and the hand-written
IPCW metrics need the weights themselves, so the few lines that turn G into per-patient
weights are written here.

Conventions (Graf et al., Stat Med 1999, with the status known at the horizon ``h``):

* a re-fracture at ``T <= h`` (a case) gets ``1 / G(T-)``: its status is seen if the patient
  was still uncensored just before ``T``;
* under ``deaths="competing"`` a death at ``T < h`` is a known non-event with ``1 / G(T-)``;
* a patient with ``T >= h`` and no re-fracture by ``h`` (a control) gets ``1 / G(h-)``, the
  probability of not being censored before ``h``. A patient censored at exactly ``h`` was seen
  event-free at ``h``: a control. ``G(h-)`` is not 0 when every follow-up ends at ``h`` (a
  1-year protocol), where ``G(h)`` is;
* a patient censored before ``h`` (or, for the net risk, dead before ``h``) gets weight 0:
  their status at ``h`` is unknown; the weights of the others stand in for them.

Where no patient is censored at exactly an event time or at ``h``, ``G(T-) = G(T)`` and
``G(h-) = G(h)``: the weights are scikit-survival's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sksurv.nonparametric import kaplan_meier_estimator

from refracture.models.outcome import CENSORED, DEATH, EVENT, check_outcome

DeathHandling = Literal["censor", "competing"]


def deaths_for(estimand: str) -> DeathHandling:
    """How the estimand treats a death: ``net`` censors it, ``cif`` makes it competing."""
    if estimand not in ("net", "cif"):
        raise ValueError(f"estimand must be 'net' or 'cif', not {estimand!r}")
    return "competing" if estimand == "cif" else "censor"


def censoring_survival(
    y: np.ndarray, deaths: DeathHandling = "censor"
) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of the censoring survival G(t) = P(C > t).

    ``deaths="censor"``: a death before re-fracture censors the re-fracture time (net risk),
    so it counts as censoring here. ``deaths="competing"``: a death is an observed outcome
    (the patient is known never to have the re-fracture), so only event 0 is censoring.
    At tied times events leave the risk set before censorings (scikit-survival's convention).
    """
    y = check_outcome(y)
    observed = y["event"] == EVENT if deaths == "censor" else y["event"] != CENSORED
    times, prob = kaplan_meier_estimator(observed, y["time"], reverse=True)
    return np.asarray(times, dtype=float), np.asarray(prob, dtype=float)


def step_left(
    times: np.ndarray, values: np.ndarray, t: np.ndarray, start: float = 1.0
) -> np.ndarray:
    """Left limit f(t-) of a right-continuous step function with jumps at ``times``."""
    idx = np.searchsorted(times, np.asarray(t, dtype=float), side="left") - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], start)


def step_at(times: np.ndarray, values: np.ndarray, t: np.ndarray, start: float = 1.0) -> np.ndarray:
    """Value f(t) of a right-continuous step function with jumps at ``times``."""
    idx = np.searchsorted(times, np.asarray(t, dtype=float), side="right") - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], start)


class CensoringWeights:
    """The censoring survival G estimated once on ``reference``; status and IPC weights at any
    time (the integrated Brier score asks for twenty).

    Parameters
    ----------
    reference : outcome array G is estimated from.
    deaths : ``censor`` (net risk) or ``competing`` (cumulative incidence).
    """

    def __init__(self, reference: np.ndarray, deaths: DeathHandling = "censor"):
        self.deaths = deaths
        self.times_, self.prob_ = censoring_survival(reference, deaths)

    def at(self, y: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
        """Status at ``horizon`` (1 event, 0 no event or unknown) and weight (0 if unknown)."""
        y = check_outcome(y)
        t, ev = y["time"], y["event"]
        h = float(horizon)
        case = (ev == EVENT) & (t <= h)
        known_before = case.copy()
        if self.deaths == "competing":
            known_before |= (ev == DEATH) & (t < h)
        control = ~known_before & (t >= h)
        g_before = step_left(self.times_, self.prob_, t)
        g_h = float(step_left(self.times_, self.prob_, np.array([h]))[0])
        g = np.where(known_before, g_before, np.where(control, g_h, np.nan))
        used = known_before | control
        if np.any(g[used] <= 0):
            # only possible with a foreign reference whose follow-up stops earlier than y's
            raise ValueError(
                "the censoring survival reaches 0 before the horizon: no patient stays under "
                "observation long enough to weight the outcomes"
            )
        weights = np.zeros(len(y))
        weights[used] = 1.0 / g[used]
        return case.astype(np.int8), weights


def horizon_weights(
    y: np.ndarray,
    horizon: float,
    deaths: DeathHandling = "censor",
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Status at the horizon (1 event, 0 no event) and its IPC weight for every patient.

    ``reference`` is the sample G is estimated from (default: ``y`` itself, as the metrics
    use it). Patients whose status at the horizon is unknown get weight 0 and status 0.

    Returns
    -------
    status : int8 array (n,)
    weights : float array (n,), 0 for unknown status
    """
    return CensoringWeights(y if reference is None else reference, deaths).at(y, horizon)
