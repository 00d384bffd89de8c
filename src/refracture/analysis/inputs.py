"""The biomarker analysis's inputs: the clinical, features and per-vertebra tables checked,
typed and merged into one patient table and one per-vertebra table (with each patient's
scanner batch), before any statistic is computed (:mod:`refracture.analysis.runner`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from refracture.errors import InputError
from refracture.ids import PATIENT_ID
from refracture.levels import LEVEL_ORDER
from refracture.maps import MAPS

__all__ = [
    "GROUPS",
    "INTACT",
    "MAPS",
    "STATUS",
    "TREATED",
    "UNTREATED",
    "binary_sex",
    "default_markers",
    "level_key",
    "prepare_patients",
    "prepare_vertebrae",
]

GROUPS = ("normal", "l1l4")
STATUS = "vertebra"  # the fracture-status column of the per-vertebra table
INTACT, TREATED, UNTREATED = "intact", "treated", "fractured_untreated"


def level_key(level: str) -> tuple[int, str]:
    order = {name: i for i, name in enumerate(LEVEL_ORDER)}
    return (order.get(level, len(order)), level)


def _is_level_suffix(name: str) -> bool:
    return name.rsplit("_", 1)[-1] in set(LEVEL_ORDER)


def default_markers(features: pd.DataFrame) -> list[str]:
    """The patient-level markers analysed when none are named: ``{pdff,r2star}_mean_normal``,
    ``{pdff,r2star}_mean_l1l4`` and every patient-level ``morph_*`` column (not the per-level
    ones), each only when present with at least one value."""
    names = [f"{m}_mean_{g}" for g in GROUPS for m in MAPS]
    names += [c for c in features.columns if c.startswith("morph_") and not _is_level_suffix(c)]
    return [c for c in names if c in features.columns and features[c].notna().any()]


def _id_text(v: object) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _ids(table: pd.DataFrame, column: str, what: str) -> pd.Series:
    if column not in table.columns:
        raise InputError(f"the {what} has no '{column}' column (the patient ID column)")
    ids = table[column].map(_id_text)
    if (ids == "").any():
        raise InputError(f"the {what} has rows without a value in '{column}'")
    dup = sorted(ids[ids.duplicated()].unique())
    if dup:
        raise InputError(
            f"the {what} has {len(dup)} duplicated IDs in '{column}' (first: {dup[0]}); "
            "each patient must have one row"
        )
    return ids


def _numeric(table: pd.DataFrame, column: str, what: str) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        example = table.loc[bad, column].iloc[0]
        raise InputError(f"column '{column}' of the {what} must be numeric; found {example!r}")
    return values.astype(float)


def binary_sex(values: pd.Series) -> tuple[pd.Series, str, str] | None:
    """0/1 coding of a two-level column against its first level in sorted order."""
    text = values.map(lambda v: np.nan if pd.isna(v) else str(v).strip())
    levels = sorted(text.dropna().unique())
    if len(levels) != 2:
        return None
    coded = text.map({levels[0]: 0.0, levels[1]: 1.0}).astype(float)
    return coded, levels[0], levels[1]


#: What the analysis loses without a column for a role (said in the notes).
_WITHOUT_ROLE = {
    "age": "the partial correlations are not adjusted for age, and age is not related to "
    "the markers",
    "sex": "the partial correlations are not adjusted for sex, and the sexes are not compared",
    "bmi": "BMI is not related to the markers nor adjusted for in the per-vertebra models",
}


def _unnamed_roles(roles: dict[str, str | None], notes: list[str]) -> None:
    """A note for each role no column was given for (covariates.roles names them)."""
    for role, lost in _WITHOUT_ROLE.items():
        if roles.get(role) is None:
            notes.append(
                f"no clinical column has the role {role} (covariates.roles.{role}): {lost}"
            )


def prepare_patients(
    clinical: pd.DataFrame,
    features: pd.DataFrame,
    roles: dict[str, str | None],
    features_id_column: str,
    markers: Sequence[str] | None,
    notes: list[str],
) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient with ``patient_id``, the role columns and the markers."""
    clin_ids = _ids(clinical, roles["id"], "clinical table")  # type: ignore[arg-type]
    feat_ids = _ids(features, features_id_column, "features table")
    tscore = roles["tscore"]
    if tscore not in clinical.columns:
        raise InputError(
            f"the clinical table has no '{tscore}' column (the BMD T-score the markers are "
            "related to; name the study's own column)"
        )
    if markers is None:
        chosen = default_markers(features)
        if not chosen:
            raise InputError(
                "the features table has none of the markers pdff_mean_normal, "
                "r2star_mean_normal, pdff_mean_l1l4, r2star_mean_l1l4 (or any morph_* column)"
            )
    else:
        missing = [m for m in markers if m not in features.columns]
        if missing:
            raise InputError(f"the features table has no column '{missing[0]}' (a marker)")
        chosen = list(markers)

    patients = pd.DataFrame({PATIENT_ID: clin_ids.to_numpy()})
    patients[tscore] = _numeric(clinical, tscore, "clinical table").to_numpy()
    _unnamed_roles(roles, notes)
    for role in ("age", "bmi"):
        col = roles[role]
        if col is None:
            continue
        if col not in clinical.columns:
            notes.append(f"the clinical table has no '{col}' column: {_WITHOUT_ROLE[role]}")
            roles[role] = None
            continue
        patients[col] = _numeric(clinical, col, "clinical table").to_numpy()
    sex = roles["sex"]
    if sex is not None:
        if sex not in clinical.columns:
            notes.append(f"the clinical table has no '{sex}' column: {_WITHOUT_ROLE['sex']}")
            roles["sex"] = None
        else:
            patients[sex] = clinical[sex].to_numpy()
    site = roles["site"]
    if site is not None:
        if site in clinical.columns:
            patients[site] = clinical[site].astype("string").to_numpy()
        elif site in features.columns:
            site_by_id = pd.Series(features[site].astype("string").to_numpy(), index=feat_ids)
            patients[site] = patients[PATIENT_ID].map(site_by_id).to_numpy()
        else:
            notes.append(f"neither table has a '{site}' column: no adjustment for site")
            roles["site"] = None

    _batch(patients, features, feat_ids, roles, notes)
    marker_table = features[chosen].apply(pd.to_numeric, errors="coerce")
    marker_table.index = feat_ids.to_numpy()
    n_clin = len(patients)
    patients = patients.join(marker_table, on=PATIENT_ID, how="inner")
    if len(patients) < n_clin:
        notes.append(
            f"{n_clin - len(patients)} of {n_clin} patients of the clinical table have no "
            "features (not measured or failed) and are left out"
        )
    if len(patients) < 4:
        raise InputError(
            f"only {len(patients)} patients have both clinical data and features: the "
            "clinical and features tables must share patient IDs"
        )
    return patients.reset_index(drop=True), chosen


