"""``refracture init``: a run config drafted from a study's own clinical table.

The draft describes the user's study, never the synthetic one: its ID and outcome columns,
each other column's kind as guessed from its values, a horizon the follow-up reaches. Every
guess is written on its own commented line ("# guessed numeric: 52 distinct values 18..91")
for the user to confirm before training. The rules are deliberately simple and predictable
(names for the outcome and ID columns, values for the covariate kinds); nothing here is a
statistical model of the table, so it is written by hand.

The draft validates with :func:`refracture.config.parse_config`, and the table is checked
against it as ``refracture train`` would (:func:`refracture.dataset.assemble`), so a problem
training would stop on (a negative time, too few events) is reported by ``init`` already.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from refracture.config import parse_config
from refracture.covariates import category_label, columns_hint
from refracture.errors import InputError, RefractureError
from refracture.ids import PATIENT_ID, patient_id_text
from refracture.tables import read_patient_table

__all__ = ["ColumnGuess", "Draft", "draft_config", "write_draft"]

#: Words of a follow-up time column's name, by how sure they make us (higher wins).
TIME_WORDS = {
    "time": 3, "futime": 3, "lenfol": 3, "followup": 3, "follow": 3, "fu": 3, "tte": 3,
    "survival": 2, "surv": 2, "days": 2, "day": 2, "weeks": 2, "week": 2, "months": 2,
    "month": 2, "years": 2, "year": 2, "duration": 1, "stop": 1, "tstop": 1, "t": 1,
}  # fmt: skip
#: Words of an event column's name (0 censored, 1 event, 2 competing death).
EVENT_WORDS = {
    "event": 3, "status": 3, "fstat": 3, "vstatus": 3, "arrest": 3, "death": 3, "dead": 3,
    "died": 3, "cens": 3, "censor": 3, "censored": 3, "refracture": 3, "fail": 2,
    "failure": 2, "relapse": 2, "recurrence": 2, "recur": 2, "outcome": 2, "endpoint": 2,
    "delta": 1, "e": 1, "d": 1,
}  # fmt: skip
CENSORING_WORDS = {"cens", "censor", "censored", "censoring"}
ID_WORDS = {"id", "pid", "patid", "patient", "subject", "subjid", "mrn", "record", "case"}
SITE_WORDS = {"site", "centre", "center", "hospital", "inst", "institution", "clinic"}
#: Time units a column name can state, and one year in each.
UNIT_WORDS = {
    "days": "days", "day": "days", "d": "days", "weeks": "weeks", "week": "weeks",
    "wk": "weeks", "wks": "weeks", "months": "months", "month": "months", "mo": "months",
    "years": "years", "year": "years", "yr": "years", "yrs": "years",
}  # fmt: skip
ONE_YEAR = {"days": 365.0, "weeks": 52.0, "months": 12.0, "years": 1.0}
#: Plausible ranges written for columns whose meaning the name gives away (training refuses
#: values outside; they replace refracture's built-in ranges for these names).
RECOGNISED_RANGES = {
    "age": ((0.0, 120.0), "an age in years"),
    "bmi": ((10.0, 80.0), "a body-mass index in kg/m2"),
    "tscore": ((-8.0, 4.0), "a bone-density T-score"),
}
MAX_LEVELS = 20  # more distinct texts than this: free text or an identifier, not a category
MAX_MISSING = 0.5  # a column missing for more patients than this is left out
FEW_CODES = 10  # integer columns with at most this many values may be codes
DEFAULT_MODELS = ["cox", "coxnet", "logistic", "rsf"]
DEFAULT_IMAGING = ["pdff_mean_normal", "r2star_mean_normal"]


@dataclass
class ColumnGuess:
    """What ``init`` made of one column of the clinical table.

    ``kind`` is one of id, time, event, site, numeric, binary, categorical or left_out;
    ``why`` the evidence shown to the user; ``reference`` the reference level of a
    categorical covariate; ``range`` a plausible range written for it.
    """

    name: str
    kind: str
    why: str
    reference: str | None = None
    range: tuple[float, float] | None = None


@dataclass
class Draft:
    """A drafted run config: the YAML ``text`` and what it was drafted from."""

    text: str
    clinical: Path
    manifest: Path | None
    id_column: str
    time: str
    event: str
    horizon: float
    horizon_why: str
    columns: list[ColumnGuess]
    n_patients: int
    n_events_by_horizon: int
    n_parameters: int
    notes: list[str] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[ColumnGuess]:
        return [c for c in self.columns if c.kind in kinds]


def _words(name: str) -> list[str]:
    """``Survival_in_days`` -> [survival, in, days]; ``horTh`` -> [hor, th]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _name_score(name: str, words: dict[str, int]) -> int:
    """How strongly a column name says ``words``: the sum over the words it holds
    (``Survival_in_days`` 4 beats ``Months_from_Diagnosis`` 2); 0 for an age."""
    tokens = set(_words(name))
    if "age" in tokens:
        return 0
    joined = re.sub(r"[^a-z0-9]", "", str(name).lower())
    found = {w for w in words if w in tokens}
    # a word inside a longer name (futime, survtime), unless a matched word already holds it
    found |= {w for w in words if len(w) >= 4 and w in joined and not any(w in t for t in tokens)}
    return sum(words[w] for w in found)


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.4g}"


