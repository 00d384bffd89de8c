"""The outcome array shared by models and metrics, and the two estimands.

A numpy structured array with fields ``event`` (int8: 0 censored, 1 re-fracture, 2 death
before re-fracture) and ``time`` (float64, days from surgery). Keeping the three-valued event
lets a model estimate either estimand:

- ``"cif"``: the cumulative incidence of re-fracture by the horizon with death as a competing
  event (a patient who died without re-fracture is known never to have had one);
- ``"net"``: the net risk, with death treated as censoring (the risk in a world without death).
"""

from __future__ import annotations

import numpy as np

OUTCOME_DTYPE = np.dtype([("event", np.int8), ("time", np.float64)])
CENSORED, EVENT, DEATH = 0, 1, 2

#: The estimands a model can be fitted for (config ``outcome.estimand``).
ESTIMANDS = ("net", "cif")
#: What each estimand's risk is, in words (error messages, model cards).
ESTIMAND_TEXT = {
    "net": "the net risk of re-fracture with death censored",
    "cif": "the cumulative incidence of re-fracture with death competing",
}

# Tagged on every training run so a reader of the results knows the estimand.
#: The note for estimand ``net`` (kept under its historical name).
COMPETING_RISK_NOTE = (
    "Death before re-fracture (event 2) is a competing event. The models estimate the net "
    "risk of re-fracture by the horizon, treating death as censoring (Kaplan-Meier / Cox "
    "cause-specific hazard); discrimination and Brier metrics do the same. Calibration "
    "(slope, intercept, O/E ratio and plots) compares predictions with the observed "
    "cumulative incidence (Aalen-Johansen when deaths are present), in which a death is a "
    "known non-event, so a net-risk model over-predicts slightly where deaths are common."
)
CIF_NOTE = (
    "Death before re-fracture (event 2) is a competing event. The models estimate the "
    "cumulative incidence of re-fracture by the horizon (the chance of a re-fracture within "
    "that time, allowing that a patient may die first), so a death is a known non-event; the "
    "risk of death by the horizon is estimated alongside."
)
#: The note tagged on a run of each estimand.
ESTIMAND_NOTES = {"net": COMPETING_RISK_NOTE, "cif": CIF_NOTE}


def make_outcome(event: object, time: object) -> np.ndarray:
    """Build the structured outcome array from event codes (0/1/2) and times (>= 0: an event
    or a loss on the day of surgery is time 0)."""
    ev = np.asarray(event)
    t = np.asarray(time, dtype=np.float64)
    if ev.ndim != 1 or t.ndim != 1 or ev.shape != t.shape:
        raise ValueError("event and time must be one-dimensional arrays of the same length")
    if ev.dtype.kind == "b":
        ev = ev.astype(np.int8)
    if ev.dtype.kind == "f" and (not np.all(np.isfinite(ev)) or np.any(ev != np.round(ev))):
        raise ValueError("event codes must be the integers 0, 1 or 2")
    if not np.isin(ev, (CENSORED, EVENT, DEATH)).all():
        raise ValueError("event codes must be 0 (censored), 1 (event) or 2 (competing death)")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0")
    y = np.empty(ev.shape[0], dtype=OUTCOME_DTYPE)
    y["event"] = ev.astype(np.int8)
    y["time"] = t
    return y


def check_outcome(y: np.ndarray) -> np.ndarray:
    """Accept an outcome array from :func:`make_outcome` (or a compatible one)."""
    if not isinstance(y, np.ndarray) or y.dtype.names is None:
        raise TypeError("y must be the structured outcome array of refracture.models.make_outcome")
    if set(y.dtype.names) != {"event", "time"}:
        raise TypeError("y must have the fields 'event' and 'time'")
    if y.dtype != OUTCOME_DTYPE:
        y = make_outcome(y["event"], y["time"])
    return y


def resolve_estimand(configured: str | None, y: np.ndarray) -> str:
    """The estimand of a run: the configured one, else ``cif`` when any death (code 2) occurs.

    ``outcome.estimand`` left unset means "cif when the event column holds code 2, else net".
    """
    if configured is not None:
        if configured not in ESTIMANDS:
            raise ValueError(f"estimand must be one of {', '.join(ESTIMANDS)}, not {configured!r}")
        return configured
    return "cif" if np.any(check_outcome(y)["event"] == DEATH) else "net"


def cause_outcome(y: np.ndarray, cause: int) -> np.ndarray:
    """The outcome with ``cause`` as the event (code 1) and every other outcome censored (0).

    ``cause_outcome(y, DEATH)`` is the data of the cause-specific hazard of death.
    """
    y = check_outcome(y)
    return make_outcome((y["event"] == cause).astype(np.int8), y["time"])


def to_sksurv(y: np.ndarray) -> np.ndarray:
    """scikit-survival's form: boolean ``event`` (re-fracture only) then ``time``.

    Death and censoring both become ``False``: the net risk of re-fracture.
    """
    y = check_outcome(y)
    out = np.empty(y.shape[0], dtype=[("event", bool), ("time", np.float64)])
    out["event"] = y["event"] == EVENT
    out["time"] = y["time"]
    return out


def status_at(y: np.ndarray, horizon: float) -> np.ndarray:
    """Status by the horizon: 1 re-fracture, 0 known free of it, -1 unknown.

    A death before the horizon counts as unknown here (net risk, death censored); the
    competing-risk view used in calibration lives in :mod:`refracture.models.ipcw`.
    """
    y = check_outcome(y)
    out = np.where(y["time"] > horizon, 0, -1)
    out[(y["event"] == EVENT) & (y["time"] <= horizon)] = 1
    return out.astype(np.int8)
