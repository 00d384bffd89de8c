"""Patients, bone and outcome of the synthetic PVP/PKP cohort.

Every number used here is a named constant below with its source, or the word "assumption";
docs/synthetic.md explains the generating model as a whole. The image side (vertebral shapes,
tissues, noise) is in :mod:`refracture.synth.phantom`.

The generating model, in order:

1. Sites and scanners: unequal site sizes, each site with its own grid; every scanner has a
   vendor, a field strength (R2* x1.7 at 3 T), a PDFF bias in points (vendor bias plus the
   scanner's own offset) and an R2* scale. Site 1 replaces its 1.5 T scanner by a 3 T one
   halfway through its patients; the other sites scan at 3 T throughout.
2. Patients: age, sex, BMI; one latent bone-fragility variable ``F`` (mean 0, SD 1) partly
   explained by age, sex and BMI drives the DXA T-score, the vertebral PDFF and R2*, each with
   its own noise, so that MRI carries information beyond DXA.
3. Fractures and treatment: 1-3 acute fractured vertebrae (mostly T11-L2), all treated by PVP
   or PKP with cement; some patients also have an old, healed (untreated) vertebral fracture.
4. Outcome: a proportional-hazards model with a Weibull baseline for re-fracture, an
   exponential competing risk of death, administrative censoring between 365 and 730 days and
   loss to follow-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from refracture.levels import TL_JUNCTION, TL_LEVELS
from refracture.synth import spine
from refracture.synth.spine import DRAWN_LEVELS, BodyShape, draw_patient_shapes

# --- Cohort (published PVP/PKP cohorts) ----------------------------------------------------
AGE_MEAN, AGE_SD, AGE_RANGE = 73.0, 8.0, (50.0, 90.0)  # issue 2 / PVP cohorts
P_FEMALE = 0.80  # issue 2 / PVP cohorts
BMI_MEAN, BMI_SD, BMI_RANGE = 24.0, 3.5, (15.0, 40.0)  # range: assumption
TSCORE_MEAN, TSCORE_SD = -2.8, 0.9  # issue 2 / PVP cohorts
P_N_FRACTURED = {1: 0.60, 2: 0.30, 3: 0.10}  # issue 2 / PVP cohorts
# Where the index (first) fracture sits: concentrated at the thoraco-lumbar junction
# (most osteoporotic compression fractures are at T11-L2); exact weights: assumption.
INDEX_LEVEL_WEIGHTS = {
    "T10": 0.05,
    "T11": 0.15,
    "T12": 0.26,
    "L1": 0.27,
    "L2": 0.12,
    "L3": 0.07,
    "L4": 0.05,
    "L5": 0.03,
}
P_PRIOR_FRACTURE = 0.30  # issue 2
PRIOR_FRACTURE_FRAGILITY_LOGOR = 0.5  # more fragile, more prior fractures: assumption
P_OLD_VERTEBRAL_FRACTURE_IF_PRIOR = 0.5  # healed fracture visible on MRI: assumption
CEMENT_ML_PER_LEVEL = (2.0, 6.0)  # uniform, issue 2
P_LEAKAGE = {"none": 0.70, "intradiscal": 0.15, "paravertebral": 0.15}  # issue 2
P_GLUCOCORTICOID = 0.10  # issue 2
P_ANTI_OSTEOPOROSIS = 0.50  # issue 2
P_DIABETES = 0.20  # issue 2

# --- Bone: one latent fragility F drives T-score, PDFF and R2* ------------------------------
# F = A_AGE*z_age + A_FEMALE*z_female - A_BMI*z_bmi + residual, scaled to variance 1.
# Loadings: assumption, chosen so corr(T-score, age) ~ -0.26 (osteoporosis rises with age).
F_LOADING_AGE, F_LOADING_FEMALE, F_LOADING_BMI = 0.35, 0.15, 0.15
# Each marker = loading * F + own noise (standardised). corr(marker_a, marker_b) is the
# product of loadings: T-score vs PDFF -0.75*0.70 = -0.53 (published -0.40 to -0.66),
# T-score vs R2* 0.75*0.65 = 0.49 (published 0.35 to 0.64).
LOADING_TSCORE = 0.75  # assumption (gives the two correlations above)
LOADING_PDFF = 0.70  # assumption
LOADING_R2STAR = 0.65  # assumption
# PDFF (%) of normal vertebrae: women >60 about 49 +/- 8 %, osteoporosis about +11 points over
# normal bone (Griffith 2005; Karampinos 2018 review). Our cohort has mean T-score -2.8, i.e.
# about 1.3 T units below women over 60, so the cohort mean is 49 + 1.3 * 4.7 ~ 55 %.
PDFF_MEAN, PDFF_SD = 55.0, 8.0
PDFF_MALE_SHIFT = -3.0  # men have lower marrow fat at the same age: assumption
# R2* (1/s) at 1.5 T: ~65 normal vs ~53 osteoporosis, SD ~10 (Kühn 2013; Zhao 2021 IDEAL-IQ
# studies). Cohort mean at T-score -2.8: 55 1/s at 1.5 T.
R2STAR_MEAN_15T, R2STAR_SD_15T = 55.0, 10.0
R2STAR_3T_FACTOR = 1.7  # R2* scales roughly with field strength: ~1.7x at 3 T (issue 2)
# Level gradient: lower lumbar vertebrae carry more fat (Baum 2012; Karampinos 2015):
# about +1 point per level from T10 to L5, centred on 0 over T10-L5: assumption for the size.
PDFF_LEVEL_OFFSET = {lv: -3.5 + i for i, lv in enumerate(TL_LEVELS)}
PDFF_LEVEL_SD = 2.0  # vertebra-to-vertebra scatter within a patient (points): assumption
R2STAR_LEVEL_SD = 0.04  # relative vertebra-to-vertebra scatter: assumption
# Acute fracture: bone-marrow oedema roughly halves PDFF and lowers R2* (issue 2).
OEDEMA_PDFF_FACTOR, OEDEMA_R2STAR_FACTOR = 0.5, 0.8
# Vertebral shapes (deformity type, height loss, body size, spine pitch): refracture.synth.spine.
# They are drawn from their own random stream, after everything above, so adding them left
# every other generated value unchanged.
SHAPE_STREAM = 23

# --- Sites and scanners ---------------------------------------------------------------------
# Relative sizes are unequal (issue 2); the pattern is an assumption.
SITE_P_PKP = [0.3, 0.6, 0.5, 0.7]  # share of kyphoplasty by hospital: assumption
# PDFF bias by vendor, in points: multi-vendor phantom studies report biases of up to about
# 2 points between vendors (issue 15); which vendor reads high: assumption.
VENDOR_PDFF_BIAS = {"GE": 0.0, "Siemens": -1.0, "Philips": 1.5}
# Share of site 1's patients (in surgery order) imaged before its 1.5 T scanner is replaced by a
# 3 T one: assumption (one hospital changing scanner mid-study, issue 15).
SCANNER_CHANGE_AT = 0.5


@dataclass(frozen=True)
class Scanner:
    """One MR scanner: what its headers say, and what it does to the marrow values."""

    name: str  # the site's own name for it (manifest column ``scanner``), never a serial
    vendor: str  # one name per company (manifest column ``vendor``)
    manufacturer: str  # as the DICOM Manufacturer tag writes it
    model: str
    software: str
    field_strength_t: float
    pdff_offset: float  # this scanner's PDFF offset in points, on top of its vendor's bias
    r2star_scale: float  # R2* scale beyond the field strength

    @property
    def pdff_bias(self) -> float:
        """Points added to the marrow PDFF in this scanner's images."""
        return VENDOR_PDFF_BIAS[self.vendor] + self.pdff_offset

    @property
    def r2star_factor(self) -> float:
        """Factor on the 1.5 T R2* in this scanner's images (field strength and scale)."""
        return (R2STAR_3T_FACTOR if self.field_strength_t >= 2.0 else 1.0) * self.r2star_scale


