"""Sample size: Riley's minimum, events per model term, small validation samples (TRIPOD+AI
items 9, 10, 21).

Riley et al.'s criteria (:mod:`refracture.report.riley`) with the Cox-Snell R2 anticipated
from the clinical model give the patients and events a model of the run's size needs, for the
survival outcome and for the status at the horizon, against what the development data have
(:func:`riley_table`); training warns when they fall short.

Two rules of thumb, both conservative and both stated in the report: a model with fewer than
10 development events per candidate term is prone to overfitting (Peduzzi et al. 1995; Riley
et al. BMJ 2020 give the full calculation), and a validation sample - or one site of it - with
fewer than 100 patients or fewer than 10 events gives metrics too imprecise to read (Collins,
Ogundimu & Altman, Stat Med 2016 recommend at least 100 events). Events are re-fractures by
the horizon, the ones every horizon metric rests on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from refracture.models.outcome import EVENT

__all__ = [
    "MIN_EPV",
    "MIN_EVENTS",
    "MIN_PATIENTS",
    "anticipated_r2",
    "events_by_horizon",
    "events_per_parameter",
    "riley_metrics",
    "riley_table",
    "riley_warnings",
    "small_sample_warnings",
    "small_samples",
]

MIN_EPV = 10.0
MIN_EVENTS = 10
MIN_PATIENTS = 100


def events_by_horizon(time: np.ndarray, event: np.ndarray, horizon: float) -> int:
    """Re-fractures (event 1) at or before the horizon."""
    return int(((np.asarray(event) == EVENT) & (np.asarray(time) <= horizon)).sum())


def events_per_parameter(candidates: list[Any], horizon: float) -> pd.DataFrame:
    """Per model and feature set: development patients, events and events per model term.

    ``terms`` counts every candidate term after encoding (one per numeric or binary predictor,
    one per non-reference level of a categorical one) - penalised models shrink some of them,
    but they were all candidates. The events counted are those the model learns from: all
    development re-fractures for survival models, re-fractures by the horizon for a model of
    the horizon status only (``supports_survival`` False, e.g. the IPCW logistic model).
    """
    rows = []
    for c in candidates:
        r = c.result
        y = r.y_development
        by_h = events_by_horizon(y["time"], y["event"], horizon)
        survival = bool(r.final_model.model.supports_survival)
        events = int(r.events_train) if survival else by_h
        terms = len(r.final_model.term_names)
        epv = events / terms if terms else float("nan")
        rows.append(
            {
                "model": c.model,
                "features": c.feature_set,
                "development patients": int(r.n_train),
                "events (all follow-up)": int(r.events_train),
                f"events by {int(round(horizon))} d": by_h,
                "events counted": events,
                "counted from": "all follow-up" if survival else "by the horizon",
                "model terms": terms,
                "events per term": epv,
                "below 10": bool(np.isfinite(epv) and epv < MIN_EPV),
            }
        )
    return pd.DataFrame(rows)


def small_samples(result: Any) -> pd.DataFrame:
    """The validation set and each of its sites: patients, events by the horizon, too small?

    Read from the selected model's validation predictions (every model of a run is validated
    on the same patients). ``what`` is ``validation set`` or ``site <name>``.
    """
    h = float(result.dataset.horizon)
    pred = result.selected.result.predictions
    groups: list[tuple[str, pd.DataFrame]] = [("validation set", pred)]
    if pred["site"].nunique() > 1 or result.selected.result.split_kind in (
        "site",
        "leave_one_site_out",
    ):
        groups += [(f"site {s}", g) for s, g in pred.groupby("site", sort=True)]
    rows = []
    for what, g in groups:
        ev = events_by_horizon(g["time"].to_numpy(), g["event"].to_numpy(), h)
        rows.append(
            {
                "what": what,
                "patients": int(len(g)),
                "events": ev,
                "small": bool(ev < MIN_EVENTS or len(g) < MIN_PATIENTS),
            }
        )
    return pd.DataFrame(rows, columns=["what", "patients", "events", "small"])


def small_sample_warnings(result: Any) -> list[str]:
    """One line per sample too small to trust, for the terminal and the report.

    The validation set and every validation site with fewer than ``MIN_EVENTS`` re-fractures
    by the horizon or fewer than ``MIN_PATIENTS`` patients, and the selected model when it has
    fewer than ``MIN_EPV`` development events per model term.
    """
    h = int(round(float(result.dataset.horizon)))
    out = []
    for row in small_samples(result).itertuples(index=False):
        if row.small:
            out.append(
                f"{row.what}: {row.patients} patients, {row.events} re-fractures by {h} days "
                f"(fewer than {MIN_PATIENTS} patients or {MIN_EVENTS} events): its metrics are "
                "imprecise, read them with their confidence intervals"
            )
    sel = result.selected
    epv = events_per_parameter([sel], float(result.dataset.horizon)).iloc[0]
    if epv["below 10"]:
        out.append(
            f"{sel.label}: {epv['events per term']:.1f} development events per model term "
            f"({epv['model terms']} terms; fewer than {MIN_EPV:.0f}): expect overfitting"
        )
    return out


# --- Riley et al.: the minimum sample size (TRIPOD+AI item 9) --------------------------------

#: Riley et al. 2020's default when no model tells what R2 to expect: a Nagelkerke R2 of 0.15.
FALLBACK_NAGELKERKE = 0.15
_FIT_ERRORS = (ArithmeticError, ValueError, np.linalg.LinAlgError, RuntimeError)


def _lr_r2(lr: float, df: int, n: int) -> tuple[float, float]:
    """(adjusted, apparent) Cox-Snell R2 from a likelihood-ratio chi-square: apparent
    1 - exp(-LR / n), adjusted by van Houwelingen's shrinkage 1 - df / LR (Riley et al.
    2020, box 2: a conservative anticipation for the new model)."""
    if not (np.isfinite(lr) and lr > df > 0):
        return float("nan"), float("nan")
    apparent = 1.0 - math.exp(-lr / n)
    return (1.0 - df / lr) * apparent, apparent


def _clinical_design(dataset: Any, rows: np.ndarray) -> pd.DataFrame:
    from refracture.models.pipeline import make_preprocessor

    prep = make_preprocessor(dataset.covariates, [], categories=dataset.categories)
    X = dataset.X.iloc[rows][list(dataset.covariates.names)]
    return prep.fit_transform(X).astype(float)


def anticipated_r2(dataset: Any, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """The anticipated Cox-Snell R2 of each outcome type, from the clinical model fitted on
    the development rows: a Cox model of re-fracture (``survival``) and a logistic model of
    the status at the horizon among patients whose status is known (``binary``).

    Returns ``{outcome: {"r2", "apparent", "lr", "df", "n"}}``; ``r2`` is NaN where the
    clinical model shows no signal beyond its parameters (LR <= df) or cannot be fitted.
    """
    import warnings

    import statsmodels.api as sm
    from lifelines import CoxPHFitter

    from refracture.models.outcome import status_at

    design = _clinical_design(dataset, rows)
    y = dataset.y[rows]
    df = design.shape[1]
    out: dict[str, dict[str, float]] = {}
    data = design.reset_index(drop=True).assign(
        __t=y["time"], __e=(y["event"] == EVENT).astype(int)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph = CoxPHFitter().fit(data, "__t", "__e")
            lr = float(cph.log_likelihood_ratio_test().test_statistic)
    except _FIT_ERRORS:  # a failed fit leaves the R2 unknown; the table says so
        lr = float("nan")
    r2, app = _lr_r2(lr, df, len(y))
    out["survival"] = {"r2": r2, "apparent": app, "lr": lr, "df": df, "n": len(y)}
    status = status_at(y, dataset.horizon, dataset.estimand)
    known = status >= 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = sm.Logit(status[known], sm.add_constant(design[known].to_numpy())).fit(
                disp=0, maxiter=200
            )
            lr = float(fit.llr)
    except _FIT_ERRORS:  # separation, singular design: R2 unknown
        lr = float("nan")
    r2, app = _lr_r2(lr, df, int(known.sum()))
    out["binary"] = {"r2": r2, "apparent": app, "lr": lr, "df": df, "n": int(known.sum())}
    return out


def _max_r2(outcome: str, prevalence: float, events_per_patient: float) -> float:
    """The largest Cox-Snell R2 the outcome allows (Riley et al. 2019 eq. 23)."""
    if outcome == "binary":
        phi = prevalence
        ln_null = phi * math.log(phi) + (1 - phi) * math.log(1 - phi)
    else:
        e = events_per_patient
        ln_null = e * math.log(e) - e
    return 1.0 - math.exp(2.0 * ln_null)


def riley_table(dataset: Any, rows: np.ndarray, feature_sets: list[str]) -> pd.DataFrame:
    """Riley et al.'s minimum sample size of every feature set, for the survival outcome and
    for the status at the horizon, against the development data (``rows`` of ``dataset``).

    One row per feature set and outcome: ``parameters``, the anticipated Cox-Snell ``r2_cs``
    and where it comes from, the patients each criterion needs, ``required_n`` and
    ``required_events``, ``available_n`` and ``available_events`` (all re-fractures for the
    survival outcome, those by the horizon for the binary one), ``expected_shrinkage`` of a
    model fitted on the available patients, and ``met`` (available >= required).
    """
    from refracture.models.outcome import status_at
    from refracture.report.riley import binary_criteria, expected_shrinkage, survival_criteria

    rows = np.asarray(rows)
    y = dataset.y[rows]
    h = float(dataset.horizon)
    r2s = anticipated_r2(dataset, rows)
    events_all = int((y["event"] == EVENT).sum())
    rate = events_all / float(np.sum(y["time"]))
    meanfup = float(np.mean(y["time"]))
    known = status_at(y, h, dataset.estimand) >= 0
    cases = events_by_horizon(y["time"], y["event"], h)
    prevalence = cases / max(int(known.sum()), 1)
    out = []
    for fs in feature_sets:
        p = dataset.n_parameters(fs)
        for outcome in ("survival", "binary"):
            r2, source = r2s[outcome]["r2"], "clinical model (shrunk)"
            if not np.isfinite(r2):
                r2 = FALLBACK_NAGELKERKE * _max_r2(outcome, prevalence, rate * meanfup)
                source = "15% of the maximum (no signal in the clinical model)"
            if outcome == "survival":
                c = survival_criteria(r2, p, rate, h, meanfup)
                have_n, have_e = len(rows), events_all
            else:
                c = binary_criteria(r2, p, prevalence)
                have_n, have_e = int(known.sum()), cases
            out.append(
                {
                    "feature_set": fs,
                    "outcome": outcome,
                    "parameters": p,
                    "r2_cs": r2,
                    "r2_source": source,
                    "n_criterion_1": c.n[0],
                    "n_criterion_2": c.n[1],
                    "n_criterion_3": c.n[2],
                    "required_n": c.final_n,
                    "required_events": int(math.ceil(c.events)),
                    "available_n": have_n,
                    "available_events": have_e,
                    "expected_shrinkage": expected_shrinkage(r2, p, have_n),
                    "met": bool(have_n >= c.final_n),
                }
            )
    return pd.DataFrame(out)


def riley_warnings(table: pd.DataFrame, horizon: float) -> list[str]:
    """One line per feature set whose development data are below Riley's minimum."""
    out = []
    hd = int(round(horizon))
    for fs, g in table.groupby("feature_set", sort=False):
        short = g[~g["met"]]
        if short.empty:
            continue
        parts = []
        for r in short.itertuples(index=False):
            what = "survival outcome" if r.outcome == "survival" else f"{hd}-day status"
            parts.append(
                f"{r.required_n} patients ({r.required_events} re-fractures) for the {what}, "
                f"{r.available_n} ({r.available_events}) available, expected shrinkage "
                f"{r.expected_shrinkage:.2f}"
            )
        r0 = g.iloc[0]
        out.append(
            f"sample size (Riley et al. 2020) of the {fs} models, {r0['parameters']} "
            f"parameters, anticipated Cox-Snell R2 {r0['r2_cs']:.3f}: needs "
            + "; ".join(parts)
            + " (below the 0.9 target: expect overfitting, read the optimism-corrected metrics)"
        )
    return out


