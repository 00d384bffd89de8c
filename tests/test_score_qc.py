"""Scoring carries extraction QC and refuses unit mistakes (issues 12.4, 13.1, 13.2).

Against the real SQLite MLflow store of the `trained` fixture (trained with no unit config: the
synthetic cohort declares its units, and the model pins each training site's). New synthetic
patients are written as real files, some of them broken the way the issue found them:

* no unit declared at all: a known site's patient takes the model's units, nobody is lost;
* a T2* map in ms where the model's site reads R2* in 1/s: an error row naming the mistake;
* a label map shifted 30 mm: an error row (misregistration is in ``extraction.qc_errors``);
* a label map without L1 next to treated L2: scored, with the warning;
* PDFF given as a fraction in a features file: an error row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.covariates import UNIT_MISTAKE, check_covariates
from refracture.ranges import r2star_floor, unit_mistake
from refracture.synth import write_cohort
from refracture.synth.cohort import simulate_cohort
from test_extract_wiring import shift_labels

runner = CliRunner()
MODEL = "models:/refracture-1y/1"


@pytest.fixture(scope="module")
def new_patients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten new patients of the training sites (seed 33: N0004 is a 3 T patient treated at L2)."""
    out = tmp_path_factory.mktemp("new_patients")
    write_cohort(out, n=10, n_sites=2, seed=33, id_prefix="N", jobs=2)
    return out


def score_cli(trained, out: Path, *args: str | Path):
    return runner.invoke(
        app,
        ["score", "--model", MODEL, "--out", str(out), "--tracking-uri", trained.tracking_uri,
         "--jobs", "1", "--cache-dir", str(out.parent / "cache"), *map(str, args)],
    )  # fmt: skip


def undeclared(cohort: Path, out: Path) -> Path:
    """A copy of a synthetic cohort with nothing declared: no unit columns, no sidecars."""
    shutil.copytree(cohort, out)
    for sidecar in (out / "images").rglob("*.json"):
        sidecar.unlink()
    manifest = pd.read_csv(out / "manifest.csv").drop(columns=["pdff_units", "r2star_units"])
    manifest.to_csv(out / "manifest.csv", index=False)
    return out


