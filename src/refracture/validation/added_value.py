"""Added value of imaging: the same model with and without the imaging features, compared on
the same validation patients, in the results' estimand (``net`` or ``cif``).

* ``delta_cindex``: ``cindex_harrell`` of clinical+imaging minus clinical (Harrell's C for
  ``net``, the time-truncated competing-risk C of Wolbers 2009 for ``cif``; both rank by the
  linear predictor where it orders patients as the risk does), with a paired percentile
  bootstrap CI (both models' predictions resampled together).
* ``nri_<h>``: continuous (category-free) net reclassification improvement at the horizon for
  censored data (Pencina, Steyerberg & D'Agostino, Stat Med 2011): the share of patients whose
  risk goes up or down is weighted by the observed risk by the horizon in each group
  (``cif``: Aalen-Johansen, a death before the horizon a non-event; ``net``: 1 - Kaplan-Meier
  with deaths censored), so censored patients count through the estimator rather than being
  dropped. Reported with its event and non-event components.
* ``idi_<h>``: integrated discrimination improvement at the horizon (Pencina 2008), the
  change in mean predicted risk among patients with the event by the horizon minus that
  among patients without it, with IPCW weights (Graf 1999; ``cif``: deaths known non-events;
  Uno et al. 2013 use the same weighting for censored data).
* ``lrt_p``: likelihood-ratio test of the nested Cox models fitted on the development data
  (only when the model is ``cox``; NaN otherwise).

No library computes the survival NRI / IDI; they are written here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.models.ipcw import deaths_for, horizon_weights
from refracture.models.outcome import check_outcome, make_outcome
from refracture.validation.bootstrap import STREAM_ADDED_VALUE, percentile_interval, replicate_seeds
from refracture.validation.concordance import concordance, ranking_score
from refracture.validation.metrics import horizon_label, observed_risk
from refracture.validation.undefined import Undefined
from refracture.validation.validate import ValidationResult


def continuous_nri(
    y: np.ndarray,
    risk_old: np.ndarray,
    risk_new: np.ndarray,
    horizon: float,
    estimand: str = "net",
) -> tuple[float, float, float]:
    """(NRI, event component, non-event component) at the horizon, Pencina 2011.

    up = new risk > old risk, down = new < old (ties move neither way). With E the observed
    cumulative incidence by h overall, E_up / E_down within the up / down groups and p_up /
    p_down their shares:

        NRI_events    = (E_up p_up - E_down p_down) / E
        NRI_nonevents = ((1 - E_down) p_down - (1 - E_up) p_up) / (1 - E)
    """
    y = check_outcome(y)
    old, new = np.asarray(risk_old, float), np.asarray(risk_new, float)
    up, down = new > old, new < old
    e_all = observed_risk(y, horizon, estimand)
    if not 0 < e_all < 1:
        return float("nan"), float("nan"), float("nan")
    p_up, p_down = up.mean(), down.mean()
    e_up = observed_risk(y[up], horizon, estimand) if up.any() else 0.0
    e_down = observed_risk(y[down], horizon, estimand) if down.any() else 0.0
    ev = (e_up * p_up - e_down * p_down) / e_all
    nonev = ((1 - e_down) * p_down - (1 - e_up) * p_up) / (1 - e_all)
    return float(ev + nonev), float(ev), float(nonev)


def idi(
    y: np.ndarray,
    risk_old: np.ndarray,
    risk_new: np.ndarray,
    horizon: float,
    estimand: str = "net",
) -> float:
    """IPCW integrated discrimination improvement at the horizon."""
    status, w = horizon_weights(y, horizon, deaths_for(estimand))
    case = (status == 1) & (w > 0)
    ctrl = (status == 0) & (w > 0)
    if not case.any() or not ctrl.any():
        return float("nan")
    diff = np.asarray(risk_new, float) - np.asarray(risk_old, float)
    gain_cases = np.average(diff[case], weights=w[case])
    gain_controls = np.average(diff[ctrl], weights=w[ctrl])
    return float(gain_cases - gain_controls)


def _cindex(y: np.ndarray, score: np.ndarray, horizon: float, estimand: str) -> float:
    """``cindex_harrell`` of :func:`refracture.validation.metrics.compute_metrics`, NaN when
    undefined."""
    try:
        return concordance(y, score, horizon, estimand)
    except Undefined:
        return float("nan")


def likelihood_ratio_test(
    clin: ValidationResult, img: ValidationResult
) -> tuple[float, int, float]:
    """(chi-square, df, p) comparing nested Cox models fitted on the same development data."""
    reduced, full = clin.final_model.model, img.final_model.model
    if not (reduced.has_likelihood and full.has_likelihood):
        return float("nan"), 0, float("nan")
    if clin.development_ids != img.development_ids:
        raise InputError("the two Cox models were developed on different patients; no LR test")
    extra = set(full.feature_names_in_) - set(reduced.feature_names_in_)
    if not set(reduced.feature_names_in_) <= set(full.feature_names_in_) or not extra:
        raise InputError("the clinical model is not nested in the clinical+imaging model")
    chi2 = max(0.0, 2.0 * (full.log_likelihood_ - reduced.log_likelihood_))
    df = len(extra)
    return float(chi2), df, float(stats.chi2.sf(chi2, df))


def added_value(
    clin: ValidationResult,
    img: ValidationResult,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    reasons: dict[str, str] | None = None,
) -> dict[str, float]:
    """Compare clinical-only and clinical+imaging results of the same model.

    Keys (``h`` the horizon, e.g. 365d): ``delta_cindex`` (``cindex_harrell``; + ``_lo``/
    ``_hi``), ``nri_<h>`` (+ CI, ``nri_events_<h>``, ``nri_nonevents_<h>``), ``idi_<h>``
    (+ CI), ``lrt_chi2``, ``lrt_df``, ``lrt_p`` and ``n_patients``. CIs: paired percentile
    bootstrap of the validation patients, B = ``bootstrap`` (seeded by ``seed``). A
    ``reasons`` dict, if given, receives why each NaN value is NaN.
    """
    if clin.estimand != img.estimand:
        raise InputError(
            f"added value compares one estimand: got {clin.estimand} and {img.estimand}"
        )
    if clin.model_name != img.model_name:
        raise InputError(
            f"added value compares one model: got {clin.model_name} and {img.model_name}"
        )
    a, b = clin.predictions, img.predictions
    if len(a) != len(b) or not np.array_equal(a[PATIENT_ID].to_numpy(), b[PATIENT_ID].to_numpy()):
        raise InputError(
            "the clinical and clinical+imaging results were validated on different patients; "
            "added value needs the same validation patients"
        )
    horizon = float(clin.horizon)
    h = horizon_label(horizon)
    y = make_outcome(a["event"].to_numpy(), a["time"].to_numpy(float))
    if not (
        np.array_equal(y["time"], b["time"].to_numpy(float))
        and np.array_equal(y["event"], b["event"].to_numpy())
    ):
        raise InputError("the two results were not produced from the same data (outcomes differ)")
    r0, r1 = a["risk"].to_numpy(float), b["risk"].to_numpy(float)
    s0 = ranking_score(r0, a["lp"].to_numpy(float) if "lp" in a else None)
    s1 = ranking_score(r1, b["lp"].to_numpy(float) if "lp" in b else None)
    est = clin.estimand

    out: dict[str, float] = {}
    out["delta_cindex"] = _cindex(y, s1, horizon, est) - _cindex(y, s0, horizon, est)
    nri, nri_ev, nri_nonev = continuous_nri(y, r0, r1, horizon, est)
    out[f"nri_{h}"], out[f"nri_events_{h}"], out[f"nri_nonevents_{h}"] = nri, nri_ev, nri_nonev
    out[f"idi_{h}"] = idi(y, r0, r1, horizon, est)

    boot = []
    for ss in replicate_seeds(seed, bootstrap, STREAM_ADDED_VALUE):
        idx = np.random.default_rng(ss).integers(0, len(y), len(y))
        yb, a0, a1 = y[idx], r0[idx], r1[idx]
        boot.append(
            {
                "delta_cindex": _cindex(yb, s1[idx], horizon, est)
                - _cindex(yb, s0[idx], horizon, est),
                f"nri_{h}": continuous_nri(yb, a0, a1, horizon, est)[0],
                f"idi_{h}": idi(yb, a0, a1, horizon, est),
            }
        )
    boot_df = pd.DataFrame(boot, columns=["delta_cindex", f"nri_{h}", f"idi_{h}"])
    missed = []
    for k in boot_df.columns:
        lo, hi = percentile_interval(boot_df[k].to_numpy())
        if np.isfinite(lo) and np.isfinite(out[k]) and not lo <= out[k] <= hi:
            lo = hi = float("nan")  # an interval is given only when it contains its estimate
            missed.append(k)
        out[f"{k}_lo"], out[f"{k}_hi"] = lo, hi

    if clin.final_model.model.has_likelihood:
        chi2, df, p = likelihood_ratio_test(clin, img)
    else:
        chi2, df, p = float("nan"), 0, float("nan")
    out["lrt_chi2"], out["lrt_df"], out["lrt_p"] = chi2, float(df), p
    out["n_patients"] = float(len(y))
    if reasons is not None:
        reasons.update(_reasons(out, y, horizon, est, clin.final_model.model.has_likelihood))
        for k in missed:
            reasons[f"{k}_lo"] = reasons[f"{k}_hi"] = (
                "the percentile interval of the resamples misses the estimate, so it is not given"
            )
    return out


def _reasons(
    out: dict[str, float], y: np.ndarray, horizon: float, estimand: str, has_likelihood: bool
) -> dict[str, str]:
    """Why each NaN value of :func:`added_value` is NaN."""
    status, w = horizon_weights(y, horizon, deaths_for(estimand))
    if not ((status == 1) & (w > 0)).any():
        data_why = "no re-fracture by the horizon among the validation patients"
    elif not ((status == 0) & (w > 0)).any():
        data_why = "no validation patient is known to be free of re-fracture at the horizon"
    else:
        data_why = "undefined on the validation patients"
    lrt_why = (
        "the likelihood-ratio test could not be computed"
        if has_likelihood
        else "the model has no likelihood to compare (nested Cox-type models only)"
    )
    boot_why = "fewer than two bootstrap resamples of the validation patients gave a value"
    out_why: dict[str, str] = {}
    for key, value in out.items():
        if np.isfinite(value):
            continue
        if key.startswith("lrt"):
            out_why[key] = lrt_why
        elif key.endswith(("_lo", "_hi")) and np.isfinite(out.get(key[:-3], np.nan)):
            out_why[key] = boot_why
        else:
            out_why[key] = data_why
    return out_why
