"""Inverse probability of censoring weights at a horizon.

scikit-survival estimates the censoring distribution G (reverse Kaplan-Meier) but applies the
weights only inside its metrics; the IPCW logistic model and the calibration measures need the
weights themselves, so the few lines that turn G into per-patient weights are written here.

Weights follow Graf et al. (Stat Med 1999), as scikit-survival's Brier score does: a patient
with the event by the horizon ``h`` gets ``1 / G(T-)``, a patient still under observation at
``h`` gets ``1 / G(h)``, and a patient censored before ``h`` gets weight 0 (their status at ``h``
is unknown; the weights of the others stand in for them).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sksurv.nonparametric import kaplan_meier_estimator

from refracture.models.outcome import CENSORED, DEATH, EVENT, check_outcome

DeathHandling = Literal["censor", "competing"]


def censoring_survival(
    y: np.ndarray, deaths: DeathHandling = "censor"
) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of the censoring survival G(t) = P(C > t).

    ``deaths="censor"``: a death before re-fracture censors the re-fracture time (net risk),
    so it counts as censoring here. ``deaths="competing"``: a death is an observed outcome
    (the patient is known never to have the re-fracture), so only event 0 is censoring.
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


def horizon_weights(
    y: np.ndarray,
    horizon: float,
    deaths: DeathHandling = "censor",
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Status at the horizon (1 event, 0 no event) and its IPC weight for every patient.

    ``reference`` is the sample G is estimated from (default: ``y`` itself). Patients whose
    status at the horizon is unknown get weight 0 and status 0.
    """
    y = check_outcome(y)
    g_times, g_prob = censoring_survival(y if reference is None else reference, deaths)
    t, ev = y["time"], y["event"]
    case = (ev == EVENT) & (t <= horizon)
    control = t > horizon
    known_before = case.copy()
    if deaths == "competing":
        known_before |= (ev == DEATH) & (t <= horizon)
    g_before = step_left(g_times, g_prob, t)
    g_h = float(step_at(g_times, g_prob, np.array([horizon]))[0])
    g = np.where(known_before, g_before, np.where(control, g_h, np.nan))
    if np.any(g[known_before | control] <= 0):
        raise ValueError(
            "the censoring survival reaches 0 before the horizon: no patient stays under "
            "observation long enough to weight the outcomes"
        )
    weights = np.zeros(len(y))
    used = known_before | control
    weights[used] = 1.0 / g[used]
    return case.astype(np.int8), weights
