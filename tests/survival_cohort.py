"""Synthetic cohorts for the data, model and validation tests (issue 4).

Until imaging extraction feeds the models, the imaging features come from the simulator's
truth: the per-level PDFF / R2* the images show (scanner PDFF bias and 3 T R2* scale
included) averaged over the patient's normal or adjacent levels, plus measurement noise.
Everything is cached per process, so the 560-patient cohort is simulated once.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from refracture.config import RunConfig, parse_config
from refracture.dataset import Dataset, assemble
from refracture.levels import TL_LEVELS, adjacent_levels
from refracture.synth.cohort import Cohort, simulate_cohort

IMAGING = ["pdff_mean_normal", "r2star_mean_normal", "pdff_mean_adjacent", "r2star_mean_adjacent"]


@functools.lru_cache(maxsize=8)
def cohort(n: int = 560, seed: int = 0) -> Cohort:
    return simulate_cohort(n, 4, seed)


def imaging_features(c: Cohort, seed: int = 1, harmonise_r2star: bool = False) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``site`` and the four imaging features.

    ``harmonise_r2star`` divides R2* by the scanner's field factor and scale, giving R2* at
    the 1.5 T scale of the generating model (to compare its hazard ratio with truth.json).
    """
    rng = np.random.default_rng(seed)
    truth = c.truth.set_index("patient_id")
    rows = []
    for pid in c.clinical["patient_id"]:
        lv = c.levels[pid]
        fractured = set(lv["fractured"])
        normal = [x for x in TL_LEVELS if x not in fractured]
        adjacent = sorted(
            {a for t in lv["treated"] for a in adjacent_levels(t, TL_LEVELS)} - fractured
        )
        t = truth.loc[pid]
        row = {"patient_id": pid, "site": t["site"]}
        for name, levels in (("normal", normal), ("adjacent", adjacent)):
            pdff = [t[f"pdff_mean_{x}"] for x in levels]
            r2 = [t[f"r2star_mean_{x}"] for x in levels]
            row[f"pdff_mean_{name}"] = np.mean(pdff) + rng.normal(0, 0.5) if levels else np.nan
            row[f"r2star_mean_{name}"] = (
                np.mean(r2) * (1 + rng.normal(0, 0.01)) if levels else np.nan
            )
        rows.append(row)
    out = pd.DataFrame(rows)
    if harmonise_r2star:
        # each patient's scanner: field strength and scale (a site may change scanner)
        factor = out["patient_id"].map(truth["r2star_scanner_factor"]).to_numpy()
        for col in ("r2star_mean_normal", "r2star_mean_adjacent"):
            out[col] = out[col] / factor
    return out


#: The synthetic study's covariates (configs/synthetic.yaml): configs have no defaults.
SYNTH_COVARIATES = {
    "numeric": ["age", "bmi", "bmd_tscore", "cement_volume_ml", "n_fractured"],
    "binary": [
        "prior_fracture",
        "glucocorticoid",
        "anti_osteoporosis",
        "diabetes",
        "index_tl_junction",
    ],
    "categorical": {"sex": "F", "procedure": "PVP", "cement_leakage": "none"},
}


def config(**overrides: object) -> RunConfig:
    """A run config for the synthetic cohort (manifest set so imaging is on)."""
    raw: dict = {
        "data": {"clinical": "clinical.csv", "manifest": "manifest.csv"},
        "covariates": dict(SYNTH_COVARIATES),
        "imaging": {"features": list(IMAGING)},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    return parse_config(raw)


@functools.lru_cache(maxsize=8)
def dataset(
    n: int = 560, seed: int = 0, harmonise_r2star: bool = False, estimand: str | None = None
) -> Dataset:
    """The synthetic cohort assembled as ``refracture train`` would (``estimand`` as the
    config's ``outcome.estimand``; unset: cif, the cohort has deaths)."""
    c = cohort(n, seed)
    features = imaging_features(c, harmonise_r2star=harmonise_r2star)
    return assemble(c.clinical, features, config(outcome__estimand=estimand))


def validate_with(name: str, ds: Dataset, feature_set: str, cfg: RunConfig, progress=None):
    """``refracture train``'s config-driven validation of one model on one feature set."""
    from refracture.study import validate_candidate

    return validate_candidate(name, feature_set, ds, cfg, progress).result
