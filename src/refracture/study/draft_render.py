"""``refracture init``: the drafted config as commented YAML, one guess per line."""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

from refracture.config_edits import REQUIRED_EDIT
from refracture.ids import PATIENT_ID
from refracture.study.draft_columns import fmt

__all__ = ["DEFAULT_IMAGING", "DEFAULT_MODELS", "render", "scalar"]

DEFAULT_MODELS = ["cox", "coxnet", "logistic", "rsf"]
DEFAULT_IMAGING = ["pdff_mean_normal", "r2star_mean_normal"]


def scalar(v: object) -> str:
    """A YAML scalar, quoted only where YAML needs it ('1', 'yes', 'a: b')."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1000)
    return text.strip().removesuffix("...").strip()


def _comment_lines(lines: list[tuple[str, str]], indent: str = "") -> list[str]:
    """``key: value`` lines with their comments aligned."""
    width = min(max((len(a) for a, b in lines if b), default=0), 32)  # long paths: unaligned
    return [f"{indent}{a:<{width}}  # {b}" if b else f"{indent}{a}" for a, b in lines]


def _wrapped(text: str, indent: str = "  # ", more: str | None = None) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=more or indent)


def _outcome(d: Any) -> list[str]:
    g = {c.kind: c for c in d.columns if c.kind in ("time", "event", "death")}
    choice = d.choice
    lines = ["", "outcome:"]
    outcome = [(f"time: {scalar(d.time)}", f"detected: {g['time'].why}")]
    if choice.event is None:
        outcome.append((f"event: {scalar(choice.yaml_event)}", ""))
    else:
        outcome.append((f"event: {scalar(choice.event)}", f"detected: {g['event'].why}"))
    if choice.death is not None:
        outcome.append((f"death: {scalar(choice.death)}", f"detected: {g['death'].why}"))
    outcome.append((f"horizon_days: {fmt(d.horizon)}", "in the unit of the time column"))
    lines += _comment_lines(outcome, "  ")
    if choice.event is None:
        lines += _wrapped(
            f"{REQUIRED_EDIT}: init could not tell which column is the re-fracture event; "
            "refracture check and train refuse this config until you write the column's name "
            "after 'event:'"
        )
    if choice.death is not None:
        lines += _wrapped(
            f"re-fracture and death come in two 0/1 columns: they are combined into one "
            f"outcome, 0 censored, 1 re-fracture, 2 death before re-fracture (if a patient has "
            f"both, the re-fracture counts); death competes with re-fracture (estimand cif). "
            f"'{d.time}' must be the time to the first of them or to the last follow-up."
        )
    if choice.candidates:
        lines.append("  # outcome columns found (each explained; re-fracture is the event):")
        for line in choice.candidates:
            lines += _wrapped(line, "  #   ", "  #     ")
    lines += _wrapped(f"horizon: {d.horizon_why}.")
    per = d.n_events_by_horizon / max(d.n_parameters, 1)
    few = " (fewer than 10: expect over-fitting; declare fewer covariates)"
    lines += _wrapped(
        f"{d.n_events_by_horizon} events by the horizon for {d.n_parameters} model "
        f"parameters: {per:.1f} per parameter" + (few if per < 10 else "")
    )
    if d.has_death:
        lines += ["  # death before re-fracture occurs: the estimand is cif, death competing"]
    return lines


def _covariates(d: Any) -> list[str]:
    lines = ["", "covariates:"]
    for kind in ("numeric", "binary"):
        items = d.of_kind(kind)
        if not items:
            lines.append(f"  {kind}: []")
            continue
        lines.append(f"  {kind}:")
        for c in items:
            lines += _comment_lines([(f"- {scalar(c.name)}", f"guessed {kind}: {c.why}")], "    ")
            lines += [f"    #   {cell}" for cell in c.cells]
    cats = d.of_kind("categorical")
    if cats:
        lines.append("  categorical:                # name: reference level")
        lines += _comment_lines(
            [(f"{scalar(c.name)}: {scalar(c.reference)}", f"guessed categorical: {c.why}")
             for c in cats],
            "    ",
        )  # fmt: skip
    else:
        lines.append("  categorical: {}")
    roles = [c for c in d.columns if c.role is not None and c.kind in d.COVARIATE_KINDS]
    if roles:
        lines.append("  roles:                      # meaning: your column (ranges, the analysis)")
        lines += [f"    {c.role}: {scalar(c.name)}" for c in roles]
    numeric = d.of_kind("numeric")
    if numeric:
        lines.append("  ranges:                     # check and train refuse values outside")
        for c in numeric:
            if c.range is not None:
                lines.append(f"    {scalar(c.name)}: [{fmt(c.range[0])}, {fmt(c.range[1])}]")
            else:
                lo, hi = c.observed
                lines.append(
                    f"    # {scalar(c.name)}: [low, high]   # not recognised (values "
                    f"{fmt(lo)}..{fmt(hi)}): write its plausible range to have it checked"
                )
    left = d.of_kind("site", "left_out")
    if left:
        lines.append("  # not covariates (add a column above if it is one):")
        lines += [f"  #   {c.name}: {c.why}" for c in left]
    return lines


def _tail(d: Any) -> list[str]:
    lines = []
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
    return lines + [
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


def render(d: Any) -> str:
    """The draft ``d`` (:class:`refracture.study.drafting.Draft`) as commented YAML."""
    ids = next(c for c in d.columns if c.kind == "id")
    lines = [
        f"# refracture run config drafted by `refracture init` from {d.clinical.name}",
        f"# ({d.n_patients} patients). Every guessed line says what it was guessed from:",
        "# check each one, fix what is wrong, then run `refracture check --config <this file>`",
        "# and `refracture train --config <this file>`.",
        "# Keys not written here take their defaults (see configs/template.yaml).",
        "",
        "data:",
    ]
    data = [(f"clinical: {scalar(str(d.clinical))}", "")]
    if d.id_column != PATIENT_ID:
        data.append((f"id_column: {scalar(d.id_column)}", ids.why))
    if d.manifest is not None:
        data.append((f"manifest: {scalar(str(d.manifest))}", "images: the imaging models"))
    data.append(("exclude: {}", "patient ID: reason, to leave a patient out on purpose"))
    data.append(("cache_dir: .refracture-cache", "per-patient feature cache"))
    lines += _comment_lines(data, "  ")
    return "\n".join(lines + _outcome(d) + _covariates(d) + _tail(d))
