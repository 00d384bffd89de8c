"""Units declared per image, decided once per site (issue 12 item 4): precedence, sidecars,
DICOM statements, the per-site ``auto`` decision, scoring with a model's pinned units, and the
synthetic cohort declaring its own units."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refracture.config import ExtractionConfig
from refracture.errors import InputError, UnitsError
from refracture.features.manifest import read_manifest
from refracture.imaging import load_volume
from refracture.imaging.metadata import find_sidecar, parse_unit, read_sidecar, sidecar_for
from refracture.imaging.site_units import (
    Declared,
    MapEvidence,
    UnitEvidence,
    collect_unit_evidence,
    decide_site_units,
    declared_unit,
    unit_evidence,
)
from refracture.imaging.units import apply_units
from refracture.levels import TL_LEVELS
from refracture.synth.cohort import simulate_cohort
from test_imaging_helpers import spine, write_dicom_series, write_nifti

AUTO = ExtractionConfig()


def ev(
    pid: str, site: str, pdff: float = 60.0, r2star: float = 60.0, declared: dict | None = None
) -> UnitEvidence:
    """Evidence with given detection statistics (PDFF p99, R2* median) and declarations."""
    declared = declared or {}
    maps = {
        kind: MapEvidence(declared.get(kind), 1000, stat)
        for kind, stat in (("pdff", pdff), ("r2star", r2star))
    }
    return UnitEvidence(pid, site, maps)


# --- reading declarations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "unit"),
    [
        ("pdff", "percent", "percent"),
        ("pdff", "%", "percent"),
        ("pdff", " Percent ", "percent"),
        ("pdff", "fraction", "fraction"),
        ("pdff", "ratio", "fraction"),
        ("pdff", "[ppth]", "per_mille"),
        ("pdff", "per_mille", "per_mille"),
        ("r2star", "1/s", "per_s"),
        ("r2star", "Hz", "per_s"),
        ("r2star", "s-1", "per_s"),
        ("r2star", "/s", "per_s"),
        ("r2star", "ms", "t2star_ms"),
        ("r2star", "t2star_ms", "t2star_ms"),
        ("pdff", "auto", None),
        ("pdff", "", None),
        ("r2star", None, None),
    ],
)
def test_unit_words(kind: str, text: str | None, unit: str | None) -> None:
    assert parse_unit(kind, text, where="x") == unit


@pytest.mark.parametrize(("kind", "text"), [("pdff", "ms"), ("r2star", "percent"), ("r2star", "s")])
def test_a_unit_refracture_cannot_use_is_an_error_naming_where_it_was_declared(kind, text) -> None:
    with pytest.raises(UnitsError, match=f"the JSON sidecar p.json declares .*'{text}'"):
        parse_unit(kind, text, where="the JSON sidecar p.json", patient_id="P1")


def test_sidecar_paths_and_reading(tmp_path: Path) -> None:
    assert sidecar_for("/d/pdff.nii.gz") == Path("/d/pdff.json")
    assert sidecar_for("/d/r2star.nrrd") == Path("/d/r2star.json")
    assert sidecar_for("/d/pdff") == Path("/d/pdff.json")  # a DICOM folder
    image = write_nifti(tmp_path / "pdff.nii.gz", np.zeros((4, 4, 4), dtype=np.float32))
    assert find_sidecar(image) is None
    (tmp_path / "pdff.json").write_text(json.dumps({"Units": "percent", "Manufacturer": "GE"}))
    assert read_sidecar(find_sidecar(image)) == {"Units": "percent", "Manufacturer": "GE"}
    (tmp_path / "bad.json").write_text("{units: percent")
    with pytest.raises(InputError, match="bad.json.*JSON sidecar cannot be read"):
        read_sidecar(tmp_path / "bad.json", patient_id="P1")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="must hold an object"):
        read_sidecar(tmp_path / "list.json")


def test_precedence_manifest_then_sidecar_then_dicom(tmp_path: Path) -> None:
    meta = {"units_stated": "%", "series_description": "R2*: Sag IDEAL-IQ"}
    row = {"pdff_units": "fraction", "r2star_units": ""}
    car = {"units": "per_mille"}  # key matched case-insensitively
    got = declared_unit("pdff", row, sidecar=car, sidecar_name="pdff.json", metadata=meta)
    assert got == Declared("fraction", "manifest", "the manifest column pdff_units")
    got = declared_unit("pdff", {}, sidecar=car, sidecar_name="pdff.json", metadata=meta)
    assert (got.unit, got.source, got.where) == (
        "per_mille",
        "sidecar",
        "the JSON sidecar pdff.json",
    )
    got = declared_unit("pdff", {"pdff_units": "auto"}, sidecar={}, metadata=meta)
    assert (got.unit, got.source) == ("percent", "dicom")
    # R2*: the series description speaks when nothing else does
    got = declared_unit("r2star", row, metadata={"series_description": "T2* map"})
    assert (got.unit, got.source) == ("t2star_ms", "dicom")
    assert declared_unit("r2star", {}, metadata={"series_description": "IDEAL"}) is None
    # free text in a DICOM header that is no unit is ignored, not an error
    assert declared_unit("pdff", {}, metadata={"units_stated": "FFMAP"}) is None
    with pytest.raises(UnitsError, match="manifest column r2star_units"):
        declared_unit("r2star", {"r2star_units": "percent"}, patient_id="P9")


def test_dicom_states_its_unit_in_a_real_world_value_map(tmp_path: Path) -> None:
    """The synthetic DICOM writer's Real World Value Mapping item, read back by the loader."""
    import datetime as dt

    from refracture.synth.dicom import Identity, write_series

    p, r, _ = spine()
    ident = Identity.make(np.random.default_rng(0), 70, "F", dt.date(2024, 1, 8))
    for kind, values, scale, stated, unit in (
        ("pdff", p, "per_mille", "[ppth]", "per_mille"),
        ("pdff", p, "percent", "%", "percent"),
        ("r2star", r, "per_mille", "/s", "per_s"),
    ):
        folder = tmp_path / f"{kind}_{scale}"
        write_series(folder, values, kind=kind, identity=ident, direction_lps=np.eye(3),
                     origin_lps=np.zeros(3), spacing=(1.5, 1.5, 4.0), field_strength_t=3.0,
                     site_name="s", study_date=dt.date(2024, 1, 8), pdff_scale=scale)  # fmt: skip
        vol = load_volume(folder, kind)
        assert vol.metadata["units_stated"] == stated
        assert declared_unit(kind, {}, metadata=vol.metadata).unit == unit
        converted = apply_units(vol, decide_one(kind, vol))
        expected = p if kind == "pdff" else r
        np.testing.assert_allclose(converted.data, expected, atol=0.051)


