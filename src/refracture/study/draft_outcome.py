"""``refracture init``: the patient ID, the follow-up time and the event, from a study's table.

The event is chosen by meaning, never by the first 0/1 column: re-fracture is the event and
death competes with it. Every candidate (a 0/1 or 0/1/2 column named like an event, a
re-fracture, a death; a death date) is explained in the draft. A 0/1/2 event column is taken
as it is; separate 0/1 re-fracture and death columns are combined (``outcome.death``); a
death column is never the event while a re-fracture column exists. When the names cannot
tell, the draft holds a required edit that ``check`` and ``train`` refuse until it is made.
The word lists are hand-written and deliberately small, as in the rest of ``init``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refracture.config_edits import REQUIRED_EDIT
from refracture.covariates import columns_hint
from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.study.draft_columns import TableColumn, fmt, words

__all__ = ["EventChoice", "choose_event", "find_id", "find_time", "horizon", "time_why"]

#: Words of a follow-up time column's name, by how sure they make us (higher wins).
TIME_WORDS = {
    "time": 3, "futime": 3, "lenfol": 3, "followup": 3, "follow": 3, "fu": 3, "tte": 3,
    "survival": 2, "surv": 2, "days": 2, "day": 2, "weeks": 2, "week": 2, "months": 2,
    "month": 2, "years": 2, "year": 2, "duration": 1, "stop": 1, "tstop": 1, "t": 1,
}  # fmt: skip
#: Words of an event column's name (0 censored, 1 event, 2 competing death).
EVENT_WORDS = {
    "event": 3, "status": 3, "fstat": 3, "arrest": 3, "cens": 3, "censor": 3, "censored": 3,
    "refracture": 3, "fail": 2, "failure": 2, "relapse": 2, "recurrence": 2, "recur": 2,
    "outcome": 2, "endpoint": 2, "delta": 1, "e": 1, "d": 1,
}  # fmt: skip
#: Pieces of a name that say re-fracture (any language we met) or death.
REFRACTURE = ("refrac", "refx", "fract", "frakt", "fratt", "newfx", "nvf", "vcf")
DEATH = ("death", "dead", "died", "deceas", "mortal", "vstatus", "vital", "verstorb", "tod",
         "exitus", "deces", "muert", "fallec", "morte", "decess", "overl")  # fmt: skip
#: Pieces that say it surely is a re-fracture (a new fracture after the procedure).
SURELY_REFRACTURE = ("refrac", "refrakt", "refx", "newfx", "nvf", "newfract", "subsequent")
#: Words of a name that say a history or a count, not an outcome (prior_fracture, n_fractured),
#: and pieces that say so inside one word (Vorfraktur, prevfx).
NOT_OUTCOME = {"prior", "previous", "history", "baseline", "old", "n", "number", "count",
               "anzahl", "num", "index", "vor"}  # fmt: skip
NOT_OUTCOME_PIECES = ("prior", "previous", "prev", "vorfrak", "vorbest", "history", "anamn",
                      "baseline", "antecedent", "previa")  # fmt: skip
CENSORING_WORDS = {"cens", "censor", "censored", "censoring"}
ID_WORDS = {"id", "pid", "patid", "patient", "subject", "subjid", "mrn", "record", "case"}
UNIT_WORDS = {
    "days": "days", "day": "days", "d": "days", "weeks": "weeks", "week": "weeks",
    "wk": "weeks", "wks": "weeks", "months": "months", "month": "months", "mo": "months",
    "years": "years", "year": "years", "yr": "years", "yrs": "years",
}  # fmt: skip
ONE_YEAR = {"days": 365.0, "weeks": 52.0, "months": 12.0, "years": 1.0}


def name_score(name: str, table: dict[str, int]) -> int:
    """How strongly a column name says ``table``'s words (0 for an age)."""
    tokens = set(words(name))
    if "age" in tokens:
        return 0
    joined = re.sub(r"[^a-z0-9]", "", str(name).lower())
    found = {w for w in table if w in tokens}
    found |= {w for w in table if len(w) >= 4 and w in joined and not any(w in t for t in tokens)}
    return sum(table[w] for w in found)


def _says(name: str, pieces: tuple[str, ...]) -> bool:
    joined = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if set(words(name)) & NOT_OUTCOME or any(p in joined for p in NOT_OUTCOME_PIECES):
        return False
    return any(p in joined for p in pieces)


