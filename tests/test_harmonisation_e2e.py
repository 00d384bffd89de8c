"""Issue 15 "done when", as a new user would: ``refracture train`` with
``harmonisation: {method: combat, batch: scanner}`` on a synthetic cohort with a 3 T scanner
registers a model that scores a new 3 T patient like the same patient imaged at 1.5 T, and
refuses (or, per config, warns about) a patient from a scanner it never saw.

The cohort is the session's 90-patient synthetic cohort (``trained`` in conftest.py: site 1
replaces its 1.5 T scanner MR1 by a 3 T MR2 halfway; site 2 scans at 3 T), so its images are
measured once per session. The new patient is one of site 1's 1.5 T patients, imaged again
"on MR2": the same anatomy with MR2's effects applied to the maps as the synthetic generator
applies them (R2* x 1.7 at 3 T, PDFF + 0.5 points), written as real NIfTI files with sidecars.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import mlflow
import nibabel as nib
import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.features import extract_cohort
from refracture.scoring.model import load_model
from refracture.scoring.rows import predict_frame
from refracture.synth.cohort import SITE_SCANNERS, Scanner
from refracture.tracking import quiet_mlflow

MR1, MR2 = SITE_SCANNERS[0]  # site 1's 1.5 T scanner and its 3 T replacement

CONFIG = """
data:
  manifest: {cohort}/manifest.csv
  clinical: {cohort}/clinical.csv
  cache_dir: {cache}
covariates:
  numeric: [age, bmd_tscore]
  binary: [prior_fracture, anti_osteoporosis]
  categorical: {{sex: F}}
imaging:
  features: [pdff_mean_normal, r2star_mean_normal]
harmonisation:
  method: combat
  batch: scanner
  preserve: [age, sex, bmd_tscore]
extraction:
  r2star_units: per_s
models: [cox]
feature_sets: [clinical+imaging]
validation:
  split: kfold
  folds: 3
  bootstrap: 5
  seed: 0
mlflow:
  tracking_uri: {uri}
  experiment: harmonised
"""


def _rescan(src: Path, dst: Path, scanner, pdff_shift: float, r2star_factor: float) -> None:
    """The patient's maps as ``scanner`` would show them (labels unchanged)."""
    dst.mkdir(parents=True)
    shutil.copy(src / "labels.nii.gz", dst / "labels.nii.gz")
    for kind, change in (
        ("pdff", lambda a: a + pdff_shift),
        ("r2star", lambda a: a * r2star_factor),
    ):
        img = nib.load(src / f"{kind}.nii.gz")
        out = nib.Nifti1Image(change(img.get_fdata()), img.affine, img.header)
        nib.save(out, dst / f"{kind}.nii.gz")
        sidecar = json.loads((src / f"{kind}.json").read_text())
        sidecar |= {
            "MagneticFieldStrength": scanner.field_strength_t,
            "ManufacturerModelName": scanner.model,
            "SoftwareVersions": scanner.software,
        }
        (dst / f"{kind}.json").write_text(json.dumps(sidecar))


@pytest.fixture(scope="module")
def harmonised(trained, tmp_path_factory):
    """Train with harmonisation by scanner via the CLI; write the new patients to score."""
    root = tmp_path_factory.mktemp("harmonised")
    cohort = trained.cohort
    uri = f"sqlite:///{root}/mlflow.db"
    config = root / "train.yaml"
    config.write_text(CONFIG.format(cohort=cohort, cache=trained.root / "cache", uri=uri))
    quiet_mlflow()
    with contextlib.chdir(root):
        result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output

    manifest = pd.read_csv(cohort / "manifest.csv")
    clinical = pd.read_csv(cohort / "clinical.csv")
    source = manifest[(manifest["site"] == "site_1") & (manifest["scanner"] == MR1.name)].iloc[0]
    new = root / "new"
    rows, clin = [], []
    mr9 = Scanner("MR9", "GE", MR2.manufacturer, "SIGNA Hero", "MR30.0", 3.0, 0.5, 1.0)
    # NEW-3T-AS-MR1: the 3 T scan sent as if still from MR1 (a site that did not declare
    # its new scanner): what harmonisation does is seen against it.
    patients = (("NEW-15T", MR1, MR1), ("NEW-3T", MR2, MR2), ("NEW-3T-AS-MR1", MR2, MR1))
    for pid, scanner, declared in (*patients, ("NEW-MR9", mr9, mr9)):
        shift, factor = scanner.pdff_bias - MR1.pdff_bias, scanner.r2star_factor / MR1.r2star_factor
        _rescan(cohort / "images" / source["patient_id"], new / pid, scanner, shift, factor)
        rows.append(
            source.to_dict()
            | {
                "patient_id": pid,
                "pdff": f"{pid}/pdff.nii.gz",
                "r2star": f"{pid}/r2star.nii.gz",
                "labels": f"{pid}/labels.nii.gz",
                "field_strength_t": declared.field_strength_t,
                "vendor": declared.vendor,
                "scanner": declared.name,
            }
        )
        clin.append(clinical[clinical["patient_id"] == source["patient_id"]].assign(patient_id=pid))
    pd.DataFrame(rows).to_csv(new / "manifest.csv", index=False)
    pd.concat(clin).to_csv(new / "clinical.csv", index=False)
    out = root / "scores.csv"
    with contextlib.chdir(root):
        scored = CliRunner().invoke(
            app,
            [
                "score",
                "--model", "models:/refracture-1y@champion",
                "--manifest", str(new / "manifest.csv"),
                "--clinical", str(new / "clinical.csv"),
                "--out", str(out),
                "--tracking-uri", uri,
                "--cache-dir", str(root / "cache"),
            ],
        )  # fmt: skip
    return {
        "root": root,
        "config": config,
        "uri": uri,
        "new": new,
        "scored": scored,
        "scores": pd.read_csv(out, keep_default_na=False).set_index("patient_id"),
    }