def _scalar(v: object) -> str:
    """A YAML scalar, quoted only where YAML needs it ('1', 'yes', 'a: b')."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1000)
    return text.strip().removesuffix("...").strip()


def _read_table(path: Path, id_column: str | None) -> pd.DataFrame:
    """The clinical table with every column as read for training: text where training reads
    text (the ID and categories), numbers parsed the same way."""
    if path.suffix.lower() == ".csv" and path.is_file():
        try:
            header = list(pd.read_csv(path, nrows=0).columns)
        except Exception:  # noqa: BLE001 - read_patient_table reports it in one line
            header = []
        return read_patient_table(path, "clinical table", text_columns=header)
    return read_patient_table(path, "clinical table")


@dataclass
class _Column:
    """One column's values, as text and as numbers."""

    name: str
    text: pd.Series  # category labels, NaN when missing
    number: pd.Series  # float, NaN when missing or not a number

    @classmethod
    def of(cls, name: str, raw: pd.Series) -> _Column:
        if raw.dtype == bool:
            raw = raw.astype(int)
        text = raw.map(category_label)
        lowered = text.str.lower() if text.notna().any() else text
        as_bool = lowered.map({"true": "1", "false": "0"})
        number = pd.to_numeric(as_bool.fillna(text), errors="coerce").astype(float)
        return cls(name, text, number)

    @property
    def present(self) -> pd.Series:
        return self.text.notna()

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())

    @property
    def is_numeric(self) -> bool:
        ok = self.present
        return bool(ok.any()) and bool(self.number[ok].notna().all())

    @property
    def values(self) -> np.ndarray:
        return self.number[self.present].to_numpy(dtype=float)

    @property
    def levels(self) -> pd.Series:
        """Counts of each text value, the most frequent first (ties: alphabetical)."""
        counts = self.text[self.present].value_counts()
        return counts.sort_index().sort_values(ascending=False, kind="mergesort")


def _find_id(cols: dict[str, _Column], given: str | None, path: Path) -> str:
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
    named = [c for c in unique if set(_words(c)) & ID_WORDS]
    text = [c for c in unique if not cols[c].is_numeric]
    if named or text:
        return (named or text)[0]
    raise InputError(
        "cannot tell which column holds the patient IDs (none is named like patient_id, id or "
        "subject with one value per row); add such a column or give --id-column",
        file=path,
    )


