"""`refracture check` and the rules under it (issue 22, items 1-4).

A study the way a hospital hands it over (its own column names, a few data-entry mistakes, a
broken image): every problem must be found at once, in seconds, before any extraction, named
by patient, file and column; `train` must refuse the same list and leave nothing behind.
The cell reader and the covariate meanings are checked on the values hospitals write.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from refracture.cells import read_number
from refracture.checks import CHECK_COLUMNS, check_study
from refracture.cli import app
from refracture.config import ConfigError, load_config, parse_config
from refracture.dataset import scanner_columns
from refracture.meanings import recognise

runner = CliRunner()

STUDY = """\
data:
  manifest: {root}/manifest.csv
  clinical: {root}/clinical.csv
  cache_dir: {root}/cache
covariates:
  numeric: [age, bmd_tscore]
  binary: [prior_fracture]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
models: [cox]
validation:
  bootstrap: 2
  jobs: 1
mlflow:
  tracking_uri: sqlite:///{root}/mlflow.db
"""


@pytest.fixture
def study(synth_nifti: Path, tmp_path: Path) -> Path:
    """The 8-patient synthetic study copied, its manifest pointing at the shared images."""
    man = pd.read_csv(synth_nifti / "manifest.csv", dtype=str)
    for col in ("pdff", "r2star", "labels"):
        man[col] = [str(synth_nifti / p) for p in man[col]]
    man.to_csv(tmp_path / "manifest.csv", index=False)
    shutil.copy(synth_nifti / "clinical.csv", tmp_path / "clinical.csv")
    (tmp_path / "study.yaml").write_text(STUDY.format(root=tmp_path))
    return tmp_path


def break_study(root: Path, synth_nifti: Path) -> None:
    """A hospital's usual mistakes, one of each kind, in the copied study."""
    clin = pd.read_csv(root / "clinical.csv", dtype={"patient_id": str})
    clin["age"] = clin["age"].astype(object)
    clin.loc[0, "age"] = "seventy"  # P0001: text
    clin.loc[1, "age"] = 400  # P0002: out of range
    clin["bmd_tscore"] = clin["bmd_tscore"].astype(object)
    clin.loc[2, "bmd_tscore"] = "2021-03-04"  # P0003: a date
    clin.loc[3, "bmd_tscore"] = "-2,7"  # P0004: a decimal comma (read, a note)
    clin.loc[4, "event"] = 3  # P0005: an unknown outcome code
    clin.loc[5, "prior_fracture"] = 2  # P0006: binary not 0/1
    clin.to_csv(root / "clinical.csv", index=False)
    man = pd.read_csv(root / "manifest.csv", dtype=str)
    man.loc[6, "labels"] = str(root / "gone" / "labels.nii.gz")  # P0007: missing file
    man.loc[7, "treated_levels"] = "X7"  # P0008: unknown level
    flat = root / "flat.nii.gz"  # P0008 too: a 2-D PDFF map
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), flat)
    man.loc[7, "pdff"] = str(flat)
    man.loc[len(man)] = [*man.iloc[0].tolist()[:1], *man.iloc[0].tolist()[1:]]
    man.loc[len(man) - 1, "patient_id"] = "X0099"  # in the manifest only
    man.to_csv(root / "manifest.csv", index=False)


EXPECTED = {  # patient -> (column, words of the problem)
    "P0001": ("age", "must hold numbers; found 'seventy'"),
    "P0002": ("age", "impossible values (400) outside the plausible 18 to 110"),
    "P0003": ("bmd_tscore", "a date, not a number"),
    "P0005": ("event", "must be 0 (censored), 1 (re-fracture) or 2 (death); found 3"),
    "P0006": ("prior_fracture", "must be 0 or 1; found 2"),
    "P0007": ("labels", "labels image not found"),
    "X0099": ("patient_id", "in the manifest but not in the clinical table"),
}


