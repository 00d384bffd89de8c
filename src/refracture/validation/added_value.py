"""Added value of imaging: the same model with and without the imaging features, compared on
the same validation patients.

* ``delta_cindex``: Harrell's C of clinical+imaging minus clinical, with a paired percentile
  bootstrap CI (both models' predictions resampled together).
* ``nri_<h>``: continuous (category-free) net reclassification improvement at the horizon for
  censored data (Pencina, Steyerberg & D'Agostino, Stat Med 2011): the share of patients whose
  risk goes up or down is weighted by the observed cumulative incidence by the horizon in each
  group (Aalen-Johansen when deaths are present, else Kaplan-Meier), so censored patients
  count through the estimator rather than being dropped. Reported with its event and non-event
  components.
* ``idi_<h>``: integrated discrimination improvement at the horizon (Pencina 2008), the
  change in mean predicted risk among patients with the event by the horizon minus that
  among patients without it, with IPCW weights (Graf 1999, deaths known non-events; Uno et
  al. 2013 use the same weighting for censored data).
* ``lrt_p``: likelihood-ratio test of the nested Cox models fitted on the development data
  (only when the model is ``cox``; NaN otherwise).

No library computes the survival NRI / IDI; they are written here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sksurv.metrics import concordance_index_censored

from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.models.cox import CoxPH
from refracture.models.ipcw import horizon_weights
from refracture.models.outcome import EVENT, check_outcome, make_outcome
from refracture.validation.bootstrap import STREAM_ADDED_VALUE, percentile_interval, replicate_seeds
from refracture.validation.metrics import horizon_label, observed_risk
from refracture.validation.validate import ValidationResult


def continuous_nri(
    y: np.ndarray, risk_old: np.ndarray, risk_new: np.ndarray, horizon: float
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
    e_all = observed_risk(y, horizon)
    if not 0 < e_all < 1:
        return float("nan"), float("nan"), float("nan")
    p_up, p_down = up.mean(), down.mean()
    e_up = observed_risk(y[up], horizon) if up.any() else 0.0
    e_down = observed_risk(y[down], horizon) if down.any() else 0.0
    ev = (e_up * p_up - e_down * p_down) / e_all
    nonev = ((1 - e_down) * p_down - (1 - e_up) * p_up) / (1 - e_all)
    return float(ev + nonev), float(ev), float(nonev)


def idi(y: np.ndarray, risk_old: np.ndarray, risk_new: np.ndarray, horizon: float) -> float:
    """IPCW integrated discrimination improvement at the horizon."""
    status, w = horizon_weights(y, horizon, deaths="competing")
    case = (status == 1) & (w > 0)
    ctrl = (status == 0) & (w > 0)
    if not case.any() or not ctrl.any():
        return float("nan")
    diff = np.asarray(risk_new, float) - np.asarray(risk_old, float)
    gain_cases = np.average(diff[case], weights=w[case])
    gain_controls = np.average(diff[ctrl], weights=w[ctrl])
    return float(gain_cases - gain_controls)


def _harrell(y: np.ndarray, risk: np.ndarray) -> float:
    events = y["event"] == EVENT
    if not events.any():
        return float("nan")
    try:
        return float(concordance_index_censored(events, y["time"], risk)[0])
    except ValueError:
        return float("nan")


def likelihood_ratio_test(
    clin: ValidationResult, img: ValidationResult
) -> tuple[float, int, float]:
    """(chi-square, df, p) comparing nested Cox models fitted on the same development data."""
    reduced, full = clin.final_model.model, img.final_model.model
    if not (isinstance(reduced, CoxPH) and isinstance(full, CoxPH)):
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
    clin: ValidationResult, img: ValidationResult, *, bootstrap: int = 200, seed: int = 0
) -> dict[str, float]:
    """Compare clinical-only and clinical+imaging results of the same model.

    Keys (``h`` the horizon, e.g. 365d): ``delta_cindex`` (Harrell's C; + ``_lo``/``_hi``),
    ``nri_<h>`` (+ CI, ``nri_events_<h>``, ``nri_nonevents_<h>``), ``idi_<h>`` (+ CI),
    ``lrt_chi2``, ``lrt_df``, ``lrt_p`` and ``n_patients``. CIs: paired percentile bootstrap
    of the validation patients, B = ``bootstrap`` (seeded by ``seed``).
    """
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

    out: dict[str, float] = {}
    out["delta_cindex"] = _harrell(y, r1) - _harrell(y, r0)
    nri, nri_ev, nri_nonev = continuous_nri(y, r0, r1, horizon)
    out[f"nri_{h}"], out[f"nri_events_{h}"], out[f"nri_nonevents_{h}"] = nri, nri_ev, nri_nonev
    out[f"idi_{h}"] = idi(y, r0, r1, horizon)

    boot = []
    for ss in replicate_seeds(seed, bootstrap, STREAM_ADDED_VALUE):
        idx = np.random.default_rng(ss).integers(0, len(y), len(y))
        yb, a0, a1 = y[idx], r0[idx], r1[idx]
        boot.append(
            {
                "delta_cindex": _harrell(yb, a1) - _harrell(yb, a0),
                f"nri_{h}": continuous_nri(yb, a0, a1, horizon)[0],
                f"idi_{h}": idi(yb, a0, a1, horizon),
            }
        )
    boot_df = pd.DataFrame(boot, columns=["delta_cindex", f"nri_{h}", f"idi_{h}"])
    for k in boot_df.columns:
        out[f"{k}_lo"], out[f"{k}_hi"] = percentile_interval(boot_df[k].to_numpy())

    if clin.final_model.model.has_likelihood:
        chi2, df, p = likelihood_ratio_test(clin, img)
    else:
        chi2, df, p = float("nan"), 0, float("nan")
    out["lrt_chi2"], out["lrt_df"], out["lrt_p"] = chi2, float(df), p
    out["n_patients"] = float(len(y))
    return out
