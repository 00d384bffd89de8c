"""The catalogue of bad inputs (issue 8, item 1; docs/errors.md), one test per case, at the
command line.

Each test runs the command a user would type, on tiny real files, and checks what the user
sees: the exit code (2 for an input error that stops the command; 1 for a batch command where
one patient's input is bad and the others are written), the one-line message naming the
patient, the file or the config key, no traceback, and a traceback with ``--debug``. The
lower-level behaviour behind each message is tested in test_imaging_io.py,
test_extract_cases.py, test_data.py and test_score.py; these tests only check what reaches
the terminal.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from refracture.cli import app
from test_imaging_helpers import (
    affine_for,
    spine,
    write_dicom_series,
    write_manifest,
    write_nifti,
    write_patient,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults relative to the working folder (.refracture-cache, mlflow.db) stay in tmp_path.
    monkeypatch.chdir(tmp_path)


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def message_lines(output: str) -> list[str]:
    """The lines a user reads (blank lines left out)."""
    return [line for line in output.splitlines() if line.strip()]


def is_progress_bar(line: str) -> bool:
    return "━" in line or "-:--:--" in line


def assert_input_error(
    args: list[str | Path], *names: str, says: str, after_progress: bool = False
) -> str:
    """The command stops with exit code 2 and one line naming ``names``; returns the line.

    Nothing else is printed, except (``after_progress``) the progress bars of the stages that
    ran before the error. The same command with ``--debug`` prints the traceback before the
    same line.
    """
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = message_lines(res.output)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.output
    line = errors[0]
    # No second line of the message, no warning or log line from a library.
    others = lines[:-1]
    assert all(is_progress_bar(o) for o in others) if after_progress else not others, res.output
    for name in names:
        assert name in line, line
    assert re.search(says, line), line
    print(line)  # shown with -s: the messages quoted in docs/errors.md come from here

    debug = invoke("--debug", *args)
    assert debug.exit_code == 2, debug.output
    assert "Traceback" in debug.output
    assert message_lines(debug.output)[-1] == line
    return line


# --- images: one bad patient in a batch of two -------------------------------------------------


def extract_batch(
    root: Path, bad: dict, *, config: str | None = None, ok: bool = True
) -> tuple[Result, Path]:
    """`refracture extract` on the patient ``bad`` plus a good patient OK."""
    rows = [bad, write_patient(root, "OK")] if ok else [bad]
    manifest = write_manifest(root, rows)
    out = root / "out"
    args: list[str | Path] = ["extract", "--manifest", manifest, "--out", out]
    args += ["--jobs", "1", "--no-cache"]
    if config is not None:
        (root / "config.yaml").write_text(config)
        args += ["--config", root / "config.yaml"]
    return invoke(*args), out


def assert_patient_error(
    root: Path, bad: dict, stage: str, file: str, says: str, *, config: str | None = None
) -> str:
    """One bad patient: exit code 1, an errors.csv row and a printed line naming the patient
    and the file; the good patient is written. Returns the message."""
    res, out = extract_batch(root, bad, config=config)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    pid = bad["patient_id"]
    errors = pd.read_csv(out / "errors.csv")
    assert errors["patient_id"].tolist() == [pid]
    assert errors.loc[0, "stage"] == stage
    msg = errors.loc[0, "message"]
    assert msg.startswith(f"patient {pid}: file "), msg
    assert Path(msg.split(": ")[1].removeprefix("file ")).name == file, msg
    assert re.search(says, msg), msg
    assert f"failed ({stage}) {msg}" in message_lines(res.output), res.output
    assert "1 failed" in res.output
    assert pd.read_parquet(out / "features.parquet")["patient_id"].tolist() == ["OK"]
    print(msg)
    return msg


def test_missing_image_file(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    (tmp_path / bad["pdff"]).unlink()
    assert_patient_error(tmp_path, bad, "load", "pdff.nii.gz", "pdff image not found")


def test_empty_nifti(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    (tmp_path / bad["r2star"]).write_bytes(b"")
    assert_patient_error(tmp_path, bad, "load", "r2star.nii.gz", "the file is empty")


def test_truncated_nifti(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    path = tmp_path / bad["pdff"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_patient_error(
        tmp_path, bad, "load", "pdff.nii.gz", "NIfTI voxel data cannot be read|not a readable"
    )


def test_corrupt_nifti(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    garbage = gzip.compress(np.random.default_rng(0).bytes(5000))
    (tmp_path / bad["labels"]).write_bytes(garbage)
    assert_patient_error(tmp_path, bad, "load", "labels.nii.gz", "not a readable NIfTI file")


def dicom_patient(root: Path, pid: str = "B1", **kwargs) -> dict:
    """A patient whose PDFF map is a DICOM series folder (the other maps NIfTI)."""
    row = write_patient(root, pid)
    p, _, _ = spine()
    write_dicom_series(root / "images" / pid / "pdff_dicom", p, **kwargs)
    return {**row, "pdff": f"images/{pid}/pdff_dicom"}


def test_corrupt_dicom_file(tmp_path: Path) -> None:
    bad = dicom_patient(tmp_path)
    sorted((tmp_path / bad["pdff"]).iterdir())[3].write_bytes(b"\0" * 50)
    msg = assert_patient_error(tmp_path, bad, "load", "pdff_dicom", "not a readable DICOM file")
    assert "IM0004.dcm" in msg


def test_truncated_dicom_file(tmp_path: Path) -> None:
    bad = dicom_patient(tmp_path)
    victim = sorted((tmp_path / bad["pdff"]).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-200])
    msg = assert_patient_error(
        tmp_path, bad, "load", "pdff_dicom", "DICOM pixel data cannot be read"
    )
    assert "IM0004.dcm" in msg


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    bad = dicom_patient(tmp_path, description="FatFrac")
    _, r, _ = spine()
    other = write_dicom_series(tmp_path / "other", r, description="R2*")
    for f in other.iterdir():
        f.rename(tmp_path / bad["pdff"] / f"X{f.name}")
    assert_patient_error(tmp_path, bad, "load", "pdff_dicom", "holds 2 series")


def test_dicom_folder_with_missing_slices(tmp_path: Path) -> None:
    bad = dicom_patient(tmp_path, skip_slices=(5,))
    assert_patient_error(tmp_path, bad, "load", "pdff_dicom", "missing slices")


def test_2d_map(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    p, _, _ = spine()
    write_nifti(tmp_path / bad["pdff"], p[:, :, 5], dtype=np.float32)
    assert_patient_error(tmp_path, bad, "load", "pdff.nii.gz", "is 2-D .*a 3-D volume is expected")


def test_4d_map(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1")
    _, r, _ = spine()
    write_nifti(tmp_path / bad["r2star"], np.stack([r, r], axis=-1), dtype=np.float32)
    assert_patient_error(tmp_path, bad, "load", "r2star.nii.gz", "is 4-D .*select one volume")


def test_mostly_nonfinite_map(tmp_path: Path) -> None:
    p, r, lab = spine()
    r[lab > 0] = np.nan
    r[(lab > 0) & (np.indices(lab.shape)[0] % 2 == 0)] = np.inf
    bad = write_patient(tmp_path, "B1", r2star=r)
    assert_patient_error(tmp_path, bad, "roi", "r2star.nii.gz", "are NaN or infinite")


def test_a_few_nonfinite_voxels_are_dropped_and_counted(tmp_path: Path) -> None:
    p, r, lab = spine()
    inside = np.argwhere(lab > 0)[::97][:6]
    p[tuple(inside[:3].T)] = np.nan
    p[tuple(inside[3:].T)] = np.inf
    row = write_patient(tmp_path, "B1", pdff=p)
    res, out = extract_batch(tmp_path, row, ok=False)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and not (out / "errors.csv").exists()
    qc = pd.read_csv(out / "qc.csv")
    # eroded ROIs keep only some of the six voxels; none of them reaches a statistic
    assert 0 < qc.loc[0, "qc_nonfinite_voxels"] <= 6
    assert np.isfinite(pd.read_parquet(out / "features.parquet")["pdff_mean_normal"]).all()


def shifted_labels(root: Path, shift_mm: float) -> dict:
    bad = write_patient(root, "B1")
    _, _, lab = spine()
    moved = affine_for(origin=(10.0 + shift_mm, -20.0, 30.0))
    write_nifti(root / bad["labels"], lab, affine=moved, dtype=np.int16)
    return bad


def test_label_map_on_another_grid_without_resampling(tmp_path: Path) -> None:
    bad = shifted_labels(tmp_path, 1.0)
    msg = assert_patient_error(
        tmp_path,
        bad,
        "geometry",
        "labels.nii.gz",
        "label map is on another grid than the pdff map",
        config="extraction:\n  allow_resample: false\n",
    )
    assert "extraction.allow_resample" in msg


def test_label_map_on_another_grid_is_resampled_and_flagged(tmp_path: Path) -> None:
    res, out = extract_batch(tmp_path, shifted_labels(tmp_path, 1.0), ok=False)
    assert res.exit_code == 0, res.output
    assert bool(pd.read_csv(out / "qc.csv").loc[0, "qc_labels_resampled"])


def test_label_map_that_does_not_overlap_the_maps(tmp_path: Path) -> None:
    bad = shifted_labels(tmp_path, 5000.0)
    assert_patient_error(tmp_path, bad, "geometry", "labels.nii.gz", "do not overlap in space")


def test_label_map_with_no_known_vertebra(tmp_path: Path) -> None:
    _, _, lab = spine()
    bad = write_patient(tmp_path, "B1", labels=np.where(lab > 0, 99, 0).astype(np.int16))
    msg = assert_patient_error(
        tmp_path, bad, "roi", "labels.nii.gz", "holds no vertebra known to the 'verse'"
    )
    assert "label values found: 99" in msg and "extraction.label_convention" in msg


def test_label_map_missing_a_treated_level(tmp_path: Path) -> None:
    bad = write_patient(tmp_path, "B1", treated="T12")
    assert_patient_error(
        tmp_path, bad, "roi", "labels.nii.gz", "names T12 as treated but the label map has no"
    )


def test_label_map_with_non_integer_labels(tmp_path: Path) -> None:
    _, _, lab = spine()
    bad = write_patient(tmp_path, "B1")
    write_nifti(tmp_path / bad["labels"], lab + 0.5, dtype=np.float32)
    assert_patient_error(tmp_path, bad, "load", "labels.nii.gz", "non-integer values")


def test_pdff_in_unknown_units(tmp_path: Path) -> None:
    # units are decided once per site: the patient's site (here it alone) is refused
    p, _, _ = spine(pdff={lv: 3.0 for lv in ("L1", "L2", "L3")})
    bad = write_patient(tmp_path, "B1", pdff=p, site="hospital_B")
    msg = assert_patient_error(
        tmp_path, bad, "units", "pdff.nii.gz", "site hospital_B: cannot tell the PDFF unit"
    )
    assert "extraction.pdff_units" in msg and "pdff_units" in msg


def test_empty_dicom_folder(tmp_path: Path) -> None:
    bad = {**write_patient(tmp_path, "B1"), "pdff": "images/B1/pdff_dicom"}
    (tmp_path / bad["pdff"]).mkdir()
    assert_patient_error(tmp_path, bad, "load", "pdff_dicom", "the DICOM folder is empty")


def test_r2star_in_unknown_units(tmp_path: Path) -> None:
    _, r, _ = spine(r2star={lv: 30.0 for lv in ("L1", "L2", "L3")})
    bad = write_patient(tmp_path, "B1", r2star=r, site="hospital_B")
    msg = assert_patient_error(
        tmp_path, bad, "units", "r2star.nii.gz", "site hospital_B: cannot tell the R2\\* unit"
    )
    assert "extraction.r2star_units" in msg


# --- the manifest -------------------------------------------------------------------------------


def extract_args(manifest: Path, root: Path) -> list[str | Path]:
    return ["extract", "--manifest", manifest, "--out", root / "out", "--no-cache"]


@pytest.fixture
def manifest_rows(tmp_path: Path) -> list[dict]:
    return [write_patient(tmp_path, "M1"), write_patient(tmp_path, "M2")]


def test_manifest_not_found(tmp_path: Path) -> None:
    assert_input_error(
        extract_args(tmp_path / "nope.csv", tmp_path), "nope.csv", says="manifest not found"
    )


def test_manifest_empty_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("")
    assert_input_error(
        extract_args(tmp_path / "manifest.csv", tmp_path),
        "manifest.csv",
        says="cannot read the manifest",
    )


def test_manifest_missing_columns(tmp_path: Path, manifest_rows: list[dict]) -> None:
    rows = [{k: v for k, v in r.items() if k not in ("labels", "site")} for r in manifest_rows]
    manifest = write_manifest(tmp_path, rows)
    assert_input_error(
        extract_args(manifest, tmp_path),
        "manifest.csv",
        "site, labels",
        says="manifest is missing the column",
    )


def test_manifest_duplicate_patient_id(tmp_path: Path, manifest_rows: list[dict]) -> None:
    manifest = write_manifest(tmp_path, [*manifest_rows, manifest_rows[0]])
    assert_input_error(
        extract_args(manifest, tmp_path),
        "manifest.csv",
        "M1 (lines 2, 4)",
        says="duplicate patient_id",
    )


def test_manifest_empty_patient_id(tmp_path: Path, manifest_rows: list[dict]) -> None:
    manifest = write_manifest(tmp_path, [manifest_rows[0], {**manifest_rows[1], "patient_id": ""}])
    assert_input_error(
        extract_args(manifest, tmp_path), "manifest.csv", "line(s) 3", says="empty patient_id"
    )


def test_manifest_unknown_level_name(tmp_path: Path, manifest_rows: list[dict]) -> None:
    rows = [{**manifest_rows[0], "treated_levels": "L1;X7"}, manifest_rows[1]]
    manifest = write_manifest(tmp_path, rows)
    assert_input_error(
        extract_args(manifest, tmp_path),
        "manifest.csv",
        "line 2 treated_levels: X7",
        says="unknown vertebral levels",
    )


def test_manifest_path_that_does_not_exist(tmp_path: Path) -> None:
    bad = {**write_patient(tmp_path, "B1"), "labels": "images/B1/lables.nii.gz"}
    assert_patient_error(tmp_path, bad, "load", "lables.nii.gz", "labels image not found")


def test_manifest_without_an_image_path(tmp_path: Path) -> None:
    bad = {**write_patient(tmp_path, "B1"), "r2star": ""}
    res, out = extract_batch(tmp_path, bad)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    msg = pd.read_csv(out / "errors.csv").loc[0, "message"]
    assert msg == "patient B1: the manifest gives no r2star image"
    assert f"failed (load) {msg}" in message_lines(res.output)
    print(msg)


# --- the clinical table and the run config: `refracture train` ----------------------------------

CLINICAL_ONLY = """\
data:
  clinical: {clinical}
