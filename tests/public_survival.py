"""Public survival data sets, each written as a study's clinical table (issue 12, item 2).

The data ship inside lifelines and scikit-survival (no download). Each table keeps the data
set's own column names and outcome coding, as a study would hand it over: a patient ID column
is added where the data have none (its name varies, so ``data.id_column`` is exercised),
scikit-survival's boolean events and '0'/'1' categories become 0/1 numbers. Used by
tests/test_realdata.py and scripts/bench_realdata.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DATASETS",
    "administrative_cut",
    "agreement",
    "edit_draft",
    "one_year_protocol",
    "run_folder",
    "study_table",
]


def _with_id(table: pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    table = table.reset_index(drop=True)
    table.insert(0, column, [f"{prefix}{i + 1:04d}" for i in range(len(table))])
    return table


def _sksurv(loader: str) -> pd.DataFrame:
    """X and y of a scikit-survival data set as one table under their own names."""
    import sksurv.datasets as sd

    X, y = getattr(sd, loader)()
    X = X.copy()
    for col in X.columns:
        if isinstance(X[col].dtype, pd.CategoricalDtype):
            values = X[col].astype(str)
            numbers = pd.to_numeric(values, errors="coerce")
            X[col] = numbers if numbers.notna().all() else values.where(X[col].notna())
    event, time = y.dtype.names
    X[time] = y[time]
    X[event] = y[event].astype(int)
    return X


def _lifelines(loader: str) -> pd.DataFrame:
    import lifelines.datasets as ld

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(ld, loader)()


def rossi() -> pd.DataFrame:
    """Rossi et al. recidivism: 432 released prisoners followed 52 weeks (week, arrest)."""
    return _with_id(_lifelines("load_rossi"), "id", "R")


def gbsg2() -> pd.DataFrame:
    """German Breast Cancer Study Group 2: 686 patients, time in days, cens = 1 recurrence;
    text categories (horTh yes/no, menostat Pre/Post, tgrade I/II/III)."""
    return _with_id(_lifelines("load_gbsg2"), "patient", "G")


def lung() -> pd.DataFrame:
    """NCCTG lung cancer: 228 patients with missing values (meal.cal, wt.loss, ...), status 0/1,
    an institution column (inst) and sex coded 1/2."""
    return _with_id(_lifelines("load_lung"), "id", "L")


def whas500() -> pd.DataFrame:
    """Worcester Heart Attack Study: 500 patients, lenfol days, fstat."""
    return _with_id(_sksurv("load_whas500"), "id", "W")


def veterans() -> pd.DataFrame:
    """Veterans' Administration lung cancer trial: 137 patients, Survival_in_days, Status."""
    return _with_id(_sksurv("load_veterans_lung_cancer"), "subject", "V")


def aids() -> pd.DataFrame:
    """AIDS Clinical Trials Group 320: 1151 patients followed under one year, censor = 1 AIDS
    or death (the follow-up never reaches 365 days)."""
    return _with_id(_sksurv("load_aids"), "id", "A")


def flchain() -> pd.DataFrame:
    """Serum free light chains: 7874 patients, futime days (some 0), death; chapter (cause of
    death) is missing for the living."""
    return _with_id(_sksurv("load_flchain"), "id", "F")


#: Name -> (table maker, time column, event column).
DATASETS: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "rossi": (rossi, "week", "arrest"),
    "veterans": (veterans, "Survival_in_days", "Status"),
    "lung": (lung, "time", "status"),
    "whas500": (whas500, "lenfol", "fstat"),
    "gbsg2": (gbsg2, "time", "cens"),
    "aids": (aids, "time", "censor"),
    "flchain": (flchain, "futime", "death"),
}


def study_table(name: str) -> pd.DataFrame:
    return DATASETS[name][0]()


def administrative_cut(table: pd.DataFrame, time: str, event: str, horizon: float):
    """The study as if it had stopped following everyone at ``horizon``: every patient still
    followed then, with or without a later event, is censored at exactly ``horizon``."""
    table = table.copy()
    late = table[time] > horizon
    table.loc[late, time] = horizon
    table.loc[late, event] = 0
    return table


def one_year_protocol(n: int = 560, seed: int = 0) -> pd.DataFrame:
    """The synthetic cohort's clinical table re-cut to a one-year protocol: every patient
    free of re-fracture and alive at day 365 is censored at exactly day 365."""
    from refracture.synth.cohort import simulate_cohort

    clinical = simulate_cohort(n, 4, seed).clinical
    return administrative_cut(clinical, "time_days", "event", 365.0).astype({"time_days": float})


def event_counts(table: pd.DataFrame, time: str, event: str, horizon: float) -> dict[str, int]:
    t, e = table[time].to_numpy(float), table[event].to_numpy(int)
    return {"patients": len(t), "events": int((e == 1).sum()),
            "events_by_horizon": int(((e == 1) & (t <= horizon)).sum()),
            "censored_at_horizon": int(((e == 0) & np.isclose(t, horizon)).sum())}  # fmt: skip


# --- the battery: `refracture init` then `refracture train`, checked against the libraries ----


def edit_draft(text: str, *, models: list[str], bootstrap: int, store: str, name: str) -> str:
    """The drafted config made quick for a test: fewer models, a small bootstrap, one worker,
    the test's MLflow store (the lines `refracture init` writes, edited as a user would)."""
    out = []
    for line in text.splitlines():
        if line.startswith("models:"):
            line = f"models: [{', '.join(models)}]"
        elif line.startswith("  bootstrap:"):
            line = f"  bootstrap: {bootstrap}\n  jobs: 1"
        elif line.startswith("  tracking_uri:"):
            line = f"  tracking_uri: {store}"
        elif line.startswith("  registered_model:"):
            line = f"  registered_model: realdata-{name}"
        elif line.startswith("selection_metric:") and bootstrap == 0:
            line = "selection_metric: cindex_harrell"
        out.append(line)
    return "\n".join(out) + "\n"


