"""Errors users see.

Every error that reaches the command line is one line that names the patient, the file or
the config key, and says what is wrong. ``InputError`` means the user must fix an input
(exit code 2); ``RefractureError`` means the work failed (exit code 1).
"""

from __future__ import annotations

from pathlib import Path


class RefractureError(Exception):
    """The work failed; exit code 1."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        patient_id: str | None = None,
        file: str | Path | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.patient_id = patient_id
        self.file = str(file) if file is not None else None
        self.key = key
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.patient_id is not None:
            parts.append(f"patient {self.patient_id}")
        if self.file is not None:
            parts.append(f"file {self.file}")
        if self.key is not None:
            parts.append(f"config key '{self.key}'")
        prefix = ": ".join(parts)
        text = " ".join(str(self.message).split())  # one line, whatever the cause printed
        return f"{prefix}: {text}" if prefix else text


class InputError(RefractureError):
    """An input (file, table, config, argument) is wrong; exit code 2."""

    exit_code = 2


class ConfigError(InputError, ValueError):
    """The run configuration is invalid (a ``ValueError`` too, as scikit-learn raises for bad
    parameters, so ``except ValueError`` in a caller's code catches it)."""


class ImageError(InputError):
    """An image could not be read or does not make sense (missing, corrupt, wrong shape...)."""


class GeometryError(ImageError):
    """A map and its label map do not describe the same physical space."""


class UnitsError(ImageError):
    """The units of a map are unknown or ambiguous."""


class ModelError(RefractureError):
    """A model could not be loaded or does not fit the input."""


class CheckError(InputError):
    """The input check found problems: ``rows`` holds every one (patient_id, file, column,
    value, problem, what_to_do), for the command line to show as a table; the message is
    the one line of the only problem, or the count and where the list is."""

    def __init__(self, message: str, *, rows: list[dict[str, str]], **where: str | None) -> None:
        self.rows = rows
        super().__init__(message, **where)  # type: ignore[arg-type]
