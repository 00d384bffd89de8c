"""Units declared per image, and decided once per site when they are not (two passes).

A unit is taken, in this order, from: the manifest's ``pdff_units`` / ``r2star_units`` column,
the image's JSON sidecar (``{"Units": "percent"}``), what the DICOM series states (a real-world
value map's unit, a RescaleType, or an R2*/T2* series description), the config. With the
config at ``auto`` the unit is detected once per site from the values of all of the site's
undeclared patients together: one export pipeline, one unit, so two patients of a site never
get different units. An ambiguous site is refused, naming the site.

The cohort runs in two passes:

1. per patient (in the worker that has the images and ROIs): :func:`declared_unit` for each
   map and :func:`unit_evidence`, a small JSON-able record (declared units, count and
   detection statistic of the ROI values);
2. once for the cohort: :func:`decide_site_units` -> :class:`CohortUnits` (a
   :class:`PatientUnits` per patient, or a :class:`~refracture.errors.UnitsError`), then per
   patient :func:`refracture.imaging.units.apply_units` on each map.

Scoring new patients calls :func:`decide_site_units` with ``pinned``: the units a model was
trained with per site (:attr:`CohortUnits.site_units`), used for undeclared patients of a known
site before any detection.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refracture.errors import UnitsError
from refracture.ids import PATIENT_ID
from refracture.imaging.metadata import parse_unit
from refracture.imaging.units import (
    UnitsDecision,
    r2star_hint,
    unit_of_statistic,
    unit_statistic,
)
from refracture.maps import MAP_SPECS, MAPS

__all__ = [
    "MAPS",
    "CohortUnits",
    "Declared",
    "MapEvidence",
    "PatientUnits",
    "UnitEvidence",
    "collect_unit_evidence",
    "decide_site_units",
    "declared_unit",
    "unit_evidence",
]

CANONICAL = {name: spec.unit for name, spec in MAP_SPECS.items()}
_LABEL = {name: spec.label for name, spec in MAP_SPECS.items()}
_STAT_NAME = {"pdff": "99th percentile", "r2star": "median"}
#: Of a site's patients whose own values clearly point to a unit, at most this share may point
#: to another unit than the site's (outlying marrow, e.g. very fatty 1.5 T marrow at R2* 24
#: 1/s); more means the site mixes exports, and it is refused. Assumption.
MAX_DISAGREEING_SHARE = 0.05


@dataclass(frozen=True)
class Declared:
    """A unit stated for one image: ``source`` manifest | sidecar | dicom, ``where`` in words."""

    unit: str
    source: str
    where: str


@dataclass(frozen=True)
class MapEvidence:
    """What pass 1 keeps of one map: its declared unit and the detection statistic.

    ``statistic`` is the 99th percentile (PDFF) or median of positive values (R2*) of the ROI
    values of the untreated vertebrae; ``n`` the number of finite values it came from.
    """

    declared: Declared | None
    n: int
    statistic: float

    def detected(self, kind: str) -> str | None:
        """The unit this map's own values point to, or None when ambiguous."""
        return unit_of_statistic(kind, self.statistic)


@dataclass(frozen=True)
class UnitEvidence:
    """Pass-1 record of one patient (small and JSON-able: :meth:`to_dict`)."""

    patient_id: str
    site: str
    maps: Mapping[str, MapEvidence]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {PATIENT_ID: self.patient_id, "site": self.site}
        for kind, ev in self.maps.items():
            d = ev.declared
            out[kind] = {
                "declared": None
                if d is None
                else {"unit": d.unit, "source": d.source, "where": d.where},  # fmt: skip
                "n": ev.n,
                "statistic": None if math.isnan(ev.statistic) else ev.statistic,
            }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitEvidence:
        maps = {}
        for kind in MAPS:
            if kind not in data:
                continue
            item = data[kind]
            d = item.get("declared")
            stat = item.get("statistic")
            maps[kind] = MapEvidence(
                declared=None if d is None else Declared(d["unit"], d["source"], d["where"]),
                n=int(item["n"]),
                statistic=float("nan") if stat is None else float(stat),
            )
        return cls(str(data[PATIENT_ID]), str(data["site"]), maps)


