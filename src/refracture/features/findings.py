"""The QC findings of one patient's extraction, in words, for a score row.

Extraction writes its QC as ``qc_*`` fields (qc.csv). Scoring from images carries them into
each score row: every finding is a sentence in ``warnings``, or in ``error`` (``status=error``)
when its kind is listed in the model's ``extraction.qc_errors``. The kinds are
:data:`refracture.config.QC_KINDS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from refracture.config import QC_KINDS
from refracture.maps import MAP_SPECS, MAPS

__all__ = ["QCFinding", "qc_findings", "split_findings"]

_MAP_LABEL = {"pdff": "PDFF", "r2star": "R2*"}
_CANONICAL = {name: spec.unit for name, spec in MAP_SPECS.items()}
_ONE_SIDED = re.compile(r"^\s*(?P<level>[^:]+):\s*(?P<used>\S+)\s*\(no (?P<missing>[^)]+)\)\s*$")


@dataclass(frozen=True)
class QCFinding:
    """One QC finding: its kind (one of :data:`refracture.config.QC_KINDS`) and a sentence."""

    kind: str
    message: str


def _text(qc: Mapping[str, Any], key: str) -> str:
    value = qc.get(key)
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _levels(qc: Mapping[str, Any], key: str) -> str:
    return ", ".join(x for x in _text(qc, key).split(";") if x)


def _true(qc: Mapping[str, Any], key: str) -> bool:
    value = qc.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and value == value  # NaN is not True


def qc_findings(qc: Mapping[str, Any]) -> list[QCFinding]:
    """The findings in a patient's ``qc_*`` fields, in the order of
    :data:`refracture.config.QC_KINDS` (empty when nothing is worth a glance)."""
    out: list[QCFinding] = []

    def add(kind: str, message: str) -> None:
        out.append(QCFinding(kind, message))

    if _text(qc, "qc_missing_levels"):
        add("missing_levels", f"levels not in the label map: {_levels(qc, 'qc_missing_levels')}")
    if _true(qc, "qc_labels_resampled"):
        add("resampled", "label map resampled to the PDFF grid")
    if _true(qc, "qc_r2star_resampled"):
        add("resampled", "R2* map resampled to the PDFF grid")
    if _text(qc, "qc_small_roi"):
        add(
            "small_roi",
            f"ROI too small at {_levels(qc, 'qc_small_roi')} (its statistics left empty)",
        )
    for part in _text(qc, "qc_adjacent_one_sided").split(";"):
        m = _ONE_SIDED.match(part)
        if not m:
            continue
        level, used = m["level"].strip(), m["used"].replace("+", " and ")
        missing = m["missing"].replace("+", " and ")
        if used == "none":
            add(
                "adjacent_one_sided",
                f"no adjacent level of treated {level} measured ({missing} not in the label map)",
            )
        else:
            add(
                "adjacent_one_sided",
                f"adjacent features of treated {level} from {used} only "
                f"({missing} not in the label map)",
            )
    if _text(qc, "qc_treated_no_cement"):
        add(
            "no_cement",
            f"no cement-like voxels in treated {_levels(qc, 'qc_treated_no_cement')}: "
            "check the treated level",
        )
    if _text(qc, "qc_misregistration"):
        add("misregistration", _text(qc, "qc_misregistration"))
    if _text(qc, "qc_label_order"):
        add(
            "label_order",
            f"label map levels out of cranio-caudal order: {_levels(qc, 'qc_label_order')}",
        )
    if _text(qc, "qc_label_gaps"):
        add(
            "label_gap",
            f"gap in the label map at {_levels(qc, 'qc_label_gaps')} "
            "(a vertebra missing between labelled ones)",
        )
    if _text(qc, "qc_label_duplicates"):
        add(
            "label_duplicate",
            f"one label drawn on two bodies: {_levels(qc, 'qc_label_duplicates')}",
        )
    if _text(qc, "qc_label_implausible_size"):
        add(
            "label_size",
            f"implausible body size for the level: {_levels(qc, 'qc_label_implausible_size')}",
        )
    if _text(qc, "qc_transitional_anatomy"):
        add(
            "transitional",
            f"transitional anatomy suspected ({_levels(qc, 'qc_transitional_anatomy')} "
            "labelled): check the numbering",
        )
    if _text(qc, "qc_morph_unmeasured"):
        reason = _text(qc, "qc_morph_unmeasured_reason")
        add(
            "morphometry",
            f"morphometry not measured at {_levels(qc, 'qc_morph_unmeasured')}"
            + (f" ({reason})" if reason else ""),
        )
    for kind in MAPS:
        if _true(qc, f"qc_{kind}_converted"):
            add(
                "units_converted",
                f"{_MAP_LABEL[kind]} converted from {_text(qc, f'qc_{kind}_units')} to "
                f"{_CANONICAL[kind]}",
            )
    for kind in MAPS:
        note = _text(qc, f"qc_{kind}_units_note")
        if note:
            add("units_disagree", note)
    order = {k: i for i, k in enumerate(QC_KINDS)}
    return sorted(out, key=lambda f: order[f.kind])


def split_findings(findings: Iterable[QCFinding], error_kinds: Iterable[str]) -> tuple[str, str]:
    """('; '-joined findings that are errors, '; '-joined warnings). An error says which
    setting made it one."""
    kinds = set(error_kinds)
    errors = [f for f in findings if f.kind in kinds]
    warns = [f.message for f in findings if f.kind not in kinds]
    text = "; ".join(f.message for f in errors)
    if errors:
        listed = ", ".join(dict.fromkeys(f.kind for f in errors))
        text += f" (extraction.qc_errors lists {listed})"
    return text, "; ".join(warns)
