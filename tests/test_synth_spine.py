"""Synthetic vertebral shapes: deformities where the patient's fractures are, true heights and
grades in truth.csv consistent with them, drawn from their own random stream."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refracture.levels import TL_LEVELS
from refracture.synth import anatomy_of, simulate_cohort, spine
from refracture.synth import cohort as gen
from refracture.synth.phantom import draw_labels, generate


@pytest.fixture(scope="module")
def big() -> gen.Cohort:
    return simulate_cohort(n=2000, n_sites=4, seed=13)


def test_fractured_levels_are_deformed_and_only_they(big: gen.Cohort) -> None:
    t = big.truth
    for i, pid in enumerate(t["patient_id"]):
        lv = big.levels[pid]
        fractured = set(lv["fractured"])
        row = t.iloc[i]
        for level in TL_LEVELS:
            kind = row[f"true_deformity_{level}"]
            ha, hm, hp = (row[f"true_{h}_mm_{level}"] for h in ("ha", "hm", "hp"))
            if level in fractured:
                assert kind in spine.DEFORMITY_P, (pid, level)
            else:
                assert kind == "intact" and ha == hm == hp and row[f"true_genant_{level}"] == 0
        assert row["true_n_deformed"] >= len(lv["old"])  # old fractures are grade >= 1
    assert (t["true_n_deformed"] <= big.clinical["n_fractured"] + 1).all()


def test_grades_follow_height_loss_and_clinical_variables(big: gen.Cohort) -> None:
    t = big.truth
    for level in TL_LEVELS:
        loss = t[f"true_height_loss_pct_{level}"]
        grade = t[f"true_genant_{level}"]
        expect = np.select([loss > 40, loss >= 25, loss >= 20], [3, 2, 1], 0)
        on_edge = np.abs(loss.to_numpy()[:, None] - [20, 25, 40]).min(axis=1) < 1e-3  # rounding
        assert (grade == expect)[~on_edge].all()
        heights = t[[f"true_{h}_mm_{level}" for h in ("ha", "hm", "hp")]]
        kind = t[f"true_deformity_{level}"]
        assert (loss[kind == "intact"] == 0).all()
        # wedge and biconcave keep the intact height at the posterior station: the loss is the
        # deformed station's against it
        partial = kind.isin(["wedge", "biconcave"])
        ratio = heights.min(axis=1) / heights.max(axis=1)
        np.testing.assert_allclose(ratio[partial], 1 - loss[partial] / 100, atol=1e-3)
        crush = kind == "crush"  # posterior height lower too, by less than the anterior
        assert (t.loc[crush, f"true_hp_mm_{level}"] >= t.loc[crush, f"true_ha_mm_{level}"]).all()
    losses, old_losses = [], []
    for i, pid in enumerate(t["patient_id"]):
        for level in big.levels[pid]["treated"]:
            losses.append(t.iloc[i][f"true_height_loss_pct_{level}"])
        for level in big.levels[pid]["old"]:
            old_losses.append(t.iloc[i][f"true_height_loss_pct_{level}"])
    lo, hi = (100 * x for x in spine.HEIGHT_LOSS_ACUTE)
    assert min(losses) >= lo - 0.01 and max(losses) <= hi + 0.01
    assert abs(np.mean(losses) - (lo + hi) / 2) < 1.0
    assert min(old_losses) >= 100 * spine.HEIGHT_LOSS_OLD[0] - 0.01  # grade >= 1
    kinds = t[[f"true_deformity_{lv}" for lv in TL_LEVELS]].to_numpy().ravel()
    kinds = kinds[kinds != "intact"]
    for kind, p in spine.DEFORMITY_P.items():
        assert abs(np.mean(kinds == kind) - p) < 0.03, kind
    # more fractures, higher maximum grade; a prior fracture adds an old deformity for some
    by_n = t.groupby(big.clinical["n_fractured"])["true_n_deformed"].mean()
    assert by_n.is_monotonic_increasing
    prior = big.clinical["prior_fracture"] == 1
    assert t.loc[prior, "true_n_deformed"].mean() > t.loc[~prior, "true_n_deformed"].mean()


def test_shapes_come_from_their_own_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    a = simulate_cohort(n=40, n_sites=2, seed=4)
    monkeypatch.setattr(gen, "SHAPE_STREAM", gen.SHAPE_STREAM + 1)
    b = simulate_cohort(n=40, n_sites=2, seed=4)
    shape_cols = [c for c in a.truth.columns if c.startswith("true_")]
    other = [c for c in a.truth.columns if c not in shape_cols]
    assert a.truth[other].equals(b.truth[other])  # nothing else moved
    assert a.clinical.equals(b.clinical)
    assert not a.truth[shape_cols].equals(b.truth[shape_cols])
    assert other[-1] == "time_censor_days"  # the new columns come after the existing ones


def test_body_shape_profile_and_volume() -> None:
    wedge = spine._shape("L1", 1.0, "wedge", 0.4, 1.0)
    bic = spine._shape("L1", 1.0, "biconcave", 0.3, 1.0)
    intact = spine._shape("L1", 1.0, "intact", 0.0, 1.0)
    for body in (wedge, bic, intact):
        s = 0.8 * body.a  # stations at 10 %, 50 %, 90 % of the depth
        np.testing.assert_allclose(
            body.height(np.array([-s, 0.0, s])), [body.ha, body.hm, body.hp], atol=1e-9
        )
    assert wedge.ha == pytest.approx(0.6 * 25.0) and wedge.hp == 25.0
    assert wedge.loss_pct == pytest.approx(40.0) and wedge.genant == 2
    assert bic.hm == pytest.approx(0.7 * 25.0) and bic.genant == 2
    assert intact.volume_ml() == pytest.approx(math.pi * 16 * 21 * 25 / 1000, rel=1e-6)
    # the bowl by brute force: height x chord on a fine grid
    u = np.linspace(-bic.a, bic.a, 400001)
    chord = 2 * bic.b * np.sqrt(np.clip(1 - (u / bic.a) ** 2, 0, None))
    assert bic.volume_ml() == pytest.approx(
        float(np.trapezoid(bic.height(u) * chord, u)) / 1000, rel=1e-5
    )
    # a linear (wedge) profile: the volume is the mean height's cylinder
    assert wedge.volume_ml() == pytest.approx(
        math.pi * 16 * 21 * float(wedge.height(np.array([0.0]))[0]) / 1000, rel=1e-6
    )
    assert spine.wedge_angle_deg(wedge) == pytest.approx(math.degrees(math.atan(10.0 / (0.8 * 32))))


def test_label_map_on_another_grid_is_the_same_anatomy() -> None:
    c = simulate_cohort(n=4, n_sites=4, seed=2)
    p = anatomy_of(c, 1, 2)
    maps = generate(p)
    labels, affine = draw_labels(p)
    assert np.array_equal(labels, maps.labels)
    np.testing.assert_allclose(affine, maps.affine)
    fine, fine_affine = draw_labels(p, ((120, 420, 60), (1.0, 1.0, 1.0)))
    for value in np.unique(maps.labels)[1:]:
        world = []
        for lab, aff in ((maps.labels, maps.affine), (fine, fine_affine)):
            ijk = np.argwhere(lab == value).mean(axis=0)
            world.append(aff[:3, :3] @ ijk + aff[:3, 3])
        assert np.linalg.norm(world[0] - world[1]) < 0.5  # same centroid, mm
