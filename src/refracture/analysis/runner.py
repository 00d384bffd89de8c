"""The biomarker analysis of a cohort: tables in, association table, plots and page out.

:func:`run_analysis` relates each patient-level marker (PDFF and R2* group means, morphometry
aggregates) to the BMD T-score, age, BMI and sex; fits per-vertebra mixed models; computes ROC
curves for osteoporosis; and compares fractured with intact vertebrae within patients. Column
names are parameters, so a study with its own names needs no renaming; an optional column
that is absent is skipped with a note, a required one raises :class:`InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from refracture.analysis import correlation as corr
from refracture.analysis.association import Association, Estimate, association_frame
from refracture.analysis.mixed import OPTIMIZERS, MixedModelResult, fit_random_intercept
from refracture.analysis.roc import AucResult, Direction, delong_auc
from refracture.errors import InputError
from refracture.files import write_table
from refracture.ids import PATIENT_ID
from refracture.levels import LEVEL_ORDER

__all__ = [
    "DEFAULT_DIRECTIONS",
    "AnalysisResult",
    "default_markers",
    "run_analysis",
]

#: Which values of a marker family point to osteoporosis: fattier marrow (higher PDFF), less
#: trabecular bone (lower R2*), more deformity (higher morphometry grades). Fixed beforehand,
#: never chosen from the data.
DEFAULT_DIRECTIONS: dict[str, Direction] = {"pdff": "higher", "r2star": "lower", "morph": "higher"}
MAPS = ("pdff", "r2star")
GROUPS = ("normal", "l1l4")
STATUS = "vertebra"  # the fracture-status column of the per-vertebra table
INTACT, TREATED, UNTREATED = "intact", "treated", "fractured_untreated"
Progress = Callable[[str, int, int], None]


@dataclass
class AnalysisResult:
    """What :func:`run_analysis` found.

    ``associations`` is the table written to associations.csv; ``auc`` maps each marker to its
    ROC result; ``mixed`` maps each map (``pdff``, ``r2star``) to its per-vertebra model and
    ``fracture`` to its fractured-versus-intact model. ``patients`` is the merged patient
    table the statistics used, ``vertebrae`` the per-vertebra one (or None). ``columns`` maps
    each role (``id``, ``tscore``, ``age``, ``sex``, ``bmi``, ``site``) to the column used or
    None; ``notes`` says what was skipped and why.
    """

    associations: pd.DataFrame
    auc: dict[str, AucResult]
    mixed: dict[str, MixedModelResult]
    fracture: dict[str, MixedModelResult]
    patients: pd.DataFrame
    vertebrae: pd.DataFrame | None
    markers: list[str]
    columns: dict[str, str | None]
    osteoporosis_threshold: float
    notes: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_patients(self) -> int:
        return int(len(self.patients))

    @property
    def n_vertebrae(self) -> int:
        """Distinct (patient, level) pairs with at least one per-vertebra measurement."""
        if self.vertebrae is None:
            return 0
        return int(len(self.vertebrae[[PATIENT_ID, "level"]].drop_duplicates()))


def _level_key(level: str) -> tuple[int, str]:
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


def _binary_sex(values: pd.Series) -> tuple[pd.Series, str, str] | None:
    """0/1 coding of a two-level column against its first level in sorted order."""
    text = values.map(lambda v: np.nan if pd.isna(v) else str(v).strip())
    levels = sorted(text.dropna().unique())
    if len(levels) != 2:
        return None
    coded = text.map({levels[0]: 0.0, levels[1]: 1.0}).astype(float)
    return coded, levels[0], levels[1]


def _prepare_patients(
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
    for role in ("age", "bmi"):
        col = roles[role]
        if col is None:
            continue
        if col not in clinical.columns:
            notes.append(f"the clinical table has no '{col}' column: {role} is skipped")
            roles[role] = None
            continue
        patients[col] = _numeric(clinical, col, "clinical table").to_numpy()
    sex = roles["sex"]
    if sex is not None:
        if sex not in clinical.columns:
            notes.append(f"the clinical table has no '{sex}' column: sex is skipped")
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


def _prepare_vertebrae(
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


# --- the statistics -----------------------------------------------------------------------


def _adjusters(patients: pd.DataFrame, roles: dict[str, str | None], exclude: str) -> list[str]:
    return [
        c
        for r in ("age", "sex", "site")
        if (c := roles[r]) is not None and c != exclude and patients[c].nunique() > 1
    ]


def _design(patients: pd.DataFrame, names: list[str], roles: dict[str, str | None]) -> np.ndarray:
    categorical = [c for c in (roles["sex"], roles["site"]) if c is not None]
    matrix, _ = corr.covariate_design(patients[names], categorical)
    return matrix


def _correlations(
    patients: pd.DataFrame,
    markers: list[str],
    roles: dict[str, str | None],
    notes: list[str],
) -> list[Association]:
    rows: list[Association] = []
    numeric = [c for r in ("tscore", "age", "bmi") if (c := roles[r]) is not None]
    sex = roles["sex"]
    coded = _binary_sex(patients[sex]) if sex is not None else None
    if sex is not None and coded is None:
        notes.append(f"'{sex}' does not have exactly two values: sex is not compared")
    for marker in markers:
        y = patients[marker].to_numpy(float)
        for vs in numeric:
            x = patients[vs].to_numpy(float)
            rows.append(Association.of(marker, vs, "pearson", [], corr.pearson(x, y)))
            rows.append(Association.of(marker, vs, "spearman", [], corr.spearman(x, y)))
            adj = _adjusters(patients, roles, exclude=vs)
            if adj:
                z = _design(patients, adj, roles)
                est = corr.partial_pearson(x, y, z)
                rows.append(Association.of(marker, vs, "partial_pearson", adj, est))
        if coded is not None:
            indicator, ref, other = coded
            g = indicator.to_numpy(float)
            name = f"{sex}[{other}]"
            for method, fn in (
                ("point_biserial", corr.point_biserial),
                ("mean_difference", corr.mean_difference),
            ):
                rows.append(Association.of(marker, name, method, [], fn(y, g)))
            adj = _adjusters(patients, roles, exclude=sex)  # type: ignore[arg-type]
            if adj:
                z = _design(patients, adj, roles)
                est = corr.partial_pearson(g, y, z)
                rows.append(Association.of(marker, name, "partial_pearson", adj, est))
    return rows


def _direction(marker: str, directions: Mapping[str, Direction]) -> Direction | None:
    if marker in directions:
        return directions[marker]
    family = marker.split("_", 1)[0]
    return directions.get(family)


def _roc(
    patients: pd.DataFrame,
    markers: list[str],
    tscore: str,
    threshold: float,
    directions: Mapping[str, Direction],
    notes: list[str],
) -> tuple[dict[str, AucResult], list[Association], np.ndarray]:
    t = patients[tscore].to_numpy(float)
    condition = np.where(np.isfinite(t), (t <= threshold).astype(float), np.nan)
    results: dict[str, AucResult] = {}
    rows: list[Association] = []
    n_pos, n_neg = int(np.nansum(condition)), int(np.nansum(1 - condition))
    if n_pos < 2 or n_neg < 2:
        notes.append(
            f"osteoporosis ({tscore} <= {threshold:g}) needs at least two patients with and "
            f"two without it; found {n_pos} and {n_neg}: no ROC analysis"
        )
        return results, rows, condition
    versus = f"{tscore} <= {threshold:g}"
    for marker in markers:
        direction = _direction(marker, directions)
        if direction is None:
            notes.append(f"no ROC for {marker}: its direction is not known (set directions)")
            continue
        res = delong_auc(condition, patients[marker].to_numpy(float), direction)
        results[marker] = res
        rows.append(Association.of(marker, versus, f"auc_delong_{direction}", [], res.estimate))
    return results, rows, condition


def _terms_rows(
    model: MixedModelResult, marker: str, families: dict[str, str], method: str
) -> list[Association]:
    rows = []
    for term in model.terms.itertuples(index=False):
        if term.term == "Intercept":
            continue
        family = term.term.split("[", 1)[0]
        adj = [name for name in families if name != family]
        est = Estimate(term.estimate, term.lower95, term.upper95, term.p, model.n_obs)
        rows.append(Association.of(marker, term.term, method, adj, est))
    return rows


def level_order(levels: pd.Series) -> list[str]:
    """The distinct levels in cranio-caudal order (unknown names last, sorted)."""
    return sorted(levels.unique(), key=_level_key)


def _mixed_models(
    vertebrae: pd.DataFrame,
    roles: dict[str, str | None],
    stat: str,
    notes: list[str],
    progress: Progress | None,
) -> tuple[dict[str, MixedModelResult], dict[str, MixedModelResult], list[Association]]:
    mixed: dict[str, MixedModelResult] = {}
    fracture: dict[str, MixedModelResult] = {}
    rows: list[Association] = []
    maps = sorted(vertebrae["map"].unique(), key=lambda m: (m not in MAPS, m))
    total = 2 * len(maps)
    done = 0
    for name in maps:
        sub = vertebrae[vertebrae["map"] == name]
        levels = level_order(sub["level"])
        marker = f"{name}_{stat}"
        # marker ~ level + age + sex + T-score (+ site) over intact vertebrae
        intact = sub[sub[STATUS] == INTACT]
        cols = {"level": "categorical"}
        for role in ("age", "sex", "tscore", "site"):
            c = roles[role]
            if c is not None and intact[c].nunique() > 1:
                cols[c] = "categorical" if role in ("sex", "site") else "numeric"
        model_data = intact[["value", PATIENT_ID, *cols]]
        if intact[PATIENT_ID].nunique() >= 3 and len(levels) >= 1:
            cat = {c: _reference(intact[c]) for c, k in cols.items() if k == "categorical"}
            if "level" in cat:
                cat["level"] = next(lv for lv in levels if lv in set(intact["level"]))
            model = fit_random_intercept(
                model_data, "value", group=PATIENT_ID,
                numeric=[c for c, k in cols.items() if k == "numeric"],
                categorical=cat, level_order={"level": levels},
            )  # fmt: skip
            mixed[name] = model
            _note_fit(model, f"the per-vertebra model of {marker}", notes)
            rows += _terms_rows(model, marker, {c: "" for c in cols}, "mixed_model")
        else:
            notes.append(f"too few patients with intact vertebrae for the model of {marker}")
        done += 1
        if progress:
            progress("per-vertebra mixed models", done, total)
        # fractured versus intact vertebrae of the same patients
        has = set(sub[STATUS])
        if has & {TREATED, UNTREATED} and INTACT in has:
            model = fit_random_intercept(
                sub[["value", PATIENT_ID, "level", STATUS]], "value", group=PATIENT_ID,
                categorical={"level": levels[0], STATUS: INTACT},
                level_order={"level": levels, STATUS: [TREATED, UNTREATED]},
            )  # fmt: skip
            fracture[name] = model
            _note_fit(model, f"the fractured-versus-intact model of {marker}", notes)
            status_rows = [
                r
                for r in _terms_rows(model, marker, {"level": "", STATUS: ""}, "mixed_model")
                if r.versus.startswith(f"{STATUS}[")
            ]
            rows += status_rows
            rows += _paired_rows(sub, marker)
        done += 1
        if progress:
            progress("per-vertebra mixed models", done, total)
    return mixed, fracture, rows


def _reference(values: pd.Series) -> str:
    return sorted(values.dropna().astype(str).unique())[0]


def _note_fit(model: MixedModelResult, what: str, notes: list[str]) -> None:
    """Say plainly when a fit is not to be trusted, or needed more than the first optimizer."""
    said = "; ".join(model.warnings)
    if not model.converged:
        notes.append(
            f"{what} did not converge with any optimizer ({', '.join(OPTIMIZERS)}); its "
            f"estimates are shown but should not be trusted: {said}"
        )
    elif model.on_boundary:
        notes.append(
            f"{what}: the between-patient variance is estimated at zero (the boundary), so "
            f"its fixed effects equal an ordinary regression's ({said})"
        )
    elif model.warnings:
        notes.append(f"{what} converged with {model.optimizer} after: {said}")


def _paired_rows(sub: pd.DataFrame, marker: str) -> list[Association]:
    """Within each patient, the mean of their treated (or untreated fractured) vertebrae minus
    the mean of their intact ones, one-sample t-test of the differences. Values are first
    centred on the mean of intact vertebrae at the same level, so a fracture's usual level
    (marrow fat rises down the spine) does not pass for a fracture effect."""
    level_mean = sub[sub[STATUS] == INTACT].groupby("level")["value"].mean()
    centred = sub.assign(value=sub["value"] - sub["level"].map(level_mean))
    means = centred.groupby([PATIENT_ID, STATUS])["value"].mean().unstack(STATUS)
    rows = []
    for status in (TREATED, UNTREATED):
        if status not in means.columns or INTACT not in means.columns:
            continue
        diff = (means[status] - means[INTACT]).dropna().to_numpy(float)
        if len(diff) < 2:
            continue
        res = stats.ttest_1samp(diff, 0.0)
        ci = res.confidence_interval(0.95)
        est = Estimate(
            float(diff.mean()), float(ci.low), float(ci.high), float(res.pvalue), len(diff)
        )
        rows.append(
            Association.of(marker, f"{STATUS}[{status}]", "paired_difference", ["level"], est)
        )
    return rows


# --- the run --------------------------------------------------------------------------------


def run_analysis(
    clinical: pd.DataFrame,
    features: pd.DataFrame,
    vertebrae: pd.DataFrame | None = None,
    *,
    id_column: str = PATIENT_ID,
    features_id_column: str = PATIENT_ID,
    tscore: str = "bmd_tscore",
    age: str | None = "age",
    sex: str | None = "sex",
    bmi: str | None = "bmi",
    site: str | None = "site",
    markers: Sequence[str] | None = None,
    vertebra_stat: str = "mean",
    osteoporosis_threshold: float = -2.5,
    directions: Mapping[str, Direction] | None = None,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    notes: Sequence[str] = (),
) -> AnalysisResult:
    """The biomarker analysis of one cohort.

    Parameters
    ----------
    clinical : DataFrame, one row per patient
        Holds ``id_column``, ``tscore`` (required) and ``age``, ``sex``, ``bmi``, ``site``
        (each optional: None, or a name not in the table, skips it with a note).
    features : DataFrame, one row per patient
        ``features_id_column`` and the marker columns (``features.parquet``); its ``site``
        column is used when the clinical table has none.
    vertebrae : DataFrame, one row per patient x level x map, optional
        ``features_id_column``, ``level``, ``map``, ``vertebra_stat`` and optionally
        ``treated``, ``fractured``, ``small_roi`` (``vertebrae.parquet``). Without it the
        per-vertebra models and the fractured-versus-intact comparison are skipped.
    markers : list of str, optional
        Patient-level marker columns; default :func:`default_markers`.
    osteoporosis_threshold : float
        Osteoporosis is ``tscore <= osteoporosis_threshold`` (WHO: -2.5).
    directions : mapping, optional
        Marker name or family (``pdff``, ``r2star``, ``morph``) -> ``higher`` / ``lower``:
        which values point to osteoporosis; default :data:`DEFAULT_DIRECTIONS`.
    out_dir : path, optional
        Writes ``associations.csv``, ``biomarkers.html`` and the plots under ``plots/``.
    progress : callable, optional
        ``progress(stage, done, total)``, e.g. :class:`refracture.cli.terminal.StageProgress`.
    notes : list of str
        Notes from earlier steps (e.g. patients whose images failed), shown first.

    Returns
    -------
    AnalysisResult
    """
    notes = list(notes)
    roles: dict[str, str | None] = {
        "id": id_column, "tscore": tscore, "age": age, "sex": sex, "bmi": bmi, "site": site,
    }  # fmt: skip
    patients, chosen = _prepare_patients(
        clinical, features, roles, features_id_column, markers, notes
    )
    if progress:
        progress("correlations and ROC", 0, 2)
    rows = _correlations(patients, chosen, roles, notes)
    auc, roc_rows, _ = _roc(
        patients, chosen, tscore, osteoporosis_threshold,
        {**DEFAULT_DIRECTIONS, **(directions or {})}, notes,
    )  # fmt: skip
    rows += roc_rows
    if progress:
        progress("correlations and ROC", 2, 2)

    per_vertebra = None
    mixed: dict[str, MixedModelResult] = {}
    fracture: dict[str, MixedModelResult] = {}
    if vertebrae is None:
        notes.append("no per-vertebra table: the mixed models and fracture comparison are skipped")
    else:
        per_vertebra = _prepare_vertebrae(
            vertebrae, patients, roles, vertebra_stat, features_id_column, notes
        )
        if per_vertebra is not None:
            mixed, fracture, more = _mixed_models(
                per_vertebra, roles, vertebra_stat, notes, progress
            )
            rows += more

    result = AnalysisResult(
        associations=association_frame(rows),
        auc=auc,
        mixed=mixed,
        fracture=fracture,
        patients=patients,
        vertebrae=per_vertebra,
        markers=chosen,
        columns=dict(roles),
        osteoporosis_threshold=osteoporosis_threshold,
        notes=notes,
    )
    if out_dir is not None:
        from refracture.analysis.page import write_outputs

        write_outputs(result, Path(out_dir), progress=progress)
    return result


def write_associations(result: AnalysisResult, path: str | Path) -> Path:
    """associations.csv (exactly the columns of :data:`~refracture.analysis.COLUMNS`)."""
    return write_table(Path(path), result.associations)
