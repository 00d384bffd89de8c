"""refracture: imaging-biomarker risk models for vertebral re-fracture after PVP/PKP.

Data flows one way: manifest -> volumes -> ROI features -> feature table -> model ->
metrics -> MLflow. Each stage is a module; the CLI (:mod:`refracture.cli`) only parses
arguments and calls them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("refracture")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