def find_id(cols: dict[str, TableColumn], given: str | None, path: Path) -> str:
    if given is not None:
        if given not in cols:
            raise InputError(
                f"--id-column '{given}' is not a column of the clinical table"
                + columns_hint([given], cols),
                file=path,
            )
        return given
    if PATIENT_ID in cols:
        return PATIENT_ID
    n = len(next(iter(cols.values())).text)
    unique = [c.name for c in cols.values() if c.n_missing == 0 and c.text.nunique() == n and n > 1]
    named = [c for c in unique if set(words(c)) & ID_WORDS]
    text = [c for c in unique if not cols[c].is_numeric]
    if named or text:
        return (named or text)[0]
    raise InputError(
        "cannot tell which column holds the patient IDs (none is named like patient_id, id or "
        "subject with one value per row); add such a column or give --id-column",
        file=path,
    )


def _is_time(c: TableColumn) -> bool:
    v = c.values
    return c.is_numeric and len(np.unique(v)) > 2 and bool(np.all(v >= 0))


def is_event(c: TableColumn) -> bool:
    v = c.values
    return c.is_numeric and bool(np.isin(v, (0, 1, 2)).all()) and bool((v == 1).any())


def find_time(cols: dict[str, TableColumn], given: str | None, path: Path) -> tuple[str, list[str]]:
    """The follow-up time column and the other well-named time columns (left out)."""
    if given is not None:
        if given not in cols:
            raise InputError(
                f"--time '{given}' is not a column of the clinical table"
                + columns_hint([given], cols),
                file=path,
            )
        return given, []
    scored = [(name_score(c.name, TIME_WORDS), c.name) for c in cols.values() if _is_time(c)]
    scored = [(s, n) for s, n in scored if s > 0]
    if not scored:
        raise InputError(
            "cannot tell which column holds the time of the outcome (no numeric column >= 0 "
            "named like time, days, futime or follow-up); name it with --time COLUMN",
            file=path,
        )
    best = max(s for s, _ in scored)
    names = [n for s, n in scored if s == best]
    return names[0], [n for s, n in scored if n != names[0] and s >= 3]


@dataclass
class EventChoice:
    """The event column (None: a required edit), the death column combined with it (or
    None), one line per candidate, the candidates left out, and the required edit's text."""

    event: str | None
    death: str | None = None
    candidates: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    edit: str = ""

    @property
    def yaml_event(self) -> str:
        return self.event if self.event is not None else f"{REQUIRED_EDIT}: {self.edit}"


_SAID = {
    "re-fracture": "named like a re-fracture",
    "death": "named like death",
    "event": "named like an event or a status",
}


def _kind(c: TableColumn) -> str:
    if _says(c.name, REFRACTURE):
        return "re-fracture"
    return "death" if _says(c.name, DEATH) else "event"


def _candidates(cols: dict[str, TableColumn]) -> dict[str, str]:
    """Columns that could be the event or death (0/1(/2) columns named like an outcome),
    each with its kind: re-fracture, death or event."""
    out = {}
    for c in cols.values():
        if is_event(c) and (
            name_score(c.name, EVENT_WORDS) > 0 or _says(c.name, REFRACTURE) or _says(c.name, DEATH)
        ):
            out[c.name] = _kind(c)
    return out


def _line(c: TableColumn, kind: str) -> str:
    codes = "/".join(fmt(x) for x in np.unique(c.values))
    return f"{c.name}: {_SAID[kind]}, codes {codes}"


