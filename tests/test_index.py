"""`refracture index` on a synthetic PACS export (tests/conftest.py synth_export): the manifest
it builds, index.csv, the exam choice, re-runs, privacy, and index -> extract -> train; and,
on the same export, multi-echo series refused and DICOM SEG label maps read."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.sr.codedict import codes
from typer.testing import CliRunner

from refracture.cli import app
from refracture.errors import ImageError
from refracture.imaging import align_to, load_volume
from refracture.imaging.dicom.frames import series_hash
from refracture.imaging.dicom.index import STATE_NAME, build_index
from refracture.imaging.dicom.seg import UNKNOWN_SEGMENT_BASE
from refracture.imaging.readers import read_header

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(synth_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export indexed with its clinical table, from the command line."""
    study = tmp_path_factory.mktemp("study")
    done = runner.invoke(
        app,
        ["index", str(synth_export / "export"), "--out", str(study / "manifest.csv"),
         "--clinical", str(synth_export / "clinical.csv")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (study / "output.txt").write_text(done.output)
    return study


def test_every_patient_gets_a_row_from_the_exam_before_the_procedure(
    indexed: Path, synth_export: Path
) -> None:
    manifest = pd.read_csv(indexed / "manifest.csv", dtype=str, keep_default_na=False)
    clinical = pd.read_csv(synth_export / "clinical.csv", dtype=str)
    assert list(manifest["patient_id"]) == sorted(clinical["patient_id"])
    merged = manifest.merge(clinical, on="patient_id", suffixes=("", "_clin"))
    assert (merged["treated_levels"] == merged["treated_levels_clin"]).all()
    assert (merged["site"] == merged["site_clin"]).all()
    index = pd.read_csv(indexed / "index.csv", dtype=str, keep_default_na=False)
    used = index[index["used"] != ""]
    assert sorted(used["used"].value_counts().to_dict().items()) == [
        ("labels", 8), ("pdff", 8), ("r2star", 8)]  # fmt: skip
    assert (used["days_from_procedure"].astype(int) < 0).all()  # the pre-procedure exam
    follow_up = index[index["days_from_procedure"].astype(int) > 0]
    assert len(follow_up) and set(follow_up["patient_id"]) < set(manifest["patient_id"])
    maps = follow_up[follow_up["role"].isin(["pdff", "r2star", "t2star"])]
    assert (maps["reason"] == "another exam of the patient was chosen").all()
    # each vendor's maps, with what the rules say of their units (Philips: T2* in ms)
    by_site = manifest.set_index("site")
    assert by_site.loc["site_4", "r2star_units"] == "t2star_ms"
    assert set(by_site["vendor"]) == {"GE", "Siemens", "Philips"}
    assert by_site.loc["site_4", "pdff"].endswith("&type=FF+FF")


def test_index_lists_every_series_with_its_role_or_why_none(indexed: Path) -> None:
    index = pd.read_csv(indexed / "index.csv", dtype=str, keep_default_na=False)
    assert not (index["role"].eq("") & index["reason"].eq("")).any()
    ge = index[index["description"].str.endswith("Sag IDEAL-IQ") & index["vendor"].eq("GE")]
    roles = set(ge["role"])
    assert {"pdff", "r2star", "water", "fat", "in_phase", "out_phase"} <= roles
    source = index[index["role"] == "source"]  # the first patient's multi-echo images
    assert len(source) == 1 and "6 echoes" in source["reason"].iloc[0]
    localizers = index[index["description"] == "3-Plane Loc"]
    assert (localizers["reason"] == "a single slice (localizer or 2-D image)").all()
    siemens = index[index["vendor"] == "Siemens"]
    assert set(siemens["rule"]) >= {"Siemens Dixon fat fraction", "Siemens Dixon R2*"}
    philips = index[index["vendor"] == "Philips"]
    assert set(philips["image_type"]) >= {"FF+FF", "T2_STAR+T2_STAR", "W+W", "F+F"}


def test_the_manifest_locations_read_back(indexed: Path) -> None:
    row = pd.read_csv(indexed / "manifest.csv", dtype=str).iloc[-1]  # Philips
    pdff = load_volume(indexed / row["pdff"], "pdff")
    r2 = load_volume(indexed / row["r2star"], "r2star")
    labels = load_volume(indexed / row["labels"], "labels")
    assert pdff.metadata["units_stated"] == "%" and r2.metadata["units_stated"] == "ms"
    assert r2.metadata["value_mapping"] == "real_world"
    assert labels.metadata["format"] == "dicom-seg" and set(labels.data.ravel()) >= {17, 24}


def test_without_procedure_dates_several_exams_are_listed_not_guessed(
    synth_export: Path, tmp_path: Path
) -> None:
    done = runner.invoke(
        app, ["index", str(synth_export / "export"), "--out", str(tmp_path / "m.csv")]
    )
    assert done.exit_code == 1
    assert "exams with both maps and no procedure date" in done.output
    index = pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)
    listed = index[index["reason"].str.contains("no procedure date")]["patient_id"].unique()
    manifest = pd.read_csv(tmp_path / "m.csv", dtype=str)
    assert len(listed) >= 1 and len(manifest) == 8 - len(listed)
    assert not set(listed) & set(manifest["patient_id"])


def test_label_files_by_patient_and_pseudonymised_ids(
    synth_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "labels" / "P0002").mkdir(parents=True)
    shutil.copy(synth_export / "truth.json", tmp_path / "labels" / "P0002" / "labels.nii.gz")
    monkeypatch.setenv("REFRACTURE_PSEUDONYM_KEY", "a-site-secret-of-32-characters!!")
    done = runner.invoke(
        app,
        ["index", str(synth_export / "export"), "--out", str(tmp_path / "study" / "m.csv"),
         "--clinical", str(synth_export / "clinical.csv"), "--labels", str(tmp_path / "labels"),
         "--pseudonymise"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    from refracture.privacy import Pseudonymiser

    manifest = pd.read_csv(tmp_path / "study" / "m.csv", dtype=str).set_index("patient_id")
    expected = Pseudonymiser.from_env()
    assert sorted(manifest.index) == sorted(expected(f"P{i:04d}") for i in range(1, 9))
    assert manifest.loc[expected("P0002"), "labels"] == "../labels/P0002/labels.nii.gz"
    assert manifest.loc[expected("P0003"), "labels"].startswith("../")  # a DICOM SEG
    index = pd.read_csv(tmp_path / "study" / "index.csv", dtype=str)
    assert index["patient_id"].str.startswith("PS-").all()


def test_a_rerun_reads_only_new_files_and_keeps_the_rows(
    synth_export: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    clinical = pd.read_csv(synth_export / "clinical.csv", dtype=str)
    late = clinical["patient_id"].iloc[-1]
    mrn = clinical.set_index("patient_id").loc[late, "dicom_patient_id"]
    shutil.copytree(synth_export / "export", export)
    held = [f for f in export.rglob("*") if f.is_file() and _patient_of(f) == mrn]
    for f in held:  # the last patient's files arrive later
        f.rename(tmp_path / f"held-{f.name}")
    first = build_index(export, tmp_path / "study" / "manifest.csv",
                        clinical=synth_export / "clinical.csv", jobs=1)  # fmt: skip
    assert first.n_clinical_without_images == 1 and not first.listed
    manifest = tmp_path / "study" / "manifest.csv"
    edited = manifest.read_text().replace(",site_1,", ",hospital_A,")  # a hand correction
    manifest.write_text(edited)
    for f in held:
        (tmp_path / f"held-{f.name}").rename(f)
    second = build_index(export, manifest, clinical=synth_export / "clinical.csv", jobs=1)
    assert second.n_read == len(held) and second.n_reused == first.n_read - second.n_not_dicom
    lines = manifest.read_text().splitlines()
    assert lines[:-1] == edited.splitlines() and lines[-1].startswith(f"{late},")
    assert second.n_rows_new == 1 and not second.listed
    index = pd.read_csv(manifest.parent / "index.csv", dtype=str, keep_default_na=False)
    assert set(index["patient_id"]) == set(clinical["patient_id"])  # old rows kept
    assert (manifest.parent / STATE_NAME).is_file()


def _patient_of(f: Path) -> str:
    return str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["PatientID"]).PatientID)


def test_no_identity_reaches_any_output(indexed: Path, synth_export: Path, tmp_path: Path):
    """Names, birth dates, record numbers, accession numbers, institutions and UIDs of the
    export's headers appear in none of index's outputs (nor its terminal output), also for a
    patient the clinical table does not know."""
    clinical = pd.read_csv(synth_export / "clinical.csv", dtype=str)
    clinical.iloc[:-1].to_csv(tmp_path / "clinical.csv", index=False)
    done = runner.invoke(
        app,
        ["index", str(synth_export / "export"), "--out", str(tmp_path / "m.csv"),
         "--clinical", str(tmp_path / "clinical.csv")],
    )  # fmt: skip
    assert done.exit_code == 1 and "UNLINKED-" in done.output
    (tmp_path / "output.txt").write_text(done.output)
    (tmp_path / "clinical.csv").unlink()
    secrets = set()
    for f in (synth_export / "export").rglob("*"):
        if not f.is_file():
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientBirthDate", "PatientID", "AccessionNumber",
                        "InstitutionName", "ReferringPhysicianName", "StudyInstanceUID",
                        "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):  # fmt: skip
            value = str(ds.get(keyword, "")).strip()
            secrets.update(p for p in re.split(r"[\^ ]", value) if len(p) >= 5)
    assert len(secrets) > 100
    for out in [*indexed.iterdir(), *tmp_path.iterdir()]:
        text = out.read_text()
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{out.name} holds {leaked[:3]}"


def test_a_folder_named_after_the_patient_keeps_them_out(synth_export: Path, tmp_path: Path):
    export = tmp_path / "export"
    shutil.copytree(synth_export / "export", export)
    ds = next(pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(export.rglob("*"))
              if f.is_file())  # fmt: skip
    surname = str(ds.PatientName).split("^")[0]
    top = next(p for p in export.iterdir() if any(
        _patient_of(f) == ds.PatientID for f in p.rglob("*") if f.is_file()))  # fmt: skip
    top.rename(export / f"{surname}_{top.name}")
    result = build_index(export, tmp_path / "m.csv", clinical=synth_export / "clinical.csv",
                         jobs=1)  # fmt: skip
    assert any("carry the patient's name" in r for r in result.listed.values())
    assert surname not in (tmp_path / "m.csv").read_text()


def test_index_extract_train_end_to_end(indexed: Path, synth_export: Path, tmp_path: Path):
    from refracture.config import load_config
    from refracture.study import train
    from refracture.tracking import quiet_mlflow

    config = tmp_path / "study.yaml"
    config.write_text(
        f"data:\n  manifest: {indexed / 'manifest.csv'}\n  clinical: "
        f"{synth_export / 'clinical.csv'}\n  cache_dir: {tmp_path / 'cache'}\n"
        "covariates:\n  numeric: [age]\nimaging:\n  features: [pdff_mean_normal]\n"
        "models: [logistic]\nfeature_sets: [clinical+imaging]\n"
        "validation:\n  split: none\n  bootstrap: 2\n  seed: 0\n  jobs: 1\n"
        f"mlflow:\n  tracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\n  experiment: e2e\n"
    )
    quiet_mlflow()
    import contextlib

    with contextlib.chdir(tmp_path):
        result = train(load_config(config), config_path=config, report=False)
    data = result.dataset
    assert len(data.X) == 8 and not len(data.excluded)
    assert data.X["pdff_mean_normal"].between(20, 80).all()
    assert result.model_uri and result.selected is not None


# --- the readers on the export ----------------------------------------------------------


def _series(export: Path, startswith: str) -> list[Path]:
    """The files of the first series whose description starts so (one patient's)."""
    found: dict[str, list[Path]] = {}
    for f in sorted(export.rglob("*")):
        if f.is_file():
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            if str(ds.get("SeriesDescription", "")).startswith(startswith):
                found.setdefault(ds.SeriesInstanceUID, []).append(f)
    return max(found.values(), key=len)


def test_multi_echo_source_images_are_refused_naming_the_maps(synth_export: Path) -> None:
    files = _series(synth_export / "export", "Sag IDEAL-IQ")  # GE's source images
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    with pytest.raises(ImageError, match=r"multi-echo source images \(6 echoes.*map series"):
        load_volume(f"{files[0].parent}#series={series_hash(uid)}", "pdff")


def test_dicom_seg_levels_come_from_codes_or_labels_on_the_maps_grid(
    synth_export: Path, tmp_path: Path
) -> None:
    files = sorted(_series(synth_export / "export", "FatFrac"))
    source = [pydicom.dcmread(f) for f in files]
    uid = source[0].SeriesInstanceUID
    pdff = load_volume(f"{files[0].parent}#series={series_hash(uid)}", "pdff")
    labels = np.zeros(pdff.shape, dtype=np.uint8)
    labels[10:20, 40:50, 3:8] = 1  # coded L1, label says nothing
    labels[10:20, 60:70, 3:8] = 2  # labelled 'vertebrae_T12', coded only as bone
    labels[30:34, 50:54, 4:6] = 3  # neither: an unknown segment
    segments = [
        (1, "segment 1", codes.SCT.L1Vertebra),
        (2, "vertebrae_T12", codes.SCT.Bone),
        (3, "cement", codes.SCT.Tissue),
    ]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=code, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, label, code in segments
    ]  # fmt: skip
    by_position = sorted(
        source, key=lambda d: float(np.dot(np.cross(*np.reshape(d.ImageOrientationPatient, (2, 3))),
                                           d.ImagePositionPatient)))  # fmt: skip
    seg = hd.seg.Segmentation(
        source_images=by_position, pixel_array=np.transpose(labels, (2, 1, 0)),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="1", device_serial_number="0",
    )  # fmt: skip
    seg.save_as(tmp_path / "opaque-name")
    vol = load_volume(tmp_path / "opaque-name", "labels")
    assert vol.metadata["format"] == "dicom-seg"
    assert "1 segment(s) by SNOMED CT code, 1 by label" in vol.metadata["label_source"]
    header = read_header(tmp_path / "opaque-name")
    assert header.shape == vol.shape and header.modality == "SEG"
    np.testing.assert_allclose(header.affine, vol.affine, atol=1e-6)
    # on the map's own grid (empty frames left out: a crop of it), each voxel where drawn
    aligned, resampled = align_to(vol, pdff, allow_resample=True)
    assert resampled
    expected = np.select([labels == 1, labels == 2, labels == 3],
                         [20, 19, UNKNOWN_SEGMENT_BASE + 3], 0)  # fmt: skip
    np.testing.assert_array_equal(aligned.data, expected)