_GE, _SIEMENS, _PHILIPS = "GE MEDICAL SYSTEMS", "SIEMENS", "Philips Medical Systems"
# Each site's scanners in the order they were used. Site 1 at 1.5 T, the rest at 3 T (issue 2);
# offsets, scales, models and software versions: assumption (PDFF offsets in points, R2* as a
# factor; the models are real product names, their effects here are made up).
SITE_SCANNERS: list[tuple[Scanner, ...]] = [
    (
        Scanner("MR1", "GE", _GE, "Optima MR450w", "DV26.0_R03", 1.5, 0.0, 1.0),
        Scanner("MR2", "GE", _GE, "SIGNA Premier", "MR30.1_R02", 3.0, 0.5, 1.0),
    ),
    (Scanner("MRA", "GE", _GE, "SIGNA Architect", "MR29.1_R01", 3.0, 1.0, 1.04),),
    (Scanner("3T", "Siemens", _SIEMENS, "MAGNETOM Vida", "syngo MR XA20", 3.0, 0.0, 0.96),),
    (Scanner("MRI-2", "Philips", _PHILIPS, "Ingenia", "5.7.1", 3.0, 0.5, 1.0),),
]

# --- Outcome: proportional hazards with a Weibull baseline ---------------------------------
# Log hazard ratios per unit of each covariate, centred at the reference values below so the
# baseline is that of a reference patient. Directions follow the PVP/PKP re-fracture
# literature (older age, low BMD, prior fracture, multiple fractures, intradiscal leakage,
# glucocorticoids, no anti-osteoporosis treatment and fractures at the thoraco-lumbar junction
# raise risk; Zhang 2017 meta-analysis; Ma 2023; Li 2022 PDFF nomogram). Sizes: assumption
# inside the published ranges.
LOG_HR: dict[str, float] = {
    "age": math.log(1.03),  # per year
    "sex[M]": math.log(0.75),  # men vs women
    "bmi": math.log(0.95),  # per kg/m2
    "bmd_tscore": math.log(0.75),  # per T-score unit (higher T, lower risk)
    "prior_fracture": math.log(1.8),
    "n_fractured": math.log(1.35),  # per acute fractured vertebra
    "cement_leakage[intradiscal]": math.log(2.0),
    "cement_leakage[paravertebral]": 0.0,
    "glucocorticoid": math.log(2.0),
    "anti_osteoporosis": math.log(1 / 1.8),  # no treatment HR 1.8
    "index_tl_junction": math.log(1.5),
    "diabetes": math.log(1.2),
    "cement_volume_ml": 0.0,  # no effect (a null covariate)
    "procedure[PKP]": 0.0,  # no effect (a null covariate)
    # Imaging: marrow of the untreated, unfractured vertebrae (PDFF in %, R2* in 1/s at the
    # 1.5 T scale), beyond what the T-score carries.
    "pdff_normal": math.log(1.05),  # per PDFF point
    "r2star_normal_15t": math.log(0.97),  # per 1/s at 1.5 T
}
LP_REFERENCE: dict[str, float] = {
    "age": AGE_MEAN,
    "bmi": BMI_MEAN,
    "bmd_tscore": TSCORE_MEAN,
    "n_fractured": 1.5,
    "cement_volume_ml": 6.0,
    "pdff_normal": PDFF_MEAN,
    "r2star_normal_15t": R2STAR_MEAN_15T,
}
# Weibull baseline H0(t) = (t / scale)^shape, t in days. Shape < 1: the hazard of a new
# fracture is highest soon after cement augmentation (most re-fractures occur in the first
# months). The scale was calibrated once by simulation (scripts/calibrate_synth.py) so the
# 1-year cumulative incidence is ~15 % (published 10-23 %) with competing deaths.
WEIBULL_SHAPE = 0.8  # assumption
WEIBULL_SCALE_DAYS = 9184.0  # calibrated (see above)
# Competing death: ~8 % a year (issue 2), exponential, rising with age (HR 1.07 per year:
# assumption).
DEATH_RATE_PER_DAY = -math.log(1 - 0.08) / 365.25
DEATH_LOG_HR_AGE = math.log(1.07)
ADMIN_CENSOR_DAYS = (365, 730)  # staggered entry: uniform, issue 2
P_LOST_TO_FOLLOW_UP = 0.10  # issue 2
HORIZON_DAYS = 365


