"""The biomarker analysis of a cohort: tables in, association table, plots and page out.

:func:`run_analysis` relates each patient-level marker (PDFF and R2* group means, morphometry
aggregates) to the BMD T-score, age, BMI and sex; fits per-vertebra mixed models; computes ROC
curves for osteoporosis; and compares fractured with intact vertebrae within patients. Column
names are parameters, so a study with its own names needs no renaming; an optional column
that is absent is skipped with a note, a required one raises :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from refracture.analysis import correlation as corr
from refracture.analysis.association import Association, Estimate, association_frame
from refracture.analysis.inputs import (
    INTACT,
    MAPS,
    STATUS,
    TREATED,
    UNTREATED,
    binary_sex,
    default_markers,
    level_key,
    prepare_patients,
    prepare_vertebrae,
)
from refracture.analysis.mixed import OPTIMIZERS, MixedModelResult, fit_random_intercept
from refracture.analysis.roc import AucResult, Direction, delong_auc
from refracture.files import write_table
from refracture.ids import PATIENT_ID

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


# --- the statistics -----------------------------------------------------------------------


def _batch_role(roles: dict[str, str | None]) -> str:
    """The scanner batch when known (it nests the site), else the site."""
    return "batch" if roles.get("batch") is not None else "site"


def _adjusters(patients: pd.DataFrame, roles: dict[str, str | None], exclude: str) -> list[str]:
    return [
        c
        for r in ("age", "sex", _batch_role(roles))
        if (c := roles[r]) is not None and c != exclude and patients[c].nunique() > 1
    ]


def _design(patients: pd.DataFrame, names: list[str], roles: dict[str, str | None]) -> np.ndarray:
    categorical = [c for c in (roles["sex"], roles["site"], roles.get("batch")) if c is not None]
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
    coded = binary_sex(patients[sex]) if sex is not None else None
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
        est = Estimate(
            term.estimate, term.lower95, term.upper95, term.p, model.n_groups, model.n_obs
        )
        rows.append(Association.of(marker, term.term, method, adj, est))
    return rows


def level_order(levels: pd.Series) -> list[str]:
    """The distinct levels in cranio-caudal order (unknown names last, sorted)."""
    return sorted(levels.unique(), key=level_key)


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
        # marker ~ level + age + sex + BMI + T-score (+ scanner batch) over intact vertebrae
        intact = sub[sub[STATUS] == INTACT]
        cols = {"level": "categorical"}
        for role in ("age", "sex", "bmi", "tscore", _batch_role(roles)):
            c = roles[role]
            if c is not None and intact[c].nunique() > 1:
                cols[c] = "categorical" if role in ("sex", "site", "batch") else "numeric"
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
    batch: str | None = "scanner",
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
        column is used when the clinical table has none, its ``scanner_*`` columns for
        ``batch``.
    batch : ``scanner`` (default), ``field_strength``, ``site`` or None
        The scanner batch the adjusted correlations and the per-vertebra models adjust for
        instead of the site (a site with a 1.5 T and a 3 T scanner reads R2* on two scales);
        the site when the features table lacks the scanner columns (said in the notes).
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
        "batch": batch,
    }  # fmt: skip
    patients, chosen = prepare_patients(
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
        per_vertebra = prepare_vertebrae(
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
