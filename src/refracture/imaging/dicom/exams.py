"""From header facts to decisions: series and their stacks, their roles, one exam per patient.

An exam is a study (StudyInstanceUID). A patient's exam is the one holding both a fat
fraction map and an R2* (or T2*) map; with a procedure date, the latest such exam on or before
that date; without one, the only such exam. Anything else (no complete exam, several
candidates, two fat fraction maps in one exam) is not guessed: the patient gets no manifest
row and every series of theirs is listed with the reason. A label map is paired when a DICOM
SEG of the patient refers to a series of the chosen exam or shares the fat fraction map's frame
of reference.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from dataclasses import dataclass, field

from refracture.imaging.dicom.frames import SEG_SOP_CLASS, series_hash
from refracture.imaging.dicom.rules import MAP_ROLES, Classified, StackFacts, classify
from refracture.imaging.dicom.scan import FileInfo

__all__ = ["Choice", "StackEntry", "choose_exam", "group_stacks"]


@dataclass
class StackEntry:
    """One stack (an image type of a series, or a whole SEG) and what became of it."""

    files: list[FileInfo]
    image_type: str
    several_types: bool
    facts: StackFacts
    classified: Classified
    used: str = ""  # the manifest column it fills
    reason: str = ""  # why it fills none (or why its patient has no row)

    @property
    def first(self) -> FileInfo:
        return self.files[0]

    @property
    def role(self) -> str:
        return self.classified.role

    @property
    def series(self) -> str:
        return series_hash(self.first.series_uid)

    @property
    def folder(self) -> str:
        """The deepest folder holding all of the stack's files (relative, '/'-separated)."""
        parents = [os.path.dirname(f.rel) for f in self.files]
        common = os.path.commonpath(parents) if all(parents) else ""
        return common.replace(os.sep, "/")

    def location(self) -> str:
        """Folder + selector (or the file itself for a single-file SEG)."""
        if self.role == "labels" and len(self.files) == 1:
            return self.first.rel
        selector = f"#series={self.series}"
        if self.several_types:
            selector += f"&type={self.image_type}"
        return f"{self.folder or '.'}{selector}"


@dataclass
class Choice:
    """The maps (and label map) chosen for one patient, or why none were."""

    maps: dict[str, StackEntry] = field(default_factory=dict)  # pdff, r2star, labels
    exam: str = ""  # StudyInstanceUID of the chosen exam (in memory only)
    reason: str = ""


def group_stacks(infos: list[FileInfo]) -> list[StackEntry]:
    """Every stack of every series, classified by the vendor rules."""
    from refracture.imaging.metadata import canonical_vendor

    by_series: dict[tuple[str, str], list[FileInfo]] = defaultdict(list)
    for info in infos:
        by_series[(info.patient_key, info.series_uid)].append(info)
    out = []
    for files in by_series.values():
        first = files[0]
        if first.sop_class == SEG_SOP_CLASS:
            facts = StackFacts(canonical_vendor(first.manufacturer), first.description, (),
                               modality="SEG")  # fmt: skip
            out.append(StackEntry(files, "", False, facts, Classified("labels", "DICOM SEG")))
            continue
        by_type: dict[str, list[FileInfo]] = defaultdict(list)
        for f in files:
            for key in {fr.stack for fr in f.frames}:
                by_type[key].append(f)
        for key, members in sorted(by_type.items()):
            facts = _facts(members, key, canonical_vendor(first.manufacturer))
            out.append(StackEntry(members, key, len(by_type) > 1, facts, classify(facts)))
    out.sort(key=lambda s: (s.first.patient_key, s.first.study_date, s.first.series_number,
                            s.image_type))  # fmt: skip
    return out


def _facts(files: list[FileInfo], key: str, vendor: str) -> StackFacts:
    at: dict[object, list] = defaultdict(list)
    for f in files:
        for fr in f.frames:
            if fr.stack == key:
                at[fr.position].append(fr)
    echoes = max((len({fr.echo for fr in group}) for group in at.values()), default=1)
    volumes = max((len({fr.volume for fr in group}) for group in at.values()), default=1)
    first = files[0]
    image_type = tuple(t for t in key.split("+") if t and t != "-")
    return StackFacts(
        vendor=vendor,
        description=first.description,
        image_type=image_type,
        modality=first.modality,
        n_echoes=echoes,
        n_volumes=volumes,
        n_positions=len(at),
    )


