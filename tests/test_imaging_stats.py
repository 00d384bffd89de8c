"""IBSI first-order statistics: the IBSI-1 digital phantom and grouped vs per-group numpy."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats as sps

from refracture.imaging.stats import IBSI_STATS, PRODUCT_STATS, grouped_stats, region_stats

DATA = Path(__file__).parent / "data" / "ibsi_digital_phantom"

# IBSI 1 reference values for the digital phantom (tests/data/ibsi_digital_phantom/README.md),
# to three significant digits.
IBSI_PHANTOM = {
    "mean": 2.15,
    "variance": 3.05,
    "skewness": 1.08,
    "kurtosis": -0.355,
    "median": 1,
    "min": 1,
    "p10": 1,
    "p90": 4,
    "max": 6,
    "iqr": 3,
    "range": 5,
    "mad": 1.55,
    "rmad": 1.11,
    "medad": 1.15,
    "cov": 0.812,
    "qcod": 0.6,
    "energy": 567,
    "rms": 2.77,
}


def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


def test_ibsi_digital_phantom_reproduces_reference_values() -> None:
    image = np.asarray(nib.load(DATA / "image.nii.gz").dataobj)
    mask = np.asarray(nib.load(DATA / "mask.nii.gz").dataobj) > 0
    assert mask.sum() == 74
    got = region_stats(image[mask])
    assert got["n"] == 74
    for name, ref in IBSI_PHANTOM.items():
        assert _sig3(got[name]) == pytest.approx(ref), name


def test_grouped_stats_match_numpy_and_scipy_per_group() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.gamma(2 + g, 10, size=50 + 40 * g) for g in range(5)])
    groups = np.repeat(np.arange(5), [50 + 40 * g for g in range(5)])
    perm = rng.permutation(values.size)  # input order must not matter
    got = grouped_stats(values[perm], groups[perm], 6)
    for g in range(5):
        x = values[groups == g]
        p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
        inner = x[(x >= p10) & (x <= p90)]
        expected = {
            "n": x.size,
            "mean": x.mean(),
            "variance": x.var(),
            "sd": x.std(),
            "skewness": sps.skew(x),
            "kurtosis": sps.kurtosis(x),
            "median": p50,
            "p10": p10,
            "p25": p25,
            "p75": p75,
            "p90": p90,
            "iqr": p75 - p25,
            "min": x.min(),
            "max": x.max(),
            "range": np.ptp(x),
            "mad": np.mean(np.abs(x - x.mean())),
            "rmad": np.mean(np.abs(inner - inner.mean())),
            "medad": np.mean(np.abs(x - p50)),
            "cov": x.std() / x.mean(),
            "qcod": (p75 - p25) / (p75 + p25),
            "energy": np.sum(x**2),
            "rms": np.sqrt(np.mean(x**2)),
        }
        assert set(expected) == set(IBSI_STATS)
        for name, ref in expected.items():
            assert got[name][g] == pytest.approx(ref, rel=1e-9, abs=1e-9), (g, name)
    # group 5 has no voxels: n is 0 and everything else NaN
    assert got["n"][5] == 0
    assert all(np.isnan(got[k][5]) for k in IBSI_STATS if k != "n")


def test_constant_region_and_empty_input() -> None:
    got = region_stats(np.full(10, 7.0))
    assert got["sd"] == 0 and got["skewness"] == 0 and got["kurtosis"] == 0  # IBSI convention
    assert got["median"] == got["p10"] == got["p90"] == 7
    empty = grouped_stats(np.array([]), np.array([], dtype=int), 2)
    assert list(empty["n"]) == [0, 0] and np.isnan(empty["mean"]).all()


def test_product_stats_are_a_subset_of_what_is_computed() -> None:
    assert set(PRODUCT_STATS) - {"volume_ml"} <= set(IBSI_STATS)


def test_bad_group_ids_are_rejected() -> None:
    with pytest.raises(ValueError):
        grouped_stats(np.ones(3), np.array([0, 1, 5]), 2)
