"""``refracture init``: a run config drafted from a study's own clinical table.

The draft describes the user's study, never the synthetic one: its ID and outcome columns
(:mod:`~refracture.study.draft_outcome`: the event by meaning, every candidate explained),
each other column's kind, meaning and plausible range as guessed from its name and values
(:mod:`~refracture.study.draft_columns`: every cell that is not a plain number listed), a
horizon the follow-up reaches. Every guess is written on its own commented line
(:mod:`~refracture.study.draft_render`) for the user to confirm; where ``init`` cannot tell,
it writes a required edit that ``check`` and ``train`` refuse until it is made. Nothing here
is a statistical model of the table: the rules are hand-written, simple and predictable.

The draft validates with :func:`refracture.config.parse_config`, and the table is checked
against it as ``refracture train`` would (:func:`refracture.checks.check_study` then
:func:`refracture.dataset.assemble`), so what training would refuse is reported already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from refracture.errors import InputError, RefractureError
from refracture.ids import PATIENT_ID, patient_id_text
from refracture.study.draft_columns import ColumnGuess, TableColumn, guess_kind, words
from refracture.study.draft_outcome import (
    ID_WORDS,
    EventChoice,
    choose_event,
    event_why,
    find_id,
    find_time,
    horizon,
    time_why,
)
from refracture.study.draft_render import render
from refracture.tables import read_patient_table

__all__ = ["ColumnGuess", "Draft", "draft_config", "write_draft"]

SITE_WORDS = {"site", "centre", "center", "hospital", "inst", "institution", "clinic"}


@dataclass
class Draft:
    """A drafted run config: the YAML ``text`` and what it was drafted from."""

    COVARIATE_KINDS = ("numeric", "binary", "categorical")

    text: str
    clinical: Path
    manifest: Path | None
    id_column: str
    time: str
    choice: EventChoice
    horizon: float
    horizon_why: str
    columns: list[ColumnGuess]
    n_patients: int
    n_events_by_horizon: int
    n_parameters: int
    has_death: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def event(self) -> str:
        """The event column, or the required edit's text when init could not tell."""
        return self.choice.yaml_event

    def of_kind(self, *kinds: str) -> list[ColumnGuess]:
        return [c for c in self.columns if c.kind in kinds]


def _read_table(path: Path) -> pd.DataFrame:
    """The clinical table with every CSV cell as text, as written (numbers are read by
    :class:`~refracture.study.draft_columns.TableColumn`, the way training reads them)."""
    if path.suffix.lower() == ".csv" and path.is_file():
        try:
            header = list(pd.read_csv(path, nrows=0).columns)
        except Exception:  # noqa: BLE001 - read_patient_table reports it in one line
            header = []
        return read_patient_table(path, "clinical table", text_columns=header)
    return read_patient_table(path, "clinical table")


def _column_guesses(
    rest: dict[str, TableColumn], n: int, ids: pd.Series, outcome_like: set[str]
) -> list[ColumnGuess]:
    out = []
    for name, c in rest.items():
        w = set(words(name))
        if w & SITE_WORDS:
            why = (
                "the hospital of each patient: used by the site splits, not a covariate"
                if name == "site"
                else "looks like a site or centre; rename it 'site' to validate per site"
            )
            out.append(ColumnGuess(name, "site", why))
        elif name in outcome_like:
            out.append(ColumnGuess(name, "left_out", "looks like another outcome column"))
        elif name.lower() == PATIENT_ID or (w & ID_WORDS and c.text.nunique() == n):
            out.append(ColumnGuess(name, "left_out", "looks like an identifier"))
        else:
            out.append(guess_kind(c, n, ids))
    return out