covariates:
  numeric: [age, bmd_tscore]
  binary: [prior_fracture]
  categorical: {{sex: F}}
models: [cox]
validation:
  bootstrap: 2
  jobs: 1
mlflow:
  tracking_uri: sqlite:///{store}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for every failing `train` of this module: creating a SQLite store
    takes seconds, opening it again a fraction of one."""
    return tmp_path_factory.mktemp("store") / "mlflow.db"


@pytest.fixture
def clinical(synth_nifti: Path) -> pd.DataFrame:
    return pd.read_csv(synth_nifti / "clinical.csv", dtype={"patient_id": str})


def train_args(
    tmp_path: Path, store: Path, table: pd.DataFrame | None = None, config: str = CLINICAL_ONLY
) -> list[str | Path]:
    path = tmp_path / "clinical.csv"
    if table is not None:
        table.to_csv(path, index=False)
    (tmp_path / "run.yaml").write_text(config.format(clinical=path, store=store))
    return ["train", "--config", tmp_path / "run.yaml", "--no-report"]


def test_clinical_table_not_found(tmp_path: Path, store: Path) -> None:
    assert_input_error(train_args(tmp_path, store), "clinical.csv", says="clinical table not found")


def test_clinical_table_unreadable(tmp_path: Path, store: Path) -> None:
    path = tmp_path / "clinical.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    config = CLINICAL_ONLY.replace("{clinical}", str(path))
    assert_input_error(
        train_args(tmp_path, store, config=config),
        "clinical.parquet",
        says="cannot read the clinical table",
    )


def test_clinical_non_numeric_value(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[2, "age"] = "seventy"
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "patient P0003",
        "clinical.csv",
        "'age'",
        says="must hold numbers; found 'seventy'",
    )


def test_clinical_negative_time(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[4, "time_days"] = -12
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "patient P0005",
        "clinical.csv",
        "'time_days'",
        says="must be a number >= 0",
    )


def test_clinical_event_3(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[1, "event"] = 3
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "patient P0002",
        "clinical.csv",
        "'event'",
        says=r"must be 0 \(censored\), 1 \(re-fracture\) or 2 \(death\); found 3",
    )


def test_clinical_age_400(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[3, "age"] = 400
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "patient P0004",
        "clinical.csv",
        "'age'",
        says="impossible values \\(400\\) outside the plausible 18 to 110",
    )


def test_clinical_binary_not_0_or_1(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[0, "prior_fracture"] = 2
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "patient P0001",
        "'prior_fracture'",
        says="must be 0 or 1",
    )


def test_clinical_duplicate_patient_id(tmp_path: Path, store: Path, clinical) -> None:
    table = pd.concat([clinical, clinical.iloc[[5]]])
    assert_input_error(
        train_args(tmp_path, store, table),
        "patient P0006",
        "clinical.csv",
        says="duplicated patient IDs in the clinical table",
    )


def test_clinical_empty_patient_id(tmp_path: Path, store: Path, clinical) -> None:
    clinical.loc[6, "patient_id"] = None
    clinical.loc[7, "patient_id"] = "  "  # blanks are no ID either
    assert_input_error(
        train_args(tmp_path, store, clinical),
        "clinical.csv",
        "CSV lines 8, 9",
        says="rows without a patient_id",
    )


def test_clinical_missing_covariate_column(tmp_path: Path, store: Path, clinical) -> None:
    assert_input_error(
        train_args(tmp_path, store, clinical.drop(columns=["bmd_tscore"])),
        "clinical.csv",
        "config key 'covariates'",
        says="columns missing from the table: bmd_tscore",
    )


def test_clinical_missing_outcome_column(tmp_path: Path, store: Path, clinical) -> None:
    assert_input_error(
        train_args(tmp_path, store, clinical.drop(columns=["event"])),
        "clinical.csv",
        "config key 'outcome.event'",
        says="outcome column 'event' is missing",
    )


def test_train_when_no_patient_images_can_be_found(
    tmp_path: Path, store: Path, synth_nifti: Path, clinical
) -> None:
    """The check finds every missing image before anything is measured, all at once."""
    manifest = pd.read_csv(synth_nifti / "manifest.csv")
    manifest["pdff"] = [str(tmp_path / "gone" / p) for p in manifest["pdff"]]
    for col in ("r2star", "labels"):
        manifest[col] = [str(synth_nifti / p) for p in manifest[col]]
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    data = f"data:\n  manifest: {tmp_path}/manifest.csv\n  cache_dir: {tmp_path}/cache\n"
    config = CLINICAL_ONLY.replace("data:\n", data) + "imaging:\n  features: [pdff_mean_normal]\n"
    config = config.replace("numeric: [age, bmd_tscore]", "numeric: [age]")
    config = config.replace("binary: [prior_fracture]", "binary: []").replace("{{sex: F}}", "{{}}")
    res = invoke(*train_args(tmp_path, store, clinical, config=config))
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    line = message_lines(res.output)[-1]
    assert re.fullmatch(
        r"error: 8 problems in the inputs of 8 patient\(s\): nothing was started for training; "
        r"all listed above and in .*check\.csv; fix them, or leave the patients out with "
        r"data\.exclude or train --exclude-invalid",
        line,
    ), line
    print(line)
    listed = pd.read_csv(store.parent / "refracture-runs" / "check.csv")
    assert listed["patient_id"].tolist() == [f"P000{i}" for i in range(1, 9)]
    assert set(listed["problem"]) == {"pdff image not found"}
    assert not (tmp_path / "cache").exists()  # nothing was measured


def test_clinical_table_with_no_rows(tmp_path: Path, store: Path, clinical) -> None:
    assert_input_error(
        train_args(tmp_path, store, clinical.iloc[:0]),
        "clinical.csv",
        says="^error: file .*: no patients: the clinical table has no rows$",
    )


def test_clinical_table_without_a_re_fracture(tmp_path: Path, store: Path, clinical) -> None:
    table = clinical.assign(event=0)
    assert_input_error(
        train_args(tmp_path, store, table),
        "config key 'outcome.event'",
        says="no re-fracture in the outcome \\(no event 1 among 8 patients: 8 censored\\)",
    )


def test_fewer_events_than_model_parameters(tmp_path: Path, store: Path, clinical) -> None:
    # 8 patients, 3 re-fractures by one year; age, bmd_tscore, prior_fracture, sex: 4 terms
    table = clinical.assign(sex=["F", "M"] * (len(clinical) // 2))  # no single-patient level
    assert_input_error(
        train_args(tmp_path, store, table),
        "config key 'covariates'",
        says="too few events to fit the models: 3 re-fractures by the horizon \\(365\\) for 4 "
        "model parameters \\(feature set 'clinical'",
    )


def test_manifest_with_no_rows(tmp_path: Path, manifest_rows: list[dict]) -> None:
    manifest = write_manifest(tmp_path, manifest_rows)
    header = manifest.read_text().splitlines()[0]
    manifest.write_text(header + "\n")
    assert_input_error(
        extract_args(manifest, tmp_path),
        "manifest.csv",
        says="no patients: the manifest has no rows",
    )
    assert not (tmp_path / "out").exists()


def test_analyse_with_a_clinical_table_with_no_rows(
    tmp_path: Path, synth_nifti: Path, clinical
) -> None:
    clinical.iloc[:0].to_csv(tmp_path / "clinical.csv", index=False)
    (tmp_path / "run.yaml").write_text(
        f"data:\n  manifest: {synth_nifti}/manifest.csv\n  clinical: {tmp_path}/clinical.csv\n"
        "covariates:\n  numeric: [age]\nimaging:\n  features: [pdff_mean_normal]\n"
    )
    assert_input_error(
        [
            "analyse",
            "--config",
            tmp_path / "run.yaml",
            "--out",
            tmp_path / "out",
            "--tscore",
            "bmd_tscore",
        ],
        "clinical.csv",
        says="no patients: the clinical table has no rows",
        after_progress=True,  # the check reads the images' headers
    )


# --- the run config -----------------------------------------------------------------------------


def test_config_not_found(tmp_path: Path) -> None:
    assert_input_error(
        ["train", "--config", tmp_path / "study.yaml"], "study.yaml", says="config file not found"
    )


def test_config_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("data: [clinical: x.csv\n")
    assert_input_error(
        ["train", "--config", tmp_path / "run.yaml"], "run.yaml", says="not valid YAML"
    )


def test_config_unknown_key(tmp_path: Path, store: Path) -> None:
    config = CLINICAL_ONLY.replace("  bootstrap: 2\n", "  bootstrap: 2\n  boostrap_seed: 1\n")
    assert_input_error(
        train_args(tmp_path, store, config=config),
        "run.yaml",
        "config key 'validation.boostrap_seed'",
        says="unknown key",
    )


def test_config_wrong_type(tmp_path: Path, store: Path) -> None:
    config = CLINICAL_ONLY.replace("bootstrap: 2", "bootstrap: many")
    assert_input_error(
        train_args(tmp_path, store, config=config),
        "run.yaml",
        "config key 'validation.bootstrap'",
        says="valid integer",
    )


def test_config_horizon_past_the_follow_up(tmp_path: Path, store: Path, clinical) -> None:
    config = CLINICAL_ONLY + "outcome:\n  horizon_days: 5000\n"
    assert_input_error(
        train_args(tmp_path, store, clinical, config=config),
        "config key 'outcome.horizon_days'",
        says="the horizon \\(5000\\) is beyond the longest follow-up \\(\\d+, in the unit of "
        "'time_days'\\); choose a horizon of at most \\d+",
    )


def test_config_reference_level_absent_from_the_data(tmp_path: Path, store, clinical) -> None:
    config = CLINICAL_ONLY.replace("{{sex: F}}", "{{sex: W}}")
    assert_input_error(
        train_args(tmp_path, store, clinical, config=config),
        "config key 'covariates.categorical.sex'",
        says="reference level 'W' of 'sex' does not occur",
    )


def test_extract_config_with_a_wrong_value(tmp_path: Path, manifest_rows: list[dict]) -> None:
    manifest = write_manifest(tmp_path, manifest_rows)
    (tmp_path / "extract.yaml").write_text("extraction:\n  pdff_units: furlongs\n")
    assert_input_error(
        [*extract_args(manifest, tmp_path), "--config", tmp_path / "extract.yaml"],
        "extract.yaml",
        "config key 'extraction.pdff_units'",
        says="Input should be 'auto', 'percent', 'fraction' or 'per_mille'",
    )


# --- a clinical table with patients the manifest does not know: `train` runs without them ------

IMAGING_RUN = """\
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {root}/cache
covariates:
  numeric: [age]
  binary: []
  categorical: {{}}
