"""`--engine spark`: Apache Spark in local[2] for real, against the local engine's files.

One SparkSession for the module (Spark takes tens of seconds to start). The registered model
is the `trained` fixture's, in a real SQLite MLflow store; the images are real NIfTI files,
some of them broken. Without pyspark or Java the Spark tests are skipped; the tests of the
messages for a missing pyspark or Java run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from refracture.cli import app
from refracture.errors import InputError
from refracture.features import extract_cohort
from refracture.scoring import load_model, score
from refracture.scoring.rows import TEXT_COLUMNS
from refracture.synth import write_cohort

URI = "models:/refracture-1y@champion"
runner = CliRunner()


def _spark_missing() -> str | None:
    from refracture.engines import require_spark

    try:
        require_spark()
    except InputError as err:
        return err.one_line()
    return None


MISSING = _spark_missing()
needs_spark = pytest.mark.skipif(MISSING is not None, reason=f"no Spark here: {MISSING}")


@pytest.fixture(scope="module")
def spark():
    from refracture.engines import spark_session

    with spark_session("local[2]") as handle:
        yield handle


@pytest.fixture(scope="module")
def model(trained):
    return load_model(URI, trained.tracking_uri)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten new patients, six broken in a different way each.

    S0002 pdff file deleted, S0004 labels file corrupt, S0006 age missing, S0007 sex never
    seen in training, S0008 age 130 (implausible: scored with a warning), S0009 sex missing,
    S0010 no clinical row.
    """
    out = tmp_path_factory.mktemp("spark_cohort")
    write_cohort(out, n=10, n_sites=2, seed=8, id_prefix="S", jobs=2)
    images = out / "images"
    (images / "S0002" / "pdff.nii.gz").unlink()
    (images / "S0004" / "labels.nii.gz").write_bytes(b"this is not a NIfTI file")
    clinical = pd.read_csv(out / "clinical.csv", dtype={"patient_id": str, "sex": str})
    clinical.loc[clinical.patient_id == "S0006", "age"] = np.nan
    clinical.loc[clinical.patient_id == "S0007", "sex"] = "X"
    clinical.loc[clinical.patient_id == "S0008", "age"] = 130
    clinical.loc[clinical.patient_id == "S0009", "sex"] = np.nan
    clinical[clinical.patient_id != "S0010"].to_csv(out / "clinical.csv", index=False)
    return out


def assert_same_scores(local: pd.DataFrame, spark: pd.DataFrame) -> None:
    """Same columns, rows and order; text equal; numbers equal to 1e-12 (NaN where NaN)."""
    assert list(spark.columns) == list(local.columns)
    assert list(spark.patient_id) == list(local.patient_id)
    for c in local.columns:
        if c in TEXT_COLUMNS:
            assert spark[c].fillna("").tolist() == local[c].fillna("").tolist(), c
        else:
            a, b = local[c].to_numpy(float), spark[c].to_numpy(float)
            assert np.array_equal(np.isnan(a), np.isnan(b)), c
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=0, err_msg=c)


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False).replace("", np.nan)


def model_frame(model, table: pd.DataFrame) -> pd.DataFrame:
    frame = table[["patient_id", *model.inputs.names]].copy()
    for c in [*model.inputs.numeric, *model.inputs.binary]:
        frame[c] = frame[c].astype(float)
    return frame.reset_index(drop=True)