def choose_exam(
    stacks: list[StackEntry], procedure_date: dt.date | None, external_labels: bool
) -> Choice:
    """The exam, maps and label map of one patient's stacks (see the module docstring).

    ``external_labels``: a label map for the patient was found outside the export (``--labels``),
    so no DICOM SEG is needed.
    """
    exams: dict[str, list[StackEntry]] = defaultdict(list)
    for s in stacks:
        exams[s.first.study_uid].append(s)
    complete = {uid: ss for uid, ss in exams.items() if _maps_of(ss)[0] and _maps_of(ss)[1]}
    if not complete:
        return Choice(reason="no exam holds both a fat fraction map and an R2*/T2* map")
    chosen = list(complete)
    if procedure_date is not None:
        dated = {uid: _date(ss[0].first.study_date) for uid, ss in complete.items()}
        before = [uid for uid, d in dated.items() if d is not None and d <= procedure_date]
        if not before:
            return Choice(
                reason=f"none of the {len(complete)} exam(s) with both maps is on or before the "
                "procedure date"
            )
        latest = max(dated[uid] for uid in before)  # type: ignore[type-var]
        chosen = [uid for uid in before if dated[uid] == latest]
    if len(chosen) > 1:
        why = (
            "on the same day before the procedure"
            if procedure_date
            else ("and no procedure date to choose by (clinical table column procedure_date)")
        )
        return Choice(reason=f"{len(chosen)} exams with both maps {why}: choose one in index.csv")
    exam = chosen[0]
    pdffs, r2s = _maps_of(complete[exam])
    if len(pdffs) > 1 or len(r2s) > 1:
        return Choice(
            exam=exam,
            reason=f"the exam holds {len(pdffs)} fat fraction and {len(r2s)} R2*/T2* map "
            "series (repeated acquisitions?): choose in index.csv",
        )
    maps = {"pdff": pdffs[0], "r2star": r2s[0]}
    if not external_labels:
        segs = _paired_segs(stacks, complete[exam], pdffs[0])
        if len(segs) > 1:
            return Choice(exam=exam, reason=f"{len(segs)} DICOM SEG label maps refer to the exam")
        if not segs:
            return Choice(
                exam=exam,
                reason="no label map: no DICOM SEG refers to the exam and --labels has none "
                "for the patient",
            )
        maps["labels"] = segs[0]
    return Choice(maps=maps, exam=exam)


def _maps_of(stacks: list[StackEntry]) -> tuple[list[StackEntry], list[StackEntry]]:
    """The exam's fat fraction stacks, and its R2* stacks (T2* ones when it has no R2*)."""
    pdff = [s for s in stacks if s.role == "pdff"]
    r2 = [s for s in stacks if s.role == "r2star"] or [s for s in stacks if s.role == "t2star"]
    return pdff, r2


def _paired_segs(
    stacks: list[StackEntry], exam: list[StackEntry], pdff: StackEntry
) -> list[StackEntry]:
    series = {s.first.series_uid for s in exam}
    return [
        s
        for s in stacks
        if s.role == "labels"
        and (
            set(s.first.referenced_series) & series
            or (s.first.frame_of_reference and s.first.frame_of_reference
                == pdff.first.frame_of_reference)
        )
    ]  # fmt: skip


def _date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def days_between(study_date: str, procedure_date: dt.date | None) -> int | None:
    """Days from the procedure to the exam (negative: before), None when either is unknown."""
    d = _date(study_date)
    return None if d is None or procedure_date is None else (d - procedure_date).days


def unit_of(role: str) -> str | None:
    """The manifest unit a map role implies (R2* maps in 1/s, T2* maps in ms)."""
    return MAP_ROLES.get(role, ("", None))[1]
