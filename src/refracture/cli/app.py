"""The ``refracture`` application: the Typer app, its error handling and shared options.

The commands are in :mod:`refracture.cli.commands`, one module per group of users.

Exit codes: 0 success, 1 the work failed, 2 a usage or input error.
Errors print one line; ``--debug`` prints the traceback too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from refracture.errors import CheckError, RefractureError

app = typer.Typer(
    name="refracture",
    help=(
        "Imaging-biomarker risk models for vertebral re-fracture within one year after "
        "vertebroplasty/kyphoplasty: index a PACS export, check the inputs, extract PDFF/R2* "
        "features, train and register, score new patients (with DICOM SR/SEG, FHIR and risk "
        "cards), serve a calculator; `refracture demo` runs it all on synthetic data."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


PSEUDONYMISE = typer.Option(
    False,
    "--pseudonymise",
    help="Replace every patient_id by a keyed hash in all outputs (key: environment variable "
    "REFRACTURE_PSEUDONYM_KEY, never stored).",
)


ENGINE = typer.Option(
    "local",
    "--engine",
    help="Where the work runs: local (this machine's processes) or spark (Apache Spark; "
    'pip install "refracture\\[spark]" and Java 17+). Same output files.',
)
SPARK_MASTER = typer.Option(
    "local[*]",
    "--spark-master",
    help="Spark master URL with --engine spark: local[*] (every core here), local[N], "
    "spark://HOST:7077, yarn, ...",
)


def spark_engine(engine: str) -> bool:
    """True for --engine spark, after checking that pyspark and Java are there (exit 2)."""
    from refracture.errors import InputError

    if engine not in ("local", "spark"):
        raise InputError(f"--engine must be local or spark (got '{engine}')")
    if engine == "local":
        return False
    from refracture.engines import require_spark

    require_spark()
    return True


def _version(value: bool) -> None:
    if value:
        from refracture import __version__

        out.print(f"refracture {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Print Python tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


#: Rows of a problems table shown on the terminal; check.csv holds them all.
SHOWN_PROBLEMS = 40


def print_problems(
    target: Console, rows: list[dict[str, str]], limit: int = SHOWN_PROBLEMS
) -> None:
    """The problems of an input check as one table (patient, file, column, value, problem,
    what to do); file paths shortened to their names."""
    from pathlib import Path

    from rich.table import Table

    table = Table(title=f"{len(rows)} problem(s) in the inputs", title_justify="left")
    for name in ("patient", "file", "column", "value", "problem", "what to do"):
        table.add_column(name, overflow="fold")
    for row in rows[:limit]:
        cells = [str(c) for c in row.values()]
        cells[1] = Path(cells[1]).name if cells[1] else ""  # the full path is in check.csv
        if "/" in cells[3] and len(cells[3]) > 30:
            cells[3] = ".../" + "/".join(Path(cells[3]).parts[-2:])
        table.add_row(*(escape(c) for c in cells))
    target.print(table)
    if len(rows) > limit:
        target.print(f"... and {len(rows) - limit} more (every one is in check.csv)")


#: Per command, what to tell a user who pressed Ctrl-C: ``hint(command line) -> text`` (the
#: commands that can resume register theirs).
RESUME_HINTS: dict[str, Callable[[Callable[..., str]], str]] = {}


def command_line(fn: Callable[..., Any], values: dict[str, Any], add: tuple[str, ...] = ()) -> str:
    """The command as typed again from its parsed options: ``refracture score --model ...``
    (options left at their default are left out; ``add`` appends flags such as --resume)."""
    import inspect
    import shlex

    words = ["refracture", fn.__name__.replace("_", "-")]
    for name, param in inspect.signature(fn).parameters.items():
        decls = getattr(param.default, "param_decls", None)
        value = values.get(name)
        if not decls or value is None or value == getattr(param.default, "default", None):
            continue
        on, _, off = decls[0].partition("/")
        if isinstance(value, bool):
            words += [on] if value else ([off] if off else [])
        else:
            words += [on, str(value)]
    words += [a for a in add if a not in words]
    return shlex.join(words)


def _interrupted(fn: Callable[..., Any], values: dict[str, Any]) -> str:
    hint = RESUME_HINTS.get(fn.__name__)
    if hint is None:
        return "finished outputs were kept; run the same command again"
    return hint(lambda *add: command_line(fn, values, add))


def handle_errors(fn: F) -> F:
    """Turn library errors into one-line messages and the documented exit codes; a check that
    found several problems shows them as a table first."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RefractureError as err:
            if _state["debug"]:
                console.print_exception()
            if isinstance(err, CheckError) and len(err.rows) > 1:
                print_problems(console, err.rows)
            console.print(
                f"[bold red]error:[/] {escape(err.one_line())}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted[/]: {escape(_interrupted(fn, kwargs))}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - last line of defence for users
            if _state["debug"]:
                console.print_exception()
            msg = " ".join(f"{type(err).__name__}: {err}".split())
            console.print(
                f"[bold red]internal error:[/] {escape(msg)} (run with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:  # keep typer/click exit codes (2 for usage errors)
        sys.exit(exc.code)
