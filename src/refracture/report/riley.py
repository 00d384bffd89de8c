"""Minimum sample size for developing a prediction model (Riley et al.), as TRIPOD+AI item 9 asks.

Riley et al. (Stat Med 2019, parts I and II; BMJ 2020) give three criteria for a model with
``p`` candidate parameters and an anticipated Cox-Snell R2 (``r2``):

1. expected uniform shrinkage of at least ``S`` = 0.9: n = p / ((S - 1) ln(1 - r2 / S));
2. a small optimism (0.05) in the Nagelkerke R2: the same formula with
   S = r2 / (r2 + 0.05 max R2), max R2 = 1 - exp(2 lnL_null / n);
3. a precise overall risk: for a binary outcome a 95 % margin of 0.05 around the prevalence,
   n = (1.96 / 0.05)^2 phi (1 - phi); for a survival outcome the margin of the risk by the
   time point is reported at the larger of the first two (pmsampsize does the same).

The functions below reproduce the R/Stata package ``pmsampsize`` (version 1.1.3: the Python
port needs Python 3.12, so it cannot be a dependency here) to the integer: the tests check
them against the package's own published examples. They are written out because no
installable library computes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy.optimize import brentq

__all__ = [
    "Criteria",
    "binary_criteria",
    "expected_shrinkage",
    "survival_criteria",
]

#: Target expected shrinkage (criterion 1) and Nagelkerke optimism (criterion 2).
SHRINKAGE = 0.9
DELTA = 0.05
#: Criterion 3 of a binary outcome: margin of error of the overall risk, 95 %.
MARGIN = 0.05
_Z = 1.96


@dataclass(frozen=True)
class Criteria:
    """The three criteria of one outcome type, as pmsampsize's results table.

    ``n`` per criterion and ``final_n`` (their maximum), the shrinkage each implies, the
    events and events per parameter at the final size (``events``, ``epp``),
    ``max_r2`` and the Nagelkerke R2 (``r2 / max_r2``). For survival, ``risk`` and its 95 %
    interval ``risk_lo`` / ``risk_hi`` at the time point with ``final_n`` patients.
    """

    outcome: str
    parameters: int
    r2: float
    max_r2: float
    n: tuple[int, int, int]
    shrinkage: tuple[float, float, float]
    final_n: int
    events: float
    epp: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def nagelkerke_r2(self) -> float:
        return self.r2 / self.max_r2


def _n_for(shrinkage: float, r2: float, parameters: int) -> int:
    return math.ceil(parameters / ((shrinkage - 1) * math.log(1 - r2 / shrinkage)))


def _check(r2: float, parameters: int, shrinkage: float) -> None:
    if not 0 < r2 < 1:
        raise ValueError(f"the anticipated Cox-Snell R2 must be in (0, 1), not {r2}")
    if parameters < 1:
        raise ValueError("at least one candidate parameter is needed")
    if shrinkage <= r2:
        raise ValueError(f"the target shrinkage {shrinkage} must exceed R2 {r2}")


def binary_criteria(
    r2: float, parameters: int, prevalence: float, shrinkage: float = SHRINKAGE
) -> Criteria:
    """Riley's criteria for a binary outcome (pmsampsize ``type = "b"``)."""
    _check(r2, parameters, shrinkage)
    n1 = _n_for(shrinkage, r2, parameters)
    e1 = n1 * prevalence
    ln_null = e1 * math.log(e1 / n1) + (n1 - e1) * math.log(1 - e1 / n1)
    max_r2 = 1 - math.exp(2 * ln_null / n1)
    if max_r2 < r2:
        raise ValueError(f"R2 {r2} exceeds the largest possible Cox-Snell R2 {max_r2:.3f}")
    s2 = r2 / (r2 + DELTA * max_r2)
    n2 = _n_for(s2, r2, parameters)
    n3 = math.ceil((_Z / MARGIN) ** 2 * prevalence * (1 - prevalence))
    final = max(n1, n2, n3)
    return Criteria(
        outcome="binary",
        parameters=parameters,
        r2=r2,
        max_r2=max_r2,
        n=(n1, n2, n3),
        shrinkage=(shrinkage, s2, max(s2, shrinkage)),
        final_n=final,
        events=final * prevalence,
        epp=final * prevalence / parameters,
        extra={"prevalence": prevalence},
    )


def survival_criteria(
    r2: float,
    parameters: int,
    rate: float,
    timepoint: float,
    meanfup: float,
    shrinkage: float = SHRINKAGE,
) -> Criteria:
    """Riley's criteria for a time-to-event outcome (pmsampsize ``type = "s"``).

    ``rate`` is events per unit of time, ``timepoint`` and ``meanfup`` (mean follow-up) in the
    same unit. Criterion 2's null log-likelihood uses pmsampsize's nominal 10,000 patients.
    """
    _check(r2, parameters, shrinkage)
    nominal = 10_000
    events_nominal = math.ceil(rate * meanfup * nominal)
    n1 = _n_for(shrinkage, r2, parameters)
    ln_null = events_nominal * math.log(events_nominal / nominal) - events_nominal
    max_r2 = 1 - math.exp(2 * ln_null / nominal)
    if max_r2 < r2:
        raise ValueError(f"R2 {r2} exceeds the largest possible Cox-Snell R2 {max_r2:.3f}")
    s2 = r2 / (r2 + DELTA * max_r2)
    n2 = _n_for(s2, r2, parameters)
    n3 = max(n1, n2)
    person_time = round(meanfup * n3, 1)
    half = _Z * math.sqrt(rate / person_time)
    risk = 1 - math.exp(-rate * timepoint)
    risk_hi = 1 - math.exp(-(rate + half) * timepoint)
    risk_lo = 1 - math.exp(-(rate - half) * timepoint)
    final = max(n1, n2, n3)
    events = final * rate * meanfup
    return Criteria(
        outcome="survival",
        parameters=parameters,
        r2=r2,
        max_r2=max_r2,
        n=(n1, n2, n3),
        shrinkage=(shrinkage, s2, max(s2, shrinkage)),
        final_n=final,
        events=events,
        epp=events / parameters,
        extra={"risk": risk, "risk_lo": risk_lo, "risk_hi": risk_hi, "rate": rate},
    )


def expected_shrinkage(r2: float, parameters: int, n: int) -> float:
    """The uniform shrinkage a model of ``parameters`` terms is expected to need when fitted
    on ``n`` patients with an anticipated Cox-Snell R2 ``r2``: the S solving criterion 1's
    equation n = p / ((S - 1) ln(1 - r2 / S)) (NaN where no S in (r2, 1) does)."""
    if not (0 < r2 < 1 and n > 0 and parameters > 0):
        return float("nan")

    def f(s: float) -> float:
        return (s - 1) * math.log(1 - r2 / s) * n - parameters

    lo, hi = r2 * (1 + 1e-12) + 1e-15, 1.0 - 1e-12
    if f(lo) <= 0 or f(hi) >= 0:
        return float("nan")
    return float(brentq(f, lo, hi, xtol=1e-12))