def decide_one(kind: str, vol) -> object:
    d = declared_unit(kind, {}, metadata=vol.metadata)
    e = unit_evidence("P", "s", {kind: d, ("r2star" if kind == "pdff" else "pdff"): None},
                      {"pdff": vol.data.ravel(), "r2star": vol.data.ravel()})  # fmt: skip
    cfg = ExtractionConfig(pdff_units="percent", r2star_units="per_s")
    return decide_site_units([e], cfg).decisions["P"][kind]


def test_a_real_world_value_map_with_its_own_slope_gives_the_values_and_unit(tmp_path) -> None:
    """A Real World Value Mapping whose slope is not the RescaleSlope (Philips writes its maps'
    physical values this way) gives the values, in its unit; RescaleSlope is display only."""
    import pydicom

    p, _, _ = spine()
    folder = write_dicom_series(tmp_path / "s", p * 10, slope=1.0)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        item = pydicom.Dataset()
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "%", "UCUM", "percent"
        item.MeasurementUnitsCodeSequence = [code]
        item.RealWorldValueSlope, item.RealWorldValueIntercept = 0.1, 0.0
        ds.RealWorldValueMappingSequence = [item]
        ds.save_as(f)
    vol = load_volume(folder, "pdff")
    assert vol.metadata["units_stated"] == "%"
    assert vol.metadata["value_mapping"] == "real_world"
    np.testing.assert_allclose(vol.data, p, atol=1e-4)  # stored p * 10, slope 0.1
    assert declared_unit("pdff", {}, metadata=vol.metadata).unit == "percent"


