"""The commands, one module per group; importing this package registers them on the app.

The order of the imports is the order of ``refracture --help``: data, index, check, study,
scoring, calculator, demo.
"""

from __future__ import annotations

from refracture.cli.commands import data, index, check, study, scoring, calculator, demo  # noqa: F401  (isort: skip)