def test_check_lists_every_problem_at_once(study: Path, synth_nifti: Path) -> None:
    break_study(study, synth_nifti)
    res = runner.invoke(app, ["check", "--config", str(study / "study.yaml"), "--out",
                              str(study / "check.csv")])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output
    table = pd.read_csv(study / "check.csv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == CHECK_COLUMNS
    for pid, (column, words) in EXPECTED.items():
        rows = table[(table["patient_id"] == pid) & (table["column"] == column)]
        assert len(rows) == 1, (pid, column, table)
        assert words in rows["problem"].iloc[0], rows["problem"].iloc[0]
        assert rows["what_to_do"].iloc[0], pid
    p8 = table[table["patient_id"] == "P0008"]
    assert {"treated_levels", "pdff"} <= set(p8["column"]), p8
    assert "a 3-D volume is expected" in " ".join(p8["problem"])
    assert not (table["patient_id"] == "P0004").any()  # '-2,7' is read as -2.7 ...
    assert "'-2,7' -> -2.7 (decimal comma)" in res.output  # ... and said
    for pid in EXPECTED:
        assert pid in res.output  # the terminal shows the same table


def test_train_refuses_with_the_whole_list_and_leaves_nothing(
    study: Path, synth_nifti: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(study)
    break_study(study, synth_nifti)
    res = runner.invoke(app, ["train", "--config", str(study / "study.yaml")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "problems in the inputs of" in last
    assert "data.exclude or train --exclude-invalid" in last
    for pid in EXPECTED:
        assert pid in res.output
    listed = pd.read_csv(study / "refracture-runs" / "check.csv", dtype=str)
    assert set(EXPECTED) <= set(listed["patient_id"])
    # refused before any work: nothing measured, no MLflow store, no run folder
    assert not (study / "mlflow.db").exists()
    assert not any((study / "cache").glob("*")) if (study / "cache").exists() else True
    assert [p.name for p in (study / "refracture-runs").iterdir()] == ["check.csv"]


def test_a_clean_study_passes_and_the_check_imports_nothing_heavy(study: Path) -> None:
    code = (
        "import sys\nfrom refracture.cli import main\nsys.argv = ['refracture', 'check', "
        f"'--config', {str(study / 'study.yaml')!r}, '--out', {str(study / 'c.csv')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "heavy = [m for m in ('mlflow', 'sksurv', 'matplotlib', 'lifelines', 'sklearn') "
        "if m in sys.modules]\nprint('HEAVY', heavy, 'CODE', code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=study, timeout=120)  # fmt: skip
    assert "HEAVY [] CODE 0" in done.stdout, done.stdout + done.stderr
    assert "checked 8 clinical rows, 8 manifest rows, 24 image headers" in done.stdout
    assert "no problem" in done.stdout
    assert pd.read_csv(study / "c.csv").empty


def test_exclusions_silence_a_patient_and_a_typo_in_them_is_a_problem(study: Path) -> None:
    clin = pd.read_csv(study / "clinical.csv", dtype={"patient_id": str})
    clin.loc[1, "age"] = 400
    clin.to_csv(study / "clinical.csv", index=False)
    raw = yaml.safe_load((study / "study.yaml").read_text())
    raw["data"]["exclude"] = {"P0002": "age not recorded correctly", "P9999": "typo"}
    report = check_study(parse_config(raw), headers=False)
    assert [(p.column, p.value) for p in report.problems] == [("data.exclude", "P9999")]
    assert report.excluded == {"P0002": "excluded on purpose: age not recorded correctly"}


def test_usage_errors_exit_2(study: Path) -> None:
    res = runner.invoke(app, ["check", "--config", str(study / "nope.yaml")])
    assert res.exit_code == 2 and "config file not found" in res.output
    res = runner.invoke(app, ["check", "--config", str(study / "study.yaml"), "--manifest",
                              str(study / "nope.csv")])  # fmt: skip
    assert res.exit_code == 2 and "manifest not found" in res.output


def test_every_wrong_config_key_is_a_row(study: Path) -> None:
    text = (study / "study.yaml").read_text()
    text = text.replace("models: [cox]", "models: [cox, forest]").replace(
        "  bootstrap: 2", "  boostrap: 2"
    )
    (study / "study.yaml").write_text(text)
    report = check_study(study / "study.yaml")
    keys = {p.column for p in report.problems}
    assert {"models.1", "validation.boostrap"} <= keys, keys
    assert all(p.key and not p.patient_id for p in report.problems)


# --- the cell reader, the meanings, the config's new keys ---------------------------------------


@pytest.mark.parametrize(
    ("cell", "units", "value", "said"),
    [
        ("-2,7", (), -2.7, "decimal comma"),
        ("\u22122.5", (), -2.5, ""),  # a typographic minus
        ("27 kg/m2", ("kg/m2",), 27.0, "unit 'kg/m2' dropped"),
        ("27,5 kg/m²", ("kg/m2",), 27.5, "decimal comma, unit 'kg/m²' dropped"),
        ("74 J", ("y", "j", "jahre"), 74.0, "unit 'J' dropped"),
        (" 12 ", (), 12.0, ""),
        ("", (), math.nan, ""),
    ],
)
def test_cells_hospitals_write_are_read(cell: str, units, value: float, said: str) -> None:
    got = read_number(cell, units)
    assert (math.isnan(got.value) and math.isnan(value)) or got.value == value
    assert got.conversion == said and not got.problem


@pytest.mark.parametrize(
    ("cell", "units", "why"),
    [
        ("2021-03-04", (), "a date"),
        ("04.03.2021", (), "a date"),
        ("1,234", (), "cannot tell which"),
        ("180 cm", ("kg/m2",), "the unit 'cm' (this column's unit is kg/m2)"),
        ("27 kg/m2", (), "a number with the unit 'kg/m2'"),
        ("#DIV/0!", (), "spreadsheet error"),
        ("inf", (), "infinite"),
        ("seventy", (), "text"),
    ],
)
def test_cells_that_are_not_numbers_say_why(cell: str, units, why: str) -> None:
    got = read_number(cell, units)
    assert math.isnan(got.value) and why in got.problem, got


@pytest.mark.parametrize(
    ("name", "role"),
    [("Alter", "age"), ("edad", "age"), ("Âge (ans)", "age"), ("IMC", "bmi"),
     ("BMI (kg/m²)", "bmi"), ("T-Wert", "tscore"), ("bmd_tscore", "tscore"),
     ("Zementvolumen_ml", "cement_volume"), ("Geschlecht", "sex"), ("n_fractured", "n_fractured")],
)  # fmt: skip
def test_meanings_are_recognised_in_the_languages_tables_use(name: str, role: str) -> None:
    m = recognise(name)
    assert m is not None and m.role == role, (name, m)


def test_a_meaning_needs_values_that_fit_it() -> None:
    ages = np.array([60.0, 70, 80, 65, 75, 85, 62, 72, 82, 68, 7])
    assert recognise("age", ages) is not None  # one typo in eleven: still an age
    assert recognise("age", np.array([700.0, 800, 900])) is None  # months, or not an age
    assert recognise("age_months", None) is None
    assert recognise("prior_fracture", None) is None


def test_roles_give_study_columns_their_ranges_and_a_required_edit_is_refused(
    tmp_path: Path,
) -> None:
    raw = {
        "data": {"clinical": "c.csv", "exclude": {42: None}},
        "covariates": {"numeric": ["Alter"], "roles": {"age": "Alter"}, "ranges": {"x": [0, 1]}},
        "feature_sets": ["clinical"],
    }
    cfg = parse_config(raw)
    assert cfg.covariates.plausible_ranges == {"Alter": (18.0, 110.0), "x": (0.0, 1.0)}
    assert cfg.data.exclude == {"42": ""}  # IDs stay text
    raw["covariates"]["roles"] = {"weight_kg": "Gewicht"}
    with pytest.raises(ConfigError, match="roles.weight_kg.*Input should be 'age', 'sex'"):
        parse_config(raw)
    raw["covariates"]["roles"] = {}
    raw["outcome"] = {"event": "REQUIRED-EDIT: the re-fracture column: a or b?"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "config key 'outcome.event': a required edit is not made yet" in str(err.value)
    assert "a or b?" in str(err.value)


def test_scanner_columns_of_a_manifest_with_only_the_required_columns() -> None:
    """The crash of the issue: `zip() argument 2 is shorter than argument 1`."""
    features = pd.DataFrame({"patient_id": ["A", "B"], "pdff_mean_normal": [40.0, 50.0]})
    manifest = pd.DataFrame(
        {"patient_id": ["A", "B"], "site": ["s", "s"], "pdff": ["a", "b"], "r2star": ["a", "b"],
         "labels": ["a", "b"]}
    )  # fmt: skip
    got = scanner_columns(features, manifest)
    assert list(got.columns) == ["scanner_field_strength_t", "scanner_vendor", "scanner_id"]
    assert got["scanner_vendor"].tolist() == ["", ""]


def test_check_csv_is_json_safe_text(study: Path) -> None:
    """check.csv is plain text a spreadsheet opens: every cell a string, no NaN."""
    clin = pd.read_csv(study / "clinical.csv", dtype={"patient_id": str})
    clin.loc[0, "time_days"] = None
    clin.to_csv(study / "clinical.csv", index=False)
    report = check_study(study / "study.yaml", headers=False)
    rows = [p.row() for p in report.problems]
    assert rows and json.loads(json.dumps(rows)) == rows
    assert rows[0]["patient_id"] == "P0001" and "found nothing" in rows[0]["problem"]


def test_a_pseudonymised_train_refuses_without_the_sites_ids(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refracture.privacy import Pseudonymiser

    monkeypatch.chdir(study)
    monkeypatch.setenv("REFRACTURE_PSEUDONYM_KEY", "a long secret kept at the site")
    clin = pd.read_csv(study / "clinical.csv", dtype={"patient_id": str})
    clin.loc[1, "age"] = 400
    clin.loc[2, "age"] = "seventy"
    clin.to_csv(study / "clinical.csv", index=False)
    res = runner.invoke(app, ["train", "--config", str(study / "study.yaml"), "--pseudonymise"])
    assert res.exit_code == 2, res.output
    listed = (study / "refracture-runs" / "check.csv").read_text()
    hidden = Pseudonymiser(b"a long secret kept at the site")
    for pid in ("P0002", "P0003"):
        assert pid not in listed and pid not in res.output
        assert hidden(pid) in listed
