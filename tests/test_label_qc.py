"""Label-map QC: silent on clean synthetic maps, catches each planted numbering mistake, and
the fail policy raises one line naming the patient and the label file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import synth_labels as sl
from refracture.errors import ImageError
from refracture.imaging.label_qc import QC_FIELDS, check_labels, enforce_label_policy
from refracture.imaging.volume import Volume
from refracture.levels import VERSE

VALUE = {name: value for value, name in VERSE.items()}


def _check(path: Path, i: int):
    return check_labels(sl.load(path), VERSE, sl.levels_of(i)[1])


def _planted(tmp_path: Path, name: str, data: np.ndarray, like: Path, i: int):
    return _check(sl.write_labels(tmp_path / f"{name}.nii.gz", data, sl.load(like).affine), i)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int]:
    """Patient 0's label map on a 1 x 1 x 4.5 mm grid (L3 fractured) and its voxels."""
    path = sl.label_file(tmp_path_factory.mktemp("labels"), 0, sl.GRID_4_5MM)
    return path, sl.load(path).data.copy(), 0


def test_clean_maps_raise_nothing(tmp_path: Path) -> None:
    for i in range(12):  # four sites' grids, 1-3 fractures each
        qc = _check(sl.label_file(tmp_path, i), i)
        assert qc.ok, (i, qc.summary)
        assert qc.fields == {
            **{f: "" for f in QC_FIELDS},
            "qc_label_n_problems": 0,
        }
    for i in (3, 7):  # whole-vertebra labels on 4.5 mm slices
        path = sl.label_file(tmp_path, i, sl.GRID_4_5MM, posterior_elements=True, name="whole")
        qc = _check(path, i)
        assert qc.ok, (i, qc.summary)


def test_swapped_labels_are_out_of_order(tmp_path: Path, clean) -> None:
    path, data, i = clean
    swapped = data.copy()
    swapped[data == VALUE["L1"]] = VALUE["L2"]
    swapped[data == VALUE["L2"]] = VALUE["L1"]
    qc = _planted(tmp_path, "swap", swapped, path, i)
    assert [p.kind for p in qc.problems] == ["order"]
    assert qc.fields["qc_label_order"] == "L1;L2"
    assert "L1 and L2 are out of cranio-caudal order" in qc.fields["qc_label_problems"]


def test_a_map_numbered_backwards_is_out_of_order(tmp_path: Path, clean) -> None:
    path, data, i = clean
    names = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    backwards = data.copy()
    for a, b in zip(names, names[::-1], strict=True):
        backwards[data == VALUE[a]] = VALUE[b]
    qc = check_labels(sl.load(path).with_data(backwards), VERSE, [])
    assert qc.fields["qc_label_order"] == ";".join(names)
    assert sum(p.kind == "order" for p in qc.problems) == len(names) - 1
    assert {p.kind for p in qc.problems} <= {"order", "size"}  # L5's body is big for a T10


def test_a_deleted_middle_level_is_a_gap(tmp_path: Path, clean) -> None:
    path, data, i = clean
    gap = np.where(data == VALUE["L2"], 0, data)
    qc = _planted(tmp_path, "gap", gap, path, i)
    assert [p.kind for p in qc.problems] == ["gap"]
    assert qc.fields["qc_label_gaps"] == "L2"


def test_an_unlabelled_vertebra_between_two_labels_is_a_gap(tmp_path: Path, clean) -> None:
    """Renumbered below the hole, so no name is missing: only the spacing tells."""
    path, data, i = clean
    hole = np.where(data == VALUE["L1"], 0, data)
    for lv, above in (("L2", "L1"), ("L3", "L2"), ("L4", "L3"), ("L5", "L4")):
        hole[data == VALUE[lv]] = VALUE[above]
    qc = check_labels(sl.load(path).with_data(hole), VERSE, ["L2"])  # L3 is now 'L2'
    assert [p.kind for p in qc.problems] == ["gap"]
    assert qc.fields["qc_label_gaps"] == "T12-L1"


