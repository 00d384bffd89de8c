"""A one-page risk card per patient, HTML and PDF (WeasyPrint), for the clinic.

One A4 page to go through with the patient: the risk as a natural frequency ("23 in 100")
with an icon array and the risk group in words, what raised or lowered it (the model's
per-term contributions, as ``score --explain`` writes them), each vertebra's marrow fat and
R2* beside the range of the patients the model learned from, the QC picture of the vertebrae
measured, the model and its validation in one line, and what the model does not know (values
outside its data, image findings). The HTML embeds its picture and styles: it opens from a
folder or an e-mail with nothing fetched; the PDF is rendered from the same HTML.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import jinja2

from refracture.maps import MAPS
from refracture.outputs.view import PatientView, cohort_range
from refracture.outputs.words import describe, group_words, in_100, plain_number, term_words
from refracture.report.model_card import metric_label

__all__ = ["MAX_LISTED", "card_context", "render_card", "render_pdf"]

#: At most this many contributions and cautions are listed (the page stays one page).
MAX_LISTED = 5
_OUTSIDE = re.compile(
    r"^(?P<col>\w+)=(?P<v>\S+) outside (?P<what>training range|plausible) "
    r"(?P<lo>-?[\d.e+-]+)-(?P<hi>-?[\d.e+-]+)$"
)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("refracture.outputs", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def _caution(text: str) -> str:
    """A score row warning in words."""
    m = _OUTSIDE.match(text)
    if not m:
        return f"Image check: {text}" if not re.match(r"^\w+=", text) else text
    label, unit = describe(m["col"])
    value = f"{m['v']}{(' ' + unit) if unit else ''}"
    if m["what"] == "plausible":
        return f"{label} {value} looks implausible (expected {m['lo']}-{m['hi']}): please check it."
    return (
        f"{label} {value} is outside the range of the patients the model learned from "
        f"({m['lo']}-{m['hi']}): the estimate is less certain."
    )


def _icons(risk: float, death: float | None) -> list[str]:
    """100 icon classes: 'event' for the risk, 'death' for death first, 'none' otherwise."""
    n_event = min(100, int(round(100 * risk)))
    n_death = min(100 - n_event, int(round(100 * death))) if death is not None else 0
    return ["event"] * n_event + ["death"] * n_death + ["none"] * (100 - n_event - n_death)


def _contributions(view: PatientView) -> list[dict[str, Any]]:
    items = sorted(view.contributions.items(), key=lambda kv: -abs(kv[1]))[:MAX_LISTED]
    top = max((abs(v) for _, v in items), default=0.0) or 1.0
    out = []
    for term, value in items:
        column = term.split("[", 1)[0]
        words = term_words(term, view.inputs.get(column))
        out.append(
            {
                "words": words,
                "up": value > 0,
                "width": round(100 * abs(value) / top),
                "value": f"{value:+.2f}",
            }
        )
    return out


def _vertebrae(view: PatientView) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-vertebra rows and the cohort ranges they are shown against (per map)."""
    ranges: dict[str, Any] = {}
    for kind in MAPS:
        column = next((c for c in view.model.inputs.imaging if c.startswith(f"{kind}_")), "")
        found = cohort_range(view.model, column) if column else None
        if found:
            label = describe(column)[0]
            ranges[kind] = {"lo": found[0], "hi": found[1], "column": label[:1].lower() + label[1:]}
    rows = []
    for v in view.vertebrae:
        row: dict[str, Any] = {"level": v.level, "treated": v.treated, "fractured": v.fractured}
        for kind in MAPS:
            value = v.mean.get(kind, math.nan)
            row[kind] = plain_number(value)
            rng = ranges.get(kind)
            if rng and math.isfinite(value):
                lo, hi = rng["lo"], rng["hi"]
                span = hi - lo
                left, right = lo - 0.5 * span, hi + 0.5 * span  # the bar: the range and a margin
                row[f"{kind}_pos"] = round(100 * min(max((value - left) / (right - left), 0), 1))
                row[f"{kind}_outside"] = not lo <= value <= hi
        grade = v.morph.get("genant_grade", math.nan)
        row["grade"] = plain_number(grade) if math.isfinite(grade) else "-"
        rows.append(row)
    return rows, ranges


def card_context(view: PatientView, *, when: str, qc_png: bytes | None) -> dict[str, Any]:
    """Everything the card template shows, as plain values."""
    bundle = view.model.bundle
    headline, explanation = group_words(view.group, bundle.risk_groups)
    training = bundle.training
    vertebrae, ranges = _vertebrae(view)
    cautions = [_caution(w) for w in view.warnings]
    split = training.split.split(" (", 1)[0]
    metric = metric_label(training.selection_metric).replace("(optcorr)", "(optimism-corrected)")
    validation = (
        f"developed on {training.n_patients} patients ({training.n_events} with a new "
        f"fracture within the horizon), {metric} {training.selection_value:.2f} "
        f"({split})"
    )
    death = view.death_risk
    return {
        "patient": view.patient_id,
        "when": when,
        "days": view.horizon_days,
        "risk_pct": f"{100 * view.risk:.1f}",
        "risk_words": in_100(view.risk),
        "n_event": min(100, int(round(100 * view.risk))),
        "death_words": in_100(death) if death is not None else None,
        "group": view.group,
        "group_headline": headline,
        "group_explanation": explanation,
        "icons": _icons(view.risk, death),
        "contributions": _contributions(view),
        "has_terms": bool(bundle.terms) and bool(view.contributions),
        "vertebrae": vertebrae,
        "ranges": ranges,
        "qc_png": base64.b64encode(qc_png).decode("ascii") if qc_png else None,
        "model": f"{view.registered_name}: {view.model.label}",
        "validation": validation,
        "cautions": cautions[:MAX_LISTED],
        "more_cautions": max(0, len(cautions) - MAX_LISTED),
        "imaging": bool(view.model.inputs.imaging),
        "risk_exact": repr(view.risk),
    }


def render_card(context: dict[str, Any]) -> str:
    """The card's HTML page."""
    return _environment().get_template("card.html.j2").render(**context)


def render_pdf(html_text: str) -> tuple[bytes, int]:
    """The card as PDF bytes (WeasyPrint, from the same HTML) and its number of pages."""
    from weasyprint import HTML

    document = HTML(string=html_text).render()
    return document.write_pdf(), len(document.pages)