def riley_metrics(table: pd.DataFrame, feature_set: str) -> dict[str, float]:
    """The ``samplesize_*`` MLflow metrics of one feature set (finite values only)."""
    out: dict[str, float] = {}
    for r in table[table["feature_set"] == feature_set].itertuples(index=False):
        k = f"samplesize_{r.outcome}"
        out["samplesize_parameters"] = float(r.parameters)
        values = {
            "r2cs": r.r2_cs,
            "required_n": r.required_n,
            "required_events": r.required_events,
            "available_n": r.available_n,
            "available_events": r.available_events,
            "expected_shrinkage": r.expected_shrinkage,
            "met": float(r.met),
        }
        out |= {f"{k}_{name}": float(v) for name, v in values.items() if np.isfinite(v)}
    return out


def riley_view(table: pd.DataFrame, horizon: float) -> pd.DataFrame:
    """The sample-size table as the report shows it (one row per feature set and outcome)."""
    hd = int(round(horizon))
    out = pd.DataFrame(
        {
            "features": table["feature_set"],
            "outcome": [
                "time to re-fracture" if o == "survival" else f"status at {hd} d"
                for o in table["outcome"]
            ],
            "parameters": table["parameters"],
            "anticipated R2 (Cox-Snell)": [f"{v:.3f}" for v in table["r2_cs"]],
            "patients needed (criteria 1 / 2 / 3)": [
                f"{r.required_n} ({r.n_criterion_1} / {r.n_criterion_2} / {r.n_criterion_3})"
                for r in table.itertuples(index=False)
            ],
            "events needed": table["required_events"],
            "patients / events available": [
                f"{r.available_n} / {r.available_events}" for r in table.itertuples(index=False)
            ],
            "expected shrinkage": [f"{v:.2f}" for v in table["expected_shrinkage"]],
            "": ["" if m else "below the minimum" for m in table["met"]],
        }
    )
    return out
