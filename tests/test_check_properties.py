"""Hospital-shaped tables through the input check: never an internal error (issue 22, item 10).

Hypothesis draws the clinical tables and manifests that hospitals export: optional columns
absent, columns renamed, text, dates, decimal commas and units in numeric cells, empty rows,
duplicated IDs, blank IDs, spreadsheet error values, and the Excel ways of writing a CSV (a
byte-order mark, ';' between cells with decimal commas, the Windows code page, empty columns
beside the data). Each is written to a file and checked as `refracture check` and `train` do.
The check must return a report, never raise; every problem of a patient names the patient
and the column; and where the check finds nothing, `train`'s data set assembles (or refuses
with one line naming a config key), so the check and training never disagree on a cell.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from refracture.checks import check_study
from refracture.checks.manifest import check_manifest
from refracture.config import ExtractionConfig, parse_config
from refracture.dataset import assemble
from refracture.errors import InputError
from refracture.study.inputs import read_clinical

CLEAN = {  # what a numeric cell holds when nobody slipped
    "time_days": ["400", "12", "0", "730", "365", "200"], "event": ["0", "1", "2", "0", "1"],
    "age": ["71", "64.5", "", " 80 ", "69,5"], "bmd_tscore": ["-2.5", "-2,7", "", "\u22122.9"],
    "bmi": ["24.1", "27,5", "", "22"], "sex": ["F", "M", ""], "prior_fracture": ["0", "1", ""],
}  # fmt: skip
MESSY = {  # and what slips in
    "time_days": ["-5", "", "abc"], "event": ["3", "", "yes"],
    "age": ["seventy", "2021-03-04", "7", "400", "#N/A", "#DIV/0!", "74 J", "1,234"],
    "bmd_tscore": ["-3.1 SD", "n/a", "04.03.2021", "-12"], "bmi": ["27 kg/m2", "180 cm", "obese"],
    "sex": ["W"], "prior_fracture": ["2", "yes"],
}  # fmt: skip
EXCEL = st.sampled_from(["plain", "bom", "semicolon", "cp1252", "empty_column"])


@st.composite
def clinical_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, dict, str]:
    """A clinical table, the config that declares it, and how it is exported."""
    n = draw(st.integers(1, 14))
    id_column = draw(st.sampled_from(["patient_id", "Fallnummer", "PatID"]))
    ids = [f"P{i + 1}" for i in range(n)]
    for i in draw(st.lists(st.integers(0, n - 1), max_size=2)):  # blank or duplicated IDs
        ids[i] = draw(st.sampled_from(["", " ", "P1", "0042", "P-\u00e4"]))
    table = pd.DataFrame({id_column: ids})
    for col, clean in CLEAN.items():
        cells = clean + MESSY[col] if draw(st.integers(0, 4)) == 0 else clean  # 1 column in 5
        table[col] = draw(st.lists(st.sampled_from(cells), min_size=n, max_size=n))
    if draw(st.booleans()):  # an empty row that a spreadsheet leaves
        table.loc[len(table)] = [""] * table.shape[1]
    renamed = draw(st.sampled_from([None, None, None, "age", "bmi", "event"]))
    if renamed:
        table = table.rename(columns={renamed: renamed.capitalize()})
    dropped = draw(st.sampled_from([None, None, None, "bmd_tscore", "sex", "time_days"]))
    if dropped:
        table = table.drop(columns=dropped)
    raw = {
        "data": {"clinical": "clinical.csv", "id_column": id_column},
        "covariates": {
            "numeric": ["age", "bmd_tscore", "bmi"], "binary": ["prior_fracture"],
            "categorical": {"sex": "F"},
            "roles": draw(st.sampled_from([{}, {"bmi": "bmi", "age": "age"}])),
        },
        "feature_sets": ["clinical"],
        "models": ["cox"],
        "validation": {"bootstrap": 0, "jobs": 1},
        "selection_metric": "cindex_harrell",
    }  # fmt: skip
    return table, raw, draw(EXCEL)


def export(table: pd.DataFrame, path: Path, how: str) -> None:
    """Write ``table`` the way a spreadsheet would."""
    if how == "empty_column":
        table = table.assign(**{"": ""})
    if how == "semicolon":
        table = table.map(lambda v: str(v).replace(".", ","))
        path.write_text(table.to_csv(index=False, sep=";"), encoding="utf-8")
    elif how == "bom":
        path.write_text(table.to_csv(index=False), encoding="utf-8-sig")
    elif how == "cp1252":
        path.write_bytes(table.to_csv(index=False).encode("cp1252", errors="replace"))
    else:
        path.write_text(table.to_csv(index=False), encoding="utf-8")


def assert_named(report) -> None:
    for p in report.problems:
        assert p.problem, p
        if p.patient_id:
            assert p.column, p  # every refusal of a patient names the column
        else:
            assert p.file or p.key, p  # and a whole-file problem its file or config key
        assert "internal error" not in p.problem


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=clinical_tables())
def test_clinical_tables_of_hospital_shapes(case) -> None:
    table, raw, how = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clinical.csv"
        export(table, path, how)
        raw["data"]["clinical"] = str(path)
        cfg = parse_config(raw)
        report = check_study(cfg, headers=False)  # never raises
        assert_named(report)
        event("refused by the check" if report.problems else "passed the check")
        if report.problems:
            return
        try:  # the check passed: training reads every cell the same way
            assemble(read_clinical(cfg), None, cfg, clinical_source=path)
        except InputError as err:
            assert err.key is not None, err.one_line()  # only a data-set-level refusal
            event("refused by the data set")


MANIFEST_CELLS = {
    "treated_levels": ["L1", "T12;L1", "", "X7", "l2", "L1;;L2"],
    "pdff_units": ["", "percent", "%", "furlongs", "auto"],
    "field_strength_t": ["", "1.5", "3T", "three"],
}


@st.composite
def manifests(draw: st.DrawFn, images: list[dict]) -> tuple[pd.DataFrame, str]:
    n = draw(st.integers(1, 6))
    rows = []
    for _ in range(n):
        base = dict(draw(st.sampled_from(images)))
        base["patient_id"] = draw(st.sampled_from(["A", "B", "C", "", " D "]))
        base["site"] = draw(st.sampled_from(["s1", "", "s2"]))
        for col in ("pdff", "r2star", "labels"):
            base[col] = draw(st.sampled_from([base[col], base[col], "", "missing.nii.gz",
                                              images[0]["labels"]]))  # fmt: skip
        for col, cells in MANIFEST_CELLS.items():
            base[col] = draw(st.sampled_from(cells))
        rows.append(base)
    table = pd.DataFrame(rows)
    dropped = draw(st.sampled_from([None, "treated_levels", "site", "labels", "pdff_units"]))
    if dropped:
        table = table.drop(columns=dropped)
    if draw(st.booleans()):
        table.loc[len(table)] = [""] * table.shape[1]
    return table, draw(EXCEL)


@pytest.fixture(scope="module")
def images(synth_nifti: Path) -> list[dict]:
    man = pd.read_csv(synth_nifti / "manifest.csv", dtype=str)
    return [
        {c: str(synth_nifti / row[c]) for c in ("pdff", "r2star", "labels")}
        for _, row in man.head(3).iterrows()
    ]


def test_manifests_of_hospital_shapes(images: list[dict]) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=manifests(images))
    def check(case) -> None:
        table, how = case
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.csv"
            export(table, path, how)
            report = check_manifest(path, ExtractionConfig())  # never raises
            assert_named(report)
            ids = {p.patient_id for p in report.problems}
            assert "" not in ids or any(not p.patient_id for p in report.problems)

    check()


def test_an_excel_export_reads_like_the_plain_csv(tmp_path: Path) -> None:
    """';' with decimal commas, a byte-order mark, an empty row and an empty column: the same
    numbers, the same patients, the same CSV line numbers in messages."""
    table = pd.DataFrame({"patient_id": ["P1", "", "P3"], "age": ["71.5", "", "abc"]})
    table.loc[1, "patient_id"] = ""  # an empty row between the patients
    table = table.assign(**{"": ""})
    text = table.to_csv(index=False, sep=";").replace("71.5", "71,5")
    (tmp_path / "c.csv").write_text(text, encoding="utf-8-sig")
    raw = {"data": {"clinical": str(tmp_path / "c.csv")}, "feature_sets": ["clinical"],
           "covariates": {"numeric": ["age"]}}  # fmt: skip
    report = check_study(parse_config(raw), headers=False)
    ages = [p for p in report.problems if p.column == "age"]
    assert [(p.patient_id, p.value) for p in ages] == [("P3", "abc")]
    assert "'71,5' -> 71.5 (decimal comma)" in " ".join(report.notes)
    clinical = report.tables["clinical"]
    assert clinical["patient_id"].tolist() == ["P1", "P3"]
    assert np.asarray(clinical.index).tolist() == [0, 2]  # CSV lines 2 and 4