def test_a_label_used_twice_is_a_duplicate(tmp_path: Path, clean) -> None:
    path, data, i = clean
    dup = np.where(data == VALUE["L4"], VALUE["L1"], data)
    qc = _planted(tmp_path, "dup", dup, path, i)
    assert qc.fields["qc_label_duplicates"] == "L1"
    # and, as a consequence: L4 missing, L1 twice its size, L1's centroid below L2's
    assert {p.kind for p in qc.problems} == {"duplicate", "gap", "size", "order"}
    # a speck of the same label far away is not a second body
    speck = data.copy()
    ii, jj, kk = np.argwhere(data == VALUE["T10"]).min(axis=0)
    speck[ii, jj - 3, kk] = VALUE["L1"]
    assert _planted(tmp_path, "speck", speck, path, i).ok


def test_a_shrunken_body_is_implausible(tmp_path: Path, clean) -> None:
    path, data, i = clean
    small = data.copy()
    body = data == VALUE["L4"]
    small[body & ~ndimage.binary_erosion(body, iterations=3)] = 0
    qc = _planted(tmp_path, "small", small, path, i)
    assert [p.kind for p in qc.problems] == ["size"]
    assert qc.fields["qc_label_implausible_size"] == "L4"
    assert "L4 is implausibly small" in qc.summary
    # the fractured L3 of this patient may be small; as small an intact level may not
    assert "L3" in sl.levels_of(i)[1]


def test_transitional_levels_are_flagged(tmp_path: Path, clean) -> None:
    path, data, i = clean
    # L6: a sixth lumbar body, a copy of L5 one vertebra lower
    l5 = np.argwhere(data == VALUE["L5"])
    l4 = np.argwhere(data == VALUE["L4"])
    step = np.rint(l5.mean(axis=0) - l4.mean(axis=0)).astype(int)
    six = data.copy()
    six[tuple((l5 + step).T)] = 25
    qc = _planted(tmp_path, "l6", six, path, i)
    assert [p.kind for p in qc.problems] == ["transitional"]
    assert qc.fields["qc_transitional_anatomy"] == "L6"
    # T13: thirteen thoracic vertebrae, the lumbar ones renumbered one up
    t13 = data.copy()
    t13[data == VALUE["L1"]] = 28
    for lv, up in (("L2", "L1"), ("L3", "L2"), ("L4", "L3"), ("L5", "L4")):
        t13[data == VALUE[lv]] = VALUE[up]
    qc = check_labels(sl.load(path).with_data(t13), VERSE, ["L2"])
    assert [p.kind for p in qc.problems] == ["transitional"]
    assert qc.fields["qc_transitional_anatomy"] == "T13"


def test_fail_policy_names_patient_and_file(tmp_path: Path, clean) -> None:
    path, data, i = clean
    gap = np.where(data == VALUE["L2"], 0, data)
    bad = sl.write_labels(tmp_path / "bad.nii.gz", gap, sl.load(path).affine)
    qc = _check(bad, i)
    enforce_label_policy(qc, "warn", patient_id="P0001", file=bad)  # warn: no error
    enforce_label_policy(_check(path, i), "fail", patient_id="P0001", file=path)  # clean
    with pytest.raises(ImageError) as err:
        enforce_label_policy(qc, "fail", patient_id="P0001", file=bad)
    line = str(err.value)
    assert line.startswith(f"patient P0001: file {bad}: label map problems: L2 missing")
    assert "\n" not in line and err.value.exit_code == 2
    with pytest.raises(ValueError):
        enforce_label_policy(qc, "ignore", patient_id="P0001", file=bad)


def test_a_map_without_known_levels_has_no_problems() -> None:
    vol = Volume(np.zeros((5, 5, 5), np.int32), np.eye(4), "labels", Path("x"), "h")
    qc = check_labels(vol, VERSE)
    assert qc.ok and qc.levels == []