@dataclass(frozen=True)
class Site:
    name: str
    index: int
    p_pkp: float
    scanners: tuple[Scanner, ...]  # in the order the site used them


@dataclass
class Cohort:
    """The simulated study, before any image is drawn."""

    clinical: pd.DataFrame  # what a study would record (the product's covariate names)
    truth: pd.DataFrame  # per patient: latent variables, true marrow values, lp, true risk
    sites: list[Site]
    levels: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # pid -> groups
    # pid -> body scale, spine pitch (degrees) and true body shapes of the drawn levels
    spine: dict[str, dict] = field(default_factory=dict)
    scanners: list[Scanner] = field(default_factory=list)  # patient i's scanner


def site_sizes(n: int, n_sites: int) -> list[int]:
    """Unequal, deterministic site sizes (weights 1.75 : 1.5 : 1.25 : 1 for four sites)."""
    if n_sites < 1 or n < n_sites:
        raise ValueError("need at least one patient per site")
    w = np.array([1.0 + 0.25 * (n_sites - 1 - s) for s in range(n_sites)])
    raw = n * w / w.sum()
    sizes = np.maximum(np.floor(raw).astype(int), 1)
    while sizes.sum() < n:  # largest remainders first
        sizes[int(np.argmax(raw - sizes))] += 1
    while sizes.sum() > n:
        sizes[int(np.argmax(sizes))] -= 1
    return sizes.tolist()


