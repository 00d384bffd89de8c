"""Per-patient behaviour of extraction on small phantoms: groups, exclusions, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refracture.config import ExtractionConfig, load_extraction_config
from refracture.errors import ConfigError, InputError
from refracture.features import extract_cohort
from refracture.features.manifest import read_manifest
from test_imaging_helpers import affine_for, spine, write_manifest, write_nifti, write_patient

LEVELS = ("T12", "L1", "L2", "L3", "L4")
PDFF = {"T12": 30.0, "L1": 40.0, "L2": 50.0, "L3": 60.0, "L4": 70.0}
R2 = {"T12": 50.0, "L1": 60.0, "L2": 70.0, "L3": 80.0, "L4": 90.0}


def _run(root: Path, rows: list[dict], config: ExtractionConfig | None = None, **kw):
    manifest = write_manifest(root, rows)
    return extract_cohort(manifest, config or ExtractionConfig(), jobs=1, **kw)


def test_groups_pool_the_right_vertebrae(tmp_path: Path) -> None:
    row = write_patient(
        tmp_path, "G1", treated="L2", fractured="L4", levels=LEVELS, pdff=None, r2star=None
    )
    p, r, lab = spine(levels=LEVELS, pdff=PDFF, r2star=R2)
    write_nifti(tmp_path / "images/G1/pdff.nii.gz", p, slope=0.1)
    write_nifti(tmp_path / "images/G1/r2star.nii.gz", r, dtype=np.float32)
    res = _run(tmp_path, [row])
    assert res.errors.empty
    f = res.features.iloc[0]
    for lv in LEVELS:
        assert f[f"pdff_mean_{lv}"] == pytest.approx(PDFF[lv], abs=1e-4)
        assert f[f"r2star_median_{lv}"] == pytest.approx(R2[lv], abs=1e-4)
        assert f[f"pdff_sd_{lv}"] == pytest.approx(0, abs=1e-4)
    # equal-sized vertebrae: a pooled mean is the mean of its levels
    expect = {
        "index": ["L2"],
        "adjacent": ["L1", "L3"],
        "l1l4": ["L1", "L3"],
        "normal": ["T12", "L1", "L3"],
    }
    n_one = f["pdff_n_L1"]
    for group, levels in expect.items():
        assert f[f"pdff_mean_{group}"] == pytest.approx(
            np.mean([PDFF[x] for x in levels]), abs=1e-3
        )
        assert f[f"pdff_n_{group}"] == n_one * len(levels)
        assert f[f"pdff_volume_ml_{group}"] == pytest.approx(
            n_one * len(levels) * 1.5 * 1.5 * 4 / 1000
        )
    # pooled, not averaged: the median of {30, 40, 60} voxels is 40
    assert f["pdff_median_normal"] == pytest.approx(40.0, abs=1e-4)
    assert f["qc_levels"] == "T12;L1;L2;L3;L4"
    assert "T10" in f["qc_missing_levels"] and "L1" not in f["qc_missing_levels"]


def test_nonfinite_and_out_of_range_voxels_are_dropped_and_counted(tmp_path: Path) -> None:
    p, r, lab = spine(levels=LEVELS, pdff=PDFF, r2star=R2)
    inside = np.argwhere(lab == 21)  # L2
    p[tuple(inside[10])] = np.nan
    p[tuple(inside[11])] = np.inf
    p[tuple(inside[12])] = 150.0  # above pdff_range
    r[tuple(inside[13])] = -5.0  # below r2star_range
    row = write_patient(tmp_path, "N1", levels=LEVELS, pdff=p, r2star=r)
    res = _run(tmp_path, [row], ExtractionConfig(erosion_mm=0))
    f = res.features.iloc[0]
    assert f["qc_nonfinite_voxels"] == 2
    assert f["qc_out_of_range_voxels"] == 2
    assert f["pdff_mean_L2"] == pytest.approx(50.0, abs=1e-4)
    assert f["r2star_min_L2"] == pytest.approx(70.0, abs=1e-4)
    v = res.vertebrae.set_index(["level", "map"])
    assert v.loc[("L2", "pdff"), "n_nonfinite"] == 2
    assert v.loc[("L2", "pdff"), "n_out_of_range"] == 1
    assert v.loc[("L2", "r2star"), "n_out_of_range"] == 1
    assert v.loc[("L2", "pdff"), "n"] == v.loc[("L2", "pdff"), "n_roi"] - 3


def test_mostly_nonfinite_map_is_a_patient_error(tmp_path: Path) -> None:
    p, r, lab = spine(levels=LEVELS)
    r[lab > 0] = np.nan
    bad = write_patient(tmp_path, "BAD", levels=LEVELS, r2star=r)
    good = write_patient(tmp_path, "OK", levels=LEVELS)
    res = _run(tmp_path, [bad, good])
    assert list(res.features["patient_id"]) == ["OK"]
    e = res.errors.iloc[0]
    assert e["patient_id"] == "BAD" and e["stage"] == "roi"
    assert "NaN or infinite" in e["message"] and "r2star.nii.gz" in e["message"]


def test_cement_voxels_in_treated_levels_are_excluded(tmp_path: Path) -> None:
    p, r, lab = spine(levels=LEVELS, pdff=PDFF, r2star=R2)
    body = np.argwhere(lab == 21)  # L2
    centre = body.mean(axis=0)
    core = body[np.abs(body - centre).max(axis=1) <= 2.5]
    r[tuple(core.T)] = 800.0  # cement
    p[tuple(core.T)] = np.random.default_rng(0).uniform(0, 100, len(core))
    void = body[np.abs(body - centre)[:, 1] > 4.5][:5]  # a few signal voids
    p[tuple(void.T)] = 0.0
    r[tuple(void.T)] = 0.0
    # the same high R2* in an untreated level is kept (it is not declared cement)
    l4 = np.argwhere(lab == 23)
    r[tuple(l4[l4[:, 1].argsort()][:1].T)] = 390.0
    row = write_patient(tmp_path, "C1", treated="L2", levels=LEVELS, pdff=p, r2star=r)
    res = _run(tmp_path, [row], ExtractionConfig(erosion_mm=0))
    f = res.features.iloc[0]
    assert f["qc_cement_voxels_excluded"] == len(core) + 5
    assert f["qc_cement_levels"] == "L2"
    assert f["pdff_mean_L2"] == pytest.approx(50.0, abs=1e-4)
    assert f["r2star_max_L2"] == pytest.approx(70.0, abs=1e-4)
    assert f["r2star_max_L4"] == pytest.approx(390.0, abs=1e-3)
    v = res.vertebrae.set_index(["level", "map"])
    assert v.loc[("L2", "r2star"), "n_cement"] == len(core) + 5
    assert bool(v.loc[("L2", "pdff"), "treated"])


def test_small_rois_are_reported_not_averaged(tmp_path: Path) -> None:
    row = write_patient(tmp_path, "S1", levels=LEVELS, treated="L1")
    res = _run(tmp_path, [row], ExtractionConfig(min_voxels=10_000))
    f = res.features.iloc[0]
    assert np.isnan(f["pdff_mean_L1"]) and f["pdff_n_L1"] > 0
    assert f["pdff_volume_ml_L1"] > 0
    assert np.isnan(f["pdff_mean_normal"])
    assert f["qc_small_roi"].split(";")[:5] == ["T12", "L1", "L2", "L3", "L4"]
    assert "normal" in f["qc_small_roi"]
    assert res.vertebrae["small_roi"].all()


def test_patient_errors_name_patient_and_file(tmp_path: Path) -> None:
    rows = []
    # label map with no known vertebra
    _, _, lab = spine(levels=LEVELS)
    rows.append(write_patient(tmp_path, "E1", levels=LEVELS, labels=np.where(lab > 0, 99, 0)))
    # treated level missing from the label map
    rows.append(write_patient(tmp_path, "E2", levels=LEVELS, treated="L5"))
    # PDFF in unknown units (p99 about 3), the only patient of its site: units are decided per
    # site, so the refusal names the site
    p, _, _ = spine(levels=LEVELS, pdff={lv: 3.0 for lv in LEVELS})
    rows.append(write_patient(tmp_path, "E3", levels=LEVELS, pdff=p, site="s3"))
    # a label map on another grid, resampling not allowed
    rows.append(write_patient(tmp_path, "E4", levels=LEVELS))
    _, _, lab = spine(levels=LEVELS)
    write_nifti(
        tmp_path / "images/E4/labels.nii.gz", lab, affine=affine_for(origin=(11.0, -20.0, 30.0))
    )
    # a path that does not exist
    rows.append(write_patient(tmp_path, "E5", levels=LEVELS))
    rows[-1]["r2star"] = "images/E5/nothing.nii.gz"
    rows.append(write_patient(tmp_path, "OK", levels=LEVELS))
    res = _run(tmp_path, rows, ExtractionConfig(allow_resample=False))
    assert list(res.features["patient_id"]) == ["OK"]
    e = res.errors.set_index("patient_id")
    assert list(e.index) == ["E1", "E2", "E3", "E4", "E5"]
    assert e.loc["E1", "stage"] == "roi" and "no vertebra known" in e.loc["E1", "message"]
    assert "label values found: 99" in e.loc["E1", "message"]
    assert "L5 as treated" in e.loc["E2", "message"]
    assert e.loc["E3", "stage"] == "units" and "extraction.pdff_units" in e.loc["E3", "message"]
    assert "site s3: cannot tell the PDFF unit" in e.loc["E3", "message"]
    assert e.loc["E4", "stage"] == "geometry" and "allow_resample" in e.loc["E4", "message"]
    assert e.loc["E5", "stage"] == "load" and "not found" in e.loc["E5", "message"]
    for pid, msg in e["message"].items():
        assert msg.startswith(f"patient {pid}: file ")

    # with resampling allowed the shifted label map is used, and flagged
    res = _run(tmp_path, [rows[3]])
    assert res.errors.empty
    assert bool(res.qc.iloc[0]["qc_labels_resampled"])
    assert not bool(res.qc.iloc[0]["qc_r2star_resampled"])


def test_fraction_pdff_and_t2star_maps_are_converted(tmp_path: Path) -> None:
    p, r, _ = spine(levels=LEVELS, pdff=PDFF, r2star=R2)
    row = write_patient(tmp_path, "U1", levels=LEVELS)
    write_nifti(tmp_path / "images/U1/pdff.nii.gz", p / 100, dtype=np.float32)
    write_nifti(tmp_path / "images/U1/r2star.nii.gz", 1000 / r, dtype=np.float32)
    res = _run(tmp_path, [row])
    q = res.qc.iloc[0]
    assert (q["qc_pdff_units"], q["qc_pdff_converted"]) == ("fraction", True)
    assert (q["qc_r2star_units"], q["qc_r2star_converted"]) == ("t2star_ms", True)
    f = res.features.iloc[0]
    assert f["pdff_mean_L3"] == pytest.approx(60.0, rel=1e-5)
    assert f["r2star_mean_L3"] == pytest.approx(80.0, rel=1e-4)


def test_manifest_validation(tmp_path: Path) -> None:
    row = write_patient(tmp_path, "M1", levels=LEVELS)
    cases = {
        "missing": ([{k: v for k, v in row.items() if k != "labels"}], "missing the column"),
        "dup": ([row, dict(row), {**row, "patient_id": "M2"}], "duplicate patient_id: M1"),
        "empty": ([row, {**row, "patient_id": " "}], "empty patient_id on line"),
        "level": ([{**row, "treated_levels": "L1;X7"}], "unknown vertebral levels"),
    }
    for name, (rows, message) in cases.items():
        path = write_manifest(tmp_path, rows)
        with pytest.raises(InputError, match=message):
            read_manifest(path)
        with pytest.raises(InputError, match=message):
            extract_cohort(path, jobs=1)
        assert name
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(InputError, match="cannot read the manifest"):
        read_manifest(tmp_path / "blank.csv")

    path = write_manifest(tmp_path, [{**row, "treated_levels": "l1; T12", "fractured_levels": ""}])
    m = read_manifest(path)
    assert m.loc[0, "treated_levels"] == ["T12", "L1"]
    assert m.loc[0, "fractured_levels"] == []
    assert Path(m.loc[0, "pdff"]).is_absolute() and Path(m.loc[0, "pdff"]).is_file()
    # a DataFrame works as well as a path, validated the same way
    res = extract_cohort(m, jobs=1)
    assert res.errors.empty and res.n_computed == 1


def test_load_extraction_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  clinical: c.csv\n  cache_dir: /tmp/cachehere\n"
        "models: [cox]\nextraction:\n  erosion_mm: 3\n  pdff_units: percent\n"
    )
    extraction, cache = load_extraction_config(cfg)
    assert extraction.erosion_mm == 3 and extraction.pdff_units == "percent"
    assert cache == Path("/tmp/cachehere")
    cfg.write_text("extraction:\n  pdff_units: furlongs\n")
    with pytest.raises(ConfigError, match="extraction.pdff_units"):
        load_extraction_config(cfg)
    cfg.write_text("extractoin:\n  erosion_mm: 3\n")
    with pytest.raises(ConfigError, match="'extractoin'"):
        load_extraction_config(cfg)
    cfg.write_text("{}\n")
    assert load_extraction_config(cfg) == (ExtractionConfig(), None)


def test_outputs_are_written_atomically_and_in_manifest_order(tmp_path: Path) -> None:
    rows = [write_patient(tmp_path, pid, levels=LEVELS) for pid in ("Z9", "A1", "M5")]
    out = tmp_path / "out"
    res = _run(tmp_path, rows, out_dir=out)
    assert list(res.features["patient_id"]) == ["Z9", "A1", "M5"]
    assert list(pd.read_csv(out / "qc.csv")["patient_id"]) == ["Z9", "A1", "M5"]
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    assert set(res.files) >= {"features", "vertebrae", "qc", "summary"}


def test_extract_patient_on_one_manifest_row(tmp_path: Path) -> None:
    from refracture.errors import ImageError
    from refracture.features import extract_patient

    row = write_patient(tmp_path, "R1", treated="L2", levels=LEVELS)
    m = read_manifest(write_manifest(tmp_path, [row]))
    result = extract_patient(m.iloc[0], ExtractionConfig())
    assert result.patient_id == "R1" and not result.cached
    assert result.qc["qc_levels"] == "T12;L1;L2;L3;L4"
    assert {(v["level"], v["map"]) for v in result.vertebrae} == {
        (lv, mp) for lv in LEVELS for mp in ("pdff", "r2star")
    }
    with pytest.raises(ImageError, match="patient R1: file .*: the manifest names L5"):
        extract_patient({**m.iloc[0].to_dict(), "treated_levels": ["L5"]}, ExtractionConfig())
