"""Reading IDEAL-IQ maps and label maps, building vertebral ROIs, first-order statistics,
vertebral morphometry, label-map QC and the label/map registration check.

Public entry points: :func:`load_volume` (any supported format -> :class:`Volume`),
:func:`read_header` (the same formats, header only -> :class:`ImageHeader`),
:func:`align_to` (onto the PDFF grid), :func:`build_rois`, :func:`grouped_stats`,
:func:`measure_vertebrae`, :func:`check_labels`, :func:`label_fit`.

The names are imported on first use, so reading image headers (``refracture.imaging.io``)
does not import SciPy and pandas for the measurements.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

_API = {
    "align_to": "geometry",
    "same_grid": "geometry",
    "load_volume": "io",
    "READERS": "readers",
    "ImageHeader": "readers",
    "read_header": "readers",
    "register_reader": "readers",
    "LabelFit": "label_fit",
    "label_fit": "label_fit",
    "LabelQC": "label_qc",
    "check_labels": "label_qc",
    "enforce_label_policy": "label_qc",
    "MorphometryResult": "morphometry",
    "measure_vertebrae": "morphometry",
    "Rois": "roi",
    "build_rois": "roi",
    "erosion_footprint": "roi",
    "IBSI_STATS": "stats",
    "PRODUCT_STATS": "stats",
    "grouped_stats": "stats",
    "region_stats": "stats",
    "UnitsDecision": "units",
    "resolve_pdff": "units",
    "resolve_r2star": "units",
    "Volume": "volume",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """This package's module object: ``label_fit`` names the function, as it always has, even
    after its submodule of the same name is imported (which would rebind the name to the
    submodule; the submodule stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "label_fit" and isinstance(value, types.ModuleType):
            value = value.label_fit
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