def _pick(
    cols: dict[str, _Column], words: dict[str, int], fits, given: str | None, what: str, path
) -> tuple[str, list[str]]:
    """The column for ``what`` (time or event): ``given``, else the best-named fitting one.
    Returns it and the other fitting, well-named candidates."""
    option = "--time" if what == "time" else "--event"
    if given is not None:
        if given not in cols:
            raise InputError(
                f"{option} '{given}' is not a column of the clinical table"
                + columns_hint([given], cols),
                file=path,
            )
        return given, []
    scored = [(_name_score(c.name, words), c.name) for c in cols.values() if fits(c)]
    scored = [(s, n) for s, n in scored if s > 0]
    if not scored:
        need = (
            "a numeric column >= 0 named like time, days, futime or follow-up"
            if what == "time"
            else "a column of 0 (censored) and 1 (event) named like event, status or death"
        )
        raise InputError(
            f"cannot tell which column holds the {what} of the outcome (no {need}); name it "
            f"with {option} COLUMN",
            file=path,
        )
    best = max(s for s, _ in scored)
    names = [n for s, n in scored if s == best]
    # Other strongly named candidates (a second time or status column) are left out of the
    # covariates: a column of the outcome would leak it into the model.
    return names[0], [n for s, n in scored if n != names[0] and s >= 3]


def _is_time(c: _Column) -> bool:
    v = c.values
    return c.is_numeric and len(np.unique(v)) > 2 and bool(np.all(v >= 0))


def _is_event(c: _Column) -> bool:
    v = c.values
    return c.is_numeric and bool(np.isin(v, (0, 1, 2)).all()) and bool((v == 1).any())


def _horizon(time: np.ndarray, event: np.ndarray, name: str) -> tuple[float, str]:
    """The horizon: one year when the time unit is known (or looks like days) and the
    follow-up reaches it, else the median follow-up; with the reason, for a comment."""
    t_max = float(time.max())
    unit = next((UNIT_WORDS[w] for w in _words(name) if w in UNIT_WORDS), None)
    said = f"'{name}' is in {unit}" if unit else ""
    if unit is None and t_max > 100:
        unit, said = "days", f"'{name}' looks like days (longest follow-up {_fmt(t_max)})"
    if unit is not None and ONE_YEAR[unit] <= t_max:
        h = ONE_YEAR[unit]
        reach = int((time >= h).sum())
        return h, (
            f"one year: {said}, and {reach} patients are followed to {_fmt(h)} or beyond "
            f"(longest follow-up {_fmt(t_max)})"
        )
    h = float(np.median(time))
    h = float(math.floor(h)) if h >= 10 else float(f"{h:.3g}")
    if not ((event == 1) & (time <= h)).any():
        h = t_max
    year = f"one year ({_fmt(ONE_YEAR[unit])} {unit})" if unit else "one year"
    why = (
        f"the follow-up does not reach {year}"
        if unit
        else f"the unit of '{name}' is not known, so one year cannot be told"
    )
    return h, (
        f"{why}: the median follow-up; any value up to the longest follow-up ({_fmt(t_max)}) works"
    )


