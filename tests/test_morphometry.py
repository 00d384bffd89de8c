"""Morphometry from label maps: heights against the synthetic truth at 1 mm and 4.5 mm slices
and on a map turned by 15 degrees, whole-vertebra labels, the height-loss rule, features, QC
picture. Label maps are real NIfTI files read back with load_volume."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import synth_labels as sl
from refracture.imaging import build_rois
from refracture.imaging.anatomy import typical_height_mm
from refracture.imaging.morphometry import (
    INTACT_RATIO,
    MEASURES,
    genant_grade,
    measure_vertebrae,
)
from refracture.imaging.qc import GRADE_COLORS, render_patient_png
from refracture.imaging.volume import Volume
from refracture.levels import TL_LEVELS, VERSE


def _measure(path: Path, i: int):
    treated, fractured = sl.levels_of(i)
    return measure_vertebrae(sl.load(path), VERSE, treated, fractured)


def _accuracy(tmp_path: Path, patients: list[int], grid, **kw) -> pd.DataFrame:
    out = []
    for i in patients:
        res = _measure(sl.label_file(tmp_path, i, grid, **kw), i)
        out.append(sl.errors(res.per_level, i))
    return pd.concat(out, ignore_index=True)


def _check(err: pd.DataFrame) -> None:
    within = float((err["max_abs_mm"] < 1.0).mean())
    graded = float((err["grade"] == err["true_grade"]).mean())
    deformed = err[err["kind"] != "intact"]
    print(f"within 1 mm {within:.3f}, grade right {graded:.3f}, n {len(err)}")
    assert len(deformed) >= 5  # the sample holds fractures of several kinds
    assert within >= 0.90, err.sort_values("max_abs_mm").tail(5).to_string()
    assert graded >= 0.90, err[err["grade"] != err["true_grade"]].to_string()
    # no deformed vertebra is called intact when its true grade is 2 or 3
    assert (deformed.loc[deformed["true_grade"] >= 2, "grade"] >= 1).all()


def test_genant_grade_thresholds() -> None:
    cases = {0.0: 0, 19.99: 0, 20.0: 1, 24.99: 1, 25.0: 2, 40.0: 2, 40.01: 3, 80.0: 3}
    assert {x: genant_grade(x) for x in cases} == cases
    assert genant_grade(-5.0) == 0
    assert genant_grade(math.nan) == -1


def test_heights_and_grades_at_1mm_slices(tmp_path: Path) -> None:
    _check(_accuracy(tmp_path, [1, 3, 6, 7, 8], sl.GRID_1MM))


def test_heights_and_grades_at_4_5mm_slices(tmp_path: Path) -> None:
    _check(_accuracy(tmp_path, [0, 3, 5, 7, 10], sl.GRID_4_5MM))


def test_heights_and_grades_on_a_map_turned_15_degrees(tmp_path: Path) -> None:
    out = []
    for i in (1, 3, 7):
        src = sl.label_file(tmp_path, i, sl.GRID_ROTATE)
        turned = sl.rotate_file(src, tmp_path / f"turned_{i}.nii", 15.0)
        # the spine really turned against the grid
        cos = abs(sl.spine_axis(sl.load(src)) @ sl.spine_axis(sl.load(turned)))
        assert math.degrees(math.acos(min(cos, 1.0))) == pytest.approx(15.0, abs=0.5)
        out.append(sl.errors(_measure(turned, i).per_level, i))
    _check(pd.concat(out, ignore_index=True))


def test_on_the_cohorts_own_pdff_grid(tmp_path: Path) -> None:
    """1.48 x 1.48 x 4.5 mm (site 2): in-plane voxels this large limit the heights (each end
    plate is placed to within about half a voxel), but the grades hold."""
    err = _accuracy(tmp_path, [3, 4, 5, 6, 8, 9], sl.GRID_SITE_2)
    mae = float(err[["d_ha", "d_hm", "d_hp"]].abs().to_numpy().mean())
    graded = float((err["grade"] == err["true_grade"]).mean())
    print(f"site 2 grid: mean absolute error {mae:.2f} mm, grade right {graded:.3f}")
    assert mae < 0.6
    assert graded >= 0.90
    assert (err["volume_ratio"] - 1).abs().max() < 0.08


def test_whole_vertebra_labels_give_the_body_measurements(tmp_path: Path) -> None:
    for i in (3, 7):
        body = _measure(sl.label_file(tmp_path, i, sl.GRID_4_5MM), i)
        whole = _measure(
            sl.label_file(tmp_path, i, sl.GRID_4_5MM, posterior_elements=True, name="whole"), i
        )
        for h in ("ha_mm", "hm_mm", "hp_mm"):
            diff = (whole.per_level[h] - body.per_level[h]).abs()
            assert diff.max() < 1.0, (h, diff.to_dict())
        err = sl.errors(whole.per_level, i)
        assert (err["max_abs_mm"] < 1.0).mean() >= 0.9
        assert (err["volume_ratio"] - 1).abs().max() < 0.10  # pedicle roots stay, a little
        assert (whole.per_level["posterior_elements_removed_pct"] > 10).all()
        assert (body.per_level["posterior_elements_removed_pct"] == 0).all()
        assert whole.qc["qc_morph_posterior_elements"] == ";".join(TL_LEVELS)
        assert body.qc["qc_morph_posterior_elements"] == ""


def test_orientation_of_the_voxel_array_does_not_matter(tmp_path: Path) -> None:
    path = sl.label_file(tmp_path, 7, sl.GRID_4_5MM)
    canonical = nib.as_closest_canonical(nib.load(path))  # PIR -> RAS: axes permuted, flipped
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    ras = tmp_path / "ras.nii.gz"
    nib.save(canonical, ras)
    a, b = _measure(path, 7), _measure(ras, 7)
    np.testing.assert_allclose(
        a.per_level[list(MEASURES)].to_numpy(float),
        b.per_level[list(MEASURES)].to_numpy(float),
        rtol=0,
        atol=1e-6,
    )


def test_features_and_patient_aggregates(tmp_path: Path) -> None:
    i = 7
    treated, fractured = sl.levels_of(i)
    res = _measure(sl.label_file(tmp_path, i, sl.GRID_4_5MM), i)
    expected = {f"morph_{m}_{lv}" for m in MEASURES for lv in TL_LEVELS}
    expected |= {"morph_genant_max", "morph_n_deformed", "morph_wedge_angle_deg_index"}
    assert set(res.features) == expected
    pl = res.per_level
    assert list(pl.index) == TL_LEVELS
    for lv in TL_LEVELS:
        for m in MEASURES:
            assert res.features[f"morph_{m}_{lv}"] == pytest.approx(float(pl.loc[lv, m]))
        assert pl.loc[lv, "wedge_ratio"] == pytest.approx(pl.loc[lv, "ha_mm"] / pl.loc[lv, "hp_mm"])
        assert pl.loc[lv, "biconcavity_ratio"] == pytest.approx(
            pl.loc[lv, "hm_mm"] / pl.loc[lv, "hp_mm"]
        )
    assert res.features["morph_genant_max"] == pl["genant_grade"].max()
    assert res.features["morph_n_deformed"] == (pl["genant_grade"] >= 1).sum()
    assert res.features["morph_wedge_angle_deg_index"] == pytest.approx(
        max(pl.loc[lv, "wedge_angle_deg"] for lv in treated)
    )
    truth = sl.cohort().truth.iloc[i]
    assert res.features["morph_genant_max"] == truth["true_genant_max"]
    assert res.features["morph_n_deformed"] == truth["true_n_deformed"]
    assert pl["treated"].tolist() == [lv in treated for lv in TL_LEVELS]
    assert pl["fractured"].tolist() == [lv in fractured for lv in TL_LEVELS]
    rows = res.records("P0008")
    assert len(rows) == len(TL_LEVELS) and rows[0]["patient_id"] == "P0008"
    assert rows[0]["level"] == "T10"
    # no treated level: no index wedge angle
    none = measure_vertebrae(sl.load(sl.label_file(tmp_path, i, sl.GRID_4_5MM)), VERSE, [], [])
    assert math.isnan(none.features["morph_wedge_angle_deg_index"])


def _expected_loss(pl: pd.DataFrame, fractured: set[str]) -> dict[str, tuple[str, float]]:
    """The reference rule written out again: nearest intact level above and below (not
    fractured, own ratios >= 0.8, at most 3 levels away), heights scaled by typical size."""
    intact = [
        lv
        for lv in pl.index
        if lv not in fractured
        and pl.loc[lv, "wedge_ratio"] >= INTACT_RATIO
        and pl.loc[lv, "biconcavity_ratio"] >= INTACT_RATIO
    ]
    out = {}
    for lv in pl.index:
        r = TL_LEVELS.index(lv)  # no transitional level in these maps
        up = [x for x in intact if 0 < r - TL_LEVELS.index(x) <= 3]
        down = [x for x in intact if 0 < TL_LEVELS.index(x) - r <= 3]
        refs = ([max(up, key=TL_LEVELS.index)] if up else []) + (
            [min(down, key=TL_LEVELS.index)] if down else []
        )
        losses = []
        for h in ("ha_mm", "hm_mm", "hp_mm"):
            if refs:
                exp = np.mean(
                    [pl.loc[x, h] * typical_height_mm(lv) / typical_height_mm(x) for x in refs]
                )
            else:
                exp = pl.loc[lv, "hp_mm"]
            losses.append(100 * (1 - pl.loc[lv, h] / exp))
        out[lv] = (";".join(refs) if refs else "own posterior height", max(losses))
    return out


def test_height_loss_against_intact_neighbours(tmp_path: Path) -> None:
    i = 1  # T12, L1 and L2 all fractured: L1's references are T11 and L3
    treated, fractured = sl.levels_of(i)
    res = _measure(sl.label_file(tmp_path, i, sl.GRID_4_5MM), i)
    pl = res.per_level
    expected = _expected_loss(pl, set(fractured))
    for lv, (refs, loss) in expected.items():
        assert pl.loc[lv, "reference"] == refs
        assert pl.loc[lv, "height_loss_pct"] == pytest.approx(loss)
        assert pl.loc[lv, "genant_grade"] == genant_grade(loss)
    assert pl.loc["L1", "reference"] == "T11;L3"
    assert pl.loc["T11", "reference"] == "T10"  # L3 is 4 levels away: too far
    # every level fractured: each is compared with its own posterior height
    alone = measure_vertebrae(
        sl.load(sl.label_file(tmp_path, i, sl.GRID_4_5MM)), VERSE, [], TL_LEVELS
    )
    assert set(alone.per_level["reference"]) == {"own posterior height"}
    for lv, row in alone.per_level.iterrows():
        own = max(
            0.0, 100 * (1 - row["ha_mm"] / row["hp_mm"]), 100 * (1 - row["hm_mm"] / row["hp_mm"])
        )
        assert row["height_loss_pct"] == pytest.approx(own), lv


def test_a_label_too_small_to_measure_is_reported(tmp_path: Path) -> None:
    data = np.zeros((40, 40, 40), np.uint8)  # RAS grid: k runs superior
    data[5:35, 5:30, 25:37] = 20  # L1: a box 30 (LR) x 25 (AP) x 12 (CC) mm
    data[5:35, 5:30, 5:17] = 21  # L2
    data[20:22, 20:22, 38:40] = 19  # T12: 8 voxels
    path = sl.write_labels(tmp_path / "tiny.nii.gz", data, np.diag([1.0, 1.0, 1.0, 1.0]))
    res = measure_vertebrae(sl.load(path), VERSE, ["L1"], ["L1"])
    assert "T12" in res.unmeasured and "T12" not in res.per_level.index
    assert math.isnan(res.features["morph_ha_mm_T12"])
    assert res.qc["qc_morph_unmeasured"] == "T12"
    # a box: all three heights are its 12 mm side (voxel centres 5..16 -> edges 4.5..16.5)
    for h in ("ha_mm", "hm_mm", "hp_mm"):
        assert res.per_level.loc["L2", h] == pytest.approx(12.0, abs=0.05)


def test_qc_picture_shows_heights_grades_and_label_problems(tmp_path: Path) -> None:
    from refracture.synth import anatomy_of
    from refracture.synth.phantom import generate

    i = 5  # T10 biconcave, grade 3
    maps = generate(anatomy_of(sl.cohort(), i, sl.SEED))
    labels = Volume(maps.labels.astype(np.int32), maps.affine, "labels", Path("l"), "h")
    pdff = Volume(maps.pdff, maps.affine, "pdff", Path("p"), "h", units="percent")
    rois = build_rois(labels.data, pdff.spacing, VERSE, 2.0)
    treated, fractured = sl.levels_of(i)
    morph = measure_vertebrae(labels, VERSE, treated, fractured)
    assert morph.per_level.loc["T10", "genant_grade"] == 3

    def colour_share(png: Path, hex_colour: str) -> float:
        img = imread(png)[..., :3]
        rgb = np.array([int(hex_colour[k : k + 2], 16) / 255 for k in (1, 3, 5)])
        return float((np.abs(img - rgb).max(axis=-1) < 0.02).mean())

    plain = render_patient_png(tmp_path / "plain.png", pdff, rois, title="P")
    shown = render_patient_png(
        tmp_path / "morph.png",
        pdff,
        rois,
        title="P",
        morphometry=morph,
        label_problems=["L3 missing between L2 and L4"],
    )
    assert imread(shown).shape[:2] == (600, 500)
    for grade in (0, 3):  # intact levels' heights in green, the grade 3 body's in red
        assert colour_share(shown, GRADE_COLORS[grade]) > 5 * colour_share(
            plain, GRADE_COLORS[grade]
        )
    border = imread(shown)[:3, :, :3].reshape(-1, 3)
    assert (border[:, 0] > 0.9).all() and (border[:, 1] < 0.1).all()  # red frame
    assert (imread(plain)[:3, :, :3] < 0.1).all()  # no frame without problems
