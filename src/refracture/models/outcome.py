"""The outcome array shared by models and metrics, and the estimand it is read in.

A numpy structured array with fields ``event`` (int8: 0 censored, 1 re-fracture, 2 death
before re-fracture) and ``time`` (float64, days from surgery). Keeping the three-valued event
lets every metric read the outcome in either estimand:

* ``net``: death censors the re-fracture time (the net risk, 1 - Kaplan-Meier);
* ``cif``: death is a competing event, after which re-fracture can no longer happen (the
  cumulative incidence, Aalen-Johansen).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

OUTCOME_DTYPE = np.dtype([("event", np.int8), ("time", np.float64)])
CENSORED, EVENT, DEATH = 0, 1, 2

Estimand = Literal["net", "cif"]
ESTIMANDS: tuple[str, ...] = ("net", "cif")
#: What each estimand's risk is, in words (error messages, model cards).
ESTIMAND_TEXT = {
    "net": "the net risk of re-fracture with death censored",
    "cif": "the cumulative incidence of re-fracture with death competing",
}

# Tagged on every training run so a reader of the results knows the estimand.
#: The note for estimand ``net`` (kept under its historical name).
COMPETING_RISK_NOTE = (
    "Estimand: net risk. Death before re-fracture (event 2) censors the re-fracture time: "
    "risks are net risks of re-fracture by the horizon (as if death were prevented), and every "
    "metric reads the outcome the same way (observed risk 1 - Kaplan-Meier, deaths counted as "
    "censoring in the IPC weights). The net risk exceeds the cumulative incidence where deaths "
    "are common."
)
#: The same statement for the competing-risk estimand.
CIF_NOTE = (
    "Estimand: cumulative incidence. Death before re-fracture (event 2) is a competing event. "
    "Risks are cumulative incidences "
    "of re-fracture by the horizon (a patient who dies first never has the re-fracture); every "
    "metric reads the outcome the same way: discrimination counts deaths as controls "
    "(Wolbers 2009, Blanche 2013), Brier and calibration compare with the Aalen-Johansen "
    "cumulative incidence, and only event 0 is censoring in the IPC weights."
)
#: The note tagged on a run of each estimand.
ESTIMAND_NOTES = {"net": COMPETING_RISK_NOTE, "cif": CIF_NOTE}


def estimand_note(estimand: str) -> str:
    """What a reader of the results needs to know about the estimand (tagged on runs)."""
    return CIF_NOTE if check_estimand(estimand) == "cif" else COMPETING_RISK_NOTE


def check_estimand(estimand: str) -> Estimand:
    if estimand not in ESTIMANDS:
        raise ValueError(f"estimand must be 'net' or 'cif', not {estimand!r}")
    return estimand  # type: ignore[return-value]


def resolve_estimand(requested: str | None, y: np.ndarray) -> Estimand:
    """The run's estimand: the configured one, else ``cif`` when the outcome has deaths."""
    if requested is not None:
        return check_estimand(requested)
    return "cif" if bool(np.any(check_outcome(y)["event"] == DEATH)) else "net"


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


def status_at(y: np.ndarray, horizon: float, estimand: str = "net") -> np.ndarray:
    """Status by the horizon: 1 re-fracture, 0 known free of it, -1 unknown.

    Re-fracture at or before the horizon is 1. A patient followed to the horizon without it
    is 0, including one censored at exactly the horizon (a 1-year protocol ends follow-up on
    day 365: the patient was seen event-free at the horizon). Censored before the horizon:
    -1. A death before the horizon is -1 for ``net`` (it censors the re-fracture time) and 0
    for ``cif`` (the patient will never have the re-fracture).
    """
    y = check_outcome(y)
    t, ev = y["time"], y["event"]
    case = (ev == EVENT) & (t <= horizon)
    free = ~case & (t >= horizon)
    if check_estimand(estimand) == "cif":
        free |= ev == DEATH
    out = np.full(len(y), -1, dtype=np.int8)
    out[free] = 0
    out[case] = 1
    return out