# --- the per-site decision -----------------------------------------------------------------


def test_auto_decides_once_per_site_from_all_its_patients() -> None:
    # site A: 1.5 T R2* in 1/s; two patients' own medians (30, 33) are ambiguous alone
    records = [ev(f"A{i}", "A", r2star=m) for i, m in enumerate([30.0, 33.0, 48, 55, 61, 70])]
    # site B: T2* in ms
    records += [ev(f"B{i}", "B", r2star=m) for i, m in enumerate([9.0, 12.0, 14.0])]
    out = decide_site_units(records, AUTO)
    assert not out.errors
    for pid, units in out.decisions.items():
        assert units.r2star.unit == ("per_s" if pid.startswith("A") else "t2star_ms")
        assert units.r2star.source == "site" and units.pdff.source == "site"
        assert units.r2star.converted == pid.startswith("B")
    assert out.site_units == {
        "A": {"pdff": "percent", "r2star": "per_s"},
        "B": {"pdff": "percent", "r2star": "t2star_ms"},
    }


def test_an_ambiguous_site_is_refused_naming_the_site_and_others_go_on() -> None:
    records = [ev(f"A{i}", "hospital_A", r2star=m) for i, m in enumerate([28.0, 31.0, 33.0])]
    records += [ev("B1", "hospital_B", r2star=60.0)]
    out = decide_site_units(records, AUTO)
    assert set(out.errors) == {"A0", "A1", "A2"} and set(out.decisions) == {"B1"}
    text = out.errors["A1"].one_line()
    assert "hospital_A" in text and "median of the patients' medians 31" in text
    assert "r2star_units" in text and out.errors["A1"].patient_id == "A1"
    assert "hospital_A" not in out.site_units


def test_a_site_mixing_units_is_refused_but_one_odd_patient_in_many_is_not() -> None:
    mixed = [ev(f"A{i}", "A", pdff=p) for i, p in enumerate([0.7, 0.8, 0.75, 80.0, 85.0])]
    out = decide_site_units(mixed, AUTO)
    assert set(out.errors) == {f"A{i}" for i in range(5)}
    assert "mixes units" in out.errors["A0"].one_line()
    many = [ev(f"A{i}", "A", r2star=60.0 + i % 7) for i in range(40)] + [
        ev("odd", "A", r2star=22.0)
    ]
    out = decide_site_units(many, AUTO)
    assert not out.errors and out.decisions["odd"].r2star.unit == "per_s"
    assert "look like t2star_ms" in out.decisions["odd"].r2star.note


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2", "s3", ""]),
            st.floats(0.01, 1500.0),
            st.floats(0.5, 700.0),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_two_patients_of_a_site_never_get_different_units(rows) -> None:
    records = []
    for i, (site, pdff, r2, declare) in enumerate(rows):
        declared = {"pdff": Declared("percent", "manifest", "m")} if declare and i % 3 == 0 else {}
        records.append(ev(f"P{i}", site, pdff=pdff, r2star=r2, declared=declared))
    out = decide_site_units(records, AUTO)
    assert set(out.decisions) | set(out.errors) == {r.patient_id for r in records}
    for kind in ("pdff", "r2star"):
        by_site: dict[str, set[str]] = {}
        for r in records:
            if r.patient_id in out.decisions and r.site:
                d = out.decisions[r.patient_id][kind]
                if d.source == "site":
                    by_site.setdefault(r.site, set()).add(d.unit)
        assert all(len(u) == 1 for u in by_site.values()), by_site
    for pid, err in out.errors.items():
        site = next(r.site for r in records if r.patient_id == pid)
        assert (f"site {site}" if site else "no site") in err.one_line()


