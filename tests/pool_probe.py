"""Functions the pool tests run in worker processes (this module imports nothing heavy, so
what a worker holds in ``sys.modules`` is what it started with)."""

from __future__ import annotations

import os
import sys

HEAVY = ("pandas", "nibabel", "scipy.ndimage", "SimpleITK", "pydicom", "refracture.features")


def loaded(_item: int) -> list[str]:
    """The heavy modules already imported in this worker, and the worker's main module name."""
    main = getattr(sys.modules.get("__mp_main__"), "__file__", None)
    return [m for m in HEAVY if m in sys.modules] + ([f"main:{main}"] if main else [])


def double_or_die(item: int) -> int:
    """``2 * item``; item 17 kills its worker process outright (as a crash in a native reader
    or the out-of-memory killer would)."""
    if item == 17:
        os._exit(3)
    return 2 * item


def lost(item: int, message: str) -> str:
    return f"lost {item}: {message}"