def draft_config(
    clinical: str | Path,
    manifest: str | Path | None = None,
    *,
    id_column: str | None = None,
    time: str | None = None,
    event: str | None = None,
    death: str | None = None,
) -> Draft:
    """Draft a commented run config from a study's clinical table (and image manifest).

    Parameters
    ----------
    clinical : the clinical table (CSV or Parquet), one row per patient; the path is written
        into the draft as given (relative paths are relative to where ``train`` runs).
    manifest : the image manifest, if the study has images (adds the imaging models).
    id_column, time, event, death : the ID, time, event (0/1 or 0/1/2) and death (0/1)
        columns, when their names do not tell.

    Raises InputError (exit 2) naming the file for an unreadable or empty table and when the
    ID or time columns cannot be told (then name them with the options).
    """
    path = Path(clinical)
    table = _read_table(path)
    n = len(table)
    cols = {str(name): TableColumn.of(str(name), table[name]) for name in table.columns}
    pid = find_id(cols, id_column, path)
    ids = cols[pid].text.fillna("")
    rest = {k: c for k, c in cols.items() if k != pid}
    time_col, other_times = find_time(rest, time, path)
    rest.pop(time_col)
    choice = choose_event(rest, event, death, path)
    for name in (choice.event, choice.death):
        rest.pop(name, None)  # type: ignore[arg-type]

    t = cols[time_col].number.to_numpy(dtype=float)
    e = _combined(cols, choice, n)
    ok = np.isfinite(t) & np.isfinite(e)
    h, h_why = horizon(t[ok], e[ok], time_col)
    guesses = [
        ColumnGuess(pid, "id", "the patient ID: one value per row"),
        ColumnGuess(time_col, "time", time_why(cols[time_col])),
    ]
    if choice.event is not None:
        death_col = cols[choice.death] if choice.death else None
        guesses.append(ColumnGuess(choice.event, "event", event_why(cols[choice.event], death_col)))
    if choice.death is not None:
        guesses.append(ColumnGuess(choice.death, "death", "0/1 death, competing with re-fracture"))
    guesses += _column_guesses(rest, n, ids, set(other_times) | set(choice.left_out))
    cov = [g for g in guesses if g.kind in Draft.COVARIATE_KINDS]
    if not cov:
        raise InputError(
            "no column of the clinical table looks like a covariate (all are IDs, outcome, "
            "site, constant or mostly missing)",
            file=path,
        )
    n_par = sum(cols[g.name].levels.size - 1 if g.kind == "categorical" else 1 for g in cov)
    draft = Draft(
        text="", clinical=path, manifest=Path(manifest) if manifest is not None else None,
        id_column=pid, time=time_col, choice=choice, horizon=h, horizon_why=h_why,
        columns=guesses, n_patients=n, n_events_by_horizon=int(((e == 1) & (t <= h)).sum()),
        n_parameters=n_par, has_death=bool((e[ok] == 2).any()),
    )  # fmt: skip
    if manifest is not None:
        draft.notes += _manifest_notes(Path(manifest), cols[pid])
    draft.text = render(draft)
    draft.notes += _cell_notes(draft) + _training_check(draft, path)
    return draft


def _combined(cols: dict[str, TableColumn], choice: EventChoice, n: int) -> np.ndarray:
    """The 0/1/2 event the config describes (zeros while the event is a required edit)."""
    if choice.event is None:
        return np.zeros(n)
    e = cols[choice.event].number.to_numpy(dtype=float)
    if choice.death is None:
        return e
    d = cols[choice.death].number.to_numpy(dtype=float)
    return np.where(e == 1, 1.0, np.where(d == 1, 2.0, np.where(np.isnan(e), np.nan, 0.0)))


def _cell_notes(d: Draft) -> list[str]:
    out = []
    for c in d.columns:
        if c.problems:
            out.append(
                f"column '{c.name}': {c.problems} cell(s) that check and train refuse (a date, "
                "text, or a value outside the plausible range); each is listed under the column "
                "in the draft"
            )
    if d.choice.event is None:
        out.append(
            f"the event is a required edit: {d.choice.edit}; refracture check and train refuse "
            "the draft until you name the column"
        )
    return out


def _manifest_notes(path: Path, ids: TableColumn) -> list[str]:
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


def _training_check(d: Draft, path: Path) -> list[str]:
    """What ``refracture train`` would refuse in this table with the draft, as notes."""
    from refracture.checks import check_study
    from refracture.config import config_errors
    from refracture.dataset import assemble
    from refracture.study.inputs import read_clinical

    cfg, errors = config_errors(yaml.safe_load(d.text))
    if cfg is None:
        return [] if d.choice.event is None else [f"the draft is not valid: {errors[0][1]}"]
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": None})})
    report = check_study(cfg, headers=False)
    if report.problems:
        first = report.problems[0].one_line()
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        return [f"refracture train would stop: {first}{more}; refracture check lists them all"]
    try:
        ds = assemble(read_clinical(cfg), None, cfg, clinical_source=path)
    except RefractureError as err:
        return [f"refracture train would stop: {err.one_line()}"]
    return list(ds.warnings)


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