def test_config_and_declarations_come_before_detection() -> None:
    cfg = ExtractionConfig(pdff_units="per_mille", r2star_units="auto")
    records = [
        ev("A1", "A", pdff=700.0),
        ev("A2", "A", pdff=70.0, declared={"pdff": Declared("percent", "sidecar", "s")}),
    ]
    out = decide_site_units(records, cfg)
    assert (
        out.decisions["A1"].pdff.unit == "per_mille" and out.decisions["A1"].pdff.source == "config"
    )
    assert (
        out.decisions["A2"].pdff.unit == "percent" and out.decisions["A2"].pdff.source == "sidecar"
    )
    assert "pdff" not in out.site_units["A"]  # the site's patients differ: nothing to pin
    # a declaration the values contradict is used, with a note
    stated = {"pdff": Declared("percent", "manifest", "m")}
    odd = decide_site_units([ev("C", "C", pdff=0.8, declared=stated)], AUTO)
    assert odd.decisions["C"].pdff.unit == "percent"
    assert "look like fraction" in odd.decisions["C"].pdff.note


def test_scoring_one_new_patient_uses_the_models_units_for_its_site() -> None:
    pinned = {"site_1": {"pdff": "percent", "r2star": "per_s"}}
    new = [ev("N1", "site_1", r2star=31.0)]  # ambiguous alone
    out = decide_site_units(new, AUTO, pinned=pinned)
    assert (
        out.decisions["N1"].r2star.unit == "per_s" and out.decisions["N1"].r2star.source == "model"
    )
    unknown = decide_site_units([ev("N2", "site_9", r2star=31.0)], AUTO, pinned=pinned)
    assert "site site_9" in unknown.errors["N2"].one_line()
    clear = decide_site_units([ev("N3", "site_9", r2star=90.0)], AUTO, pinned=pinned)
    assert clear.decisions["N3"].r2star.source == "site"


def test_evidence_is_small_and_round_trips_through_json() -> None:
    e = unit_evidence(
        "P1",
        "s",
        {"pdff": Declared("percent", "sidecar", "the JSON sidecar pdff.json"), "r2star": None},
        {"pdff": np.linspace(0, 90, 5000), "r2star": np.array([np.nan, -1.0, 40.0, 50.0])},
    )
    assert e.maps["pdff"].statistic == pytest.approx(np.percentile(np.linspace(0, 90, 5000), 99))
    assert e.maps["r2star"].statistic == 45.0 and e.maps["r2star"].n == 3
    text = json.dumps(e.to_dict())
    assert len(text) < 400
    assert UnitEvidence.from_dict(json.loads(text)) == e


# --- real images ----------------------------------------------------------------------------


