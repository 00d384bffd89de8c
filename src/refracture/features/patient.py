"""Features of one patient: read the three images, build ROIs, settle units, measure.

Two steps, so a cohort can decide units once per site between them
(:mod:`refracture.imaging.site_units`):

1. :func:`prepare_patient`: read the maps and the label map, check the label map (label QC on
   its own grid), bring the label map and R2* map onto the PDFF grid, build eroded vertebral
   ROIs, and gather the unit evidence (units declared for each map, detection statistics);
2. :func:`finish_patient`: with the decided units, convert the maps, drop cement-like,
   non-finite and out-of-range voxels (counting them), compute IBSI first-order statistics for
   every vertebra and patient-level group in one vectorised pass per map, measure the vertebral
   bodies on the native label grid (morphometry), check that the labels sit on the maps'
   vertebrae, and read the scanner.

:func:`extract_patient` runs both, deciding the units from the patient alone (or from the
units a model pinned for its site).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from refracture.config import ExtractionConfig
from refracture.errors import ImageError, UnitsError
from refracture.features.measured import measured_voxels
from refracture.features.schema import GROUPS, MAPS, PatientResult
from refracture.features.voxels import group_members, map_features, one_sided
from refracture.ids import PATIENT_ID
from refracture.imaging.geometry import align_to
from refracture.imaging.io import load_volume
from refracture.imaging.label_fit import label_fit
from refracture.imaging.label_qc import LabelQC, check_labels, enforce_label_policy
from refracture.imaging.layout import LabelLayout, label_layout
from refracture.imaging.metadata import (
    dicom_device_id,
    row_sidecars,
    scanner_metadata,
    sidecar_for,
)
from refracture.imaging.morphometry import measure_vertebrae
from refracture.imaging.roi import Rois, build_rois
from refracture.imaging.site_units import (
    PatientUnits,
    UnitEvidence,
    decide_site_units,
    declared_unit,
    unit_evidence,
)
from refracture.imaging.volume import Volume
from refracture.levels import (
    TL_LEVELS,
    convention,
    level_list,
    sort_levels,
)

__all__ = [
    "Prepared",
    "Stage",
    "decide_alone",
    "extract_patient",
    "finish_patient",
    "image_path",
    "prepare_patient",
    "units_error",
]

# Fraction of non-finite ROI voxels above which a map is unusable rather than noisy.
_MAX_NONFINITE_FRACTION = 0.5


class Stage:
    """Which step a patient is in, so an error row can say where it failed."""

    name = "load"


@dataclass
class Prepared:
    """A patient after step 1: volumes on the PDFF grid (maps in their stored units), ROIs,
    the label QC, the unit evidence, and where the labels lie on the label map's own grid
    (``layout_native``) and on the PDFF grid (``layout``)."""

    patient_id: str
    row: Mapping[str, Any]
    treated: list[str]
    fractured: list[str]
    pdff: Volume
    r2star: Volume
    labels_native: Volume
    labels: Volume
    labels_resampled: bool
    r2star_resampled: bool
    conv: dict[int, str]
    rois: Rois
    is_treated: np.ndarray
    sidecars: dict[str, dict | None]
    label_qc: LabelQC
    evidence: UnitEvidence
    layout_native: LabelLayout | None = None
    layout: LabelLayout | None = None
    roi_values: dict[str, np.ndarray] | None = None  # each map's ROI voxels, as stored


def prepare_patient(
    row: Mapping[str, Any] | pd.Series,
    config: ExtractionConfig,
    *,
    hashes: Mapping[str, str] | None = None,
    content: Mapping[str, bytes] | None = None,
    stage: Stage | None = None,
) -> Prepared:
    """Step 1 for one manifest row (as :func:`~refracture.features.manifest.read_manifest`
    returns them): everything that does not depend on the maps' units.

    ``hashes``: the images' content hashes when already computed; ``content``: their bytes
    when already read (:func:`refracture.features.cache.read_inputs`), decoded instead of
    reading the files again. Raises an :class:`~refracture.errors.InputError` subclass naming
    the patient and file when this patient cannot be extracted (including a label map with
    problems under ``extraction.on_label_problem: fail``).
    """
    stage = stage or Stage()
    pid = str(row[PATIENT_ID])
    treated = sort_levels(list(level_list(row.get("treated_levels"))))
    fractured = sort_levels(list(level_list(row.get("fractured_levels"))))
    hashes = hashes or {}
    content = content or {}

    stage.name = "load"
    vols = {}
    for kind in ("pdff", "labels", "r2star"):
        path = image_path(row, kind, pid)
        vols[kind] = load_volume(
            path,
            kind,  # type: ignore[arg-type]
            max_voxels=config.max_voxels,
            patient_id=pid,
            content_hash=hashes.get(kind),
            content=content.get(kind),
        )
    pdff = vols["pdff"]
    conv = convention(config.label_convention, config.label_map)

    # Label QC on the label map's own grid, before any measurement is keyed to a level.
    stage.name = "labels"
    layout_native = label_layout(vols["labels"].data)  # shared by every step below
    label_qc = check_labels(vols["labels"], conv, [*treated, *fractured], layout=layout_native)
    enforce_label_policy(
        label_qc, config.on_label_problem, patient_id=pid, file=vols["labels"].path
    )

    stage.name = "geometry"
    labels, labels_resampled = align_to(
        vols["labels"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )
    r2star, r2star_resampled = align_to(
        vols["r2star"], pdff, allow_resample=config.allow_resample, patient_id=pid
    )

    stage.name = "roi"
    layout = layout_native if labels is vols["labels"] else label_layout(labels.data)
    rois = build_rois(labels.data, pdff.spacing, conv, config.erosion_mm, layout=layout)
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

    stored = {"pdff": pdff.data[rois.coords], "r2star": r2star.data[rois.coords]}  # gathered once
    for name, vol in (("pdff", pdff), ("r2star", r2star)):
        bad = int((~np.isfinite(stored[name])).sum())
        if bad > _MAX_NONFINITE_FRACTION * rois.n_voxels:
            raise ImageError(
                f"{bad} of {rois.n_voxels} voxels of the {name} map inside the vertebrae are "
                "NaN or infinite",
                patient_id=pid,
                file=vol.path,
            )

    stage.name = "units"
    sidecars = row_sidecars(row, pid)
    declared = {
        kind: declared_unit(
            kind,
            row,
            sidecar=sidecars[kind],
            sidecar_name=sidecar_for(str(row[kind])).name,
            metadata=vol.metadata,
            patient_id=pid,
        )
        for kind, vol in (("pdff", pdff), ("r2star", r2star))
    }
    # Units are detected from the untreated vertebrae (cement and oedema change the values).
    sample = ~is_treated if (~is_treated).any() else np.ones_like(is_treated)
    evidence = unit_evidence(
        pid,
        _site(row),
        declared,
        {"pdff": stored["pdff"][sample], "r2star": stored["r2star"][sample]},
    )
    return Prepared(
        pid,
        row,
        treated,
        fractured,
        pdff,
        r2star,
        vols["labels"],
        labels,
        labels_resampled,
        r2star_resampled,
        conv,
        rois,
        is_treated,
        sidecars,
        label_qc,
        evidence,
        layout_native,
        layout,
        stored,
    )


def decide_alone(
    evidence: UnitEvidence,
    config: ExtractionConfig,
    pinned: Mapping[str, Mapping[str, str]] | None = None,
    *,
    row: Mapping[str, Any] | None = None,
) -> PatientUnits:
    """The patient's units decided from its own declarations and values (or the units a model
    pinned for its site); an ambiguous patient raises the :class:`UnitsError` naming it."""
    out = decide_site_units([evidence], config, pinned=pinned)
    if evidence.patient_id in out.errors:
        raise units_error(out.errors[evidence.patient_id], row)
    return out.decisions[evidence.patient_id]


def units_error(err: UnitsError, row: Mapping[str, Any] | None) -> UnitsError:
    """A per-site units refusal, naming the patient's map file too (the key says which map)."""
    kind = "r2star" if err.key and "r2star" in err.key else "pdff"
    file = None if row is None else (str(row.get(kind) or "") or None)
    return UnitsError(err.message, patient_id=err.patient_id, file=file, key=err.key)