imaging:
  features: [pdff_mean_normal]
extraction:
  r2star_units: per_s
models: [cox]
feature_sets: [clinical+imaging]
validation:
  split: none
  bootstrap: 0
  jobs: 1
selection_metric: cindex_harrell
mlflow:
  tracking_uri: sqlite:///{store}
"""
UNKNOWN_IDS = ["X9001", "X9002"]


@pytest.fixture(scope="module")
def trained_with_unknown_ids(
    synth_nifti: Path, store: Path, tmp_path_factory: pytest.TempPathFactory
) -> SimpleNamespace:
    """`refracture train` on the eight-patient cohort whose clinical table has two more
    patients (copies of the first two under IDs the manifest does not have).

    The IDs are 0001-0008, as a hospital's numbers: '0001' must not be read as the number 1.
    """
    root = tmp_path_factory.mktemp("unknown_ids")
    cohort = root / "cohort"
    shutil.copytree(synth_nifti, cohort)
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    manifest["patient_id"] = manifest["patient_id"].str.removeprefix("P")
    manifest.to_csv(cohort / "manifest.csv", index=False)
    table = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str})
    table["patient_id"] = table["patient_id"].str.removeprefix("P")
    extra = table.iloc[:2].assign(patient_id=UNKNOWN_IDS)
    pd.concat([table, extra]).to_csv(cohort / "clinical.csv", index=False)
    config = root / "run.yaml"
    config.write_text(IMAGING_RUN.format(cohort=cohort, root=root, store=store))
    res = invoke("train", "--config", config)
    assert res.exit_code == 0, res.output
    # the one run of this store that finished (failed runs of other tests write no summary)
    (run_dir,) = [p.parent for p in (store.parent / "refracture-runs").glob("*/summary.csv")]
    return SimpleNamespace(root=root, cohort=cohort, result=res, run_dir=run_dir, store=store)


def test_clinical_ids_not_in_the_manifest_are_excluded_by_name(trained_with_unknown_ids) -> None:
    t = trained_with_unknown_ids
    assert "Traceback" not in t.result.output
    excluded = pd.read_csv(t.run_dir / "excluded.csv")
    assert excluded["patient_id"].tolist() == UNKNOWN_IDS
    assert excluded["reason"].tolist() == ["no imaging features from manifest.csv"] * 2
    report = next(t.run_dir.glob("*.html")).read_text(encoding="utf-8")
    assert all(pid in report for pid in UNKNOWN_IDS)
    summary = pd.read_csv(t.run_dir / "summary.csv")
    assert summary["model"].tolist() == ["cox"]


def test_train_names_excluded_patients_on_the_terminal(trained_with_unknown_ids) -> None:
    output = trained_with_unknown_ids.result.output
    assert all(pid in output for pid in UNKNOWN_IDS)


# --- scoring: `refracture score` with the model trained above -----------------------------------

MODEL = "models:/refracture-1y@champion"


def score_args(store: Path, *args: str | Path) -> list[str | Path]:
    return ["score", "--tracking-uri", f"sqlite:///{store}", *args]


def test_score_model_that_cannot_be_loaded(
    trained_with_unknown_ids, synth_nifti: Path, tmp_path: Path
) -> None:
    args = score_args(
        trained_with_unknown_ids.store,
        *("--model", "models:/refracture-2y@champion"),
        *("--features", synth_nifti / "clinical.csv", "--out", tmp_path / "scores.csv"),
    )
    assert_input_error(
        args, "models:/refracture-2y@champion", says="cannot load the model .*not found"
    )


def test_score_output_that_is_not_a_table(synth_nifti: Path, tmp_path: Path) -> None:
    args = ["score", "--model", MODEL, "--features", synth_nifti / "clinical.csv"]
    assert_input_error(
        [*args, "--out", tmp_path / "scores.txt"], "scores.txt", says="must end in .csv or .parquet"
    )


def test_score_input_without_a_model_column(
    trained_with_unknown_ids, synth_nifti: Path, tmp_path: Path
) -> None:
    table = pd.read_csv(synth_nifti / "clinical.csv", dtype={"patient_id": str})
    table[["patient_id", "age"]].to_csv(tmp_path / "features.csv", index=False)
    args = score_args(
        trained_with_unknown_ids.store,
        *("--model", MODEL, "--features", tmp_path / "features.csv"),
        *("--out", tmp_path / "scores.csv"),
    )
    assert_input_error(
        args, "pdff_mean_normal", says="model column\\(s\\) missing from the features file"
    )
    assert not (tmp_path / "scores.csv").exists()


@pytest.mark.parametrize("kind", ["features", "manifest"])
def test_score_input_with_no_rows(
    trained_with_unknown_ids, synth_nifti: Path, tmp_path: Path, kind: str
) -> None:
    source = synth_nifti / ("clinical.csv" if kind == "features" else "manifest.csv")
    header = source.read_text().splitlines()[0]
    (tmp_path / "empty.csv").write_text(header + "\n")
    args = score_args(
        trained_with_unknown_ids.store,
        *("--model", MODEL, f"--{kind}", tmp_path / "empty.csv", "--out", tmp_path / "s.csv"),
    )
    what = "features file" if kind == "features" else "manifest"
    assert_input_error(args, "empty.csv", says=f"no patients: the {what} has no rows")
    assert not (tmp_path / "s.csv").exists()


def test_train_warns_with_the_events_per_parameter(trained_with_unknown_ids) -> None:
    # 3 re-fractures by one year for age and pdff_mean_normal: 1.5 per parameter
    lines = message_lines(trained_with_unknown_ids.result.output)
    warning = [line for line in lines if line.startswith("warning:")]
    epv = [line for line in warning if "events per model parameter" in line]
    assert epv == [
        "warning: 1.5 events per model parameter (3 re-fractures by the horizon 365 for 2 "
        "parameters, feature set 'clinical+imaging'): fewer than 10, so the models may over-fit; "
        "read the optimism-corrected metrics"
    ]
    # (the other warnings are about the small validation set and sites of this study)


def test_score_bad_patients_get_error_rows(trained_with_unknown_ids, tmp_path: Path) -> None:
    """A missing image, no clinical row, a value that is not a number: status=error rows with
    the reason, exit code 1, every other patient scored."""
    cohort = tmp_path / "new"
    shutil.copytree(trained_with_unknown_ids.cohort, cohort)
    (cohort / "images" / "P0003" / "pdff.nii.gz").unlink()
    table = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str, "age": str})
    table = table[table["patient_id"] != "0005"]
    table.loc[table["patient_id"] == "0006", "age"] = "old"
    table.to_csv(cohort / "clinical.csv", index=False)
    out = tmp_path / "scores.csv"
    res = invoke(
        *score_args(trained_with_unknown_ids.store, "--model", MODEL),
        *("--manifest", cohort / "manifest.csv", "--clinical", cohort / "clinical.csv"),
        *("--out", out, "--jobs", "1", "--no-cache"),
    )
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    scores = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("patient_id")
    assert len(scores) == 8
    expected = {
        "0003": "image load failed: file images/P0003/pdff.nii.gz: pdff image not found",
        "0005": "no row in the clinical table clinical.csv",
        "0006": "age is not a number ('old')",
    }
    errors = scores[scores["status"] == "error"]
    assert errors["error"].to_dict() == expected
    for pid, msg in expected.items():
        assert f"error {pid}: {msg}" in message_lines(res.output)
    assert (scores.drop(index=list(expected))["status"] == "ok").all()


def test_message_with_square_brackets_is_printed_as_is(tmp_path: Path) -> None:
    folder = tmp_path / "[site a]"
    assert_input_error(
        extract_args(folder / "manifest.csv", tmp_path), "[site a]", says="manifest not found"
    )