def test_synth_declares_its_units_and_undeclared_its_sites_decide(synth_nifti, tmp_path) -> None:
    manifest = read_manifest(synth_nifti / "manifest.csv")
    cfg = ExtractionConfig()  # no config: auto
    declared = [collect_unit_evidence(row, cfg) for row in manifest.to_dict("records")]
    out = decide_site_units(declared, cfg)
    assert not out.errors and len(out.decisions) == len(manifest)
    assert {d.pdff.source for d in out.decisions.values()} == {"manifest"}
    # without the manifest's unit columns the sidecars speak
    bare = manifest.drop(columns=["pdff_units", "r2star_units"])
    out = decide_site_units([collect_unit_evidence(r, cfg) for r in bare.to_dict("records")], cfg)
    assert {(d.pdff.source, d.pdff.unit, d.r2star.unit) for d in out.decisions.values()} == {
        ("sidecar", "percent", "per_s")
    }
    # with nothing declared, every site decides from its patients' values
    copy = tmp_path / "cohort"
    shutil.copytree(synth_nifti / "images", copy / "images")
    for sidecar in (copy / "images").rglob("*.json"):
        sidecar.unlink()
    rows = bare.assign(
        pdff=[str(copy / Path(p).relative_to(synth_nifti)) for p in bare["pdff"]],
        r2star=[str(copy / Path(p).relative_to(synth_nifti)) for p in bare["r2star"]],
        labels=[str(copy / Path(p).relative_to(synth_nifti)) for p in bare["labels"]],
    )
    evidence = [collect_unit_evidence(r, cfg) for r in rows.to_dict("records")]
    out = decide_site_units(evidence, cfg)
    assert not out.errors, {k: v.one_line() for k, v in out.errors.items()}
    assert {(d.pdff.unit, d.pdff.source, d.r2star.unit) for d in out.decisions.values()} == {
        ("percent", "site", "per_s")
    }


def test_synth_dicom_declares_per_mille_and_its_series_say_so(synth_dicom) -> None:
    manifest = read_manifest(synth_dicom / "manifest.csv")
    row = manifest.iloc[0].to_dict()
    e = collect_unit_evidence(row, ExtractionConfig())
    assert e.maps["pdff"].declared.unit == "per_mille"
    assert e.maps["pdff"].statistic > 150  # per mille values: 10x percent
    bare = {k: v for k, v in row.items() if not k.endswith("_units")}
    e = collect_unit_evidence(bare, ExtractionConfig())
    assert (e.maps["pdff"].declared.source, e.maps["pdff"].declared.unit) == ("dicom", "per_mille")
    assert (e.maps["r2star"].declared.source, e.maps["r2star"].declared.unit) == ("dicom", "per_s")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_no_synthetic_patient_is_lost_to_per_site_detection(seed: int) -> None:
    """n = 560: every site of the synthetic cohort decides its units from its patients' marrow
    (here the true per-level values in the images, median over untreated levels) without a
    refusal, where per-patient detection refuses some 1.5 T patients (R2* 25-35 1/s)."""
    c = simulate_cohort(560, 4, seed)
    truth = c.truth.set_index("patient_id")
    records, per_patient_refusals = [], 0
    for pid in c.clinical["patient_id"]:
        treated = set(c.levels[pid]["treated"])
        levels = [lv for lv in TL_LEVELS if lv not in treated]
        pdff = truth.loc[pid, [f"pdff_mean_{lv}" for lv in levels]].to_numpy(dtype=float)
        r2 = truth.loc[pid, [f"r2star_mean_{lv}" for lv in levels]].to_numpy(dtype=float)
        e = unit_evidence(pid, truth.loc[pid, "site"], {}, {"pdff": pdff, "r2star": r2})
        per_patient_refusals += e.maps["r2star"].detected("r2star") is None
        records.append(e)
    out = decide_site_units(records, AUTO)
    assert not out.errors and len(out.decisions) == 560
    assert {(d.pdff.unit, d.r2star.unit) for d in out.decisions.values()} == {("percent", "per_s")}
    assert set(out.site_units) == {f"site_{i}" for i in range(1, 5)}
    print(f"seed {seed}: {per_patient_refusals} patients ambiguous alone, 0 per site")


def test_manifest_unit_columns_survive_validation(tmp_path) -> None:
    path = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {
                "patient_id": "P1",
                "site": "s",
                "pdff": "a",
                "r2star": "b",
                "labels": "c",
                "pdff_units": "fraction",
                "r2star_units": "",
            }
        ]  # fmt: skip
    ).to_csv(path, index=False)
    row = read_manifest(path).iloc[0].to_dict()
    assert declared_unit("pdff", row).unit == "fraction"
    assert declared_unit("r2star", row) is None
