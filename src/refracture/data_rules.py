"""The rules a modelling data set must meet, each refused with one line naming the column,
config key or patients: an outcome that can be read (times >= 0, codes 0/1/2, or a 0/1
re-fracture column combined with a 0/1 death column), re-fractures by the horizon, and a
design whose terms can be estimated (no constant column, no category with one patient, no
collinear columns). Used by :func:`refracture.dataset.assemble`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from refracture.config import CovariatesConfig, RunConfig
from refracture.errors import ConfigError, InputError
from refracture.models.design import collinear_columns
from refracture.models.outcome import DEATH, EVENT, make_outcome
from refracture.text import name_list

__all__ = ["check_design", "check_events", "events_by", "read_outcome"]


def read_outcome(
    table: pd.DataFrame, ids: pd.Series, cfg: RunConfig, source: str | Path | None
) -> np.ndarray:
    """The structured outcome of the clinical table (time, and the 0/1/2 event)."""
    oc = cfg.outcome
    for col, key in ((oc.time, "outcome.time"), (oc.event, "outcome.event")):
        if col not in table.columns:
            raise InputError(
                f"outcome column '{col}' is missing from the clinical table", key=key, file=source
            )
    time = pd.to_numeric(table[oc.time], errors="coerce")
    # Zero is a time: an event or a loss on the day of surgery (real registries have them).
    bad = time.isna() | ~np.isfinite(time.to_numpy(dtype=float, na_value=np.nan)) | (time < 0)
    if bad.any():
        found = ", ".join(repr(v) for v in table[oc.time][bad].head(3))
        raise InputError(
            f"'{oc.time}' must be a number >= 0, the time from surgery to the event or the last "
            f"follow-up (missing, negative or not a number); found {found}",
            patient_id=name_list(ids[bad], 5),
            file=source,
        )
    event = pd.to_numeric(table[oc.event], errors="coerce")
    if oc.death is not None:
        event = _combined_event(table, ids, event, oc.death, oc.event, source)
    bad = ~event.isin([0, 1, 2])
    if bad.any():
        examples = ", ".join(repr(v) for v in table[oc.event][bad].head(3))
        raise InputError(
            f"'{oc.event}' must be 0 (censored), 1 (re-fracture) or 2 (death); found {examples}",
            patient_id=name_list(ids[bad], 5),
            file=source,
        )
    return make_outcome(event.to_numpy(dtype=np.int8), time.to_numpy(dtype=float))


def _combined_event(
    table: pd.DataFrame,
    ids: pd.Series,
    refracture: pd.Series,
    death_column: str,
    event_column: str,
    source: str | Path | None,
) -> pd.Series:
    """One 0/1/2 event from a 0/1 re-fracture column and a 0/1 death column
    (``outcome.death``): 1 re-fracture, else 2 death, else 0 censored."""
    if death_column not in table.columns:
        raise InputError(
            f"death column '{death_column}' is missing from the clinical table",
            key="outcome.death",
            file=source,
        )
    death = pd.to_numeric(table[death_column], errors="coerce")
    for values, name in ((refracture, event_column), (death, death_column)):
        bad = ~values.isin([0, 1])
        if bad.any():
            found = ", ".join(repr(v) for v in table[name][bad].head(3))
            raise InputError(
                f"'{name}' must be 0 or 1 when outcome.death combines a re-fracture and a death "
                f"column; found {found}",
                patient_id=name_list(ids[bad], 5),
                file=source,
            )
    return pd.Series(np.where(refracture == 1, 1, np.where(death == 1, 2, 0)), index=table.index)


def check_design(
    X: pd.DataFrame,
    cov: CovariatesConfig,
    imaging: list[str],
    categories: dict[str, list[str]],
) -> None:
    """Refuse a covariate with one value for every patient, a category with one patient, and
    covariates that are exact linear combinations of each other: no model term can be
    estimated for them."""
    for col in X.columns:
        values = X[col].dropna().unique()
        if len(values) == 1:
            key = "imaging.features" if col in imaging else "covariates"
            raise InputError(
                f"column '{col}' has the same value ({values[0]}) for every patient, so it "
                f"cannot be modelled; leave it out of {key}",
                key=key,
            )
    for col in categories:
        counts = X[col].value_counts()
        single = sorted(str(lv) for lv in counts.index[counts == 1])
        if single:
            raise InputError(
                f"column '{col}' has {'a level' if len(single) == 1 else 'levels'} with one "
                f"patient ({', '.join(single)}): no model can estimate a term from one patient, "
                "and a split may leave it out of the training data; merge it with another level",
                key=f"covariates.categorical.{col}",
            )
    design = X[[*cov.numeric, *cov.binary, *imaging]].astype(float)
    for col, levels in categories.items():
        for level in levels[1:]:
            design[f"{col}[{level}]"] = (X[col] == level).astype(float).where(X[col].notna())
    dependent = collinear_columns(design)
    if dependent:
        names = ", ".join(f"'{c}'" for c in dependent)
        raise InputError(
            f"columns {names} are collinear (one is a linear combination of the others), so "
            "their coefficients cannot be estimated; leave one of them out of covariates",
            key="covariates",
        )


def events_by(y: np.ndarray, horizon: float) -> int:
    return int(((y["event"] == EVENT) & (y["time"] <= horizon)).sum())


def _outcome_counts(y: np.ndarray) -> str:
    ev = y["event"]
    parts = [f"{int((ev == 0).sum())} censored"]
    if (ev == DEATH).any():
        parts.append(f"{int((ev == DEATH).sum())} died")
    return f"{len(y)} patients: {', '.join(parts)}"


def check_events(y: np.ndarray, cfg: RunConfig) -> None:
    """Refuse an outcome no model can learn from, with the counts: no event 1 at all, a
    horizon beyond every follow-up, no event 1 by the horizon.

    A horizon equal to the longest follow-up is accepted: a study that follows every patient
    for one year censors the event-free ones at exactly the horizon, and they are event-free
    at the horizon.
    """
    horizon = cfg.outcome.horizon_days
    ev, t = y["event"], y["time"]
    if not (ev == EVENT).any():
        raise InputError(
            f"no re-fracture in the outcome (no event 1 among {_outcome_counts(y)}), so no "
            "risk model can be fitted",
            key="outcome.event",
        )
    if horizon > t.max():
        raise ConfigError(
            f"the horizon ({horizon:g}) is beyond the longest follow-up ({t.max():g}, in the "
            f"unit of '{cfg.outcome.time}'); choose a horizon of at most {t.max():g}",
            key="outcome.horizon_days",
        )
    by_horizon = events_by(y, horizon)
    if by_horizon == 0:
        raise InputError(
            f"no re-fracture by the horizon ({horizon:g}): the {int((ev == EVENT).sum())} "
            f"re-fractures all come later (first at {t[ev == EVENT].min():g}), so the risk by "
            "the horizon cannot be modelled; choose a longer outcome.horizon_days",
            key="outcome.horizon_days",
        )