@dataclass(frozen=True)
class PatientUnits:
    """The decided unit of each map of one patient."""

    pdff: UnitsDecision
    r2star: UnitsDecision

    def __getitem__(self, kind: str) -> UnitsDecision:
        return {"pdff": self.pdff, "r2star": self.r2star}[kind]


@dataclass
class CohortUnits:
    """Pass-2 input: a decision per patient, or why the patient's units cannot be decided.

    ``site_units`` holds, per site and map, the unit every decided patient of the site got
    (absent when they differ, e.g. declared per patient): what a model pins for scoring.
    """

    decisions: dict[str, PatientUnits] = field(default_factory=dict)
    errors: dict[str, UnitsError] = field(default_factory=dict)
    site_units: dict[str, dict[str, str]] = field(default_factory=dict)


# --- pass 1 --------------------------------------------------------------------------------


def declared_unit(
    kind: str,
    row: Mapping[str, Any],
    *,
    sidecar: Mapping[str, Any] | None = None,
    sidecar_name: str = "sidecar",
    metadata: Mapping[str, Any] | None = None,
    patient_id: str | None = None,
) -> Declared | None:
    """The unit declared for a patient's ``kind`` map ('pdff' or 'r2star'), or None.

    Precedence: the manifest column ``{kind}_units``, the sidecar's ``Units``, then what the
    DICOM series states (``metadata`` is ``Volume.metadata``: ``units_stated``, and for R2* a
    series description naming R2* or T2*). A manifest or sidecar unit that cannot be read
    raises a :class:`UnitsError` naming it; an unreadable DICOM statement is ignored (headers
    carry free text that is not always a unit).
    """
    if kind not in MAPS:
        raise ValueError(f"kind must be 'pdff' or 'r2star', not {kind!r}")
    column = f"{kind}_units"
    where = f"the manifest column {column}"
    unit = parse_unit(kind, row.get(column), where=where, patient_id=patient_id)
    if unit:
        return Declared(unit, "manifest", where)
    if sidecar:
        value = next((v for k, v in sidecar.items() if str(k).lower() == "units"), None)
        where = f"the JSON sidecar {sidecar_name}"
        unit = parse_unit(kind, value, where=where, patient_id=patient_id)
        if unit:
            return Declared(unit, "sidecar", where)
    meta = metadata or {}
    stated = meta.get("units_stated")
    if stated:
        try:
            unit = parse_unit(kind, stated, where="the DICOM series")
        except UnitsError:
            unit = None
        if unit:
            basis = meta.get("units_basis") or f"unit {stated!r}"
            return Declared(unit, "dicom", f"the DICOM series ({basis})")
    if kind == "r2star":
        hint = r2star_hint(meta.get("series_description"))
        if hint:
            text = meta.get("series_description")
            return Declared(hint, "dicom", f"the DICOM series description {text!r}")
    return None


def unit_evidence(
    patient_id: str,
    site: str,
    declared: Mapping[str, Declared | None],
    roi_values: Mapping[str, np.ndarray],
) -> UnitEvidence:
    """Pass 1 for one patient: declared units and the detection statistic of each map.

    ``roi_values`` are the map's values, as stored (after the file's own scaling), in the
    vertebrae the unit is detected from (the untreated ones, as for per-patient detection).
    """
    maps = {}
    for kind in MAPS:
        values = np.asarray(roi_values[kind], dtype=np.float64)
        finite = int(np.isfinite(values).sum())
        maps[kind] = MapEvidence(declared.get(kind), finite, unit_statistic(kind, values))
    return UnitEvidence(str(patient_id), str(site or ""), maps)