def make_sites(n_sites: int) -> list[Site]:
    """The first four sites as in SITE_SCANNERS; further ones repeat the pattern at 3 T, with
    one scanner each (the last of the pattern site's)."""
    out = []
    for s in range(n_sites):
        k = s % len(SITE_SCANNERS)
        scanners = SITE_SCANNERS[k] if s < len(SITE_SCANNERS) else SITE_SCANNERS[k][-1:]
        out.append(Site(name=f"site_{s + 1}", index=s, p_pkp=SITE_P_PKP[k], scanners=scanners))
    return out


def patient_scanners(sites: list[Site], site_idx: np.ndarray) -> list[Scanner]:
    """Each patient's scanner: a site with two scanners changes after SCANNER_CHANGE_AT of its
    patients in patient order (which is surgery order); deterministic, no random draws."""
    out: list[Scanner] = []
    for s, site in enumerate(sites):
        m = int(np.sum(site_idx == s))
        first = math.ceil(m * SCANNER_CHANGE_AT) if len(site.scanners) > 1 else m
        out += [site.scanners[0] if r < first else site.scanners[-1] for r in range(m)]
    return out


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float, n: int):
    out = rng.normal(mean, sd, n)
    bad = (out < lo) | (out > hi)
    while bad.any():  # rejection sampling keeps the shape of the normal inside the range
        out[bad] = rng.normal(mean, sd, bad.sum())
        bad = (out < lo) | (out > hi)
    return out


