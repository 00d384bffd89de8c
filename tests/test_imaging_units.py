"""Units: configured, detected, converted, and ambiguous maps refused with the key to set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refracture.errors import UnitsError
from refracture.imaging import Volume, resolve_pdff, resolve_r2star
from refracture.imaging.units import detect_pdff_units, detect_r2star_units, r2star_hint

RNG = np.random.default_rng(0)
MARROW_PDFF = RNG.uniform(20, 80, 2000)  # percent
MARROW_R2 = RNG.uniform(40, 120, 2000)  # 1/s


def _vol(values: np.ndarray, kind: str = "pdff", description: str | None = None) -> Volume:
    return Volume(
        data=values.astype(np.float32).reshape(-1, 1, 1),
        affine=np.eye(4),
        kind=kind,  # type: ignore[arg-type]
        path=Path(f"/data/{kind}.nii.gz"),
        content_hash="x",
        metadata={"series_description": description},
    )


@pytest.mark.parametrize(
    ("stored", "unit"),
    [(MARROW_PDFF / 100, "fraction"), (MARROW_PDFF, "percent"), (MARROW_PDFF * 10, "per_mille")],
)
def test_pdff_units_are_detected_and_converted_to_percent(stored: np.ndarray, unit: str) -> None:
    assert detect_pdff_units(stored) == unit
    vol, decision = resolve_pdff(_vol(stored), stored, "auto")
    assert decision.unit == unit and decision.source == "detected"
    assert decision.converted == (unit != "percent")
    assert vol.units == "percent"
    np.testing.assert_allclose(vol.data.ravel(), MARROW_PDFF, rtol=1e-5)


@pytest.mark.parametrize("p99", [2.0, 3.5, 125.0, 140.0, 5000.0])
def test_ambiguous_pdff_is_an_error_naming_the_config_key(p99: float) -> None:
    stored = MARROW_PDFF / np.percentile(MARROW_PDFF, 99) * p99
    with pytest.raises(UnitsError) as info:
        resolve_pdff(_vol(stored), stored, "auto", patient_id="P3")
    msg = info.value.one_line()
    assert "extraction.pdff_units" in msg and msg.startswith("patient P3: file /data/pdff")


def test_configured_units_win_over_detection() -> None:
    stored = MARROW_PDFF / 100  # looks like a fraction ...
    vol, decision = resolve_pdff(_vol(stored), stored, "percent")  # ... but the user says %
    assert decision.source == "config" and not decision.converted
    np.testing.assert_allclose(vol.data.ravel(), stored, rtol=1e-6)
    vol, decision = resolve_pdff(_vol(stored * 1000), stored * 1000, "per_mille")
    np.testing.assert_allclose(vol.data.ravel(), stored * 100, rtol=1e-5)


def test_t2star_in_ms_converts_to_r2star() -> None:
    t2 = 1000.0 / MARROW_R2
    assert detect_r2star_units(t2) == "t2star_ms"
    assert detect_r2star_units(MARROW_R2) == "per_s"
    stored = t2.copy()
    stored[:5] = 0.0  # failed fits
    vol, decision = resolve_r2star(_vol(stored, "r2star"), stored, "auto")
    assert decision.unit == "t2star_ms" and decision.converted
    np.testing.assert_allclose(vol.data.ravel()[5:], MARROW_R2[5:], rtol=1e-4)
    assert np.isnan(vol.data.ravel()[:5]).all()  # T2* = 0 is not an R2* of infinity


def test_series_description_hint_and_conflict() -> None:
    assert r2star_hint("R2* map") == "per_s"
    assert r2star_hint("T2* (ms)") == "t2star_ms"
    assert r2star_hint("IDEAL IQ") is None
    ambiguous = np.full(100, 32.0)  # between T2* and R2* regimes
    vol, decision = resolve_r2star(_vol(ambiguous, "r2star", "R2*"), ambiguous, "auto")
    assert decision.source == "series_description" and decision.unit == "per_s"
    with pytest.raises(UnitsError, match="extraction.r2star_units"):
        resolve_r2star(_vol(ambiguous, "r2star"), ambiguous, "auto")
    with pytest.raises(UnitsError, match="series description says t2star_ms"):
        resolve_r2star(_vol(MARROW_R2, "r2star", "T2*"), MARROW_R2, "auto")


@pytest.mark.parametrize("median", [26.0, 29.8, 34.0])
def test_r2star_near_the_crossing_point_is_refused_not_converted(median: float) -> None:
    # R2* of 30 1/s (fatty 1.5 T marrow) and T2* of 30 ms are the same number
    stored = MARROW_R2 / np.median(MARROW_R2) * median
    assert detect_r2star_units(stored) is None
    with pytest.raises(UnitsError, match="set extraction.r2star_units"):
        resolve_r2star(_vol(stored, "r2star"), stored, "auto")