def collect_unit_evidence(row: Mapping[str, Any], config: Any) -> UnitEvidence:
    """Pass 1 for one validated manifest row, reading its images: declared units (manifest,
    sidecars, DICOM) and the statistics of the untreated vertebrae's values, as stored.

    The same steps as feature extraction up to the ROIs (load, align to the PDFF grid, eroded
    vertebral ROIs); a stage that already has the volumes and ROIs should call
    :func:`declared_unit` and :func:`unit_evidence` itself instead of reading twice.
    """
    from refracture.imaging.geometry import align_to
    from refracture.imaging.io import load_volume
    from refracture.imaging.metadata import row_sidecars, sidecar_for
    from refracture.imaging.roi import build_rois
    from refracture.levels import convention, parse_level_list

    pid = str(row[PATIENT_ID])
    vols = {
        kind: load_volume(str(row[kind]), kind, max_voxels=config.max_voxels, patient_id=pid)
        for kind in (*MAPS, "labels")
    }
    labels, _ = align_to(vols["labels"], vols["pdff"], allow_resample=config.allow_resample,
                         patient_id=pid)  # fmt: skip
    r2star, _ = align_to(vols["r2star"], vols["pdff"], allow_resample=config.allow_resample,
                         patient_id=pid)  # fmt: skip
    conv = convention(config.label_convention, config.label_map)
    rois = build_rois(labels.data, vols["pdff"].spacing, conv, config.erosion_mm)
    treated = row.get("treated_levels")
    treated = list(treated) if isinstance(treated, list | tuple) else parse_level_list(treated)
    idx = [rois.levels.index(lv) for lv in treated if lv in rois.levels]
    untreated = ~np.isin(rois.level_of, idx)
    sample = untreated if untreated.any() else np.ones_like(untreated)
    cars = row_sidecars(row, pid)
    declared = {
        kind: declared_unit(
            kind,
            row,
            sidecar=cars[kind],
            sidecar_name=sidecar_for(str(row[kind])).name,
            metadata=vol.metadata,
            patient_id=pid,
        )
        for kind, vol in (("pdff", vols["pdff"]), ("r2star", r2star))
    }
    values = {
        "pdff": vols["pdff"].data[rois.coords][sample],
        "r2star": r2star.data[rois.coords][sample],
    }
    return unit_evidence(pid, str(row.get("site") or ""), declared, values)


# --- the cohort's decision -----------------------------------------------------------------


def decide_site_units(
    evidence: Mapping[str, UnitEvidence] | Iterable[UnitEvidence],
    config: Any,
    *,
    site_of: Mapping[str, str] | None = None,
    pinned: Mapping[str, Mapping[str, str]] | None = None,
) -> CohortUnits:
    """Decide every patient's units: declared > config > pinned (scoring) > once per site.

    Parameters
    ----------
    evidence : mapping of patient_id -> UnitEvidence, or an iterable of them
        Pass-1 records of the cohort (or of a scoring batch).
    config : ExtractionConfig
        Its ``pdff_units`` / ``r2star_units``: a unit for undeclared images, or ``auto``.
    site_of : mapping of patient_id -> site, optional
        Overrides the records' sites. A patient with an empty site is decided alone.
    pinned : mapping of site -> {map: unit}, optional
        A trained model's :attr:`CohortUnits.site_units`; undeclared patients of those sites
        take the model's unit (source ``model``) when the config says ``auto``.

    Returns
    -------
    CohortUnits
        Patients of a site whose units are ambiguous (or mixed) are in ``errors`` with a
        one-line :class:`UnitsError` naming the site and the key to set; the others in
        ``decisions``.
    """
    records = list(evidence.values() if isinstance(evidence, Mapping) else evidence)
    site = {r.patient_id: (site_of or {}).get(r.patient_id, r.site) for r in records}
    by_id = {r.patient_id: r for r in records}
    chosen: dict[str, dict[str, UnitsDecision]] = defaultdict(dict)
    errors: dict[str, UnitsError] = {}

    for kind in MAPS:
        configured = getattr(config, f"{kind}_units", "auto")
        pending: dict[str, list[str]] = defaultdict(list)
        for r in records:
            ev = r.maps[kind]
            pid = r.patient_id
            pin = (pinned or {}).get(site[pid], {}).get(kind) if site[pid] else None
            if ev.declared is not None:
                chosen[pid][kind] = _decision(kind, ev.declared.unit, ev.declared.source, ev)
            elif configured != "auto":
                chosen[pid][kind] = _decision(kind, configured, "config", ev)
            elif pin:
                chosen[pid][kind] = _decision(kind, pin, "model", ev)
            else:
                # A patient without a site is its own group: nothing says whom it shares a
                # pipeline with.
                pending[site[pid] or f"\0{pid}"].append(pid)
        for group, pids in pending.items():
            unit, problem = _site_unit(kind, group, [by_id[p] for p in pids])
            for pid in pids:
                if problem is not None:
                    errors.setdefault(
                        pid,
                        UnitsError(problem, patient_id=pid, key=f"extraction.{kind}_units"),
                    )
                else:
                    chosen[pid][kind] = _decision(kind, unit, "site", by_id[pid].maps[kind])

    out = CohortUnits(errors=errors)
    for r in records:
        pid = r.patient_id
        if pid in errors:
            continue
        out.decisions[pid] = PatientUnits(chosen[pid]["pdff"], chosen[pid]["r2star"])
    per_site: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    failed_sites = {site[p] for p in errors}
    for pid, units in out.decisions.items():
        for kind in MAPS:
            per_site[site[pid]][kind].add(units[kind].unit)
    for s, kinds in per_site.items():
        if not s or s in failed_sites:
            continue
        agreed = {k: next(iter(u)) for k, u in kinds.items() if len(u) == 1}
        if agreed:
            out.site_units[s] = agreed
    return out


