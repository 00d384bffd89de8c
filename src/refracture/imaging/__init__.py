"""Reading IDEAL-IQ maps and label maps, building vertebral ROIs, first-order statistics.

Public entry points: :func:`load_volume` (any supported format -> :class:`Volume`),
:func:`align_to` (onto the PDFF grid), :func:`build_rois`, :func:`grouped_stats`.
"""

from refracture.imaging.geometry import align_to, same_grid
from refracture.imaging.io import load_volume
from refracture.imaging.roi import Rois, build_rois, erosion_footprint
from refracture.imaging.stats import IBSI_STATS, PRODUCT_STATS, grouped_stats, region_stats
from refracture.imaging.units import UnitsDecision, resolve_pdff, resolve_r2star
from refracture.imaging.volume import Volume

__all__ = [
    "IBSI_STATS",
    "PRODUCT_STATS",
    "Rois",
    "UnitsDecision",
    "Volume",
    "align_to",
    "build_rois",
    "erosion_footprint",
    "grouped_stats",
    "load_volume",
    "region_stats",
    "resolve_pdff",
    "resolve_r2star",
    "same_grid",
]
