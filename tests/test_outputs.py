"""`refracture score --dicom-sr --fhir --cards` on real DICOM and NIfTI patients scored with the
`trained` model: each output read back by the software it is for (highdicom and pydicom,
dciodvfy, fhir.resources' R4 models, WeasyPrint's PDF and headless Chromium at A4), every
number checked against scores.csv and against `refracture extract`'s vertebrae.parquet, and
the SEG's regions checked against the source maps' own pixel values.

Patients: P0001 and P0002 with DICOM maps, P0003 with NIfTI maps (no SR), P0004 without a
clinical row (not scored: no outputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom import config as dicom_config
from typer.testing import CliRunner

from refracture.cli import app
from refracture.features import extract_cohort
from refracture.scoring import load_model
from test_report import CHECK_SCRIPT, chromium

URI = "models:/refracture-1y@champion"
SYSTEM = "urn:oid:2.16.840.1.113883.2.4.6.3"
DICOM_IDS, NIFTI_IDS, UNSCORED = ["P0001", "P0002"], ["P0003"], "P0004"


@pytest.fixture(scope="module")
def run(trained, synth_dicom: Path, synth_nifti: Path, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("outputs")
    parts = []
    for base, ids in ((synth_dicom, [*DICOM_IDS, UNSCORED]), (synth_nifti, NIFTI_IDS)):
        m = pd.read_csv(base / "manifest.csv", dtype=str)
        m = m[m.patient_id.isin(ids)].copy()
        for c in ("pdff", "r2star", "labels"):
            m[c] = [str(base / p) for p in m[c]]
        parts.append(m)
    manifest = pd.concat(parts).sort_values("patient_id")
    manifest.to_csv(root / "manifest.csv", index=False)
    clinical = pd.read_csv(synth_dicom / "clinical.csv", dtype={"patient_id": str})
    clinical[clinical.patient_id != UNSCORED].to_csv(root / "clinical.csv", index=False)
    args = [
        "score",
        "--tracking-uri",
        trained.tracking_uri,
        "--model",
        URI,
        "--manifest",
        root / "manifest.csv",
        "--clinical",
        root / "clinical.csv",
        "--out",
        root / "scores.csv",
        "--no-cache",
        "--jobs",
        "1",
        "--dicom-sr",
        root / "sr",
        "--fhir",
        root / "fhir",
        "--fhir-system",
        SYSTEM,
        "--cards",
        root / "cards",
    ]
    res = CliRunner().invoke(app, [str(a) for a in args])
    model = load_model(URI, trained.tracking_uri)
    dicom_rows = manifest[manifest.patient_id.isin(DICOM_IDS)]
    extracted = extract_cohort(dicom_rows, model.bundle.extraction, cache_dir=None)
    scores = pd.read_csv(
        root / "scores.csv", dtype={"patient_id": str}, float_precision="round_trip"
    ).set_index("patient_id")
    return {
        "root": root,
        "res": res,
        "scores": scores,
        "model": model,
        "vertebrae": extracted.vertebrae,
        "features": extracted.features,
        "manifest": manifest.set_index("patient_id"),
    }


def test_one_command_writes_every_output_and_says_where(run) -> None:
    res, root = run["res"], run["root"]
    assert res.exit_code == 1, res.output  # P0004 has no clinical row: an error row
    assert "DICOM SR + SEG: " in res.stdout and "(2 written, 2 skipped)" in res.stdout
    assert "FHIR RiskAssessment: " in res.stdout and "(3 written, 1 skipped)" in res.stdout
    index = pd.read_csv(root / "sr" / "index.csv", dtype=str, keep_default_na=False)
    by_id = index.set_index("patient_id")
    assert list(index.patient_id) == [*DICOM_IDS, *NIFTI_IDS, UNSCORED]  # every input patient
    assert by_id.loc["P0003", "reason"] == "its maps are not DICOM series"
    assert by_id.loc[UNSCORED, "reason"] == "not scored (status error)"
    assert sorted(p.name for p in (root / "sr").iterdir()) == sorted(
        ["index.csv", *[f"{p}.{k}.dcm" for p in DICOM_IDS for k in ("sr", "seg")]]
    )
    cards = pd.read_csv(root / "cards" / "index.csv", dtype=str, keep_default_na=False)
    assert list(cards.status) == ["written", "written", "written", "skipped"]


def _source(run, pid: str, kind: str) -> list[pydicom.Dataset]:
    folder = Path(run["manifest"].loc[pid, kind])
    return sorted(
        (pydicom.dcmread(f) for f in folder.glob("*.dcm")), key=lambda d: d.InstanceNumber
    )


def _groups(sr) -> dict[str, object]:
    return {
        str(g.tracking_identifier): g for g in sr.content.get_volumetric_roi_measurement_groups()
    }


@pytest.mark.parametrize("pid", DICOM_IDS)
def test_sr_numbers_are_the_scores_and_the_extracted_vertebrae(run, pid: str) -> None:
    sr = hd.sr.srread(run["root"] / "sr" / f"{pid}.sr.dcm")
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = _groups(sr)
    vert = run["vertebrae"][run["vertebrae"].patient_id == pid]
    units = {"pdff": ("129100", "%"), "r2star": ("126395", "/s")}
    label = {"pdff": "PDFF", "r2star": "R2*"}
    checked = 0
    for rec in vert.itertuples():
        if not np.isfinite(rec.mean):
            continue
        (m,) = groups[f"{rec.level} {label[rec.map]}"].get_measurements()
        assert (m.name.value, m.unit.value, m.unit.scheme_designator) == (
            units[rec.map][0],
            units[rec.map][1],
            "UCUM",
        )
        assert m.value == pytest.approx(rec.mean, rel=1e-12)
        checked += 1
    assert checked == int(np.isfinite(vert["mean"]).sum()) >= 12
    feats = run["features"].set_index("patient_id").loc[pid]
    for level in sorted(set(vert.level)):
        grade = feats.get(f"morph_genant_grade_{level}")
        morph = groups.get(f"{level} morphometry")
        if grade is None or not np.isfinite(grade):
            continue
        values = {x.name.meaning: x.value for x in morph.get_measurements()}
        assert values["Genant semiquantitative grade"] == grade
        assert values["Anterior vertebral body height"] == pytest.approx(
            feats[f"morph_ha_mm_{level}"], rel=1e-12
        )
    # the prediction: the scores file's numbers, the model's name and version, the group
    row = run["scores"].loc[pid]
    (prediction,) = sr.content.get_image_measurement_groups()  # the TID 1501 group
    found = {m.name.meaning: m.value for m in prediction.get_measurements()}
    assert found["Risk of new vertebral fracture within 365 days"] == row["risk_365d"]
    assert (
        found["Risk of death before new vertebral fracture within 365 days"]
        == (row["risk_death_365d"])
    )
    assert found["Linear predictor of the risk model"] == row["linear_predictor"]
    algorithm = _texts(prediction[0])
    assert algorithm["Algorithm Name"] == "refracture-1y"
    assert algorithm["Algorithm Version"] == f"{row['model_version']} (logistic (clinical+imaging))"
    (group,) = prediction.get_qualitative_evaluations()
    assert group.value.meaning.lower() == f"{row['risk_group']} risk"


def _texts(item: pydicom.Dataset) -> dict[str, str]:
    """TEXT content items under ``item``, by concept name."""
    out = {}
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT":
            out[child.ConceptNameCodeSequence[0].CodeMeaning] = child.TextValue
        out.update(_texts(child))
    return out


@pytest.mark.parametrize("pid", DICOM_IDS)
def test_seg_regions_give_the_sr_means_on_the_source_pixels(run, pid: str) -> None:
    """Independent of refracture's reader: the SEG's masks on the source DICOM pixels
    (pydicom, RescaleSlope, per mille to percent) give the SR's means."""
    root = run["root"] / "sr"
    seg = hd.seg.segread(root / f"{pid}.seg.dcm")
    sr = hd.sr.srread(root / f"{pid}.sr.dcm")
    sources = {k: _source(run, pid, k) for k in ("pdff", "r2star")}
    scale = {"pdff": 0.1, "r2star": 1.0}  # the synthetic PDFF is stored per mille
    checked = 0
    for name, group in _groups(sr).items():
        if not name.endswith(("PDFF", "R2*")):
            continue
        kind = "pdff" if name.endswith("PDFF") else "r2star"
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        series = {str(s.SeriesInstanceUID) for s in sources[kind]}
        assert ref.source_series_for_segmentation.value in series
        (number,) = ref.referenced_segment_numbers
        uids = [str(s.SOPInstanceUID) for s in sources["pdff"]]
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[number])[..., 0] > 0
        pixels = (
            np.stack(
                [
                    s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept)
                    for s in sources[kind]
                ]
            )
            * scale[kind]
        )
        (m,) = group.get_measurements()
        assert mask.sum() > 30
        assert pixels[mask].mean() == pytest.approx(m.value, rel=1e-5)
        checked += 1
    assert checked >= 12