@pytest.mark.spark
@needs_spark
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_from_a_features_file_equals_the_local_engine(
    trained, model, spark, tmp_path: Path, suffix: str
) -> None:
    from refracture.engines import score_spark

    frame = model_frame(model, trained.result.dataset.X.reset_index()).head(40)
    frame["bmd_tscore"] = frame["bmd_tscore"].astype(object)
    frame.loc[3, "bmd_tscore"] = "low"  # not a number: an error row
    frame.loc[5, "age"] = np.nan  # missing: an error row
    frame.loc[7, "sex"] = "X"  # never seen in training: an error row
    frame.loc[9, "age"] = 130.0  # implausible: a warning
    frame.loc[11, "pdff_mean_normal"] = np.nan  # not measured: imputed, a warning
    features = tmp_path / "features.csv"
    frame.assign(site="site_1").to_csv(features, index=False)  # extra columns are fine

    local = score(model, features=features, out=tmp_path / f"local{suffix}")
    spark_run = score_spark(model, features=features, out=tmp_path / f"spark{suffix}", handle=spark)
    assert_same_scores(read(local.out), read(spark_run.out))
    assert_same_scores(local.scores, spark_run.scores)
    assert spark_run.notes == local.notes
    by_id = spark_run.scores.set_index("patient_id")
    ids = frame.patient_id
    assert "bmd_tscore is not a number ('low')" in by_id.loc[ids[3], "error"]
    assert by_id.loc[ids[5], "error"] == "missing age"
    assert "sex 'X' was not seen in training" in by_id.loc[ids[7], "error"]
    assert "age=130 outside plausible" in by_id.loc[ids[9], "warnings"]
    assert "no pdff_mean_normal" in by_id.loc[ids[11], "warnings"]
    assert (spark_run.scores.status == "ok").sum() == 37
    assert set(spark_run.scores.model_version) == {model.version}


@pytest.mark.spark
@needs_spark
def test_score_from_a_manifest_measures_on_executors_and_equals_the_local_engine(
    trained, model, spark, broken: Path, tmp_path: Path
) -> None:
    from refracture.engines import score_spark

    inputs = {"manifest": broken / "manifest.csv", "clinical": broken / "clinical.csv"}
    calls: list[tuple[str, int, int]] = []
    local = score(model, out=tmp_path / "local.parquet", cache_dir=None, jobs=1, **inputs)
    spark_run = score_spark(
        model,
        out=tmp_path / "spark.parquet",
        cache_dir=None,  # every image is read by an executor
        handle=spark,
        progress=lambda *call: calls.append(call),
        **inputs,
    )
    assert_same_scores(read(local.out), read(spark_run.out))
    assert spark_run.notes == local.notes
    scores = spark_run.scores.set_index("patient_id")
    assert list(scores.index) == [f"S{i:04d}" for i in range(1, 11)]
    errors = scores.error[scores.status == "error"]
    assert set(errors.index) == {"S0002", "S0004", "S0006", "S0007", "S0009", "S0010"}
    assert errors["S0002"].startswith("image load failed")
    assert "pdff image not found" in errors["S0002"]
    assert "labels" in errors["S0004"]
    assert str(broken) not in " ".join(errors)  # paths as the manifest wrote them
    assert errors["S0009"] == "missing sex"
    assert errors["S0010"] == "no row in the clinical table clinical.csv"
    assert "age=130 outside plausible" in scores.loc["S0008", "warnings"]
    # Progress: the patients measured (all but S0010), rising to the end, then the scores.
    measuring = [c for c in calls if c[0] == "measuring images"]
    assert measuring[0] == ("measuring images", 0, 9)
    assert measuring[-1] == ("measuring images", 9, 9)
    assert [c[1] for c in measuring] == sorted(c[1] for c in measuring)
    assert calls[-1] == ("scoring", 10, 10)


@pytest.mark.spark
@needs_spark
def test_extract_on_executors_writes_the_local_engines_files(
    spark, broken: Path, tmp_path: Path
) -> None:
    from refracture.engines import extract_spark

    manifest = broken / "manifest.csv"
    local = extract_cohort(manifest, out_dir=tmp_path / "local", jobs=1)
    spark_run = extract_spark(manifest, out_dir=tmp_path / "spark", handle=spark)
    assert (
        set(spark_run.files)
        == set(local.files)
        == {
            "features",
            "vertebrae",
            "qc",
            "errors",
            "summary",
        }
    )
    assert list(spark_run.errors.patient_id) == ["S0002", "S0004"]
    assert len(spark_run.features) == 8
    for name in ("features.parquet", "vertebrae.parquet", "qc.csv", "errors.csv"):
        a, b = tmp_path / "local" / name, tmp_path / "spark" / name
        assert a.read_bytes() == b.read_bytes(), name  # the same bytes, not only values
    summary = json.loads((tmp_path / "spark" / "extraction.json").read_text())
    assert summary == json.loads((tmp_path / "local" / "extraction.json").read_text())
    assert summary["n_failed"] == 2 and summary["n_computed"] == 8


