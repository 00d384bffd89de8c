"""Warnings of the numerical libraries, caught and said once, in words a study team can act on.

scikit-learn, scikit-survival, lifelines, statsmodels and SciPy warn on stderr while they fit
(``LinAlgWarning: Ill-conditioned matrix``, ``ConvergenceWarning``), once per fit, in their
own terms. :func:`caught_warnings` records them during a piece of work and
:func:`describe` turns them into one sentence per kind with how often it happened.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["caught_warnings", "describe"]

#: What each library warning means for a risk model, by the warning class's name.
MEANING = {
    "LinAlgWarning": (
        "a matrix the fit had to invert was nearly singular (covariates that are almost "
        "collinear, or a category or resample with very few patients): the coefficients of "
        "those terms are unstable; consider leaving one of the related covariates out"
    ),
    "ConvergenceWarning": (
        "a model's optimiser stopped before it converged (often a covariate that almost "
        "separates patients with and without a re-fracture): read its coefficients and "
        "intervals with care"
    ),
    "StatisticalWarning": (
        "a statistical assumption was strained (e.g. few events for a term, or a near-constant "
        "covariate): its estimates may be imprecise"
    ),
    "RuntimeWarning": (
        "a numerical step overflowed or divided by zero (extreme covariate values or a "
        "resample with no events): the affected numbers are NaN or very large"
    ),
}
#: Libraries whose warnings are reported (others, e.g. MLflow's advisory notes, are not ours).
LIBRARIES = ("sklearn", "sksurv", "lifelines", "statsmodels", "scipy", "numpy", "pandas")
# A RuntimeWarning (a builtin class) counts when raised in these libraries or in refracture.


@contextmanager
def caught_warnings(into: list[str]) -> Iterator[None]:
    """Record the numerical libraries' warnings raised inside the block; on leaving, append
    one sentence per kind to ``into`` (nothing reaches stderr)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            into.extend(describe(seen))


def describe(records: list[warnings.WarningMessage]) -> list[str]:
    """One sentence per kind of warning (those of :data:`MEANING`), with its count."""
    counts: Counter[str] = Counter()
    for w in records:
        name = w.category.__name__
        root = w.category.__module__.split(".")[0]
        where = (w.filename or "").replace("\\", "/")
        ours = root in LIBRARIES or (
            root == "builtins" and any(f"/{lib}/" in where for lib in (*LIBRARIES, "refracture"))
        )
        if name in MEANING and ours:
            counts[name] += 1
    return [
        f"{MEANING[name]} ({name} from the fitting library, {n} time{'s' if n > 1 else ''})"
        for name, n in counts.items()
    ]
