"""`refracture demo` end to end on a GE-style DICOM cohort, and what its outputs must not hold."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
import pydicom
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from refracture.cli import app
from refracture.report import SECTIONS
from test_report import parse, render_in_browser, tree, tripod_links


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("demo") / "refracture-demo"
    # README's first command on the smallest cohort the demo accepts, DICOM this time
    args = ["demo", "--workdir", str(workdir), "--n", "80", "--new", "6", "--bootstrap", "4",
            "--format", "dicom"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return workdir, result.output


def test_demo_runs_the_whole_product(demo) -> None:
    workdir, output = demo
    reports = list((workdir / "refracture-runs").glob("*/report.html"))
    assert len(reports) == 1
    assert set(parse(reports[0]).images) >= set(SECTIONS)
    scores = pd.read_csv(workdir / "scores.csv")
    assert len(scores) == 6 and (scores["status"] == "ok").all()
    assert scores["patient_id"].str.startswith("N").all()
    assert scores["risk_365d"].between(0, 1).all()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mv = MlflowClient().get_model_version_by_alias("refracture-1y", "champion")
    assert mv.version is not None
    # the summary: metrics with CIs, added value, where things are, the two commands
    for word in ("Harrell", "AUC", "calibrat", "delta", "NRI", "IDI"):  # cells wrap at 80 columns
        assert word in output, word
    serve = f'MLFLOW_TRACKING_URI={uri} mlflow models serve -m "models:/refracture-1y@champion"'
    for text in ("scores.csv", "report.html", f"mlflow ui --backend-store-uri {uri}", serve):
        assert text in output, text
    # the time of every stage: synthesis, extraction, each candidate's validation, scoring
    stages = (
        "synthesising the cohort",
        "extracting features",
        "validating cox (clinical)",
        "validating rsf (clinical+imaging)",
        "writing the study report",
        "scoring",
    )
    assert "time per stage" in output
    for stage in stages:
        assert stage in output.split("time per stage")[1], stage


def test_demo_report_tripod_links_land_in_chromium(demo, tmp_path) -> None:
    """The demo's own report (not only the test fixture's): every TRIPOD+AI link points at a
    section with content, and in a browser at 1400 px each one scrolls its target into view,
    with nothing wider than the page."""
    workdir, _ = demo
    report = next((workdir / "refracture-runs").glob("*/report.html"))
    t = tree(report.read_text(encoding="utf-8"))
    links = tripod_links(t)
    assert {"5a", "9a", "10", "12e", "16", "20c", "23a"} <= set(links)
    for item, anchor in links.items():
        assert anchor in t.ids and len(t.ids[anchor].text().split()) >= 5, (item, anchor)
    seen = render_in_browser(report, tmp_path)
    assert {link["item"]: link["id"] for link in seen["links"]} == links
    for link in seen["links"]:
        assert link["exists"] and link["shown"] and link["inView"], link
    assert seen["overflow"] == []


def test_demo_outputs_command_writes_sr_fhir_and_cards_with_the_scores(demo) -> None:
    """The command the summary prints for PACS, EHR and clinic outputs, run as printed: every
    new patient gets an SR + SEG, a RiskAssessment and a card, each with the scores' risk (the
    identity scan below then covers the FHIR and card files too)."""
    import json
    import re
    import shlex

    import highdicom as hd

    workdir, output = demo
    (line,) = [x for x in output.splitlines() if x.startswith("  PACS, EHR and clinic outputs:")]
    args = shlex.split(line.split(":", 1)[1])
    assert args[0] == "refracture" and "--dicom-sr" in args
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(workdir / "scores.csv", float_precision="round_trip")
    for kind in ("sr", "fhir", "cards"):
        index = pd.read_csv(workdir / kind / "index.csv")
        assert list(index.patient_id) == list(scores.patient_id)
        assert (index.status == "written").all(), index
    for row in scores.itertuples():
        sr = hd.sr.srread(workdir / "sr" / f"{row.patient_id}.sr.dcm")
        (group,) = sr.content.get_image_measurement_groups()
        assert group.get_measurements()[0].value == row.risk_365d
        fhir = json.loads((workdir / "fhir" / f"{row.patient_id}.json").read_text())
        assert fhir["prediction"][0]["probabilityDecimal"] == row.risk_365d
        card = (workdir / "cards" / f"{row.patient_id}.html").read_text()
        assert float(re.search(r'data-risk="([^"]+)"', card).group(1)) == row.risk_365d


def _identities(images: Path) -> set[str]:
    """The made-up identities the synthetic DICOM headers carry."""
    found: set[str] = set()
    for series in sorted(images.glob("*/*")):
        if not series.is_dir():
            continue
        files = sorted(series.glob("*.dcm"))
        for f in (files[0], files[-1]):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            name = str(ds.PatientName)
            found |= {name, *[p for p in name.split("^") if len(p) > 3]}
            found |= {str(ds.PatientID), str(ds.PatientBirthDate), str(ds.AccessionNumber)}
            found |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
            found |= {str(ds.FrameOfReferenceUID), str(ds.InstitutionName)}
            found.add(str(ds.ReferringPhysicianName))
    return {i for i in found if i}


def test_no_dicom_identity_reaches_any_output(demo) -> None:
    workdir, output = demo
    identities = _identities(workdir / "cohort" / "images") | _identities(
        workdir / "new_patients" / "images"
    )
    assert len(identities) > 50  # names, IDs, birth dates and UIDs of every patient
    needles = [i.encode() for i in identities]
    scanned = 0
    for root, _, files in os.walk(workdir):
        for name in files:
            path = Path(root) / name
            if path.suffix == ".dcm":
                continue  # the inputs themselves
            data = path.read_bytes()
            scanned += 1
            leaked = [n.decode() for n in needles if n in data]
            assert not leaked, f"{path} holds DICOM identities {leaked[:3]}"
    assert scanned > 100  # store, artifacts, report, caches, tables, scores
    assert not [i for i in identities if i in output]  # nor the terminal


def test_stage_times_pass_reports_on_and_add_up() -> None:
    from refracture.cli.demo import StageTimes

    seen = []
    clock = StageTimes(lambda *report: seen.append(report))
    for report in (("a", 0, 2), ("a", 2, 2), ("b", 0, 1), ("a", 0, 1), ("b", 1, 1)):
        clock(*report)
    seconds = clock.finish()
    assert seen == [("a", 0, 2), ("a", 2, 2), ("b", 0, 1), ("a", 0, 1), ("b", 1, 1)]
    assert list(seconds) == ["starting", "a", "b"]  # a stage that comes back adds up
    assert all(v >= 0 for v in seconds.values())
    assert list(StageTimes().finish()) == ["starting"]  # no report: all of it is start-up
