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

from refracture.errors import RefractureError

app = typer.Typer(
    name="refracture",
    help=(
        "Imaging-biomarker risk models for vertebral re-fracture within one year after "
        "vertebroplasty/kyphoplasty: synthesise a cohort, extract PDFF/R2* features, train, "
        "score, demo."
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


def handle_errors(fn: F) -> F:
    """Turn library errors into one-line messages and the documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RefractureError as err:
            if _state["debug"]:
                console.print_exception()
            console.print(
                f"[bold red]error:[/] {escape(err.one_line())}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished outputs were kept; run again to resume")
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
