"""One row of the association table (``associations.csv``) and the estimate it carries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd

__all__ = ["COLUMNS", "Association", "Estimate", "association_frame"]

#: The columns of associations.csv, in this order.
COLUMNS = (
    "marker", "versus", "method", "adjusted_for", "estimate", "lower95", "upper95", "p", "n",
    "n_vertebrae",
)  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% confidence interval, two-sided p-value and sample size:
    ``n`` patients and, for a per-vertebra model, ``n_vertebrae`` (None otherwise)."""

    estimate: float
    lower95: float
    upper95: float
    p: float
    n: int
    n_vertebrae: int | None = None

    @classmethod
    def empty(cls, n: int = 0) -> Estimate:
        """Not estimable (too few observations): NaN everywhere but ``n``."""
        return cls(math.nan, math.nan, math.nan, math.nan, n)


@dataclass(frozen=True)
class Association:
    """One row of associations.csv: ``marker`` related to ``versus`` by ``method``.

    ``adjusted_for`` lists the adjustment variables separated by ``;`` (empty when crude).
    ``n`` counts patients; ``n_vertebrae`` the vertebrae of a per-vertebra model.
    """

    marker: str
    versus: str
    method: str
    adjusted_for: str
    estimate: float
    lower95: float
    upper95: float
    p: float
    n: int
    n_vertebrae: int | None = None

    @classmethod
    def of(
        cls, marker: str, versus: str, method: str, adjusted_for: Sequence[str], est: Estimate
    ) -> Association:
        return cls(marker, versus, method, ";".join(adjusted_for), **asdict(est))


def association_frame(rows: Iterable[Association]) -> pd.DataFrame:
    """The rows as a DataFrame with exactly :data:`COLUMNS` (an empty table keeps them)."""
    df = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    df["n"] = df["n"].astype("int64")
    df["n_vertebrae"] = df["n_vertebrae"].astype("Int64")
    for col in ("estimate", "lower95", "upper95", "p"):
        df[col] = df[col].astype("float64")
    return df
