"""What the commands show on the terminal: progress bars per stage and summary tables.

The progress bars need rich alone: the summaries' modules (results, validation) are imported by
the functions that print them, so a command that only shows progress starts fast.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from refracture.ids import PATIENT_ID
from refracture.text import ci_text

if TYPE_CHECKING:  # the tables need them; the progress bars (refracture check) do not
    from refracture.cli.demo import DemoResult
    from refracture.results import Candidate, TrainResult


class StageProgress:
    """One progress bar per stage; call it as ``progress(stage, done, total)``."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> StageProgress:
        self._started = False  # the bar appears with the first stage, so an input error
        return self  # found before any work prints its one line and nothing else

    def __exit__(self, *exc: object) -> None:
        if not self._started:
            return
        for task in self._tasks.values():  # a finished stage shows as complete
            t = self._bar.tasks[task]
            if exc[0] is None and t.total:
                self._bar.update(task, completed=t.total)
        self._bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if not self._started:
            self._bar.start()
            self._started = True
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=max(total, 1))
        self._bar.update(self._tasks[stage], completed=done, total=max(total, 1))


#: Below this console width the tables take their compact form (CIs still on one line).
WIDE = 160


def _cell(values: dict[str, float], name: str, digits: int) -> str:
    return ci_text(values, name, digits, brackets=True)


def _row_label(c: Candidate, selected: Candidate | None, compact: bool) -> list[str]:
    star = " *" if c is selected else ""
    if compact:  # model and feature set in one short column
        return [c.model + ("+img" if c.feature_set == "clinical+imaging" else "") + star]
    return [c.model + star, c.feature_set]


Column = tuple[str, list[str]]  # header, one cell per row


def _split_tables(
    title: str, labels: list[Column], columns: list[Column], width: int, compact: bool
) -> list[Table]:
    """The columns in as few tables as fit ``width`` (the label columns repeated in each), so
    no CI is ever cut."""
    need = lambda col: max(len(col[0]), *(len(v) for v in col[1])) + 3  # noqa: E731
    room = width - sum(need(c) for c in labels) - 4
    groups: list[list[Column]] = [[]]
    used = 0
    for col in columns:
        if groups[-1] and used + need(col) > room:
            groups.append([])
            used = 0
        groups[-1].append(col)
        used += need(col)
    tables = []
    for k, group in enumerate(groups):
        t = Table(
            title=title if k == 0 else None,
            title_justify="left",
            header_style="bold",
            box=None if compact else box.HEAVY_HEAD,
            pad_edge=False,
        )
        for head, _ in labels:
            t.add_column(head, justify="left", no_wrap=True)
        for head, _ in group:
            t.add_column(head, justify="right", no_wrap=True)
        for i in range(len(labels[0][1])):
            t.add_row(*(c[1][i] for c in labels), *(c[1][i] for c in group))
        tables.append(t)
    return tables


def _labels(candidates: list[Candidate], selected: Candidate | None, compact: bool) -> list[Column]:
    rows = [_row_label(c, selected, compact) for c in candidates]
    heads = ["model"] if compact else ["model", "features"]
    return [(h, [r[i] for r in rows]) for i, h in enumerate(heads)]


