"""The ``refracture`` command line: parses arguments and calls the stage modules.

:mod:`.app` holds the Typer app, its one-line error handling and the options several commands
share; :mod:`.commands` one module per group of commands; :mod:`.terminal` what the commands
show (progress bars, summary tables); :mod:`.demo` the demo's library part. Exit codes: 0
success, 1 the work failed, 2 a usage or input error.
"""

from __future__ import annotations

from refracture.cli import commands as _commands  # noqa: F401 - registers the commands on ``app``
from refracture.cli.app import app, main

__all__ = ["app", "main"]
