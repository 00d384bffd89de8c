"""Per-vertebra PDFF/R2* features for a cohort: ``refracture extract`` (PRODUCT.md section 4).

For each patient: read the three images, bring the label map and R2* map onto the PDFF grid,
build eroded vertebral ROIs, settle the units, drop cement-like, non-finite and
out-of-range voxels (counting them), then compute IBSI first-order statistics for every
vertebra and every patient-level group in one vectorised pass per map.

Patients run in a process pool; one failing patient becomes a row of ``errors`` and never
stops the batch. Results are cached per patient under a key made of the input files'
content hashes, the extraction config, the patient's levels and :data:`FEATURE_VERSION`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture import __version__
from refracture.config import ExtractionConfig
from refracture.errors import ImageError, InputError, RefractureError
from refracture.files import atomic_path, hash_file, hash_json, write_json, write_table
from refracture.imaging.geometry import align_to
from refracture.imaging.io import load_volume
from refracture.imaging.roi import Rois, build_rois
from refracture.imaging.stats import PRODUCT_STATS, grouped_stats
from refracture.imaging.units import resolve_pdff, resolve_r2star
from refracture.levels import (
    L1L4,
    TL_LEVELS,
    adjacent_levels,
    convention,
    parse_level_list,
    sort_levels,
)
from refracture.manifest import read_manifest, validate_manifest
from refracture.privacy import Pseudonymiser

#: Bump when a change alters feature values, so cached results are recomputed.
FEATURE_VERSION = "1"
MAPS = ("pdff", "r2star")
GROUPS = ("index", "adjacent", "l1l4", "normal")
#: Per (level, map) voxel counts stored in vertebrae.parquet beside the statistics.
COUNT_COLUMNS = ("n_labelled", "n_roi", "n_cement", "n_nonfinite", "n_out_of_range")
#: qc columns of every patient, in output order.
QC_COLUMNS = (
    "qc_levels",
    "qc_n_levels",
    "qc_missing_levels",
    "qc_unknown_labels",
    "qc_small_roi",
    "qc_labels_resampled",
    "qc_r2star_resampled",
    "qc_pdff_units",
    "qc_pdff_units_source",
    "qc_pdff_converted",
    "qc_r2star_units",
    "qc_r2star_units_source",
    "qc_r2star_converted",
    "qc_cement_voxels_excluded",
    "qc_cement_levels",
    "qc_nonfinite_voxels",
    "qc_out_of_range_voxels",
    "qc_roi_voxels",
    "qc_vendor",
    "qc_field_strength_t",
)
# Fraction of non-finite ROI voxels above which a map is unusable rather than noisy.
_MAX_NONFINITE_FRACTION = 0.5
# "Signal void" in cement: both maps at ~0 (PDFF in %, R2* in 1/s) or not finite.
_VOID_PDFF = 0.5
_VOID_R2STAR = 0.5


@dataclass
class PatientResult:
    """Features of one patient: ``features`` maps ``{map}_{stat}_{level|group}`` to values,
    ``vertebrae`` holds one dict per (level, map), ``qc`` the ``qc_*`` columns."""

    patient_id: str
    features: dict[str, float]
    vertebrae: list[dict[str, Any]]
    qc: dict[str, Any]
    cached: bool = False


@dataclass
class ExtractionResult:
    """What :func:`extract_cohort` produced (DataFrames in manifest order)."""

    features: pd.DataFrame
    vertebrae: pd.DataFrame
    qc: pd.DataFrame
    errors: pd.DataFrame
    n_computed: int
    n_cached: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return len(self.errors)


class _Stage:
    """Which step a patient is in, so an error row can say where it failed."""

    name = "load"


# --- one patient -------------------------------------------------------------------------


def extract_patient(
    row: Mapping[str, Any] | pd.Series,
    config: ExtractionConfig,
    *,
    hashes: Mapping[str, str] | None = None,
    qc_png: str | Path | None = None,
    stage: _Stage | None = None,
) -> PatientResult:
    """Features of one manifest row (as returned by :func:`refracture.manifest.read_manifest`).

    Raises an :class:`~refracture.errors.InputError` subclass naming the patient and file
    when this patient cannot be extracted. ``qc_png``: where to write the QC picture.
    """
    stage = stage or _Stage()
    pid = str(row["patient_id"])
    treated = sort_levels(list(_level_list(row.get("treated_levels"))))
    fractured = sort_levels(list(_level_list(row.get("fractured_levels"))))
    hashes = hashes or {}

    stage.name = "load"
    vols = {}
    for kind in ("pdff", "labels", "r2star"):
        path = _image_path(row, kind, pid)
        vols[kind] = load_volume(
            path,
            kind,  # type: ignore[arg-type]
            max_voxels=config.max_voxels,
            patient_id=pid,
            content_hash=hashes.get(kind),
        )
    pdff = vols["pdff"]

    stage.name = "geometry"
    labels, labels_resampled = align_to(
        vols["labels"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )
    r2star, r2star_resampled = align_to(
        vols["r2star"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )

    stage.name = "roi"
    conv = convention(config.label_convention, config.label_map)
    rois = build_rois(labels.data, pdff.spacing, conv, config.erosion_mm)
    if not rois.levels:
        found = ", ".join(str(v) for v in rois.unknown_labels[:10]) or "none"
        raise ImageError(
            f"the label map holds no vertebra known to the '{config.label_convention}' label "
            f"convention (label values found: {found}); set extraction.label_convention or "
            "extraction.label_map",
            patient_id=pid,
            file=labels.path,
        )
    missing_treated = [lv for lv in treated if lv not in rois.levels]
    if missing_treated:
        raise ImageError(
            f"the manifest names {', '.join(missing_treated)} as treated but the label map has "
            f"no such vertebra (levels present: {', '.join(rois.levels)})",
            patient_id=pid,
            file=labels.path,
        )
    treated_idx = np.array([rois.levels.index(lv) for lv in treated], dtype=np.int16)
    is_treated = np.isin(rois.level_of, treated_idx)

    for name, vol in (("pdff", pdff), ("r2star", r2star)):
        bad = int((~np.isfinite(vol.data[rois.coords])).sum())
        if bad > _MAX_NONFINITE_FRACTION * rois.n_voxels:
            raise ImageError(
                f"{bad} of {rois.n_voxels} voxels of the {name} map inside the vertebrae are "
                "NaN or infinite",
                patient_id=pid,
                file=vol.path,
            )

    stage.name = "units"
    sample = ~is_treated if (~is_treated).any() else np.ones_like(is_treated)
    pdff, pdff_units = resolve_pdff(
        pdff, pdff.data[rois.coords][sample], config.pdff_units, patient_id=pid
    )
    r2star, r2star_units = resolve_r2star(
        r2star, r2star.data[rois.coords][sample], config.r2star_units, patient_id=pid
    )

    stage.name = "features"
    values = {"pdff": pdff.data[rois.coords], "r2star": r2star.data[rois.coords]}
    cement = is_treated & (
        (values["r2star"] > config.cement_r2star_per_s)
        | (_void(values["pdff"], _VOID_PDFF) & _void(values["r2star"], _VOID_R2STAR))
    )
    groups = _groups(rois.levels, treated, fractured)
    ranges = {"pdff": config.pdff_range, "r2star": config.r2star_range}
    n_cement = np.bincount(rois.level_of[cement], minlength=len(rois.levels))
    features: dict[str, float] = {}
    vertebrae: list[dict[str, Any]] = []
    small: set[str] = set()
    dropped = {"n_nonfinite": 0, "n_out_of_range": 0}
    for name in MAPS:
        feats, rows, small_here = _map_features(
            name,
            values[name],
            cement,
            rois,
            groups,
            ranges[name],
            config.min_voxels,
            pdff.voxel_volume_ml,
        )
        features.update(feats)
        small |= small_here
        for rec in rows:
            rec["n_cement"] = int(n_cement[rois.levels.index(rec["level"])])
            rec["treated"] = rec["level"] in treated
            rec["fractured"] = rec["level"] in fractured
            dropped = {k: dropped[k] + rec[k] for k in dropped}
        vertebrae.extend(rows)

    order = {name: i for i, name in enumerate([*rois.levels, *GROUPS])}
    qc = {
        "qc_levels": ";".join(rois.levels),
        "qc_n_levels": len(rois.levels),
        "qc_missing_levels": ";".join(
            sort_levels(sorted({lv for lv in [*TL_LEVELS, *fractured] if lv not in rois.levels}))
        ),
        "qc_unknown_labels": ";".join(str(v) for v in rois.unknown_labels),
        "qc_small_roi": ";".join(sorted(small, key=order.__getitem__)),
        "qc_labels_resampled": labels_resampled,
        "qc_r2star_resampled": r2star_resampled,
        "qc_pdff_units": pdff_units.unit,
        "qc_pdff_units_source": pdff_units.source,
        "qc_pdff_converted": pdff_units.converted,
        "qc_r2star_units": r2star_units.unit,
        "qc_r2star_units_source": r2star_units.source,
        "qc_r2star_converted": r2star_units.converted,
        "qc_cement_voxels_excluded": int(cement.sum()),
        "qc_cement_levels": ";".join(lv for lv, c in zip(rois.levels, n_cement, strict=True) if c),
        "qc_nonfinite_voxels": dropped["n_nonfinite"],
        "qc_out_of_range_voxels": dropped["n_out_of_range"],
        "qc_roi_voxels": rois.n_voxels,
        "qc_vendor": pdff.metadata.get("vendor") or "",
        "qc_field_strength_t": _float_or_nan(pdff.metadata.get("field_strength_t")),
    }

    if qc_png is not None:
        stage.name = "qc_png"
        from refracture.imaging.qc import render_patient_png

        cement_mask = np.zeros(pdff.shape, dtype=bool)
        cement_mask[tuple(c[cement] for c in rois.coords)] = True
        render_patient_png(qc_png, pdff, rois, title=pid, cement_mask=cement_mask)

    return PatientResult(pid, features, vertebrae, qc)


def _map_features(
    name: str,
    v: np.ndarray,
    cement: np.ndarray,
    rois: Rois,
    groups: dict[str, list[int]],
    value_range: tuple[float, float],
    min_voxels: int,
    voxel_ml: float,
) -> tuple[dict[str, float], list[dict[str, Any]], set[str]]:
    """One map's features per level and group, its vertebra rows, and the too-small names.

    Drops (and counts per level) non-finite and out-of-range voxels; cement-like voxels
    are already marked in ``cement``.
    """
    n_levels = len(rois.levels)
    finite = np.isfinite(v)
    with np.errstate(invalid="ignore"):
        in_range = finite & (v >= value_range[0]) & (v <= value_range[1])
    valid = in_range & ~cement
    stats = _level_and_group_stats(v[valid], rois.level_of[valid], n_levels, groups)
    stats["volume_ml"] = stats["n"] * voxel_ml
    too_small = stats["n"] < min_voxels

    features: dict[str, float] = {}
    for gi, gname in enumerate([*rois.levels, *groups]):
        for stat in PRODUCT_STATS:
            value = float(stats[stat][gi])
            if too_small[gi] and stat not in ("n", "volume_ml"):
                value = float("nan")  # reported in qc_small_roi, never a silent estimate
            features[f"{name}_{stat}_{gname}"] = value

    counts = {
        "n_labelled": rois.n_labelled,
        "n_roi": rois.n_eroded,
        "n_nonfinite": np.bincount(rois.level_of[~finite & ~cement], minlength=n_levels),
        "n_out_of_range": np.bincount(
            rois.level_of[finite & ~in_range & ~cement], minlength=n_levels
        ),
    }
    rows = []
    for li, level in enumerate(rois.levels):
        rec: dict[str, Any] = {"level": level, "map": name}
        rec.update({stat: features[f"{name}_{stat}_{level}"] for stat in PRODUCT_STATS})
        rec["n"] = int(stats["n"][li])
        rec.update({k: int(c[li]) for k, c in counts.items()})
        rec["small_roi"] = bool(too_small[li])
        rows.append(rec)
    small = {g for g, s in zip([*rois.levels, *groups], too_small, strict=True) if s}
    return features, rows, small


def _void(v: np.ndarray, eps: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(v) | (np.abs(v) <= eps)


def _groups(levels: list[str], treated: list[str], fractured: list[str]) -> dict[str, list[int]]:
    """Level positions of each patient-level group (PRODUCT.md section 4)."""
    excluded = set(treated) | set(fractured)
    adjacent = {nb for lv in treated for nb in adjacent_levels(lv, levels)} - excluded
    members = {
        "index": [lv for lv in levels if lv in treated],
        "adjacent": [lv for lv in levels if lv in adjacent],
        "l1l4": [lv for lv in levels if lv in L1L4 and lv not in excluded],
        "normal": [lv for lv in levels if lv not in excluded],
    }
    return {g: [levels.index(lv) for lv in members[g]] for g in GROUPS}


def _level_and_group_stats(
    values: np.ndarray, level_of: np.ndarray, n_levels: int, groups: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Stats for ids 0..L-1 (levels) then L.. (groups), pooling the voxels of each group.

    A voxel appears once for its level and once more for every group holding that level,
    so overlapping groups cost one extra copy of their voxels, not a pass per group.
    """
    vals = [values]
    ids = [level_of.astype(np.int64)]
    for gi, members in enumerate(groups.values()):
        sel = np.isin(level_of, members)
        vals.append(values[sel])
        ids.append(np.full(int(sel.sum()), n_levels + gi, dtype=np.int64))
    return grouped_stats(np.concatenate(vals), np.concatenate(ids), n_levels + len(groups))