def _std(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return (x - mean) / sd


def linear_predictor(x: pd.DataFrame) -> np.ndarray:
    """The true log relative hazard of re-fracture (centred at LP_REFERENCE)."""
    lp = np.zeros(len(x))
    for term, beta in LOG_HR.items():
        if "[" in term:
            var, level = term[:-1].split("[")
            col = (x[var] == level).astype(float).to_numpy()
        else:
            col = x[term].astype(float).to_numpy() - LP_REFERENCE.get(term, 0.0)
        lp += beta * col
    return lp


def baseline_cumhaz(t: np.ndarray | float) -> np.ndarray:
    return (np.asarray(t, dtype=float) / WEIBULL_SCALE_DAYS) ** WEIBULL_SHAPE


def true_risk(lp: np.ndarray, horizon: float = HORIZON_DAYS) -> np.ndarray:
    """Net 1-year risk of re-fracture (death treated as censoring): 1 - S(horizon | x)."""
    return 1.0 - np.exp(-baseline_cumhaz(horizon) * np.exp(lp))


def true_cif(lp: np.ndarray, death_rate: np.ndarray, horizon: float = HORIZON_DAYS) -> np.ndarray:
    """Cumulative incidence of re-fracture by ``horizon`` with death as a competing event.

    CIF(t) = int_0^t h1(u) S1(u) S2(u) du, integrated numerically on a fine day grid.
    """
    grid = np.linspace(0.0, horizon, 2001)
    h_cum = baseline_cumhaz(grid)[None, :] * np.exp(lp)[:, None]
    surv = np.exp(-h_cum - death_rate[:, None] * grid[None, :])
    d_h = np.diff(h_cum, axis=1)
    mid = 0.5 * (surv[:, 1:] + surv[:, :-1])
    return (d_h * mid).sum(axis=1)


def simulate_cohort(n: int = 560, n_sites: int = 4, seed: int = 0, id_prefix: str = "P") -> Cohort:
    """Simulate the clinical table and the true marrow values of every patient."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if n_sites < 1:
        raise ValueError("sites must be at least 1")
    if n_sites > n:
        raise ValueError(f"more sites ({n_sites}) than patients ({n})")
    rng = np.random.default_rng(seed)
    sites = make_sites(n_sites)
    sizes = site_sizes(n, n_sites)
    site_idx = np.repeat(np.arange(n_sites), sizes)
    width = max(4, len(str(n)))
    ids = [f"{id_prefix}{i + 1:0{width}d}" for i in range(n)]

    age = np.round(_truncnorm(rng, AGE_MEAN, AGE_SD, *AGE_RANGE, n))
    female = rng.random(n) < P_FEMALE
    bmi = np.round(_truncnorm(rng, BMI_MEAN, BMI_SD, *BMI_RANGE, n), 1)

    z_age = _std(age, AGE_MEAN, AGE_SD)
    z_fem = _std(female.astype(float), P_FEMALE, math.sqrt(P_FEMALE * (1 - P_FEMALE)))
    z_bmi = _std(bmi, BMI_MEAN, BMI_SD)
    explained = F_LOADING_AGE**2 + F_LOADING_FEMALE**2 + F_LOADING_BMI**2
    fragility = (
        F_LOADING_AGE * z_age
        + F_LOADING_FEMALE * z_fem
        - F_LOADING_BMI * z_bmi
        + math.sqrt(1 - explained) * rng.standard_normal(n)
    )

    def marker(loading: float) -> np.ndarray:
        return loading * fragility + math.sqrt(1 - loading**2) * rng.standard_normal(n)

    tscore = np.round(TSCORE_MEAN - TSCORE_SD * marker(LOADING_TSCORE), 1)
    pdff_bio = PDFF_MEAN + PDFF_SD * marker(LOADING_PDFF) + PDFF_MALE_SHIFT * (~female)
    r2_bio_15t = R2STAR_MEAN_15T - R2STAR_SD_15T * marker(LOADING_R2STAR)
    # keep the biology inside what marrow can be (rarely binds)
    pdff_bio = np.clip(pdff_bio, 15.0, 85.0)
    r2_bio_15t = np.clip(r2_bio_15t, 25.0, 100.0)

    # Fractures and treatment
    lv_names = list(INDEX_LEVEL_WEIGHTS)
    lv_w = np.array(list(INDEX_LEVEL_WEIGHTS.values()))
    lv_w = lv_w / lv_w.sum()
    n_frac = rng.choice(list(P_N_FRACTURED), size=n, p=list(P_N_FRACTURED.values()))
    logit_prior = math.log(P_PRIOR_FRACTURE / (1 - P_PRIOR_FRACTURE))
    p_prior = 1 / (1 + np.exp(-(logit_prior + PRIOR_FRACTURE_FRAGILITY_LOGOR * fragility)))
    prior = rng.random(n) < p_prior
    old_vertebral = prior & (rng.random(n) < P_OLD_VERTEBRAL_FRACTURE_IF_PRIOR)

    treated: list[list[str]] = []
    old: list[list[str]] = []
    for i in range(n):
        chosen = list(
            rng.choice(lv_names, size=n_frac[i] + int(old_vertebral[i]), replace=False, p=lv_w)
        )
        treated.append(chosen[: n_frac[i]])
        old.append(chosen[n_frac[i] :])
    index_level = [t[0] for t in treated]  # the first drawn is the index fracture
    treated = [sorted(t, key=TL_LEVELS.index) for t in treated]
    tl_junction = np.array([lv in TL_JUNCTION for lv in index_level])

    p_pkp = np.array([sites[s].p_pkp for s in site_idx])
    procedure = np.where(rng.random(n) < p_pkp, "PKP", "PVP")
    cement_per_level = [rng.uniform(*CEMENT_ML_PER_LEVEL, size=k) for k in n_frac]
    cement_total = np.array([round(float(c.sum()), 1) for c in cement_per_level])
    leakage = rng.choice(list(P_LEAKAGE), size=n, p=list(P_LEAKAGE.values()))
    glucocorticoid = rng.random(n) < P_GLUCOCORTICOID
    anti_op = rng.random(n) < P_ANTI_OSTEOPOROSIS
    diabetes = rng.random(n) < P_DIABETES

    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "site": [sites[s].name for s in site_idx],
            "age": age.astype(int),
            "sex": np.where(female, "F", "M"),
            "bmi": bmi,
            "bmd_tscore": tscore,
            "n_fractured": n_frac.astype(int),
            "prior_fracture": prior.astype(int),
            "procedure": procedure,
            "cement_volume_ml": cement_total,
            "cement_leakage": leakage,
            "glucocorticoid": glucocorticoid.astype(int),
            "anti_osteoporosis": anti_op.astype(int),
            "diabetes": diabetes.astype(int),
            "index_tl_junction": tl_junction.astype(int),
        }
    )

    # True marrow values per level, as they appear in each site's images.
    truth_cols: dict[str, np.ndarray] = {}
    pdff_lv = np.empty((n, len(TL_LEVELS)))
    r2_lv_15t = np.empty((n, len(TL_LEVELS)))
    for j, lv in enumerate(TL_LEVELS):
        pdff_lv[:, j] = pdff_bio + PDFF_LEVEL_OFFSET[lv] + PDFF_LEVEL_SD * rng.standard_normal(n)
        r2_lv_15t[:, j] = r2_bio_15t * (1 + R2STAR_LEVEL_SD * rng.standard_normal(n))
    pdff_lv = np.clip(pdff_lv, 5.0, 95.0)
    normal_mask = np.ones((n, len(TL_LEVELS)), dtype=bool)
    for i in range(n):
        for lv in treated[i] + old[i]:
            normal_mask[i, TL_LEVELS.index(lv)] = False
    pdff_normal = np.nanmean(np.where(normal_mask, pdff_lv, np.nan), axis=1)
    r2_normal_15t = np.nanmean(np.where(normal_mask, r2_lv_15t, np.nan), axis=1)

    scanner = patient_scanners(sites, site_idx)
    field_t = np.array([sc.field_strength_t for sc in scanner])
    bias = np.array([sc.pdff_bias for sc in scanner])
    r2_factor = np.array([sc.r2star_factor for sc in scanner])
    for j, lv in enumerate(TL_LEVELS):
        acute = np.array([lv in treated[i] for i in range(n)])
        p_img = pdff_lv[:, j] * np.where(acute, OEDEMA_PDFF_FACTOR, 1.0) + bias
        r_img = r2_lv_15t[:, j] * np.where(acute, OEDEMA_R2STAR_FACTOR, 1.0) * r2_factor
        truth_cols[f"pdff_mean_{lv}"] = np.round(p_img, 3)
        truth_cols[f"r2star_mean_{lv}"] = np.round(r_img, 3)

    # Outcome
    x = clinical.copy()
    x["pdff_normal"] = pdff_normal
    x["r2star_normal_15t"] = r2_normal_15t
    lp = linear_predictor(x)
    death_rate = DEATH_RATE_PER_DAY * np.exp(DEATH_LOG_HR_AGE * (age - AGE_MEAN))
    u = rng.random(n)
    # invert S(t) = exp(-H0(t) e^lp):  t = scale * (-log u / e^lp)^(1/shape)
    t_fracture = WEIBULL_SCALE_DAYS * (-np.log(u) / np.exp(lp)) ** (1 / WEIBULL_SHAPE)
    t_death = rng.exponential(1 / death_rate)
    t_admin = rng.uniform(*ADMIN_CENSOR_DAYS, size=n)
    lost = rng.random(n) < P_LOST_TO_FOLLOW_UP
    t_lost = np.where(lost, rng.uniform(1.0, t_admin), np.inf)
    t_censor = np.minimum(t_admin, t_lost)
    t_obs = np.minimum.reduce([t_fracture, t_death, t_censor])
    event = np.select([t_obs == t_fracture, t_obs == t_death], [1, 2], default=0)
    clinical["time_days"] = np.maximum(np.ceil(t_obs), 1).astype(int)
    clinical["event"] = event.astype(int)

    truth = pd.DataFrame(
        {
            "patient_id": ids,
            "site": clinical["site"],
            "field_strength_t": field_t,
            "vendor": [sc.vendor for sc in scanner],
            "scanner": [sc.name for sc in scanner],
            "scanner_model": [sc.model for sc in scanner],
            "scanner_software": [sc.software for sc in scanner],
            "pdff_scanner_bias": bias,
            "r2star_scanner_factor": np.round(r2_factor, 6),
            "latent_fragility": np.round(fragility, 4),
            "pdff_normal_true": np.round(pdff_normal, 3),
            "r2star_normal_true_15t": np.round(r2_normal_15t, 3),
            "treated_levels": [";".join(t) for t in treated],
            "old_fracture_levels": [";".join(o) for o in old],
            **truth_cols,
            "linear_predictor": np.round(lp, 6),
            "risk_365d": np.round(true_risk(lp), 6),
            "cif_365d": np.round(true_cif(lp, death_rate), 6),
            "time_refracture_days": np.round(t_fracture, 2),
            "time_death_days": np.round(t_death, 2),
            "time_censor_days": np.round(t_censor, 2),
        }
    )
    # Vertebral shapes, from their own stream (see SHAPE_STREAM).
    size, pitch, shapes = draw_patient_shapes(
        np.random.default_rng([seed, SHAPE_STREAM]), n, ~female, treated, old, DRAWN_LEVELS
    )
    truth = pd.concat([truth, _shape_truth(shapes)], axis=1)
    spines = {
        pid: {"size": float(size[i]), "pitch_deg": float(pitch[i]), "shapes": shapes[i]}
        for i, pid in enumerate(ids)
    }
    levels = {
        pid: {
            "treated": treated[i],
            "fractured": sorted(treated[i] + old[i], key=TL_LEVELS.index),
            "old": old[i],
            "cement_ml": [round(float(c), 2) for c in cement_per_level[i]],
        }
        for i, pid in enumerate(ids)
    }
    return Cohort(
        clinical=clinical, truth=truth, sites=sites, levels=levels, spine=spines, scanners=scanner
    )


def _shape_truth(shapes: list[dict[str, BodyShape]]) -> pd.DataFrame:
    """truth.csv columns of the vertebral shapes: per level, then per patient."""
    cols: dict[str, list] = {}
    for lv in TL_LEVELS:
        body = [s[lv] for s in shapes]
        cols[f"true_ha_mm_{lv}"] = [round(b.ha, 3) for b in body]
        cols[f"true_hm_mm_{lv}"] = [round(b.hm, 3) for b in body]
        cols[f"true_hp_mm_{lv}"] = [round(b.hp, 3) for b in body]
        cols[f"true_height_loss_pct_{lv}"] = [round(b.loss_pct, 4) for b in body]
        cols[f"true_genant_{lv}"] = [b.genant for b in body]
        cols[f"true_deformity_{lv}"] = [b.kind for b in body]
        cols[f"true_body_volume_ml_{lv}"] = [round(b.volume_ml(), 3) for b in body]
    grades = np.array([[s[lv].genant for lv in TL_LEVELS] for s in shapes])
    cols["true_genant_max"] = grades.max(axis=1).tolist()
    cols["true_n_deformed"] = (grades >= 1).sum(axis=1).tolist()
    return pd.DataFrame(cols)


def truth_dict(cohort: Cohort, seed: int) -> dict:
    """The generating model as data (written to truth.json)."""
    return {
        "description": "refracture synthetic PVP/PKP cohort; see docs/synthetic.md",
        "seed": seed,
        "n": len(cohort.clinical),
        "horizon_days": HORIZON_DAYS,
        "refracture_model": {
            "type": "proportional hazards, Weibull baseline",
            "baseline_cumulative_hazard": "H0(t) = (t / scale) ** shape, t in days",
            "weibull_shape": WEIBULL_SHAPE,
            "weibull_scale_days": WEIBULL_SCALE_DAYS,
            "log_hazard_ratios": LOG_HR,
            "hazard_ratios": {k: math.exp(v) for k, v in LOG_HR.items()},
            "covariate_reference": LP_REFERENCE,
            "imaging_terms": {
                "pdff_normal": "mean true PDFF (%) of unfractured, untreated T10-L5 vertebrae, "
                "before the scanner's PDFF bias (truth.csv pdff_scanner_bias)",
                "r2star_normal_15t": "mean true R2* (1/s) of the same vertebrae at the 1.5 T "
                "scale (images show this times truth.csv r2star_scanner_factor: 1.7 at 3 T, "
                "times the scanner's scale)",
            },
        },
        "competing_death": {
            "type": "exponential",
            "rate_per_day_at_reference_age": DEATH_RATE_PER_DAY,
            "log_hazard_ratio_age_per_year": DEATH_LOG_HR_AGE,
            "reference_age": AGE_MEAN,
        },
        "censoring": {
            "administrative_days_uniform": list(ADMIN_CENSOR_DAYS),
            "p_lost_to_follow_up": P_LOST_TO_FOLLOW_UP,
        },
        "bone": {
            "latent_fragility_loadings": {
                "age": F_LOADING_AGE,
                "female": F_LOADING_FEMALE,
                "bmi": -F_LOADING_BMI,
            },
            "marker_loadings": {
                "bmd_tscore": -LOADING_TSCORE,
                "pdff": LOADING_PDFF,
                "r2star": -LOADING_R2STAR,
            },
            "tscore_mean_sd": [TSCORE_MEAN, TSCORE_SD],
            "pdff_mean_sd": [PDFF_MEAN, PDFF_SD],
            "pdff_male_shift": PDFF_MALE_SHIFT,
            "pdff_level_offset": PDFF_LEVEL_OFFSET,
            "r2star_mean_sd_15t": [R2STAR_MEAN_15T, R2STAR_SD_15T],
            "r2star_3t_factor": R2STAR_3T_FACTOR,
            "oedema_factors": {"pdff": OEDEMA_PDFF_FACTOR, "r2star": OEDEMA_R2STAR_FACTOR},
        },
        "vertebrae": {
            "body_size_mm": {
                lv: dict(zip(("height", "ap_depth", "lr_width"), v, strict=True))
                for lv, v in spine.BODY_MM.items()
            },
            "male_size": spine.MALE_SIZE,
            "body_size_sd": spine.BODY_SIZE_SD,
            "pitch_sd_deg": spine.PITCH_SD_DEG,
            "stations_ap_fraction": dict(zip(("a", "m", "p"), spine.STATIONS, strict=True)),
            "deformity_p": spine.DEFORMITY_P,
            "height_loss_acute": list(spine.HEIGHT_LOSS_ACUTE),
            "height_loss_old": list(spine.HEIGHT_LOSS_OLD),
            "crush_posterior_share": list(spine.CRUSH_POSTERIOR_SHARE),
            "genant_thresholds_pct": list(spine.GENANT_THRESHOLDS_PCT),
        },
        "sites": [
            {
                "name": s.name,
                "index": s.index,
                "p_pkp": s.p_pkp,
                "scanners": [
                    {**asdict(sc), "pdff_bias": sc.pdff_bias, "r2star_factor": sc.r2star_factor}
                    for sc in s.scanners
                ],
            }
            for s in cohort.sites
        ],
        "scanners": {
            "vendor_pdff_bias": VENDOR_PDFF_BIAS,
            "change": "a site with two scanners uses the first for the first "
            f"{SCANNER_CHANGE_AT:.0%} of its patients in surgery order (rounded up), then the "
            "second",
        },
    }
