"""Smoothed calibration at the horizon, and the ICI, E50 and E90 read from it.

The observed risk by the horizon is estimated as a smooth function of the predicted risk by
regressing the outcome on a restricted cubic spline of the complementary log-log of the
prediction, in the run's estimand:

* ``net`` (death censors): a Cox model of re-fracture on rcs(log(-log(1 - risk))), 3 knots at
  the 10th, 50th and 90th percentiles (Austin, Harrell & van Klaveren, Stat Med 2020);
* ``cif`` (death competes): the same spline in a Fine-Gray subdistribution hazard model of
  re-fracture (Austin, Putter, Giardiello & van Klaveren, Diagn Progn Res 2022).

Both are fitted by comprisk's Fine-Gray routine
(:func:`refracture.models.finegray.fit_subdistribution`, which targets R's ``cmprsk::crr``);
under ``net`` deaths are recoded as censorings, so no patient has a competing event and the
subdistribution likelihood is Cox's partial likelihood (Breslow ties). The smoothed observed
risk of patient i is 1 - exp(-Lambda0(h) exp(f(x_i))); ICI is the mean, E50 the median and E90
the 90th percentile of |observed_i - predicted_i| over the evaluated patients.

The restricted cubic spline basis is Harrell's (R's ``rms::rcs``), written here: patsy's and
formulaic's natural cubic splines refuse or clip values beyond the boundary knots, which knots
at the 10th and 90th percentiles always leave.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refracture.errors import ModelError
from refracture.models.ipcw import step_at
from refracture.models.outcome import CENSORED, DEATH, EVENT, check_estimand, check_outcome
from refracture.validation.undefined import Undefined

__all__ = ["SmoothedCalibration", "e50", "e90", "ici", "rcs_basis", "smoothed_calibration"]

#: Knots of the spline, as quantiles of the complementary log-log of the predictions.
KNOT_QUANTILES = (0.10, 0.50, 0.90)
_EPS = 1e-8


def rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Harrell's restricted cubic spline of ``x`` with ``knots`` (k >= 3, increasing): the
    columns x and the k - 2 nonlinear terms, scaled by (t_k - t_1)^2 as ``rms::rcspline.eval``
    (norm = 2). Linear beyond the outer knots."""
    x = np.asarray(x, dtype=float)
    t = np.asarray(knots, dtype=float)
    k = len(t)
    cube = lambda v: np.maximum(v, 0.0) ** 3  # noqa: E731
    cols = [x]
    for j in range(k - 2):
        term = (
            cube(x - t[j])
            - cube(x - t[k - 2]) * (t[k - 1] - t[j]) / (t[k - 1] - t[k - 2])
            + cube(x - t[k - 1]) * (t[k - 2] - t[j]) / (t[k - 1] - t[k - 2])
        )
        cols.append(term / (t[k - 1] - t[0]) ** 2)
    return np.column_stack(cols)


@dataclass(frozen=True)
class SmoothedCalibration:
    """The smoothed observed risk at each prediction, and on a grid for plotting.

    ``predicted``, ``observed``: per evaluated patient; ``grid``, ``grid_observed``: 100
    predicted risks from the 1st to the 99th percentile and their smoothed observed risk;
    ``ici``, ``e50``, ``e90``: mean, median and 90th percentile of |observed - predicted|.
    """

    predicted: np.ndarray
    observed: np.ndarray
    grid: np.ndarray
    grid_observed: np.ndarray
    ici: float
    e50: float
    e90: float


def _cloglog(risk: np.ndarray) -> np.ndarray:
    r = np.clip(np.asarray(risk, dtype=float), _EPS, 1 - _EPS)
    return np.log(-np.log1p(-r))


def _design(x: np.ndarray, knots: np.ndarray | None) -> np.ndarray:
    return x[:, None] if knots is None else rcs_basis(x, knots)


def smoothed_calibration(
    y: np.ndarray, risk: np.ndarray, horizon: float, estimand: str = "net"
) -> SmoothedCalibration:
    """The smoothed calibration curve of ``risk`` against the outcome ``y`` at ``horizon``.

    Raises :class:`Undefined` (with the reason) when there is no re-fracture by the horizon,
    the predictions do not vary, or the regression does not converge. With fewer than three
    distinct knots the curve is linear in the complementary log-log of the prediction.
    """
    from refracture.models.finegray import fit_subdistribution  # comprisk: only when used

    y = check_outcome(y)
    risk = np.asarray(risk, dtype=float)
    if not ((y["event"] == EVENT) & (y["time"] <= horizon)).any():
        raise Undefined("no re-fracture in these data before the horizon")
    x = _cloglog(risk)
    if np.ptp(x) <= 1e-12:
        raise Undefined("every predicted risk is the same: no curve to smooth")
    knots = np.quantile(x, KNOT_QUANTILES)
    if np.any(np.diff(knots) <= 1e-9):
        knots = None  # too few distinct predictions for a spline: linear in cloglog(risk)
    yy = y.copy()
    if check_estimand(estimand) == "net":
        yy["event"] = np.where(yy["event"] == DEATH, CENSORED, yy["event"])
    design = _design(x, knots)
    centre = design.mean(axis=0)  # the baseline belongs to the mean patient: finite
    try:
        with np.errstate(divide="ignore", over="ignore"):
            fit = fit_subdistribution(design - centre, yy, cause=EVENT)
    except ModelError as err:
        raise Undefined(f"the calibration curve could not be fitted ({err.message})") from None
    h0 = float(step_at(fit.times, fit.cumhaz, np.array([float(horizon)]), 0.0)[0])

    def observed_at(values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return -np.expm1(-h0 * np.exp((_design(values, knots) - centre) @ fit.coef))

    observed = observed_at(x)
    if not np.all(np.isfinite(observed)):
        raise Undefined("the calibration curve could not be fitted (infinite risks)")
    grid = np.linspace(*np.quantile(risk, [0.01, 0.99]), 100)
    diff = np.abs(observed - risk)
    return SmoothedCalibration(
        predicted=risk,
        observed=observed,
        grid=grid,
        grid_observed=observed_at(_cloglog(grid)),
        ici=float(diff.mean()),
        e50=float(np.median(diff)),
        e90=float(np.quantile(diff, 0.9)),
    )


def _cached(ev) -> SmoothedCalibration:  # ev: refracture.validation.metrics.Evaluation
    if "smoothed" not in ev.cache:
        try:
            ev.cache["smoothed"] = smoothed_calibration(ev.y, ev.risk, ev.horizon, ev.estimand)
        except Undefined as err:
            ev.cache["smoothed"] = err
    value = ev.cache["smoothed"]
    if isinstance(value, Undefined):
        raise value
    return value


def ici(ev) -> float:
    """Integrated calibration index at the horizon (a metric of the registry)."""
    return _cached(ev).ici


def e50(ev) -> float:
    """Median absolute calibration error at the horizon."""
    return _cached(ev).e50


def e90(ev) -> float:
    """90th percentile of the absolute calibration error at the horizon."""
    return _cached(ev).e90