def _guess(c: _Column, n: int) -> ColumnGuess:
    """Numeric, binary, categorical or left out, from the values alone."""
    present = int(c.present.sum())
    if present == 0:
        return ColumnGuess(c.name, "left_out", "no values at all")
    if c.n_missing > MAX_MISSING * n:
        return ColumnGuess(
            c.name, "left_out", f"missing for {c.n_missing} of {n} patients (more than half)"
        )
    missing = f"; {c.n_missing} missing, imputed" if c.n_missing else ""
    levels = c.levels
    if len(levels) == 1:
        return ColumnGuess(c.name, "left_out", f"a single value ({levels.index[0]})")
    if c.is_numeric:
        v = c.values
        distinct = np.unique(v)
        if len(distinct) == 2 and set(distinct) == {0.0, 1.0}:
            n1 = int((v == 1).sum())
            return ColumnGuess(c.name, "binary", f"0/1 ({n1} of {present} are 1{missing})")
        if len(distinct) > 2:
            why = f"{len(distinct)} distinct values {_fmt(distinct[0])}..{_fmt(distinct[-1])}"
            if len(distinct) <= FEW_CODES and np.all(distinct == np.round(distinct)):
                why += " (if these are codes, not amounts, move it to categorical)"
            guess = ColumnGuess(c.name, "numeric", why + missing)
            words = set(_words(c.name))
            for word, ((lo, hi), meaning) in RECOGNISED_RANGES.items():
                if word in words or word in re.sub(r"[^a-z]", "", c.name.lower()):
                    if lo <= distinct[0] and distinct[-1] <= hi:
                        guess.range = (lo, hi)
                        guess.why += f"; range [{_fmt(lo)}, {_fmt(hi)}] as {meaning}"
                    break
            return guess
    if len(levels) > min(MAX_LEVELS, max(2, present // 2)):
        return ColumnGuess(
            c.name, "left_out", f"{len(levels)} distinct texts: free text or an identifier?"
        )
    shown = ", ".join(f"{lv} {k}" for lv, k in levels.head(6).items())
    more = f", ... ({len(levels)} levels)" if len(levels) > 6 else ""
    rare = [str(lv) for lv, k in levels.items() if k < 5]
    why = f"levels {shown}{more}; reference {levels.index[0]}, the most frequent{missing}"
    if rare:
        why += f" (few patients in {', '.join(rare[:3])}: consider merging levels)"
    return ColumnGuess(c.name, "categorical", why, reference=str(levels.index[0]))


def draft_config(
    clinical: str | Path,
    manifest: str | Path | None = None,
    *,
    id_column: str | None = None,
    time: str | None = None,
    event: str | None = None,
) -> Draft:
    """Draft a commented run config from a study's clinical table (and image manifest).

    Parameters
    ----------
    clinical : the clinical table (CSV or Parquet), one row per patient; the path is written
        into the draft as given (relative paths are relative to where ``train`` runs).
    manifest : the image manifest, if the study has images (adds the imaging models).
    id_column, time, event : the ID and outcome columns, when their names do not tell.

    Raises InputError (exit 2) naming the file for an unreadable or empty table and when the
    ID or outcome columns cannot be told (then name them with the options).
    """
    path = Path(clinical)
    table = _read_table(path, id_column)
    n = len(table)
    cols = {str(name): _Column.of(str(name), table[name]) for name in table.columns}
    pid = _find_id(cols, id_column, path)
    rest = {k: c for k, c in cols.items() if k != pid}
    time_col, other_times = _pick(rest, TIME_WORDS, _is_time, time, "time", path)
    rest.pop(time_col)
    event_col, other_events = _pick(rest, EVENT_WORDS, _is_event, event, "event", path)
    rest.pop(event_col)

    t = cols[time_col].number.to_numpy(dtype=float)
    e = cols[event_col].number.to_numpy(dtype=float)
    ok = np.isfinite(t) & np.isfinite(e)
    horizon, horizon_why = _horizon(t[ok], e[ok], time_col)
    guesses = [
        ColumnGuess(pid, "id", "the patient ID: one value per row"),
        ColumnGuess(time_col, "time", _time_why(cols[time_col])),
        ColumnGuess(event_col, "event", _event_why(cols[event_col])),
    ]
    for name, c in rest.items():
        words = set(_words(name))
        if words & SITE_WORDS:
            why = (
                "the hospital of each patient: used by the site splits, not a covariate"
                if name == "site"
                else "looks like a site or centre; rename it 'site' to validate per site"
            )
            guesses.append(ColumnGuess(name, "site", why))
        elif name in other_times or name in other_events:
            guesses.append(ColumnGuess(name, "left_out", "looks like another outcome column"))
        elif name.lower() == PATIENT_ID or (words & ID_WORDS and c.text.nunique() == n):
            guesses.append(ColumnGuess(name, "left_out", "looks like an identifier"))
        else:
            guesses.append(_guess(c, n))

    cov = [g for g in guesses if g.kind in ("numeric", "binary", "categorical")]
    n_par = sum(
        cols[g.name].levels.size - 1 if g.kind == "categorical" else 1 for g in cov
    )  # one term per non-reference level
    events = int(((e[ok] == 1) & (t[ok] <= horizon)).sum())
    draft = Draft(
        text="",
        clinical=path,
        manifest=Path(manifest) if manifest is not None else None,
        id_column=pid,
        time=time_col,
        event=event_col,
        horizon=horizon,
        horizon_why=horizon_why,
        columns=guesses,
        n_patients=n,
        n_events_by_horizon=events,
        n_parameters=n_par,
    )
    if manifest is not None:
        draft.notes += _manifest_notes(Path(manifest), cols[pid])
    if not cov:
        raise InputError(
            "no column of the clinical table looks like a covariate (all are IDs, outcome, "
            "site, constant or mostly missing)",
            file=path,
        )
    draft.text = _render(draft, has_death=bool((e[ok] == 2).any()))
    cfg = parse_config(yaml.safe_load(draft.text), source="the drafted config")
    draft.notes += _training_check(table, cfg, pid, path)
    return draft


def _time_why(c: _Column) -> str:
    v = c.values
    why = f"follow-up time: {_fmt(v.min())}..{_fmt(v.max())}, median {_fmt(np.median(v))}"
    return why + (f"; {c.n_missing} missing" if c.n_missing else "")


def _event_why(c: _Column) -> str:
    v = c.values
    counts = ", ".join(f"{int(k)}: {int((v == k).sum())}" for k in (0, 1, 2) if (v == k).any())
    why = f"outcome codes {counts}"
    if set(_words(c.name)) & CENSORING_WORDS:
        why += "; 1 is read as the event: if 1 means censored here, recode the column"
    if not (v == 0).any():
        why += "; no 0: if 1 means censored and 2 the event (R's coding), recode it to 0/1"
    return why


def _manifest_notes(path: Path, ids: _Column) -> list[str]:
    from refracture.features.manifest import read_manifest

    man = read_manifest(path)
    clin = {patient_id_text(v) for v in ids.text.dropna()}
    both = len(clin & set(man[PATIENT_ID]))
    notes = [f"{both} of {len(clin)} patients of the clinical table are in the manifest"]
    if both == 0:
        notes.append(
            "no patient ID of the clinical table is in the manifest: check that the IDs are "
            "written the same way in both"
        )
    return notes


def _training_check(table: pd.DataFrame, cfg, pid: str, path: Path) -> list[str]:
    """What ``refracture train`` would refuse in this table with this config, as notes."""
    from refracture.dataset import assemble

    data = table.rename(columns={pid: PATIENT_ID}) if pid != PATIENT_ID else table
    try:
        ds = assemble(data, None, cfg, clinical_source=path)
    except RefractureError as err:
        return [f"refracture train would stop: {err.one_line()}"]
    return list(ds.warnings)


def _comment_lines(lines: list[tuple[str, str]], indent: str = "") -> list[str]:
    """``key: value`` lines with their comments aligned."""
    width = min(max((len(a) for a, b in lines if b), default=0), 32)  # long paths: unaligned
    return [f"{indent}{a:<{width}}  # {b}" if b else f"{indent}{a}" for a, b in lines]


def _render(d: Draft, has_death: bool) -> str:
    g = {c.kind: c for c in d.columns if c.kind in ("id", "time", "event")}
    lines = [
        f"# refracture run config drafted by `refracture init` from {d.clinical.name}",
        f"# ({d.n_patients} patients). Every guessed line says what it was guessed from:",
        "# check each one, fix what is wrong, then run `refracture train --config <this file>`.",
        "# Keys not written here take their defaults (see configs/template.yaml).",
        "",
        "data:",
    ]
    data = [(f"clinical: {_scalar(str(d.clinical))}", "")]
    if d.id_column != PATIENT_ID:
        data.append((f"id_column: {_scalar(d.id_column)}", g["id"].why))
    if d.manifest is not None:
        data.append((f"manifest: {_scalar(str(d.manifest))}", "images: the imaging models"))
    data.append(("cache_dir: .refracture-cache", "per-patient feature cache"))
    lines += _comment_lines(data, "  ")
    lines += ["", "outcome:"]
    outcome = [
        (f"time: {_scalar(d.time)}", f"detected: {g['time'].why}"),
        (f"event: {_scalar(d.event)}", f"detected: {g['event'].why}"),
        (f"horizon_days: {_fmt(d.horizon)}", "in the unit of the time column"),
    ]
    lines += _comment_lines(outcome, "  ")
    lines += textwrap.wrap(
        f"horizon: {d.horizon_why}.", 96, initial_indent="  # ", subsequent_indent="  # "
    )
    lines += [
        f"  # {d.n_events_by_horizon} events by the horizon for {d.n_parameters} model "
        f"parameters: {d.n_events_by_horizon / max(d.n_parameters, 1):.1f} per parameter"
        + (" (fewer than 10: expect over-fitting; declare fewer covariates)" if
           d.n_events_by_horizon < 10 * d.n_parameters else "")
    ]  # fmt: skip
    if has_death:
        lines += ["  # code 2 (death) occurs: the estimand is cif, death a competing event"]

    lines += ["", "covariates:"]
    for kind in ("numeric", "binary"):
        items = d.of_kind(kind)
        if not items:
            lines.append(f"  {kind}: []")
            continue
        lines.append(f"  {kind}:")
        lines += _comment_lines(
            [(f"- {_scalar(c.name)}", f"guessed {kind}: {c.why}") for c in items], "    "
        )
    cats = d.of_kind("categorical")
    if cats:
        lines.append("  categorical:                # name: reference level")
        lines += _comment_lines(
            [
                (f"{_scalar(c.name)}: {_scalar(c.reference)}", f"guessed categorical: {c.why}")
                for c in cats
            ],
            "    ",
        )
    else:
        lines.append("  categorical: {}")
    ranged = [c for c in d.of_kind("numeric") if c.range is not None]
    if ranged:
        lines.append("  ranges:                     # training refuses values outside")
        lines += _comment_lines(
            [
                (f"{_scalar(c.name)}: [{_fmt(c.range[0])}, {_fmt(c.range[1])}]", "")  # type: ignore[index]
                for c in ranged
            ],
            "    ",
        )
    left = d.of_kind("site", "left_out")
    if left:
        lines.append("  # not covariates (add a column above if it is one):")
        lines += [f"  #   {c.name}: {c.why}" for c in left]

    imaging = d.manifest is not None
    if imaging:
        lines += [
            "",
            "imaging:",
            "  # columns of features.parquet: {map}_{stat}_{group}, e.g. pdff_mean_normal",
            f"  features: [{', '.join(DEFAULT_IMAGING)}]",
            "",
            "extraction:",
            "  pdff_units: auto           # or percent | fraction | per_mille; the manifest's",
            "  r2star_units: auto         # unit columns and JSON sidecars take precedence",
        ]
    sets = "[clinical, clinical+imaging]" if imaging else "[clinical]"
    lines += [
        "",
        f"models: [{', '.join(DEFAULT_MODELS)}]       # cox | coxnet | rsf | gbsa | logistic",
        f"feature_sets: {sets}",
        "",
        "validation:",
        "  split: none                # none (all patients; bootstrap and leave-one-site-out)"
        " | random | site | leave_one_site_out | kfold",
        "  internal: auto             # auto (Harrell for regression, .632+ for tree ensembles)"
        " | harrell | 632plus | loo",
        "  bootstrap: 200             # 20 while setting up; 200 or more for the analysis",
        "  seed: 0",
        "",
        "selection_metric: auto       # C-index by .632+ for every model; bootstrap: 0 needs"
        " cindex_harrell",
        "",
        "mlflow:",
        "  tracking_uri: null         # null: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db",
        "  experiment: refracture",
        "  registered_model: refracture-1y",
        "",
    ]
    return "\n".join(lines)


def write_draft(draft: Draft, out: str | Path) -> Path:
    """Write the draft to ``out``; never overwrites (an existing file is an InputError)."""
    out = Path(out)
    if out.exists():
        raise InputError(
            "already exists; refracture init never overwrites a config: choose another --out "
            "or remove the file",
            file=out,
        )
    if not out.parent.is_dir():
        raise InputError("the folder to write the config into does not exist", file=out)
    with out.open("x", encoding="utf-8") as fh:  # "x": fails rather than overwrite
        fh.write(draft.text)
    return out
