"""Config helpers that need no config model: the required-edit marker ``refracture init``
writes where the user must choose, and one validation error as (config key, message)."""

from __future__ import annotations

from typing import Any

__all__ = ["REQUIRED_EDIT", "key_and_message", "required_edits"]

#: What ``refracture init`` writes where the user must choose: a config still holding it is
#: refused, naming the key, until the edit is made.
REQUIRED_EDIT = "REQUIRED-EDIT"


def required_edits(raw: Any, key: str = "") -> list[tuple[str, str]]:
    """(config key, the text after the marker) of every value holding :data:`REQUIRED_EDIT`."""
    if isinstance(raw, str) and raw.strip().startswith(REQUIRED_EDIT):
        return [(key, raw.strip().removeprefix(REQUIRED_EDIT).strip(" :"))]
    items = (
        raw.items() if isinstance(raw, dict) else enumerate(raw if isinstance(raw, list) else [])
    )
    nested = (
        required_edits(v, f"{key}.{k}".strip(".") if isinstance(raw, dict) else key)
        for k, v in items
    )
    return [found for inner in nested for found in inner]


def key_and_message(e: Any) -> tuple[str, str]:
    """(config key, message) of one pydantic validation error: a section-level rule names its
    key first."""
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = str(e["msg"]).removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if not e["loc"] and sep and " " not in head:  # a section-level rule names its key
        key, msg = head, rest
    return key, "unknown key" if e["type"] == "extra_forbidden" else msg