def run_folder(output: str) -> Path:
    """The run folder `refracture train` printed."""
    for line in output.splitlines():
        if line.startswith("run folder:"):
            return Path(line.split(":", 1)[1].strip())
    raise AssertionError(f"no run folder in the output:\n{output}")


def _most_frequent(s: pd.Series) -> object:
    counts = s.dropna().value_counts()
    return min(counts.index[counts == counts.max()])  # ties: the smallest, as scikit-learn


def design_matrix(dev: pd.DataFrame, full: pd.DataFrame, cfg) -> pd.DataFrame:
    """The development rows as the Cox model should see them, built here without refracture:
    numeric columns median-imputed, binary ones most-frequent-imputed, categorical ones
    most-frequent-imputed and one-hot coded against the reference (levels of the whole table),
    all imputation learned on the development rows."""
    cov = cfg.covariates
    X = pd.DataFrame(index=dev.index)
    for c in cov.numeric:
        v = pd.to_numeric(dev[c], errors="coerce").astype(float)
        X[c] = v.fillna(v.median())
    for c in cov.binary:
        v = pd.to_numeric(dev[c], errors="coerce").astype(float)
        X[c] = v.fillna(_most_frequent(v))
    for c, ref in cov.categorical.items():
        v = dev[c].astype("string").str.strip()
        v = v.fillna(_most_frequent(v))
        levels = sorted(set(full[c].dropna().astype(str).str.strip()) - {ref})
        for lv in levels:
            X[f"{c}[{lv}]"] = (v == lv).astype(float)
    return X


def _same_order(risk: np.ndarray, lp: np.ndarray) -> bool:
    """Whether sorting by ``lp`` never puts a lower risk after a higher one."""
    o = np.argsort(lp, kind="mergesort")
    return bool(np.all(np.diff(risk[o]) >= -1e-12))


def _development(table: pd.DataFrame, validation_ids: set[str]) -> pd.DataFrame:
    """The development rows: the patients not held out, or every patient when the run held
    none out (``validation.split: none``, whose predictions are of the whole table)."""
    if set(table.index) <= validation_ids:
        return table
    return table[~table.index.isin(validation_ids)]


def agreement(run_dir: Path, clinical: Path, cfg) -> dict[str, float]:
    """Largest differences between refracture's outputs in ``run_dir`` and the libraries:

    * ``cox_coef``: coefficients.csv of cox (clinical) against lifelines' CoxPHFitter fitted
      here on the same development rows (the patients not held out; all under split none);
    * ``harrell``, ``uno``: each model's validation C against scikit-survival's
      concordance_index_censored / concordance_index_ipcw on its predictions.csv. Uno's C
      needs a censoring distribution: refracture has estimated it from the development
      patients and (issue 12) from the evaluated patients; the smaller difference is kept,
      both are scikit-survival's own numbers.
    """
    from lifelines import CoxPHFitter
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
    from sksurv.util import Surv

    oc = cfg.outcome
    text = [cfg.data.id_column, *cfg.covariates.categorical]
    table = pd.read_csv(clinical, dtype=dict.fromkeys(text, str))
    table = table.set_index(cfg.data.id_column)
    out: dict[str, float] = {}
    cox = run_dir / "cox_clinical"
    if cox.is_dir():
        valid_ids = set(pd.read_csv(cox / "predictions.csv", dtype={"patient_id": str})
                        ["patient_id"])  # fmt: skip
        dev = _development(table, valid_ids)
        X = design_matrix(dev, table, cfg)
        data = X.assign(__t=dev[oc.time].astype(float), __e=(dev[oc.event] == 1).astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = CoxPHFitter(penalizer=0.0).fit(data, "__t", "__e").params_
        ours = pd.read_csv(cox / "coefficients.csv").set_index("term")["coef"]
        assert sorted(ours.index) == sorted(ref.index), (list(ours.index), list(ref.index))
        out["cox_coef"] = float(np.max(np.abs(ours - ref.reindex(ours.index))))
        out["n_development"] = len(dev)
    harrell, uno = [], []
    for folder in sorted(run_dir.glob("*_clinical")):
        pred = pd.read_csv(folder / "predictions.csv", dtype={"patient_id": str})
        metrics = pd.read_csv(folder / "metrics.csv").set_index("metric")["value"]
        event = pred["event"].to_numpy() == 1
        time = pred["time"].to_numpy(float)
        # refracture ranks by the linear predictor where it orders patients as the risk does
        # (no artificial ties where the risk saturates near 0 or 1): give the library the same
        lp = pred["lp"].to_numpy(float)
        risk = lp if _same_order(pred["risk"].to_numpy(float), lp) else pred["risk"].to_numpy()
        c = concordance_index_censored(event, time, risk)[0]
        harrell.append(abs(c - metrics["cindex_harrell"]))
        dev = _development(table, set(pred["patient_id"]))
        y_dev = Surv.from_arrays(dev[oc.event].to_numpy() == 1, dev[oc.time].to_numpy(float))
        y_val = Surv.from_arrays(event, time)
        h = oc.horizon_days
        candidates = [
            concordance_index_ipcw(y_dev, y_val, risk, tau=h)[0],
            concordance_index_ipcw(y_val, y_val, risk, tau=h)[0],
        ]
        uno.append(min(abs(u - metrics["cindex_uno"]) for u in candidates))
    out["harrell"] = float(max(harrell))
    out["uno"] = float(max(uno))
    out["n_models"] = len(harrell)
    return out