@pytest.mark.parametrize("pid", DICOM_IDS)
def test_dicom_objects_are_valid_new_instances_of_the_source_study(run, pid: str) -> None:
    root = run["root"] / "sr"
    source = _source(run, pid, "pdff")[0]
    source_uids = {str(s.SOPInstanceUID) for k in ("pdff", "r2star") for s in _source(run, pid, k)}
    for name in (f"{pid}.sr.dcm", f"{pid}.seg.dcm"):
        ds = pydicom.dcmread(root / name)
        # patient and study modules copied from the source, as DICOM requires
        for kw in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "AccessionNumber",
        ):
            assert ds.get(kw) == source.get(kw), kw
        # new UIDs
        assert ds.SOPInstanceUID not in source_uids
        assert ds.SeriesInstanceUID not in {source.SeriesInstanceUID}
        assert (
            not ds.get("InstitutionName")
            and not ds.get("ReferringPhysicianName")
            or (ds.get("ReferringPhysicianName") == source.get("ReferringPhysicianName"))
        )  # the study's referring physician only (General Study module), no institution
        # pydicom's own checks: file meta, and every value valid for its VR when written
        pydicom.dataset.validate_file_meta(ds.file_meta, enforce_standard=True)
        old = dicom_config.settings.writing_validation_mode
        dicom_config.settings.writing_validation_mode = dicom_config.RAISE
        try:
            ds.save_as(io.BytesIO(), enforce_file_format=True)
        finally:
            dicom_config.settings.writing_validation_mode = old
    validator = shutil.which("dciodvfy")
    if validator is None:
        return  # highdicom's and pydicom's checks above still ran (dciodvfy: dicom3tools)
    for name in (f"{pid}.sr.dcm", f"{pid}.seg.dcm"):
        done = subprocess.run([validator, str(root / name)], capture_output=True, text=True)
        errors = [
            line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], errors


