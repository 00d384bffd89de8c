"""How values are written for people: terminal, study report, model card, registry
description and error messages all use these, so they read the same."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["ci_parts", "ci_text", "clip", "name_list"]


def ci_text(
    values: Mapping[str, float], name: str, digits: int = 3, *, brackets: bool = False
) -> str:
    """``values[name]`` with its CI from ``values[name + "_lo"]`` and ``values[name + "_hi"]``.

    ``0.786 (0.685 to 0.857)``, or ``0.786 [0.685, 0.857]`` with ``brackets`` (narrow
    terminal columns); ``n/a`` when the value is missing, the bare value when the CI is.
    """
    v = values.get(name, math.nan)
    lo, hi = values.get(f"{name}_lo", math.nan), values.get(f"{name}_hi", math.nan)
    if v is None or not math.isfinite(v):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:.{digits}f}"
    if brackets:
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f} ({lo:.{digits}f} to {hi:.{digits}f})"


def ci_parts(values: Mapping[str, float], name: str, digits: int = 3) -> tuple[str, str]:
    """(value, "[lo, hi]") as :func:`ci_text` writes them, for a CI on its own line; the CI
    part is "" when the value or its interval is missing."""
    text = ci_text(values, name, digits, brackets=True)
    value, _, ci = text.partition(" ")
    return value, ci


def name_list(items: Iterable[object], limit: int = 10) -> str:
    """``P0001, P0002 and 3 more``: a list named in a one-line message."""
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head if len(items) <= limit else f"{head} and {len(items) - limit} more"


def clip(text: object, n: int = 300) -> str:
    """One line of at most ``n`` characters (a library's message can span many)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
