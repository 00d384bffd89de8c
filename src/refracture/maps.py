"""The quantitative maps and the statistics measured on them: one list each, read by the
extraction, the unit rules, the plausible ranges, the report and the clinical outputs.

Adding a map statistic is one :class:`Statistic` line here (and its computation in
:func:`refracture.imaging.stats.grouped_stats`): whether it is in the map's units decides if
its values are range-checked, and whether it says where the values lie decides if the unit
rules look at it. Adding a map is one :class:`MapSpec` line (and its reader in the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "INTENSITY_STATS",
    "LOCATION_STATS",
    "MAPS",
    "MAP_SPECS",
    "PRODUCT_STATS",
    "STATISTICS",
    "MapSpec",
    "Statistic",
]


@dataclass(frozen=True)
class MapSpec:
    """One quantitative map.

    ``unit`` is the canonical unit as configs, sidecars and ``qc_*_units`` spell it;
    ``symbol`` the same unit for people, ``ucum`` for FHIR and DICOM; ``plausible`` the range
    (in ``unit``) of its voxels and intensity statistics; ``label``/``title`` short and long
    names for tables and cards.
    """

    name: str
    label: str
    title: str
    unit: str
    symbol: str
    ucum: str
    plausible: tuple[float, float]


MAP_SPECS: dict[str, MapSpec] = {
    spec.name: spec
    for spec in (
        MapSpec("pdff", "PDFF", "Marrow fat (PDFF)", "percent", "%", "%", (0.0, 100.0)),
        MapSpec("r2star", "R2*", "Marrow R2*", "per_s", "1/s", "/s", (0.0, 1000.0)),
    )
}
MAPS: tuple[str, ...] = tuple(MAP_SPECS)


@dataclass(frozen=True)
class Statistic:
    """One statistic of a region: ``kind`` says what its values are. ``location`` and
    ``spread`` statistics are in the map's units (range-checked as the map), ``location`` ones
    also say where the values lie (the unit rules read them); ``count``, ``volume`` and
    ``shape`` ones are not intensities."""

    name: str
    kind: Literal["count", "volume", "location", "spread", "shape"]

    @property
    def in_map_units(self) -> bool:
        return self.kind in ("location", "spread")


#: The statistics of every region in the feature tables, in column order (IBSI 1 definitions,
#: :mod:`refracture.imaging.stats`).
STATISTICS: tuple[Statistic, ...] = (
    Statistic("n", "count"),
    Statistic("volume_ml", "volume"),
    Statistic("mean", "location"),
    Statistic("sd", "spread"),
    Statistic("median", "location"),
    Statistic("p10", "location"),
    Statistic("p25", "location"),
    Statistic("p75", "location"),
    Statistic("p90", "location"),
    Statistic("iqr", "spread"),
    Statistic("min", "location"),
    Statistic("max", "location"),
    Statistic("skewness", "shape"),
    Statistic("kurtosis", "shape"),
    Statistic("mad", "spread"),
    Statistic("rmad", "spread"),
    Statistic("medad", "spread"),
    Statistic("cov", "shape"),
)
PRODUCT_STATS: tuple[str, ...] = tuple(s.name for s in STATISTICS)
#: Statistics in the map's units: range-checked as the map's voxels.
INTENSITY_STATS: tuple[str, ...] = tuple(s.name for s in STATISTICS if s.in_map_units)
#: Statistics that say where a map's values lie (not their spread): the unit rules look at
#: the mean and median only (the percentiles follow them).
LOCATION_STATS: tuple[str, ...] = ("mean", "median")