def choose_event(
    cols: dict[str, TableColumn], given: str | None, given_death: str | None, path: Path
) -> EventChoice:
    """The event (and death) columns by meaning (module docstring)."""
    for option, name in (("--event", given), ("--death", given_death)):
        if name is not None and name not in cols:
            raise InputError(
                f"{option} '{name}' is not a column of the clinical table"
                + columns_hint([name], cols),
                file=path,
            )
    found = _candidates(cols)
    deaths = [n for n, k in found.items() if k == "death"]
    refx = [n for n, k in found.items() if k == "re-fracture"]
    generic = [n for n, k in found.items() if k == "event"]
    coded = [n for n in refx + generic if 2 in cols[n].values]
    lines = [_line(cols[n], k) for n, k in found.items()]
    lines += [
        f"{c.name}: death, but dates: a date is not an outcome code; code death as 2 in the "
        "event column, or as a 0/1 death column"
        for c in cols.values()
        if _says(c.name, DEATH) and c.name not in found and c.unreadable and not c.is_numeric
    ]

    def best(names: list[str]) -> str:
        def score(n: str) -> tuple[int, int]:
            sure = _says(n, SURELY_REFRACTURE)
            return name_score(n, EVENT_WORDS) + 3 * (n in refx) + 2 * sure, -list(found).index(n)

        return max(names, key=score)

    if given is not None:
        binary = not (set(cols[given].values.tolist()) - {0.0, 1.0})
        death = given_death or (deaths[0] if binary and deaths and given not in deaths else None)
        choice = EventChoice(given, death, lines)
    elif coded:
        choice = EventChoice(best(coded), given_death, lines)
    elif refx:
        choice = EventChoice(best(refx), given_death or (deaths[0] if deaths else None), lines)
    elif generic and deaths:
        choice = EventChoice(
            None, given_death or deaths[0], lines,
            edit=f"the re-fracture column (0/1): {' or '.join(generic)}? ({deaths[0]} looks "
            "like death, which competes with re-fracture and is never the event)",
        )  # fmt: skip
    elif generic:
        choice = EventChoice(best(generic), given_death, lines)
    elif deaths:  # the only candidate: say loudly that it looks like death
        choice = EventChoice(best(deaths), None, lines)
        choice.candidates.append(
            f"{choice.event} is named like death, yet it is the only outcome column: every "
            "output will call its events re-fractures; if re-fracture has its own column, "
            "name it with --event"
        )
    else:
        raise InputError(
            "cannot tell which column holds the event of the outcome (no column of 0 "
            "(censored) and 1 (event) named like event, status, re-fracture or death); name it "
            "with --event COLUMN",
            file=path,
        )
    used = {choice.event, choice.death}
    choice.left_out = [n for n in found if n not in used]
    return choice


def time_why(c: TableColumn) -> str:
    v = c.values
    why = f"follow-up time: {fmt(v.min())}..{fmt(v.max())}, median {fmt(np.median(v))}"
    return why + (f"; {c.n_missing} missing" if c.n_missing else "")


def event_why(c: TableColumn, death: TableColumn | None) -> str:
    v = c.values
    counts = ", ".join(f"{int(k)}: {int((v == k).sum())}" for k in (0, 1, 2) if (v == k).any())
    why = f"outcome codes {counts}"
    if set(words(c.name)) & CENSORING_WORDS:
        why += "; 1 is read as the event: if 1 means censored here, recode the column"
    if not (v == 0).any():
        why += "; no 0: if 1 means censored and 2 the event (R's coding), recode it to 0/1"
    if death is not None:
        why += f"; combined with '{death.name}' (death) into 0/1/2"
    return why


def horizon(time: np.ndarray, event: np.ndarray, name: str) -> tuple[float, str]:
    """One year when the time unit is known (or looks like days) and the follow-up reaches
    it, else the median follow-up; with the reason, for a comment."""
    t_max = float(time.max())
    unit = next((UNIT_WORDS[w] for w in words(name) if w in UNIT_WORDS), None)
    said = f"'{name}' is in {unit}" if unit else ""
    if unit is None and t_max > 100:
        unit, said = "days", f"'{name}' looks like days (longest follow-up {fmt(t_max)})"
    if unit is not None and ONE_YEAR[unit] <= t_max:
        h = ONE_YEAR[unit]
        reach = int((time >= h).sum())
        return h, (
            f"one year: {said}, and {reach} patients are followed to {fmt(h)} or beyond "
            f"(longest follow-up {fmt(t_max)})"
        )
    h = float(np.median(time))
    h = float(math.floor(h)) if h >= 10 else float(f"{h:.3g}")
    if not ((event == 1) & (time <= h)).any():
        h = t_max
    year = f"one year ({fmt(ONE_YEAR[unit])} {unit})" if unit else "one year"
    why = (
        f"the follow-up does not reach {year}"
        if unit
        else f"the unit of '{name}' is not known, so one year cannot be told"
    )
    return h, (
        f"{why}: the median follow-up; any value up to the longest follow-up ({fmt(t_max)}) works"
    )
