"""Scanner metadata per patient (issue 15 item 1): manifest > sidecar > DICOM, the synthetic
scanners written and read back as real DICOM, and no serial number or station name in clear
anywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from refracture.features.manifest import read_manifest
from refracture.imaging import load_volume
from refracture.imaging.metadata import (
    SCANNER_COLUMNS,
    canonical_vendor,
    dicom_device_id,
    field_strength_tesla,
    nominal_field,
    row_sidecars,
    scanner_metadata,
)
from refracture.synth.cohort import SCANNER_CHANGE_AT, simulate_cohort
from test_imaging_helpers import spine, write_dicom_series

SERIAL = "SN48151623"
STATION = "MRC-WEST-7"
KEY = b"a-site-secret-key-of-32-bytes!!!"


def dicom_with_device(folder: Path) -> Path:
    """A real DICOM series whose headers carry a serial number and station name."""
    p, _, _ = spine()
    folder = write_dicom_series(folder, p, slope=0.1)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.DeviceSerialNumber = SERIAL
        ds.StationName = STATION
        ds.ManufacturerModelName = "SIGNA Architect"
        ds.SoftwareVersions = ["27", "MR29.1_R01"]
        ds.save_as(f)
    return folder


def test_vendor_and_field_strength_spellings() -> None:
    assert canonical_vendor("GE MEDICAL SYSTEMS") == canonical_vendor("GE") == "GE"
    assert canonical_vendor("GE HEALTHCARE") == "GE"
    assert canonical_vendor("SIEMENS") == canonical_vendor("Siemens Healthineers") == "Siemens"
    assert canonical_vendor("Philips Medical Systems") == "Philips"
    assert canonical_vendor("TOSHIBA_MEC") == "Canon"
    assert canonical_vendor("Bruker BioSpin") == "Bruker BioSpin"
    assert canonical_vendor("General Electric") == "GE"
    assert canonical_vendor(None) == ""
    assert field_strength_tesla("3") == 3.0 and field_strength_tesla(15000) == 1.5
    assert field_strength_tesla("") is None and field_strength_tesla("n/a") is None
    assert nominal_field(2.89362) == "3 T" and nominal_field(1.494) == "1.5 T"


def test_precedence_manifest_then_sidecar_then_dicom() -> None:
    dicom = {"field_strength_t": 1.5, "vendor": "GE MEDICAL SYSTEMS", "model": "Optima MR450w"}
    car = {"MagneticFieldStrength": 3, "Manufacturer": "Siemens", "ManufacturerModelName": "Vida"}
    assert scanner_metadata({}, {"pdff": dicom}, {}) == {
        "scanner_field_strength_t": 1.5,
        "scanner_vendor": "GE",
        "scanner_id": "GE Optima MR450w 1.5T",
    }
    assert scanner_metadata({}, {"pdff": dicom}, {"pdff": car}) == {
        "scanner_field_strength_t": 3.0,
        "scanner_vendor": "Siemens",
        "scanner_id": "Siemens Vida 3T",
    }
    row = {"field_strength_t": "1.5", "vendor": "Philips", "scanner": "MR east"}
    assert scanner_metadata(row, {"pdff": dicom}, {"pdff": car}) == {
        "scanner_field_strength_t": 1.5,
        "scanner_vendor": "Philips",
        "scanner_id": "MR east",
    }
    # empty manifest cells fall through; the R2* map's sidecar fills in for the PDFF's
    got = scanner_metadata(
        {"field_strength_t": "", "vendor": np.nan, "scanner": ""}, {}, {"pdff": None, "r2star": car}
    )
    assert got["scanner_vendor"] == "Siemens" and got["scanner_field_strength_t"] == 3.0
    nothing = scanner_metadata({}, {"pdff": {"format": "nifti"}}, {})
    assert math.isnan(nothing["scanner_field_strength_t"]) and nothing["scanner_id"] == ""
    assert set(nothing) == set(SCANNER_COLUMNS)


def test_serial_numbers_and_station_names_never_come_out_in_clear(tmp_path: Path) -> None:
    folder = dicom_with_device(tmp_path / "pdff")
    vol = load_volume(folder, "pdff")
    assert vol.metadata["model"] == "SIGNA Architect"
    assert vol.metadata["software_versions"] == "27 / MR29.1_R01"
    car = {"Manufacturer": "GE", "DeviceSerialNumber": SERIAL, "StationName": STATION}
    outputs = [vol.metadata]
    # without the site's key the device fields are not used at all
    plain = scanner_metadata({}, {"pdff": vol.metadata}, {"pdff": car})
    assert plain["scanner_id"] == "GE SIGNA Architect 3T"
    outputs.append(plain)
    # with it, a keyed hash: stable, different under another key, the same from DICOM and sidecar
    hashed = scanner_metadata({}, {"pdff": vol.metadata}, {"pdff": car}, device_key=KEY)
    from_dicom = dicom_device_id(folder, KEY)
    assert hashed["scanner_id"].startswith("SC-") and len(hashed["scanner_id"]) == 15
    assert from_dicom.startswith("SC-") and from_dicom != dicom_device_id(folder, KEY[::-1])
    assert from_dicom == dicom_device_id(folder, KEY)
    by_id = scanner_metadata({}, {"pdff": vol.metadata}, {}, device_id=from_dicom)
    assert by_id["scanner_id"] == from_dicom
    outputs += [hashed, by_id]
    # station name alone is hashed too; the manifest's own scanner name still wins
    station_only = scanner_metadata({}, {}, {"pdff": {"StationName": STATION}}, device_key=KEY)
    assert station_only["scanner_id"].startswith("SC-")
    named = scanner_metadata({"scanner": "MR1"}, {}, {"pdff": car}, device_key=KEY)
    assert named["scanner_id"] == "MR1"
    outputs += [station_only, named]
    text = json.dumps(outputs, default=str)
    assert SERIAL not in text and STATION not in text and "MRC" not in text


def test_synthetic_scanners_change_halfway_and_carry_their_truth() -> None:
    c = simulate_cohort(560, 4, 0)
    t = c.truth
    site1 = t[t["site"] == "site_1"]
    old = site1["scanner"] == "MR1"
    assert old.sum() == math.ceil(len(site1) * SCANNER_CHANGE_AT)
    assert old.iloc[: old.sum()].all() and not old.iloc[old.sum() :].any()  # a change, not a mix
    assert set(site1.loc[old, "field_strength_t"]) == {1.5}
    assert set(site1.loc[~old, "field_strength_t"]) == {3.0}
    assert set(t["vendor"]) == {"GE", "Siemens", "Philips"}
    assert t.groupby("site")["scanner"].nunique().to_dict() == {
        "site_1": 2,
        "site_2": 1,
        "site_3": 1,
        "site_4": 1,
    }
    # the truth's scanner effects are what the images' marrow values carry
    normal = t["pdff_normal_true"] + t["pdff_scanner_bias"]
    levels = [c for c in t.columns if c.startswith("pdff_mean_")]
    assert t["pdff_scanner_bias"].abs().max() <= 2.0
    assert set(t["pdff_scanner_bias"].round(3)) >= {0.0, 1.0, -1.0, 2.0}
    r2 = t[[c.replace("pdff", "r2star") for c in levels]].mean(axis=1) / t["r2star_scanner_factor"]
    assert np.corrcoef(r2, t["r2star_normal_true_15t"])[0, 1] > 0.9
    assert np.corrcoef(t[levels].mean(axis=1), normal)[0, 1] > 0.8
    # R2* at site 1 jumps with the new 3 T scanner
    ratio = (
        t.loc[site1.index[~old], "r2star_mean_L3"].mean()
        / t.loc[site1.index[old], "r2star_mean_L3"].mean()
    )
    assert 1.4 < ratio < 2.0


def test_synth_manifest_sidecars_and_dicom_agree_with_the_truth(synth_nifti, synth_dicom) -> None:
    truth = pd.read_csv(synth_nifti / "truth.csv").set_index("patient_id")
    manifest = read_manifest(synth_nifti / "manifest.csv")
    dicom_manifest = read_manifest(synth_dicom / "manifest.csv")
    for row, drow in zip(
        manifest.to_dict("records"), dicom_manifest.to_dict("records"), strict=True
    ):
        pid = row["patient_id"]
        t = truth.loc[pid]
        cars = row_sidecars(row)
        assert cars["pdff"]["Units"] == "percent" and cars["r2star"]["Units"] == "1/s"
        from_manifest = scanner_metadata(row, {}, cars)
        assert from_manifest == {
            "scanner_field_strength_t": t["field_strength_t"],
            "scanner_vendor": t["vendor"],
            "scanner_id": t["scanner"],
        }
        bare = {k: v for k, v in row.items() if k not in ("field_strength_t", "vendor", "scanner")}
        from_sidecar = scanner_metadata(bare, {}, cars)
        assert (
            from_sidecar["scanner_id"]
            == f"{t['vendor']} {t['scanner_model']} {t['field_strength_t']:g}T"
        )
        # DICOM headers read back by the loader give the same scanner
        bare_dicom = {
            k: v for k, v in drow.items() if k not in ("field_strength_t", "vendor", "scanner")
        }
        meta = {k: load_volume(drow[k], k).metadata for k in ("pdff", "r2star")}
        assert meta["pdff"]["software_versions"] == t["scanner_software"]
        assert scanner_metadata(bare_dicom, meta, row_sidecars(bare_dicom)) == from_sidecar


def test_no_serial_number_anywhere_in_the_synthetic_outputs(synth_dicom, synth_nifti) -> None:
    for root in (synth_dicom, synth_nifti):
        for f in root.rglob("*"):
            if f.suffix in (".csv", ".json"):
                text = f.read_text().lower()
                assert "serial" not in text and "stationname" not in text, f
    files = [f for f in (synth_dicom / "images").rglob("*.dcm")]
    assert files
    for f in files[::7]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert "DeviceSerialNumber" not in ds and "StationName" not in ds
        assert ds.MagneticFieldStrength and ds.Manufacturer and ds.ManufacturerModelName
        assert ds.SoftwareVersions


@pytest.mark.parametrize("n", [5, 14])
def test_scanner_change_splits_site_1_at_every_size(n: int) -> None:
    c = simulate_cohort(n, 4, 1)
    site1 = c.truth[c.truth["site"] == "site_1"]
    assert site1["scanner"].iloc[0] == "MR1"
    if len(site1) > 1:
        assert site1["scanner"].iloc[-1] == "MR2"