def _level_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v) for v in value]
    return parse_level_list(value)


def _image_path(row: Mapping[str, Any], kind: str, pid: str) -> Path:
    text = row.get(kind)
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        raise ImageError(f"the manifest gives no {kind} image", patient_id=pid)
    return Path(str(text))


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# --- caching -----------------------------------------------------------------------------


def input_hashes(row: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of a row's three images (bytes only: nothing is decoded)."""
    pid = str(row["patient_id"])
    out = {}
    for kind in ("pdff", "r2star", "labels"):
        path = _image_path(row, kind, pid)
        if not path.exists():
            raise ImageError(f"{kind} image not found", patient_id=pid, file=path)
        out[kind] = hash_file(path)
    return out


def cache_key(row: Mapping[str, Any], hashes: Mapping[str, str], config: ExtractionConfig) -> str:
    return hash_json(
        {
            "inputs": [hashes["pdff"], hashes["r2star"], hashes["labels"]],
            "config": config.model_dump(mode="json"),
            "treated": sort_levels(_level_list(row.get("treated_levels"))),
            "fractured": sort_levels(_level_list(row.get("fractured_levels"))),
            "version": FEATURE_VERSION,
        }
    )


def _cache_read(path: Path, pid: str) -> PatientResult | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return PatientResult(
            patient_id=pid,
            features={
                k: float(v) if v is not None else float("nan") for k, v in raw["features"].items()
            },
            vertebrae=raw["vertebrae"],
            qc=raw["qc"],
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entry: compute again


def _cache_write(path: Path, result: PatientResult) -> None:
    data = asdict(result)
    data.pop("patient_id")  # the key is content-based; the file needs no ID
    data.pop("cached")
    write_json(path, data)


# --- the batch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    index: int
    row: dict[str, Any]
    config: ExtractionConfig
    cache_dir: str | None
    qc_png: str | None


def _run_task(task: _Task) -> tuple[int, PatientResult | None, tuple[str, str] | None]:
    """Run one patient; never raises (errors come back as (stage, message))."""
    stage = _Stage()
    pid = str(task.row["patient_id"])
    try:
        hashes = input_hashes(task.row)
        cache_file = cached_png = None
        if task.cache_dir:
            key = cache_key(task.row, hashes, task.config)
            cache_file = Path(task.cache_dir) / f"{key}.json"
            # The QC picture is cached too (titled with the patient's ID, hence the ID in its
            # name), so a run writing pictures into a new folder still reuses the cache.
            cached_png = Path(task.cache_dir) / f"{key}.{hash_json(pid)[:12]}.png"
            png_ok = task.qc_png is None or Path(task.qc_png).is_file() or cached_png.is_file()
            if cache_file.is_file() and png_ok:
                cached = _cache_read(cache_file, pid)
                if cached is not None:
                    if task.qc_png is not None and not Path(task.qc_png).is_file():
                        Path(task.qc_png).parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(task.qc_png) as tmp:
                            shutil.copyfile(cached_png, tmp)
                    return task.index, cached, None
        result = extract_patient(
            task.row, task.config, hashes=hashes, qc_png=task.qc_png, stage=stage
        )
        if cache_file is not None:
            _cache_write(cache_file, result)
            if task.qc_png is not None and cached_png is not None:
                with atomic_path(cached_png) as tmp:
                    shutil.copyfile(task.qc_png, tmp)
        return task.index, result, None
    except RefractureError as err:
        return task.index, None, (stage.name, err.one_line())
    except MemoryError:
        return task.index, None, (stage.name, f"patient {pid}: out of memory")
    except Exception as err:  # noqa: BLE001 - one patient's bug must not stop the batch
        msg = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return task.index, None, (stage.name, f"patient {pid}: internal error: {msg}")


def _init_worker() -> None:
    # One patient per worker process: keep ITK from starting a thread per core in each.
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _map_tasks(
    tasks: list[_Task], jobs: int, on_done: Callable[[], None]
) -> Iterable[tuple[int, PatientResult | None, tuple[str, str] | None]]:
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield _run_task(t)
            on_done()
        return
    # "spawn": workers must not inherit the progress bar's thread or open file handles.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=ctx, initializer=_init_worker
    ) as pool:
        futures = [pool.submit(_run_task, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
                on_done()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def iter_extract(
    rows: list[dict[str, Any]],
    config: ExtractionConfig,
    *,
    jobs: int = 2,
    cache_dir: str | Path | None = None,
) -> Iterator[tuple[int, PatientResult | None, tuple[str, str] | None]]:
    """Extract validated manifest rows one patient at a time, yielding in input order.

    Yields ``(position, result, None)`` or ``(position, None, (stage, message))``; never raises
    for one patient. Unlike :func:`extract_cohort` (which needs the whole batch before it
    returns), a caller can act on each patient as soon as it and all earlier ones are done,
    e.g. to checkpoint a long scoring run. One process pool serves the whole batch; at most
    ``4 * jobs`` patients are in flight, so memory stays bounded and results come back nearly
    in order.
    """
    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    cache = str(cache_dir) if cache_dir is not None else None
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
    tasks = [_Task(i, row, config, cache, None) for i, row in enumerate(rows)]
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    ctx = multiprocessing.get_context("spawn")  # see _map_tasks
    window = 4 * jobs
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=ctx, initializer=_init_worker
    ) as pool:
        pending: dict[int, Any] = {}
        next_submit = 0
        try:
            for i in range(len(tasks)):
                while next_submit < len(tasks) and next_submit < i + window:
                    pending[next_submit] = pool.submit(_run_task, tasks[next_submit])
                    next_submit += 1
                yield pending.pop(i).result()
        except BaseException:
            for fut in pending.values():
                fut.cancel()
            raise


def extract_cohort(
    manifest: pd.DataFrame | str | Path,
    config: ExtractionConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    jobs: int = 2,
    cache_dir: str | Path | None = None,
    qc_png: bool = False,
    progress: bool | Callable[[int, int], None] = True,
    pseudonymiser: Pseudonymiser | None = None,
) -> ExtractionResult:
    """Extract features for every patient of a manifest (a CSV path or a DataFrame).

    With ``out_dir`` the tables are written there atomically (features.parquet,
    vertebrae.parquet, qc.csv, errors.csv when any failed, extraction.json); with
    ``out_dir=None`` nothing is written but the cache. ``cache_dir=None`` disables the
    cache. ``qc_png`` writes ``out_dir/qc/<patient>.png`` and contact sheets. ``progress``:
    True for a progress bar, or a callable ``(done, total)`` for the caller's own.
    ``pseudonymiser`` replaces every patient_id by its keyed pseudonym, in the tables, file
    names and messages (see :mod:`refracture.privacy`). One patient's
    failure is a row of ``errors`` (patient_id, stage, message); a bad manifest raises
    InputError.
    """
    config = config or ExtractionConfig()
    if isinstance(manifest, str | Path):
        df = read_manifest(manifest)
    else:
        df = validate_manifest(manifest)
    if jobs < 1:
        raise InputError("--jobs must be at least 1")
    originals = list(df["patient_id"])
    if pseudonymiser is not None:
        df = pseudonymiser.table(df)
    if qc_png and out_dir is None:
        raise InputError("QC pictures need an output folder (out_dir)")
    out = Path(out_dir) if out_dir is not None else None
    png_dir = out / "qc" if (out is not None and qc_png) else None
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    tasks = []
    for i, row in enumerate(df.to_dict("records")):
        png = str(png_dir / f"{_safe_name(row['patient_id'])}.png") if png_dir else None
        tasks.append(_Task(i, row, config, str(cache) if cache else None, png))

    results: dict[int, PatientResult] = {}
    errors: dict[int, tuple[str, str]] = {}
    with _progress_bar(progress, len(tasks)) as advance:
        for index, result, error in _map_tasks(tasks, jobs, advance):
            if result is not None:
                results[index] = result
            else:
                errors[index] = error  # type: ignore[assignment]

    ids = list(df["patient_id"])
    sites = list(df["site"])
    ok = sorted(results)
    features = _features_frame([results[i] for i in ok], [sites[i] for i in ok])
    vertebrae = _vertebrae_frame([results[i] for i in ok])
    qc = features[["patient_id", "site", *QC_COLUMNS]].copy()

    def message(text: str) -> str:  # image paths often carry the original ID
        return text if pseudonymiser is None else pseudonymiser.scrub(text, originals)

    errors_df = pd.DataFrame(
        [
            {"patient_id": ids[i], "stage": errors[i][0], "message": message(errors[i][1])}
            for i in sorted(errors)
        ],
        columns=["patient_id", "stage", "message"],
    )
    n_cached = sum(r.cached for r in results.values())
    result = ExtractionResult(
        features=features,
        vertebrae=vertebrae,
        qc=qc,
        errors=errors_df,
        n_computed=len(results) - n_cached,
        n_cached=n_cached,
    )
    if out is not None:
        result.files = _write_outputs(result, out, config, png_dir, ids)
    return result


def _features_frame(results: list[PatientResult], sites: list[str]) -> pd.DataFrame:
    levels = sort_levels(sorted({v["level"] for r in results for v in r.vertebrae}))
    columns = ["patient_id", "site"]
    columns += [f"{m}_{s}_{lv}" for lv in levels for m in MAPS for s in PRODUCT_STATS]
    columns += [f"{m}_{s}_{g}" for g in GROUPS for m in MAPS for s in PRODUCT_STATS]
    columns += list(QC_COLUMNS)
    records = [
        {"patient_id": r.patient_id, "site": site, **r.features, **r.qc}
        for r, site in zip(results, sites, strict=True)
    ]
    df = pd.DataFrame.from_records(records, columns=columns)
    feature_cols = columns[2 : len(columns) - len(QC_COLUMNS)]
    df[feature_cols] = df[feature_cols].astype(np.float64)
    return df


def _vertebrae_frame(results: list[PatientResult]) -> pd.DataFrame:
    columns = [
        "patient_id",
        "level",
        "map",
        *PRODUCT_STATS,
        *COUNT_COLUMNS,
        "treated",
        "fractured",
        "small_roi",
    ]
    records = [{"patient_id": r.patient_id, **v} for r in results for v in r.vertebrae]
    df = pd.DataFrame.from_records(records, columns=columns)
    for col in ("n", *COUNT_COLUMNS):
        df[col] = df[col].astype(np.int64)
    for col in ("treated", "fractured", "small_roi"):
        df[col] = df[col].astype(bool)
    return df


def _write_outputs(
    result: ExtractionResult,
    out: Path,
    config: ExtractionConfig,
    png_dir: Path | None,
    ids: list[str],
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "features": write_table(out / "features.parquet", result.features),
        "vertebrae": write_table(out / "vertebrae.parquet", result.vertebrae),
        "qc": write_table(out / "qc.csv", result.qc),
    }
    errors_path = out / "errors.csv"
    if len(result.errors):
        files["errors"] = write_table(errors_path, result.errors)
    else:
        errors_path.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    if png_dir is not None:
        from refracture.imaging.qc import render_contact_sheets

        done = list(result.features["patient_id"])
        items = [(pid, png_dir / f"{_safe_name(pid)}.png") for pid in ids if pid in set(done)]
        sheets = render_contact_sheets(items, png_dir)
        if sheets:
            files["qc_png"] = png_dir
    files["summary"] = write_json(
        out / "extraction.json",
        {
            "refracture_version": __version__,
            "feature_version": FEATURE_VERSION,
            "extraction": config.model_dump(mode="json"),
            "n_patients": len(ids),
            "n_succeeded": len(result.features),
            "n_failed": len(result.errors),
            "n_computed": result.n_computed,
            "n_cached": result.n_cached,
        },
    )
    return files


def _safe_name(patient_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(patient_id)) or "_"


@contextlib.contextmanager
def _progress_bar(
    enabled: bool | Callable[[int, int], None], total: int
) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr (or nothing, or the caller's callback), yielding an
    ``advance()`` callback."""
    if callable(enabled):
        done = [0]

        def advance() -> None:
            done[0] += 1
            enabled(done[0], total)

        enabled(0, total)
        yield advance
        return
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("extracting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("extract", total=total)
        yield lambda: bar.advance(task)