@pytest.mark.spark
@needs_spark
def test_the_cli_runs_spark_with_the_local_output_and_refuses_resume(
    trained, model, spark, tmp_path: Path
) -> None:
    frame = model_frame(model, trained.result.dataset.X.reset_index()).head(20)
    features = tmp_path / "features.parquet"
    frame.to_parquet(features)
    common = ["score", "--tracking-uri", trained.tracking_uri, "--model", URI]
    common += ["--features", str(features)]
    local = runner.invoke(app, [*common, "--out", str(tmp_path / "local.csv")])
    assert local.exit_code == 0, local.output
    res = runner.invoke(
        app,
        [*common, "--out", str(tmp_path / "spark.csv"), "--engine", "spark"],
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.replace("spark.csv", "local.csv") == local.stdout
    assert_same_scores(read(tmp_path / "local.csv"), read(tmp_path / "spark.csv"))
    for flag in (["--resume"], ["--explain"], ["--chunk-size", "10"]):
        refused = runner.invoke(
            app, [*common, "--out", str(tmp_path / "r.csv"), "--engine", "spark", *flag]
        )
        assert refused.exit_code == 2, refused.output
        assert f"{flag[0]} is not available with --engine spark" in refused.output
    assert not (tmp_path / "r.csv").exists()


def run_cli(args: list[str], env: dict[str, str], block_pyspark: bool = False):
    """The real command line in a new process (its own environment)."""
    block = "sys.modules['pyspark'] = None; " if block_pyspark else ""  # as if not installed
    code = f"import sys; {block}from refracture.cli import main; "
    code += "sys.argv = ['refracture', *sys.argv[1:]]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_without_pyspark_the_spark_engine_exits_2_with_the_extra_to_install(
    synth_nifti: Path, tmp_path: Path
) -> None:
    args = ["extract", "--manifest", str(synth_nifti / "manifest.csv")]
    args += ["--out", str(tmp_path / "out"), "--engine", "spark"]
    proc = run_cli(args, dict(os.environ), block_pyspark=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'pip install "refracture[spark]"' in lines[0] and "pyspark" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    MISSING is not None and "pyspark" in MISSING, reason="pyspark is not installed here"
)
def test_without_java_the_spark_engine_exits_2_saying_java_17_is_required(
    tmp_path: Path,
) -> None:
    no_java = tmp_path / "no-java"
    (no_java / "bin").mkdir(parents=True)
    env = {**os.environ, "JAVA_HOME": str(no_java)}  # Spark's launcher looks here first
    args = ["score", "--model", URI, "--features", str(tmp_path / "f.csv")]
    args += ["--out", str(tmp_path / "s.csv"), "--engine", "spark"]
    proc = run_cli(args, env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Java 17 or later" in lines[0] and "JAVA_HOME" in lines[0]


@pytest.mark.spark
@needs_spark
def test_extract_decides_units_per_site_between_two_spark_jobs_as_the_local_engine(
    spark, tmp_path: Path
) -> None:
    """Box phantoms with nothing declared (test_extract_wiring): site A's ambiguous patient is
    measured in pass 2 once the site decided, site C (one ambiguous patient) is a units error."""
    from refracture.engines import extract_spark
    from refracture.features.cohort import STAGE, STAGE_UNITS
    from test_extract_wiring import _box_cohort

    manifest = _box_cohort(tmp_path / "cohort")
    local = extract_cohort(manifest, out_dir=tmp_path / "local", jobs=1)
    calls: list[tuple[str, int, int]] = []
    spark_run = extract_spark(
        manifest,
        out_dir=tmp_path / "spark",
        handle=spark,
        progress=lambda *call: calls.append(call),
    )
    for name in ("features.parquet", "vertebrae.parquet", "qc.csv", "errors.csv"):
        a, b = tmp_path / "local" / name, tmp_path / "spark" / name
        assert a.read_bytes() == b.read_bytes(), name
    summary = json.loads((tmp_path / "spark" / "extraction.json").read_text())
    assert summary == json.loads((tmp_path / "local" / "extraction.json").read_text())
    assert summary["site_units"] == {
        "A": {"pdff": "percent", "r2star": "per_s"},
        "B": {"pdff": "percent", "r2star": "t2star_ms"},
    }
    assert spark_run.site_units == local.site_units
    assert spark_run.errors.patient_id.tolist() == ["C0"]
    assert spark_run.errors.stage.tolist() == ["units"]
    qc = spark_run.qc.set_index("patient_id")
    assert qc.loc["A24", "qc_r2star_units_source"] == "site"  # ambiguous alone: pass 2
    # both passes ran on Spark, each reporting its own stage up to its own total
    assert (STAGE, 30, 30) in calls
    second = [c for c in calls if c[0] == STAGE_UNITS]
    assert second and second[-1][1] == second[-1][2] >= 1


@pytest.mark.spark
@needs_spark
def test_score_carries_qc_findings_pinned_units_and_the_unit_rule_as_the_local_engine(
    trained, model, spark, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """New patients with nothing declared (they take the model's units for their site), one
    T2* map in ms at 3 T (the unit rule, which reads the measured field strength), one label map
    shifted 30 mm (a QC error: misregistration is in the model's extraction.qc_errors) and one
    without L1 next to treated L2 (a QC warning): the same rows as the local engine."""
    from refracture.engines import score_spark
    from test_extract_wiring import shift_labels
    from test_score_qc import _patients, undeclared

    seed33 = tmp_path_factory.mktemp("spark_qc")
    write_cohort(seed33, n=10, n_sites=2, seed=33, id_prefix="N", jobs=2)
    cohort = undeclared(seed33, tmp_path / "cohort")
    info = _patients(cohort)
    l2 = "N0004"  # 3 T, treated at L2
    t2star, shifted = [p for p in info.index[info.field_strength_t == 3.0] if p != l2][:2]
    path = cohort / info.loc[t2star, "r2star"]
    img = nib.load(str(path))
    r2 = np.asarray(img.dataobj, dtype=np.float32)
    with np.errstate(divide="ignore"):
        t2 = np.where(r2 > 0, 1000.0 / r2, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(t2, img.affine), str(path))
    shift_labels(cohort / info.loc[shifted, "labels"], (0.0, 30.0, 0.0))
    lab_path = cohort / info.loc[l2, "labels"]
    lab = nib.load(str(lab_path))
    data = np.asarray(lab.dataobj)
    nib.save(
        nib.Nifti1Image(np.where(data == 20, 0, data).astype(np.uint8), lab.affine), str(lab_path)
    )

    inputs = {"manifest": cohort / "manifest.csv", "clinical": cohort / "clinical.csv"}
    local = score(model, out=tmp_path / "local.csv", cache_dir=None, jobs=1, **inputs)
    spark_run = score_spark(
        model, out=tmp_path / "spark.csv", cache_dir=tmp_path / "cache", handle=spark, **inputs
    )
    assert_same_scores(read(local.out), read(spark_run.out))
    assert_same_scores(local.scores, spark_run.scores)
    assert spark_run.notes == local.notes
    s = spark_run.scores.set_index("patient_id")
    assert set(s.index[s.status == "error"]) == {t2star, shifted}
    assert "looks like a T2* in ms, not R2* in 1/s" in s.loc[t2star, "error"]
    assert "at 3 T" in s.loc[t2star, "error"]
    assert "extraction.qc_errors lists misregistration" in s.loc[shifted, "error"]
    assert "label map resampled to the PDFF grid" in s.loc[shifted, "warnings"]
    warn = s.loc[l2, "warnings"]
    assert "adjacent features of treated L2 from L3 only (L1 not in the label map)" in warn