def test_new_patients_with_nothing_declared_take_their_sites_units(
    trained, new_patients: Path, tmp_path: Path
) -> None:
    """synth -> extract -> train -> score with no unit config anywhere loses no patient."""
    cohort = undeclared(new_patients, tmp_path / "cohort")
    out = tmp_path / "scores.csv"
    res = score_cli(trained, out, "--manifest", cohort / "manifest.csv",
                    "--clinical", cohort / "clinical.csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    scores = pd.read_csv(out, keep_default_na=False)
    assert len(scores) == 10 and (scores["status"] == "ok").all(), scores[["error", "warnings"]]
    # the same risks as with the units declared
    declared = tmp_path / "declared.csv"
    res = score_cli(trained, declared, "--manifest", new_patients / "manifest.csv",
                    "--clinical", new_patients / "clinical.csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(
        scores["risk_365d"], pd.read_csv(declared)["risk_365d"], rtol=1e-9, atol=0
    )


def _patients(cohort: Path) -> pd.DataFrame:
    truth = pd.read_csv(cohort / "truth.csv").set_index("patient_id")
    manifest = pd.read_csv(cohort / "manifest.csv").set_index("patient_id")
    return manifest.join(truth[["field_strength_t"]], rsuffix="_truth")


def test_image_mistakes_become_error_rows_or_warnings(
    trained, new_patients: Path, tmp_path: Path
) -> None:
    cohort = undeclared(new_patients, tmp_path / "cohort")
    info = _patients(cohort)
    at_3t = info[info["field_strength_t"] == 3.0]
    l2 = "N0004"
    assert info.loc[l2, "treated_levels"] == "L2" and info.loc[l2, "field_strength_t"] == 3.0
    t2star, shifted = [p for p in at_3t.index if p != l2][:2]

    # a T2* map in ms (1000 / R2*) where the model reads this site in 1/s
    path = cohort / info.loc[t2star, "r2star"]
    img = nib.load(str(path))
    r2 = np.asarray(img.dataobj, dtype=np.float32)
    with np.errstate(divide="ignore"):
        t2 = np.where(r2 > 0, 1000.0 / r2, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(t2, img.affine), str(path))
    # a label map shifted 30 mm (anterior)
    shift_labels(cohort / info.loc[shifted, "labels"], (0.0, 30.0, 0.0))
    # no L1 in the label map of the patient treated at L2
    lab_path = cohort / info.loc[l2, "labels"]
    lab = nib.load(str(lab_path))
    data = np.asarray(lab.dataobj)
    nib.save(nib.Nifti1Image(np.where(data == 20, 0, data).astype(np.uint8), lab.affine),
             str(lab_path))  # fmt: skip

    out = tmp_path / "scores.csv"
    res = score_cli(trained, out, "--manifest", cohort / "manifest.csv",
                    "--clinical", cohort / "clinical.csv")  # fmt: skip
    assert res.exit_code == 1, res.output  # some rows are errors
    s = pd.read_csv(out, keep_default_na=False).set_index("patient_id")
    assert len(s) == 10
    assert (s.drop(index=[t2star, shifted])["status"] == "ok").all()

    err = s.loc[t2star, "error"]
    assert s.loc[t2star, "status"] == "error"
    assert "r2star_mean_normal=" in err and "looks like a T2* in ms, not R2* in 1/s" in err
    assert "at 3 T" in err

    assert s.loc[shifted, "status"] == "error"
    assert "label map misregistered" in s.loc[shifted, "error"]
    assert "extraction.qc_errors lists misregistration" in s.loc[shifted, "error"]
    assert "label map resampled to the PDFF grid" in s.loc[shifted, "warnings"]

    assert s.loc[l2, "status"] == "ok"
    warn = s.loc[l2, "warnings"]
    assert "adjacent features of treated L2 from L3 only (L1 not in the label map)" in warn
    assert "gap in the label map at L1" in warn


def test_pdff_as_a_fraction_in_a_features_file_is_an_error_row(trained, tmp_path: Path) -> None:
    feats = pd.read_parquet(trained.result.run_dir / "extraction" / "features.parquet")
    clinical = trained.cohort / "clinical.csv"
    good = tmp_path / "features.parquet"
    feats.head(6).to_parquet(good)
    res = score_cli(trained, tmp_path / "ok.csv", "--features", good, "--clinical", clinical)
    assert res.exit_code == 0, res.output
    ok = pd.read_csv(tmp_path / "ok.csv")

    wrong = feats.head(6).copy()
    pdff = [c for c in wrong.columns if c.startswith("pdff_") and "_n_" not in c]
    wrong[pdff] = wrong[pdff] / 100.0  # the fraction a vendor export writes
    bad = tmp_path / "fraction.parquet"
    wrong.to_parquet(bad)
    res = score_cli(trained, tmp_path / "bad.csv", "--features", bad, "--clinical", clinical)
    assert res.exit_code == 1, res.output
    s = pd.read_csv(tmp_path / "bad.csv", keep_default_na=False)
    assert (s["status"] == "error").all()
    assert (
        s["error"]
        .str.contains(
            "pdff_mean_normal=0.[0-9]+: PDFF looks like a fraction \\(0-1\\), not percent"
        )
        .all()
    )
    # what the model would have said, had it scored the fraction: a different patient
    from refracture.scoring import load_model

    bundle = load_model(MODEL, trained.tracking_uri).bundle
    x = wrong.set_index("patient_id").join(
        pd.read_csv(clinical).set_index("patient_id"), rsuffix="_c"
    )[bundle.covariates.names]
    silent = bundle.pipeline.predict_risk(x)
    moved = np.abs(np.asarray(silent) - ok["risk_365d"].to_numpy())
    print("risk in percent:", ok["risk_365d"].round(3).tolist(), "as a fraction:",
          np.round(silent, 3).tolist())  # fmt: skip
    assert moved.max() > 0.01


def test_the_unit_rule_never_refuses_a_synthetic_patient() -> None:
    """Over five 560-patient synthetic cohorts, every vertebra's true PDFF and R2* (treated and
    oedematous ones included) passes the unit rule at its scanner's field strength, while the
    same maps stored as fractions or as T2* in ms at 3 T are refused."""
    levels = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    refused_t2 = n_3t = 0
    for seed in range(5):
        t = simulate_cohort(560, 4, seed).truth
        field = t["field_strength_t"].to_numpy()
        for lv in levels:
            for kind, col in (("pdff", f"pdff_mean_{lv}"), ("r2star", f"r2star_mean_{lv}")):
                values = t[col].to_numpy()
                bad = [unit_mistake(col, v, f) for v, f in zip(values, field, strict=True)]
                assert not any(bad), [b for b in bad if b][:3]
                if kind == "pdff":
                    pairs = zip(values, field, strict=True)
                    assert all(unit_mistake(col, v / 100, f) for v, f in pairs)
                else:
                    t2 = 1000.0 / values[field == 3.0]
                    refused_t2 += sum(bool(unit_mistake(col, v, 3.0)) for v in t2)
                    n_3t += len(t2)
    assert refused_t2 / n_3t > 0.95, refused_t2 / n_3t
    print(f"T2* in ms at 3 T refused: {refused_t2}/{n_3t}")


def test_unit_mistakes_are_scoring_errors_not_warnings() -> None:
    table = pd.DataFrame(
        {
            "pdff_mean_normal": [45.0, 0.45, 450.0, 45.0],
            "r2star_mean_normal": [80.0, 80.0, 80.0, 14.0],
        }
    )
    check = check_covariates(
        table,
        imaging=["pdff_mean_normal", "r2star_mean_normal"],
        training_range={"pdff_mean_normal": (30.0, 60.0)},
        field_strength=[3.0, 3.0, np.nan, 3.0],
    )
    err, warn = check.row_messages()
    assert err[0] == "" and warn[0] == ""
    assert "looks like a fraction" in err[1] and "outside training" not in warn[1]
    assert "looks like per mille" in err[2]
    assert "looks like a T2* in ms" in err[3] and f"{r2star_floor(3.0):g} 1/s" in err[3]
    assert {f.kind for f in check.findings} == {UNIT_MISTAKE}
    # at 1.5 T (or unknown) 14 1/s is possible marrow: no error
    check = check_covariates(table.iloc[[3]], imaging=["r2star_mean_normal"], field_strength=[1.5])
    assert check.row_messages()[0].iloc[0] == ""
