"""Sample size: events per model term and small validation samples (TRIPOD+AI items 10, 21).

Two rules of thumb, both conservative and both stated in the report: a model with fewer than
10 development events per candidate term is prone to overfitting (Peduzzi et al. 1995; Riley
et al. BMJ 2020 give the full calculation), and a validation sample - or one site of it - with
fewer than 100 patients or fewer than 10 events gives metrics too imprecise to read (Collins,
Ogundimu & Altman, Stat Med 2016 recommend at least 100 events). Events are re-fractures by
the horizon, the ones every horizon metric rests on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from refracture.models.outcome import EVENT

__all__ = [
    "MIN_EPV",
    "MIN_EVENTS",
    "MIN_PATIENTS",
    "events_by_horizon",
    "events_per_parameter",
    "small_sample_warnings",
    "small_samples",
]

MIN_EPV = 10.0
MIN_EVENTS = 10
MIN_PATIENTS = 100


def events_by_horizon(time: np.ndarray, event: np.ndarray, horizon: float) -> int:
    """Re-fractures (event 1) at or before the horizon."""
    return int(((np.asarray(event) == EVENT) & (np.asarray(time) <= horizon)).sum())


def events_per_parameter(candidates: list[Any], horizon: float) -> pd.DataFrame:
    """Per model and feature set: development patients, events and events per model term.

    ``terms`` counts every candidate term after encoding (one per numeric or binary predictor,
    one per non-reference level of a categorical one) - penalised models shrink some of them,
    but they were all candidates. The events counted are those the model learns from: all
    development re-fractures for survival models, re-fractures by the horizon for a model of
    the horizon status only (``supports_survival`` False, e.g. the IPCW logistic model).
    """
    rows = []
    for c in candidates:
        r = c.result
        y = r.y_development
        by_h = events_by_horizon(y["time"], y["event"], horizon)
        survival = bool(r.final_model.model.supports_survival)
        events = int(r.events_train) if survival else by_h
        terms = len(r.final_model.term_names)
        epv = events / terms if terms else float("nan")
        rows.append(
            {
                "model": c.model,
                "features": c.feature_set,
                "development patients": int(r.n_train),
                "events (all follow-up)": int(r.events_train),
                f"events by {int(round(horizon))} d": by_h,
                "events counted": events,
                "counted from": "all follow-up" if survival else "by the horizon",
                "model terms": terms,
                "events per term": epv,
                "below 10": bool(np.isfinite(epv) and epv < MIN_EPV),
            }
        )
    return pd.DataFrame(rows)


def small_samples(result: Any) -> pd.DataFrame:
    """The validation set and each of its sites: patients, events by the horizon, too small?

    Read from the selected model's validation predictions (every model of a run is validated
    on the same patients). ``what`` is ``validation set`` or ``site <name>``.
    """
    h = float(result.dataset.horizon)
    pred = result.selected.result.predictions
    groups: list[tuple[str, pd.DataFrame]] = [("validation set", pred)]
    if pred["site"].nunique() > 1 or result.selected.result.split_kind in (
        "site",
        "leave_one_site_out",
    ):
        groups += [(f"site {s}", g) for s, g in pred.groupby("site", sort=True)]
    rows = []
    for what, g in groups:
        ev = events_by_horizon(g["time"].to_numpy(), g["event"].to_numpy(), h)
        rows.append(
            {
                "what": what,
                "patients": int(len(g)),
                "events": ev,
                "small": bool(ev < MIN_EVENTS or len(g) < MIN_PATIENTS),
            }
        )
    return pd.DataFrame(rows, columns=["what", "patients", "events", "small"])


def small_sample_warnings(result: Any) -> list[str]:
    """One line per sample too small to trust, for the terminal and the report.

    The validation set and every validation site with fewer than ``MIN_EVENTS`` re-fractures
    by the horizon or fewer than ``MIN_PATIENTS`` patients, and the selected model when it has
    fewer than ``MIN_EPV`` development events per model term.
    """
    h = int(round(float(result.dataset.horizon)))
    out = []
    for row in small_samples(result).itertuples(index=False):
        if row.small:
            out.append(
                f"{row.what}: {row.patients} patients, {row.events} re-fractures by {h} days "
                f"(fewer than {MIN_PATIENTS} patients or {MIN_EVENTS} events): its metrics are "
                "imprecise, read them with their confidence intervals"
            )
    sel = result.selected
    epv = events_per_parameter([sel], float(result.dataset.horizon)).iloc[0]
    if epv["below 10"]:
        out.append(
            f"{sel.label}: {epv['events per term']:.1f} development events per model term "
            f"({epv['model terms']} terms; fewer than {MIN_EPV:.0f}): expect overfitting"
        )
    return out