def _batch(
    patients: pd.DataFrame,
    features: pd.DataFrame,
    feat_ids: pd.Series,
    roles: dict[str, str | None],
    notes: list[str],
) -> None:
    """Each patient's scanner batch (``roles["batch"]``: scanner, field_strength or site, as
    harmonisation names them) as a column of ``patients``: R2* depends on the scanner, and a
    site may have several. Without the columns it needs, the site stands in, with a note."""
    from refracture.errors import ConfigError
    from refracture.models.harmonise import batch_labels

    batch = roles.get("batch")
    if batch is None:
        return
    source = features.set_axis(pd.Index(feat_ids.to_numpy()))
    site = roles["site"]
    if "site" not in source.columns and site is not None and site in patients.columns:
        source = source.assign(site=patients.set_index(PATIENT_ID)[site].reindex(source.index))
    try:
        labels = batch_labels(source, batch)
    except ConfigError:
        labels = None
    if labels is None or labels.isna().all():
        notes.append(
            f"the features table has no {batch} columns: R2* and PDFF are adjusted for the "
            "site instead of the scanner"
        )
        roles["batch"] = None
        return
    name = batch if batch not in patients.columns else f"{batch}_batch"
    patients[name] = patients[PATIENT_ID].map(labels).astype("string").to_numpy()
    roles["batch"] = name


def prepare_vertebrae(
    vertebrae: pd.DataFrame,
    patients: pd.DataFrame,
    roles: dict[str, str | None],
    stat: str,
    features_id_column: str,
    notes: list[str],
) -> pd.DataFrame | None:
    """The per-vertebra table in long form: patient_id, level, map, value, vertebra status,
    and the patient covariates."""
    for col in (features_id_column, "level", "map", stat):
        if col not in vertebrae.columns:
            raise InputError(f"the per-vertebra table has no '{col}' column")
    v = pd.DataFrame(
        {
            PATIENT_ID: vertebrae[features_id_column].map(_id_text).to_numpy(),
            "level": vertebrae["level"].astype(str).to_numpy(),
            "map": vertebrae["map"].astype(str).to_numpy(),
            "value": pd.to_numeric(vertebrae[stat], errors="coerce").to_numpy(),
        }
    )
    treated = vertebrae["treated"].astype(bool).to_numpy() if "treated" in vertebrae else None
    fractured = vertebrae["fractured"].astype(bool).to_numpy() if "fractured" in vertebrae else None
    if treated is None and fractured is None:
        notes.append(
            "the per-vertebra table has no 'treated' or 'fractured' column: every vertebra "
            "counts as intact and fractured vertebrae are not compared"
        )
    t = treated if treated is not None else np.zeros(len(v), dtype=bool)
    f = fractured if fractured is not None else np.zeros(len(v), dtype=bool)
    v[STATUS] = np.where(t, TREATED, np.where(f, UNTREATED, INTACT))
    if "small_roi" in vertebrae.columns:
        small = vertebrae["small_roi"].astype(bool).to_numpy()
        if small.any():
            notes.append(
                f"{int(small.sum())} vertebra-map measurements with too few voxels are left "
                "out of the per-vertebra models"
            )
        v = v[~small]
    cols = [c for c in patients.columns if c in {roles[r] for r in roles if r != "id"}]
    v = v.merge(patients[[PATIENT_ID, *cols]], on=PATIENT_ID, how="inner")
    v = v[np.isfinite(v["value"].to_numpy(dtype=float))]
    if v.empty:
        notes.append("no per-vertebra measurement matches a patient: no per-vertebra models")
        return None
    return v.reset_index(drop=True)
