"""The one exception a metric raises when the data cannot support it.

Its message is the reason users read next to the NaN ("no re-fracture in the validation data
before the horizon"), so it is a plain sentence without the metric's name.
"""

from __future__ import annotations

__all__ = ["Undefined"]


class Undefined(ValueError):
    """The metric is undefined on these data; ``str(err)`` says why."""