def test_a_new_3t_patient_scores_like_the_same_patient_at_1_5t(harmonised) -> None:
    """With 25 development patients per scanner ComBat's batch estimates carry sampling error
    (docs/harmonisation.md), so the 3 T score is close, not equal; the 560-patient version
    with about 90 per scanner is in test_harmonisation_study.py."""
    scores = harmonised["scores"]
    for pid in ("NEW-15T", "NEW-3T", "NEW-3T-AS-MR1"):
        assert scores.loc[pid, "status"] == "ok" and scores.loc[pid, "warnings"] == "", pid
    risk = pd.to_numeric(scores["risk_365d"], errors="coerce")
    gap = abs(risk["NEW-3T"] - risk["NEW-15T"])
    undeclared = abs(risk["NEW-3T-AS-MR1"] - risk["NEW-15T"])
    assert undeclared > 0.05, risk.to_dict()  # 3 T values taken as 1.5 T ones
    assert gap < 0.5 * undeclared and gap < 0.05, risk.to_dict()


def test_a_patient_from_a_scanner_never_seen_is_refused_or_warned(harmonised) -> None:
    scores, scored = harmonised["scores"], harmonised["scored"]
    assert scored.exit_code == 1, scored.output  # some patients not scored
    row = scores.loc["NEW-MR9"]
    assert row["status"] == "error" and row["risk_365d"] == ""
    assert "site_1/MR9" in row["error"] and "harmonisation.unseen_batch" in row["error"]
    # The same registered model under unseen_batch: pooled scores it with a warning.
    model = load_model("models:/refracture-1y@champion", harmonised["uri"])
    model.bundle.pipeline.harmoniser.set_params(unseen_batch="pooled")
    new = harmonised["new"]
    extracted = extract_cohort(
        new / "manifest.csv", model.bundle.extraction, cache_dir=harmonised["root"] / "cache"
    )
    clinical = pd.read_csv(new / "clinical.csv").drop(columns="site")
    table = extracted.features.merge(clinical, on="patient_id")
    table["scanner_id"] = pd.read_csv(new / "manifest.csv")["scanner"]
    out = predict_frame(model.bundle, table).set_index("patient_id")
    assert (out["status"] == "ok").all()
    assert "site_1/MR9 was not in the development data" in out.loc["NEW-MR9", "warnings"]
    assert out.loc["NEW-3T", "warnings"] == ""


def test_the_run_logs_leave_one_site_out_with_and_without_harmonisation(harmonised) -> None:
    mlflow.set_tracking_uri(harmonised["uri"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("harmonised")
    runs = client.search_runs([exp.experiment_id], "tags.`refracture.model` = 'cox'")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"loso_cindex_harrell", "loso_cindex_harrell_harmonised"} <= set(metrics)
    assert "loso_auc_365d_harmonised.site_2" in metrics
    files = [f.path for f in client.list_artifacts(runs[0].info.run_id)]
    assert "per_site_harmonisation.csv" in files
    version = client.get_model_version_by_alias("refracture-1y", "champion")
    assert version.run_id == runs[0].info.run_id
    # the study report shows the comparison side by side, and Table 1 by site and scanner
    parent = runs[0].data.tags["mlflow.parentRunId"]
    (report,) = Path(harmonised["uri"].removeprefix("sqlite:///")).parent.glob(
        f"refracture-runs/{parent}/report.html"
    )
    html = report.read_text(encoding="utf-8")
    assert 'id="per-site-harmonisation1"' in html and "cindex_harrell_harmonised" in html
    assert 'id="table1-scanner"' in html and "site_1 / 1.5 T" in html and "site_1 / 3 T" in html