def _decision(kind: str, unit: str, source: str, ev: MapEvidence) -> UnitsDecision:
    converted = unit != CANONICAL[kind]
    detected = ev.detected(kind)
    note = ""
    if detected is not None and detected != unit:
        note = (
            f"the {_LABEL[kind]} values look like {detected} ({_STAT_NAME[kind]} "
            f"{ev.statistic:.3g}) but {unit} was used ({source})"
        )
    return UnitsDecision(unit, source, converted, note)


def _site_unit(kind: str, group: str, records: list[UnitEvidence]) -> tuple[str, str | None]:
    """The unit of a group of patients sharing an export pipeline, or (``''``, why not)."""
    label, stat_name = _LABEL[kind], _STAT_NAME[kind]
    who = f"site {group}" if not group.startswith("\0") else "this patient (no site)"
    keys = (
        "extraction.pdff_units to percent, fraction or per_mille"
        if kind == "pdff"
        else "extraction.r2star_units to per_s or t2star_ms"
    )
    fix = (
        f"declare it (manifest column {kind}_units, or a JSON sidecar such as "
        f'{{"Units": "{CANONICAL[kind]}"}} beside each image) or set {keys}'
    )
    stats = np.array([r.maps[kind].statistic for r in records], dtype=np.float64)
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return "", f"{who}: no {label} values in the vertebrae to tell the unit from; {fix}"
    # The median over patients of each patient's statistic: one odd patient cannot move it.
    site_stat = float(np.median(finite))
    unit = unit_of_statistic(kind, site_stat)
    n = len(records)
    if unit is None:
        return "", (
            f"{who}: cannot tell the {label} unit from the values of its {n} patient(s) "
            f"(median of the patients' {stat_name}s {site_stat:.3g}, between the ranges of "
            f"two units); {fix}"
        )
    detected = [
        (r.patient_id, r.maps[kind].detected(kind), r.maps[kind].statistic) for r in records
    ]
    clear = [d for d in detected if d[1] is not None]
    other = [d for d in clear if d[1] != unit]
    if len(other) > MAX_DISAGREEING_SHARE * len(clear):
        pid, other_unit, stat = other[0]
        return "", (
            f"{who} mixes units: the {label} values of {len(clear) - len(other)} patient(s) "
            f"look like {unit} and of {len(other)} like another unit (e.g. {pid}: "
            f"{stat_name} {stat:.3g}, {other_unit}); one site is expected to store one unit, "
            f"so {fix}"
        )
    return unit, None