def metrics_tables(
    candidates: list[Candidate],
    horizon: float,
    title: str,
    selected: Candidate | None = None,
    width: int = WIDE,
    selection_metric: str | None = None,
) -> list[Table]:
    """The headline metrics of the registry with 95% CIs per model and feature set: their
    internal-validation estimate on the development data (each model's estimator named in its
    row) with the selection metric and a forest's out-of-bag C, then their values on the
    validation data unless those are the development data themselves. Columns that do not fit
    ``width`` go to a further table, so every CI stays on one line."""
    # the registry's package imports the models: read it only when a table is drawn
    from refracture.validation.catalogue import (
        ESTIMATORS,
        estimator_of,
        headline_specs,
        metric_spec,
    )

    h = float(horizon)
    compact = width < WIDE
    labels = _labels(candidates, selected, compact)
    rows = [c.result for c in candidates]
    est = [("estimate", [ESTIMATORS[r.internal].label for r in rows])]
    internal = [
        (spec.label_at(h), [_cell(r.metrics, f"{spec.name(h)}_{r.internal}", spec.digits)
                            for r in rows])
        for spec in headline_specs() if spec.resampled
    ]  # fmt: skip
    if selection_metric and (suffix := estimator_of(selection_metric)):
        spec = metric_spec(selection_metric, h)
        head = f"{spec.label_at(h)}, {ESTIMATORS[suffix].label} (selection)"
        internal.insert(0, (head, [_cell(r.metrics, selection_metric, spec.digits) for r in rows]))
    if any("cindex_oob" in r.metrics for r in rows):
        oob = [_cell(r.metrics, "cindex_oob", 3) if "cindex_oob" in r.metrics else "" for r in rows]
        internal.append(("forest out-of-bag C", oob))
    tables = _split_tables(
        f"{title}: internal validation on the development data", labels, est + internal,
        width, compact,
    )  # fmt: skip
    role = rows[0].validation_role if rows else "apparent"
    if role != "apparent":
        valid = [
            (spec.label_at(h), [_cell(r.metrics, spec.name(h), spec.digits) for r in rows])
            for spec in headline_specs()
        ]
        what = VALIDATION_WORDS.get(role, role)
        tables += _split_tables(f"{title}: {what}", labels, valid, width, compact)
    return tables


#: What the validation predictions are, as a table title.
VALIDATION_WORDS = {
    "test": "held-out patients",
    "external": "external validation",
    "internal-external": "internal-external validation (leave-one-site-out, pooled)",
    "out-of-fold": "cross-validation (out-of-fold, pooled)",
}


def added_value_tables(
    candidates: list[Candidate], horizon: float, width: int = WIDE
) -> list[Table]:
    """What imaging adds (delta C, NRI, IDI with 95% CIs, LRT p) per model: one table, or two
    narrower ones below ``WIDE`` columns so every CI stays on one line."""
    rows = [c for c in candidates if c.added]
    if not rows:
        return []
    h = float(horizon)
    compact = width < WIDE
    from refracture.validation.catalogue import ADDED_VALUE

    specs = list(ADDED_VALUE)
    groups = [specs[:2], specs[2:]] if compact else [specs]
    tables = []
    for k, group in enumerate(groups):
        table = Table(
            title=(
                f"Added value of imaging (clinical -> clinical+imaging, {int(round(h))} d)"
                if k == 0
                else None
            ),
            title_justify="left",
            header_style="bold",
            box=None if compact else box.HEAVY_HEAD,
            pad_edge=False,
        )
        table.add_column("model", justify="left", no_wrap=True)
        for spec in group:
            table.add_column(spec.label_at(h), justify="right", no_wrap=True)
        for c in rows:
            a = c.added or {}
            cells = []
            for spec in group:
                if spec.headline:
                    digits = 2 if spec.key.startswith("nri") else 3
                    cells.append(_cell(a, spec.name(h), digits))
                else:
                    p = a.get(spec.name(h), math.nan)
                    cells.append(
                        "n/a" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")
                    )
            table.add_row(c.model, *cells)
        tables.append(table)
    return tables


def _print_metrics(console: Console, result: TrainResult, title: str) -> None:
    tables = metrics_tables(
        result.candidates,
        result.dataset.horizon,
        title,
        result.selected,
        console.width,
        result.selection_metric,
    )
    for table in tables:
        console.print(table)
    legend = "* registered model"
    if console.width < WIDE:
        legend += "; +img: clinical+imaging"
    console.print(
        f"[dim]{legend}; internal validation: B bootstrap refits on the development data "
        "(Harrell: optimism-corrected; .632+; LOO bootstrap), 95% CI = percentiles of the "
        "refits' apparent values centred on the estimate; validation data: percentile "
        "bootstrap of the patients[/]"
    )


