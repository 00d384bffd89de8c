"""Shared fixtures: small synthetic cohorts written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from refracture.synth import write_cohort


@pytest.fixture(scope="session")
def synth_nifti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight patients from four sites as NIfTI (seed 3)."""
    out = tmp_path_factory.mktemp("synth_nifti")
    write_cohort(out, n=8, n_sites=4, seed=3, image_format="nifti", jobs=2)
    return out


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same eight patients as GE-style DICOM series (PDFF stored per mille)."""
    out = tmp_path_factory.mktemp("synth_dicom")
    write_cohort(out, n=8, n_sites=4, seed=3, image_format="dicom", jobs=2)
    return out
