"""`refracture init` never guesses silently (issue 22, items 3 and 4).

Clinical tables the way hospitals keep them: separate 0/1 columns for re-fracture and death,
a 0/1/2 event next to a death column, names that cannot tell, German column names, a date, a
unit and a decimal comma in numeric columns, an age of 7. The draft must pick re-fracture as
the event by meaning, explain every candidate, list every odd cell with its row, write ranges
by meaning, and leave a required edit that `check` and `train` refuse when it cannot tell.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from refracture.cli import app
from refracture.config import load_config
from refracture.synth.cohort import simulate_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    """60 patients of the synthetic study (re-fractures and deaths), no images."""
    return simulate_cohort(60, 2, 4).clinical


def hospital_table(c: pd.DataFrame) -> pd.DataFrame:
    """The study in a German hospital's own words, with four typical mistakes."""
    h = pd.DataFrame({
        "Fallnummer": c["patient_id"], "Alter": c["age"].round(0).astype(object),
        "Geschlecht": c["sex"], "IMC": c["bmi"].round(1).astype(object),
        "T_Wert": c["bmd_tscore"].round(1).astype(object), "Vorfraktur": c["prior_fracture"],
        "fu_tage": c["time_days"], "Refraktur": (c["event"] == 1).astype(int),
        "verstorben": (c["event"] == 2).astype(int),
    })  # fmt: skip
    h.loc[3, "Alter"] = 7  # a typo
    h.loc[8, "Alter"] = "2021-03-04"  # a date in the age column
    h.loc[5, "IMC"] = "27 kg/m2"  # the unit written in the cell
    h.loc[6, "T_Wert"] = "-2,7"  # a decimal comma
    return h


def init(folder: Path, table: pd.DataFrame, *args: str) -> tuple[str, Path]:
    table.to_csv(folder / "clinical.csv", index=False)
    out = folder / "study.yaml"
    res = runner.invoke(app, ["init", "--clinical", str(folder / "clinical.csv"), "--out",
                              str(out), *args])  # fmt: skip
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split()), out


def test_separate_re_fracture_and_death_columns_are_combined(
    synthetic: pd.DataFrame, tmp_path: Path
) -> None:
    table = hospital_table(synthetic)
    output, path = init(tmp_path, table)
    cfg = load_config(path)
    assert (cfg.outcome.event, cfg.outcome.death) == ("Refraktur", "verstorben")
    assert cfg.data.id_column == "Fallnummer"
    assert "Vorfraktur" in cfg.covariates.binary  # a prior fracture is a covariate, not the event
    assert cfg.covariates.roles == {"age": "Alter", "sex": "Geschlecht", "bmi": "IMC",
                                    "tscore": "T_Wert"}  # fmt: skip
    assert cfg.covariates.ranges == {"Alter": (18, 110), "IMC": (10, 70), "T_Wert": (-8, 4)}
    assert set(cfg.covariates.numeric) == {"Alter", "IMC", "T_Wert"}  # none left out
    text = " ".join(line.strip(" #") for line in path.read_text().splitlines())  # unwrapped
    for said in (
        "line 10 (P0009): '2021-03-04' is a date, not a number: check and train refuse it",
        "line 5 (P0004): 7 is outside the plausible 18 to 110",
        "line 7 (P0006): '27 kg/m2' is read as 27 (unit 'kg/m2' dropped)",
        "line 8 (P0007): '-2,7' is read as -2.7 (decimal comma)",
        "Refraktur: named like a re-fracture, codes 0/1",
        "verstorben: named like death, codes 0/1",
        "0 censored, 1 re-fracture, 2 death before re-fracture",
    ):
        assert said in text, said
    assert "death: verstorben (combined with the event into 0/1/2)" in output
    # the outcome the config describes is the synthetic study's own 0/1/2 event
    from refracture.dataset import assemble
    from refracture.study.inputs import read_clinical

    clinical = read_clinical(cfg)
    keep = ~clinical["patient_id"].isin(["P0004", "P0009"])
    ds = assemble(clinical[keep], None, cfg)
    truth = synthetic.set_index("patient_id").loc[ds.ids, "event"].to_numpy()
    assert (ds.y["event"] == truth).all() and (truth == 2).any()

    # check and train refuse the two cells, naming patient and column; nothing else
    res = runner.invoke(app, ["check", "--config", str(path), "--out",
                              str(tmp_path / "check.csv")])  # fmt: skip
    assert res.exit_code == 1, res.output
    listed = pd.read_csv(tmp_path / "check.csv", dtype=str)
    assert sorted(zip(listed["patient_id"], listed["column"], strict=True)) == [
        ("P0004", "Alter"), ("P0009", "Alter")]  # fmt: skip


def test_a_0_1_2_event_is_taken_over_a_death_column(
    synthetic: pd.DataFrame, tmp_path: Path
) -> None:
    table = synthetic.assign(died=(synthetic["event"] == 2).astype(int))
    table = table.rename(columns={"event": "status"})
    _, path = init(tmp_path, table)
    cfg = load_config(path)
    assert (cfg.outcome.event, cfg.outcome.death) == ("status", None)
    assert "died" not in cfg.covariates.names
    assert "#   died: looks like another outcome column" in path.read_text()


def test_when_the_names_cannot_tell_the_choice_is_a_required_edit(
    synthetic: pd.DataFrame, tmp_path: Path
) -> None:
    table = synthetic.assign(
        status_a=(synthetic["event"] == 1).astype(int),
        status_b=(synthetic["age"] > 75).astype(int),
        death=(synthetic["event"] == 2).astype(int),
    ).drop(columns="event")
    output, path = init(tmp_path, table)
    raw = yaml.safe_load(path.read_text())
    assert raw["outcome"]["event"].startswith("REQUIRED-EDIT: the re-fracture column (0/1)")
    assert "status_a or status_b" in raw["outcome"]["event"]
    assert raw["outcome"]["death"] == "death"
    assert "the event is a required edit" in output
    res = runner.invoke(app, ["check", "--config", str(path), "--out",
                              str(tmp_path / "check.csv")])  # fmt: skip
    assert res.exit_code == 1, res.output
    listed = pd.read_csv(tmp_path / "check.csv", dtype=str)
    assert listed["column"].tolist() == ["config key 'outcome.event'"]
    res = runner.invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 2
    assert "config key 'outcome.event': a required edit is not made yet" in res.output
    # the edit made: the draft trains as written
    path.write_text(path.read_text().replace(raw["outcome"]["event"], "status_a"))
    assert load_config(path).outcome.event == "status_a"


def test_a_lone_death_column_is_the_event_but_said_loudly(
    synthetic: pd.DataFrame, tmp_path: Path
) -> None:
    table = synthetic.assign(death=(synthetic["event"] > 0).astype(int)).drop(columns="event")
    _, path = init(tmp_path, table)
    assert load_config(path).outcome.event == "death"
    assert "is named like death, yet it is the only outcome column" in " ".join(
        line.strip("# ") for line in path.read_text().splitlines()
    )