def print_train_summary(console: Console, result: TrainResult, horizon: float) -> None:
    estimand = result.dataset.estimand
    console.print(
        f"estimand: {estimand} - risks and metrics are "
        + (
            "cumulative incidences of re-fracture, death competing"
            if estimand == "cif"
            else "net risks of re-fracture, death censored"
        ),
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    _print_metrics(console, result, "Validation at the horizon (95% CI)")
    for table in added_value_tables(result.candidates, horizon, console.width):
        console.print(table)
    from refracture.report.summary_lines import selected_lines  # imports the report package

    for line in selected_lines(result, horizon):  # death O/E, sites' meta-analysis
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    d = result.decision
    said = (
        f"registered [bold]{escape(d.model_name)}[/] version {d.version} "
        if d.version
        else "selected "  # train --no-register
    )
    console.print(
        f"{said}({escape(result.selected.label)}, {result.selection_metric} {d.value:.4f}): "
        f"{escape(d.reason)}"
    )
    for warning in result.dataset.warnings:  # e.g. fewer than 10 events per model parameter
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    excluded = result.flow["excluded"]
    if len(excluded):
        ids = ", ".join(map(str, excluded[PATIENT_ID].head(5)))
        more = f" and {len(excluded) - 5} more" if len(excluded) > 5 else ""
        console.print(
            f"[yellow]note:[/] {len(excluded)} patient(s) excluded ({escape(ids)}{more}); "
            f"reasons in {escape(str(result.run_dir / 'excluded.csv'))} and the report",
            soft_wrap=True,
            highlight=False,
        )
    lines = [f"parent run ID: {result.parent_run_id}  (tracking URI {result.tracking_uri})"]
    if result.report is not None:
        lines.append(f"study report:  {result.report}")
    lines.append(f"run folder:    {result.run_dir}")
    for line in lines:  # soft wrap: paths stay on one line for copy and paste
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def print_demo_summary(console: Console, demo: DemoResult) -> None:
    """What the newcomer should see at the end of `refracture demo`."""
    t = demo.train
    h = t.dataset.horizon
    console.rule("[bold]refracture demo: summary")
    _print_metrics(console, t, f"Validation at {int(round(h))} days (95% CI)")
    for table in added_value_tables(t.candidates, h, console.width):
        console.print(table)
    d = t.decision
    console.print(
        f"champion: {d.model_name} version {d.version} ({t.selected.label}); {d.reason}",
        markup=False,
    )
    for warning in t.warnings:  # e.g. a choice resting on a failed optimism correction
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    s = demo.scores
    n_ok = int((s["status"] == "ok").sum())
    groups = s.loc[s["status"] == "ok", "risk_group"].value_counts()
    console.print(
        f"scored {n_ok} of {len(s)} new patients from their images "
        f"({', '.join(f'{k} {v}' for k, v in groups.items())}); "
        f"Spearman correlation with their true 1-year risk: {demo.risk_vs_truth:.2f}"
    )
    _print_stage_times(console, demo.stage_seconds)
    console.print(f"\n[bold]where things are[/] (in {escape(str(demo.workdir))})", soft_wrap=True)
    lines = [
        f"  study report:  {t.report}",
        f"  scores:        {demo.scores_path}",
        f"  MLflow store:  {demo.tracking_uri} (artifacts in {demo.workdir / 'mlruns'})",
        f"  cohorts:       {demo.cohort}, {demo.new_batch}",
        f"  config:        {demo.config}",
        "\nnext",
        f"  open the MLflow UI:  {demo.ui_command}",
        f"  serve the model:     {demo.serve_command}",
        f"  PACS, EHR and clinic outputs:  {demo.outputs_command}",
        f"  what-if calculator:  {demo.calculator_command}",
    ]
    for line in lines:  # soft wrap: paths and commands stay on one line for copy and paste
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _minutes(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``m:ss``."""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def _print_stage_times(console: Console, stage_seconds: dict[str, float]) -> None:
    """Wall-clock time of each stage of the demo and in all."""
    if not stage_seconds:
        return
    t = Table(title="time per stage", title_justify="left", box=None, pad_edge=False)
    t.add_column("stage", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    for stage, seconds in stage_seconds.items():
        t.add_row(stage, _minutes(seconds))
    t.add_row("[bold]all[/]", f"[bold]{_minutes(sum(stage_seconds.values()))}[/]")
    console.print(t)