def finish_patient(
    prep: Prepared,
    units: PatientUnits,
    config: ExtractionConfig,
    *,
    qc_png: str | Path | None = None,
    stage: Stage | None = None,
    device_key: bytes | None = None,
) -> PatientResult:
    """Step 2: the features of a prepared patient whose map units are ``units``."""
    stage = stage or Stage()
    pid, rois, treated, fractured = prep.patient_id, prep.rois, prep.treated, prep.fractured

    stage.name = "units"
    voxels = measured_voxels(prep, units, config)
    pdff, r2star, values, cement = voxels.pdff, voxels.r2star, voxels.values, voxels.cement

    stage.name = "features"
    groups = group_members(rois.levels, treated, fractured)
    ranges = {"pdff": config.pdff_range, "r2star": config.r2star_range}
    n_cement = np.bincount(rois.level_of[cement], minlength=len(rois.levels))
    features: dict[str, float] = {}
    vertebrae: list[dict[str, Any]] = []
    small: set[str] = set()
    dropped = {"n_nonfinite": 0, "n_out_of_range": 0}
    for name in MAPS:
        feats, rows, small_here = map_features(
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

    # Morphometry on the label map's own grid: resampling would cost the heights their
    # sub-voxel precision.
    stage.name = "morphometry"
    morph = measure_vertebrae(
        prep.labels_native, prep.conv, treated, fractured, layout=prep.layout_native
    )
    features.update(morph.features)

    stage.name = "registration"
    fit = label_fit(
        prep.labels.data, [pdff.data, r2star.data], pdff.affine, prep.conv, layout=prep.layout
    )

    stage.name = "scanner"
    device_id = None
    if device_key is not None:  # dicom_device_id is None for an image that is not DICOM
        device_id = dicom_device_id(str(prep.row.get("pdff") or ""), device_key)
    scanner = scanner_metadata(
        prep.row,
        {"pdff": prep.pdff.metadata, "r2star": prep.r2star.metadata},
        prep.sidecars,
        device_key=device_key,
        device_id=device_id,
    )

    order = {name: i for i, name in enumerate([*rois.levels, *GROUPS])}
    qc: dict[str, Any] = {
        "qc_levels": ";".join(rois.levels),
        "qc_n_levels": len(rois.levels),
        "qc_missing_levels": ";".join(
            sort_levels(sorted({lv for lv in [*TL_LEVELS, *fractured] if lv not in rois.levels}))
        ),
        "qc_unknown_labels": ";".join(str(v) for v in rois.unknown_labels),
        "qc_small_roi": ";".join(sorted(small, key=order.__getitem__)),
        "qc_labels_resampled": prep.labels_resampled,
        "qc_r2star_resampled": prep.r2star_resampled,
        **units_fields(units),
        "qc_cement_voxels_excluded": int(cement.sum()),
        "qc_cement_levels": ";".join(lv for lv, c in zip(rois.levels, n_cement, strict=True) if c),
        "qc_treated_no_cement": ";".join(
            lv for lv in treated if n_cement[rois.levels.index(lv)] == 0
        ),
        "qc_adjacent_one_sided": one_sided(rois.levels, treated, fractured),
        "qc_nonfinite_voxels": dropped["n_nonfinite"],
        "qc_out_of_range_voxels": dropped["n_out_of_range"],
        "qc_roi_voxels": rois.n_voxels,
        **fit.fields,
        **prep.label_qc.fields,
        **morph.qc,
    }

    if qc_png is not None:
        stage.name = "qc_png"
        from refracture.imaging.qc import render_patient_png

        cement_mask = np.zeros(pdff.shape, dtype=bool)
        cement_mask[tuple(c[cement] for c in rois.coords)] = True
        problems = [p.message for p in prep.label_qc.problems]
        problems += [fit.message] if fit.message else []
        render_patient_png(
            qc_png,
            pdff,
            rois,
            title=pid,
            cement_mask=cement_mask,
            morphometry=morph,
            label_problems=problems,
        )

    return PatientResult(pid, features, vertebrae, qc, scanner=scanner)


def units_fields(units: PatientUnits) -> dict[str, Any]:
    """The ``qc_*`` fields of the maps' units: unit, source, converted, note."""
    out: dict[str, Any] = {}
    for kind in MAPS:
        d = units[kind]
        out[f"qc_{kind}_units"] = d.unit
        out[f"qc_{kind}_units_source"] = d.source
        out[f"qc_{kind}_converted"] = bool(d.converted)
        out[f"qc_{kind}_units_note"] = d.note
    return out


def extract_patient(
    row: Mapping[str, Any] | pd.Series,
    config: ExtractionConfig,
    *,
    units: PatientUnits | None = None,
    pinned: Mapping[str, Mapping[str, str]] | None = None,
    hashes: Mapping[str, str] | None = None,
    qc_png: str | Path | None = None,
    stage: Stage | None = None,
    device_key: bytes | None = None,
) -> PatientResult:
    """Features of one manifest row (as :func:`~refracture.features.manifest.read_manifest`
    returns them).

    ``units``: the decided units of the maps; None decides them from this patient alone
    (declared > config > ``pinned``, the units a model was trained with per site > the
    patient's own values). Raises an :class:`~refracture.errors.InputError` subclass naming the
    patient and file when this patient cannot be extracted. ``qc_png``: where to write the QC
    picture. ``device_key``: the site's secret key for keyed-hash scanner IDs.
    """
    stage = stage or Stage()
    prep = prepare_patient(row, config, hashes=hashes, stage=stage)
    if units is None:
        stage.name = "units"
        units = decide_alone(prep.evidence, config, pinned, row=row)
    return finish_patient(prep, units, config, qc_png=qc_png, stage=stage, device_key=device_key)


def image_path(row: Mapping[str, Any], kind: str, pid: str) -> Path:
    text = row.get(kind)
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        raise ImageError(f"the manifest gives no {kind} image", patient_id=pid)
    return Path(str(text))


def _site(row: Mapping[str, Any]) -> str:
    site = row.get("site")
    if site is None or (isinstance(site, float) and np.isnan(site)):
        return ""
    return str(site).strip()
