"""Reading IDEAL-IQ maps and label maps, building vertebral ROIs, first-order statistics,
vertebral morphometry, label-map QC and the label/map registration check.

Public entry points: :func:`load_volume` (any supported format -> :class:`Volume`),
:func:`read_header` (the same formats, header only -> :class:`ImageHeader`),
:func:`align_to` (onto the PDFF grid), :func:`build_rois`, :func:`grouped_stats`,
:func:`measure_vertebrae`, :func:`check_labels`, :func:`label_fit`.
"""

from refracture.imaging.geometry import align_to, same_grid
from refracture.imaging.io import load_volume
from refracture.imaging.label_fit import LabelFit, label_fit
from refracture.imaging.label_qc import LabelQC, check_labels, enforce_label_policy
from refracture.imaging.morphometry import MorphometryResult, measure_vertebrae
from refracture.imaging.readers import READERS, ImageHeader, read_header, register_reader
from refracture.imaging.roi import Rois, build_rois, erosion_footprint
from refracture.imaging.stats import IBSI_STATS, PRODUCT_STATS, grouped_stats, region_stats
from refracture.imaging.units import UnitsDecision, resolve_pdff, resolve_r2star
from refracture.imaging.volume import Volume

__all__ = [
    "IBSI_STATS",
    "READERS",
    "ImageHeader",
    "LabelFit",
    "LabelQC",
    "MorphometryResult",
    "PRODUCT_STATS",
    "Rois",
    "UnitsDecision",
    "Volume",
    "align_to",
    "build_rois",
    "check_labels",
    "enforce_label_policy",
    "erosion_footprint",
    "grouped_stats",
    "label_fit",
    "load_volume",
    "measure_vertebrae",
    "read_header",
    "register_reader",
    "region_stats",
    "resolve_pdff",
    "resolve_r2star",
    "same_grid",
]