def test_fhir_risk_assessments_are_r4_with_the_scores(run) -> None:
    import fhir.resources.R4B as r4
    from fhir.resources.R4B.riskassessment import RiskAssessment

    assert r4.__fhir_version__.startswith("4.")  # the R4 line, not the package's R5 default
    folder = run["root"] / "fhir"
    assert not (folder / f"{UNSCORED}.json").exists()
    for pid in [*DICOM_IDS, *NIFTI_IDS]:
        data = json.loads((folder / f"{pid}.json").read_text())
        resource = RiskAssessment.model_validate(data)  # raises on anything not R4
        row = run["scores"].loc[pid]
        assert resource.subject.identifier.system == SYSTEM
        assert resource.subject.identifier.value == pid
        refracture, death = data["prediction"]
        assert refracture["probabilityDecimal"] == row["risk_365d"]
        assert death["probabilityDecimal"] == row["risk_death_365d"]
        assert refracture["whenRange"]["high"] == {
            "value": 365,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
        qualitative = refracture["qualitativeRisk"]["coding"][0]["code"]
        assert (
            qualitative
            == {"low": "low", "intermediate": "moderate", "high": "high"}[row["risk_group"]]
        )
        assert f"refracture-1y version {row['model_version']}" in data["method"]["text"]
        contained = {o["id"]: o for o in data["contained"]}
        assert [b["reference"] for b in data["basis"]] == [f"#{i}" for i in contained]
        measured = contained["pdff-mean-normal"]["valueQuantity"]
        assert measured["code"] == "%"
        if pid in DICOM_IDS:
            feats = run["features"].set_index("patient_id").loc[pid]
            assert measured["value"] == pytest.approx(feats["pdff_mean_normal"], rel=1e-12)


def test_no_identity_from_the_dicom_headers_outside_the_dicom_objects(run) -> None:
    root = run["root"]
    texts = [p.read_bytes() for d in ("fhir", "cards") for p in (root / d).iterdir()]
    texts += [(root / d / "index.csv").read_bytes() for d in ("sr", "fhir", "cards")]
    texts += [(root / "scores.csv").read_bytes(), run["res"].output.encode()]
    for pid in DICOM_IDS:
        src = _source(run, pid, "pdff")[0]
        secrets = [
            str(src.PatientName),
            str(src.PatientID),
            str(src.PatientBirthDate),
            str(src.StudyInstanceUID),
            str(src.SeriesInstanceUID),
        ]
        for secret in secrets:
            assert not any(secret.encode() in t for t in texts), secret


def test_cards_show_the_scores_and_fit_one_a4_page(run, tmp_path: Path) -> None:
    folder = run["root"] / "cards"
    for pid in [*DICOM_IDS, *NIFTI_IDS]:
        page = (folder / f"{pid}.html").read_text()
        row = run["scores"].loc[pid]
        assert float(re.search(r'data-risk="([^"]+)"', page).group(1)) == row["risk_365d"]
        assert f"{100 * row['risk_365d']:.1f}" in page
        assert "data:image/png;base64," in page and "http" not in page.replace(
            "http://www.w3.org/2000/svg", ""
        )  # nothing fetched
        pdf = (folder / f"{pid}.pdf").read_bytes()
        assert pdf_pages(pdf) == 1  # WeasyPrint: one page
    if chromium() is None:
        pytest.skip("no Chromium binary: install Debian's chromium package")
    page = folder / "P0001.html"
    seen = _measure(page, tmp_path, 794, 1123)  # A4 at 96 dpi
    assert seen["overflow"] == [], seen["overflow"]
    assert seen["height"] <= 1123, seen["height"]  # the whole card within one A4 screen page
    assert seen["minFont"]["size"] >= 10.5, seen["minFont"]  # readable at 100 %
    assert all(s["shown"] and s["height"] > 0 for s in seen["sections"])
    (img,) = seen["images"]
    assert img["natural"] > 0 and img["width"] > 150
    pdf = _print_pdf(page, tmp_path)
    assert pdf_pages(pdf) == 1  # Chromium prints one A4 page


def pdf_pages(pdf: bytes) -> int:
    """Page objects of a PDF, in its plain and its compressed (object) streams; no PDF reader
    is installed, and a page object is all this needs."""
    import zlib

    chunks = [pdf]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        with contextlib.suppress(zlib.error):
            chunks.append(zlib.decompress(m.group(1)))
    return sum(len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", c)) for c in chunks)


def _flags(folder: Path) -> list[str]:
    return [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={folder / 'profile'}",
    ]


def _measure(page: Path, folder: Path, width: int, height: int) -> dict:
    import html

    text = page.read_text(encoding="utf-8")
    copy = folder / page.name
    copy.write_text(text.replace("</body>", f"<script>{CHECK_SCRIPT.read_text()}</script></body>"))
    cmd = [
        *_flags(folder),
        f"--window-size={width},{height}",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=5000",
        "--dump-dom",
        copy.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="__browser_check__">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-800:]
    return json.loads(html.unescape(found.group(1)))


def _print_pdf(page: Path, folder: Path) -> bytes:
    out = folder / "printed.pdf"
    cmd = [*_flags(folder), "--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return out.read_bytes()


def _saved_script(name: str) -> str:
    """A script of docs/deploy.md, as the page writes it (a docs-test 'save' block)."""
    from test_docs import ROOT, read_blocks

    (block,) = [b for b in read_blocks(ROOT / "docs" / "deploy.md") if b.marker == ("save", name)]
    return block.code


def test_deploy_page_sends_the_sr_and_seg_to_a_pacs(run, tmp_path: Path) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

    received: list[pydicom.Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    scp = AE(ae_title="TESTPACS")
    scp.add_supported_context(Comprehensive3DSRStorage)
    scp.add_supported_context(SegmentationStorage)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        script = tmp_path / "send_to_pacs.py"
        script.write_text(_saved_script("send_to_pacs.py"))
        port = str(server.server_address[1])
        folder = run["root"] / "sr"
        done = subprocess.run(
            [sys.executable, str(script), str(folder), "127.0.0.1", port, "TESTPACS"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    sent = [pydicom.dcmread(folder / f"{p}.{k}.dcm") for p in DICOM_IDS for k in ("seg", "sr")]
    assert [r.SOPInstanceUID for r in received] == [s.SOPInstanceUID for s in sent]
    for got, file in zip(received, sent, strict=True):
        assert got.PatientID == file.PatientID and got.SOPClassUID == file.SOPClassUID


def test_deploy_page_posts_the_risk_assessments_to_a_fhir_server(run, tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posted: list[tuple[str, dict, bytes]] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posted.append((self.path, dict(self.headers), body))
            self.send_response(201)
            self.send_header("Location", f"/fhir/RiskAssessment/{len(posted)}/_history/1")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = tmp_path / "post_to_ehr.py"
        script.write_text(_saved_script("post_to_ehr.py"))
        base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        folder = run["root"] / "fhir"
        env = {k: v for k, v in os.environ.items() if k != "FHIR_TOKEN"}
        done = subprocess.run(
            [sys.executable, str(script), str(folder), base],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [*DICOM_IDS, *NIFTI_IDS]
    assert [p for p, _, _ in posted] == ["/fhir/RiskAssessment"] * len(ids)
    for pid, (_, headers, body) in zip(ids, posted, strict=True):
        assert body == (folder / f"{pid}.json").read_bytes()
        assert headers["Content-Type"] == "application/fhir+json"
        assert headers["If-None-Exist"].startswith("identifier=urn%3Arefracture%3Arisk-assessment")


def test_outputs_that_cannot_be_written_are_refused_before_any_patient(
    run, trained, tmp_path: Path
) -> None:
    import dataclasses

    from refracture.errors import InputError
    from refracture.outputs import OutputOptions, check_options
    from refracture.scoring import ScoringModel

    root = run["root"]
    base = [
        "score",
        "--tracking-uri",
        trained.tracking_uri,
        "--model",
        URI,
        "--out",
        tmp_path / "s.csv",
    ]
    cases = {
        "--dicom-sr needs --manifest: the SR references the DICOM maps": [
            "--features",
            root / "scores.csv",
            "--dicom-sr",
            tmp_path / "sr",
        ],
        "--dicom-sr cannot be pseudonymised": [
            "--manifest",
            root / "manifest.csv",
            "--dicom-sr",
            tmp_path / "sr",
            "--pseudonymise",
        ],
        "give --fhir, --cards different folders": [
            "--manifest",
            root / "manifest.csv",
            "--fhir",
            tmp_path / "x",
            "--cards",
            tmp_path / "x",
        ],
        "the FHIR identifier system must be a URI (got 'hospital ids')": [
            "--manifest",
            root / "manifest.csv",
            "--fhir",
            tmp_path / "f",
            "--fhir-system",
            "hospital ids",
        ],
    }
    for says, args in cases.items():
        res = CliRunner().invoke(app, [str(a) for a in [*base, *args]])
        assert res.exit_code == 2 and says in res.output, res.output
        assert not (tmp_path / "s.csv").exists() and not (tmp_path / "sr").exists()
    clinical_only = ScoringModel(
        URI, "1", dataclasses.replace(run["model"].bundle, extraction=None)
    )  # a model that opens no image
    with pytest.raises(InputError, match="--dicom-sr needs a model that measures images"):
        check_options(
            OutputOptions(dicom_sr=tmp_path / "sr"),
            clinical_only,
            manifest="m.csv",
            pseudonymise=False,
            out=tmp_path / "s.csv",
        )


def test_a_patient_whose_outputs_fail_does_not_stop_the_others(
    run, synth_dicom: Path, tmp_path: Path
) -> None:
    """Images changed between scoring and the outputs: that patient's outputs are refused
    (its risk would not be the scores file's), the other patient's are written."""
    from refracture.outputs import OutputOptions, write_outputs
    from refracture.scoring import score

    manifest = pd.read_csv(synth_dicom / "manifest.csv", dtype=str).head(2)
    for c in ("pdff", "r2star", "labels"):
        manifest[c] = [str(synth_dicom / p) for p in manifest[c]]
    changed = tmp_path / "P0002-pdff"
    shutil.copytree(manifest.loc[1, "pdff"], changed)
    manifest.loc[1, "pdff"] = str(changed)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    result = score(
        run["model"],
        manifest=tmp_path / "manifest.csv",
        out=tmp_path / "s.csv",
        clinical=synth_dicom / "clinical.csv",
        cache_dir=None,
    )
    assert result.n_ok == 2
    for f in changed.glob("*.dcm"):  # a new export with other values, after scoring
        ds = pydicom.dcmread(f)
        ds.PixelData = (ds.pixel_array * 1.2).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(f)
    done = write_outputs(result, result.data, OutputOptions(fhir=tmp_path / "fhir"))
    index = done.index["fhir"].set_index("patient_id")
    assert index.loc["P0001", "status"] == "written" and (tmp_path / "fhir/P0001.json").exists()
    assert index.loc["P0002", "status"] == "error" and not (tmp_path / "fhir/P0002.json").exists()
    assert "an image changed since scoring; score again" in index.loc["P0002", "reason"]
    assert done.exit_code == 1 and done.notes == [f"--fhir P0002: {index.loc['P0002', 'reason']}"]


def test_sr_and_seg_from_an_enhanced_multi_frame_export(trained, synth_export: Path, tmp_path):
    """A Siemens-style export (one enhanced multi-frame file per map, found by `refracture
    index`): the SEG's frames follow the source file's frames, and its PDFF regions on the
    source's own stored values give the SR's means (rescale slope 0.1: percent)."""
    study = tmp_path / "study"
    done = CliRunner().invoke(
        app,
        [
            "index",
            str(synth_export / "export"),
            "--out",
            str(study / "manifest.csv"),
            "--clinical",
            str(synth_export / "clinical.csv"),
        ],
    )
    assert done.exit_code == 0, done.output
    manifest = pd.read_csv(study / "manifest.csv", dtype=str)
    manifest[manifest.vendor == "Siemens"].head(1).to_csv(study / "manifest.csv", index=False)
    (pid,) = pd.read_csv(study / "manifest.csv", dtype=str).patient_id
    args = [
        "score",
        "--tracking-uri",
        trained.tracking_uri,
        "--model",
        URI,
        "--manifest",
        study / "manifest.csv",
        "--clinical",
        synth_export / "clinical.csv",
        "--out",
        tmp_path / "s.csv",
        "--no-cache",
        "--jobs",
        "1",
        "--dicom-sr",
        tmp_path / "sr",
    ]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0 and "(1 written)" in res.output, res.output
    seg = hd.seg.segread(tmp_path / "sr" / f"{pid}.seg.dcm")
    sr = hd.sr.srread(tmp_path / "sr" / f"{pid}.sr.dcm")
    pdff_series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    ((_, _, sop_uid),) = {u for u in seg.get_source_image_uids() if u[1] == pdff_series}
    row = pd.read_csv(study / "manifest.csv", dtype=str).iloc[0]
    folder = (study / row["pdff"].split("#", 1)[0]).resolve()  # the map's folder, as indexed
    (source,) = [
        f
        for f in folder.iterdir()
        if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == sop_uid
    ]
    ds = pydicom.dcmread(source)
    assert int(ds.NumberOfFrames) > 1  # one enhanced multi-frame image
    frames = list(range(1, int(ds.NumberOfFrames) + 1))
    checked = 0
    for name, group in _groups(sr).items():
        if not name.endswith("PDFF"):
            continue
        (number,) = group.referenced_segment.referenced_segment_numbers
        mask = seg.get_pixels_by_source_frame(
            sop_uid, frames, segment_numbers=[number], assert_missing_frames_are_empty=True
        )[..., 0]
        (m,) = group.get_measurements()
        assert ds.pixel_array[mask > 0].mean() * 0.1 == pytest.approx(m.value, rel=1e-5), name
        checked += 1
    assert checked >= 6
