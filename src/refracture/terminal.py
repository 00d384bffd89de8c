"""What the commands show on the terminal: progress bars per stage and summary tables."""

from __future__ import annotations

import math
from typing import Any

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

from refracture.text import ci_text


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


def metrics_table(candidates: list[Any], horizon: float, title: str) -> Table:
    """C-index, AUC and calibration at the horizon per model and feature set, with 95% CIs."""
    h = int(round(horizon))
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("model", "features", "Harrell C", "C optimism-corr.", f"AUC {h} d",
                "calibration slope", f"O/E {h} d"):  # fmt: skip
        table.add_column(
            col, justify="left" if col in ("model", "features") else "right", overflow="fold"
        )
    for c in candidates:
        m = c.result.metrics
        table.add_row(
            c.model + (" *" if getattr(c, "is_selected", False) else ""),
            c.feature_set,
            ci_text(m, "cindex_harrell", brackets=True),
            ci_text(m, "cindex_harrell_optcorr", brackets=True),
            ci_text(m, f"auc_{h}d", brackets=True),
            ci_text(m, "calibration_slope", 2, brackets=True),
            ci_text(m, f"oe_ratio_{h}d", 2, brackets=True),
        )
    return table


def added_value_table(candidates: list[Any], horizon: float) -> Table | None:
    h = int(round(horizon))
    rows = [c for c in candidates if c.added]
    if not rows:
        return None
    table = Table(
        title=f"Added value of imaging (clinical -> clinical+imaging, {h} d)",
        title_justify="left",
        header_style="bold",
    )
    for col in ("model", "delta C", f"NRI {h} d", f"IDI {h} d", "LRT p"):
        table.add_column(col, justify="left" if col == "model" else "right", overflow="fold")
    for c in rows:
        a = c.added
        p = a.get("lrt_p", math.nan)
        table.add_row(
            c.model,
            ci_text(a, "delta_cindex", brackets=True),
            ci_text(a, f"nri_{h}d", 2, brackets=True),
            ci_text(a, f"idi_{h}d", brackets=True),
            "n/a" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}"),
        )
    return table


def print_train_summary(console: Console, result: Any, horizon: float) -> None:
    for c in result.candidates:
        c.is_selected = c is result.selected
    console.print(metrics_table(result.candidates, horizon, "Validation at the horizon (95% CI)"))
    console.print("[dim]* registered model; CIs: bootstrap of the validation patients; "
                  "optimism-corrected: Harrell's bootstrap on the development data[/]")  # fmt: skip
    added = added_value_table(result.candidates, horizon)
    if added is not None:
        console.print(added)
    d = result.decision
    console.print(
        f"registered [bold]{escape(d.model_name)}[/] version {d.version} "
        f"({escape(result.selected.label)}, {result.selection_metric} {d.value:.4f}): "
        f"{escape(d.reason)}"
    )
    excluded = result.flow["excluded"]
    if len(excluded):
        ids = ", ".join(map(str, excluded["patient_id"].head(5)))
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


def print_demo_summary(console: Console, demo: Any) -> None:
    """What the newcomer should see at the end of `refracture demo`."""
    t = demo.train
    h = t.dataset.horizon
    for c in t.candidates:
        c.is_selected = c is t.selected
    console.rule("[bold]refracture demo: summary")
    console.print(metrics_table(t.candidates, h, f"Validation at {int(round(h))} days (95% CI)"))
    added = added_value_table(t.candidates, h)
    if added is not None:
        console.print(added)
    d = t.decision
    console.print(
        f"champion: {d.model_name} version {d.version} ({t.selected.label}); {d.reason}",
        markup=False,
    )
    s = demo.scores
    n_ok = int((s["status"] == "ok").sum())
    groups = s.loc[s["status"] == "ok", "risk_group"].value_counts()
    console.print(
        f"scored {n_ok} of {len(s)} new patients from their images "
        f"({', '.join(f'{k} {v}' for k, v in groups.items())}); "
        f"Spearman correlation with their true 1-year risk: {demo.risk_vs_truth:.2f}"
    )
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
    ]
    for line in lines:  # soft wrap: paths and commands stay on one line for copy and paste
        console.print(line, soft_wrap=True, highlight=False, markup=False)
