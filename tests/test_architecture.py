"""The architecture: one-way imports, a typed versioned model bundle, capabilities instead of
model names, an estimator-first Python API that works from a script, a notebook or stdin."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.base import clone

import refracture as rf
from refracture.bundle import BUNDLE_VERSION, CovariateSpec, ModelBundle
from refracture.errors import ModelError
from refracture.models import MODELS, make_outcome, make_pipeline
from refracture.models.base import ProportionalHazardsMixin, SurvivalEstimator
from survival_cohort import dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
}


def test_stages_import_one_way_and_only_the_cli_speaks_to_users() -> None:
    """The layers contract of pyproject.toml ([tool.importlinter]), checked by import-linter."""
    run = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 broken" in run.stdout


def test_patient_id_is_one_constant() -> None:
    """The ID column name is spelled once (refracture.ids); stage modules use the constant."""
    src = ROOT / "src" / "refracture"
    spelled = [
        f"{p.relative_to(src)}:{i}"
        for p in src.rglob("*.py")
        if p.name != "ids.py" and "synth" not in p.parts
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if '"patient_id"' in line and "dataclass field" not in line and "ctx" not in line
    ]
    assert spelled == []


def _bundle(tmp_path: Path) -> ModelBundle:
    ds = dataset(200, 3)
    cols = ["age", "bmd_tscore", "sex"]
    pipe = make_pipeline("cox", numeric=cols[:2], categorical={"sex": "F"}, horizon=365)
    pipe.fit(ds.X[cols], ds.y)
    return ModelBundle(
        pipeline=pipe,
        model="cox",
        feature_set="clinical",
        horizon_days=365.0,
        covariates=CovariateSpec(numeric=("age", "bmd_tscore"), categorical={"sex": ("F", "M")}),
        typical={"age": 73.0, "bmd_tscore": -2.5, "sex": "F"},
        terms=tuple(pipe.term_names),
    )


def test_model_bundle_round_trips_and_refuses_another_version(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    folder = bundle.to_dir(tmp_path / "b")
    back = ModelBundle.from_dir(folder)
    assert back.covariates == bundle.covariates and back.terms == bundle.terms
    X = pd.DataFrame({"age": [70.0, 85.0], "bmd_tscore": [-1.0, -3.5], "sex": ["F", "M"]})
    np.testing.assert_array_equal(back.pipeline.predict_risk(X), bundle.pipeline.predict_risk(X))
    assert back.estimator.has_coefficients and back.label == "cox (clinical)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.model = "rsf"  # type: ignore[misc]

    data = json.loads((folder / "bundle.json").read_text())
    data["bundle_version"] = 1
    (folder / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(ModelError) as err:
        ModelBundle.from_dir(folder)
    assert "bundle version 1" in err.value.message
    assert f"reads bundle version {BUNDLE_VERSION}" in err.value.message


class RidgeCox(ProportionalHazardsMixin, SurvivalEstimator):
    """A new model in one class: a ridge-penalised Cox model (lifelines' penalizer)."""

    name = "ridgecox"
    has_coefficients = True
    ratio_name, ratio_column = "hazard", "hr"

    def __init__(self, horizon: float = 365.0, random_state=None, penalizer: float = 0.1):
        self.horizon = horizon
        self.random_state = random_state
        self.penalizer = penalizer

    def fit(self, X, y):
        X, y = self._validate_fit(X, y)
        data = X.astype(float).reset_index(drop=True).assign(t=y["time"], e=y["event"] == 1)
        cph = CoxPHFitter(penalizer=self.penalizer).fit(data, "t", "e")
        self.coef_ = cph.params_.to_numpy(float)
        self.means_ = X.mean().to_numpy(float)
        self.summary_ = cph.summary
        bch = cph.baseline_cumulative_hazard_.iloc[:, 0]
        self._set_baseline(bch.index.to_numpy(float), bch.to_numpy(float))
        return self

    def linear_predictor(self, X):
        return (self._design(X) - self.means_) @ self.coef_

    def coefficient_summary(self, alpha: float = 0.05) -> pd.DataFrame:
        s = self.summary_
        return pd.DataFrame(
            {"coef": s["coef"], "lower": s["coef lower 95%"], "upper": s["coef upper 95%"],
             "p": s["p"]},
        ).rename_axis("term")  # fmt: skip


def test_a_new_model_is_one_class_and_one_registry_line() -> None:
    import yaml

    from refracture.config import packaged_config, parse_config
    from refracture.errors import ConfigError

    raw = yaml.safe_load(packaged_config("synthetic").read_text())
    with pytest.raises(ConfigError, match="unknown model 'ridgecox'"):
        parse_config({**raw, "models": ["ridgecox"]})
    MODELS["ridgecox"] = RidgeCox  # the one registry line
    try:  # the config knows it from the registry
        assert parse_config({**raw, "models": ["ridgecox", "cox"]}).models == ["ridgecox", "cox"]
        ds = dataset(200, 3)
        cols = ["age", "bmd_tscore", "prior_fracture"]
        pipe = make_pipeline("ridgecox", numeric=cols[:2], binary=cols[2:], horizon=365)
        result = rf.validate(pipe, ds.X[cols], ds.y, split="random", bootstrap=0)
        assert result.model_name == "ridgecox"
        assert result.coefficients is not None and "hr" in result.coefficients  # capabilities
        plain = rf.validate(
            make_pipeline("cox", numeric=cols[:2], binary=cols[2:], horizon=365),
            ds.X[cols],
            ds.y,
            bootstrap=0,
        )
        shrunk = np.linalg.norm(result.coefficients["coef"].to_numpy())
        assert shrunk < np.linalg.norm(plain.coefficients["coef"].to_numpy())
    finally:
        del MODELS["ridgecox"]
    for name in MODELS:  # each registry line names a class that answers to that name
        assert MODELS[name].name == name


def test_validate_takes_an_estimator_and_data() -> None:
    ds = dataset(240, 5)
    cols = ["age", "bmd_tscore", "sex", "pdff_mean_normal"]
    pipe = make_pipeline(
        "logistic",
        numeric=["age", "bmd_tscore", "pdff_mean_normal"],
        categorical={"sex": "F"},
        horizon=365,
    )
    result = rf.validate(pipe, ds.X[cols], ds.y, site=ds.site, split="kfold", folds=3, bootstrap=4)
    frame = result.metrics_frame()
    assert list(frame["metric"]) == rf.validation.metric_names(365)
    assert {"value", "lower95", "upper95", "optcorr"} <= set(frame.columns)
    assert np.isfinite(frame.set_index("metric").loc["cindex_harrell", "value"])
    assert "ValidationResult('logistic'" in repr(result) and len(repr(result)) < 200
    assert clone(pipe).get_params()["model__horizon"] == 365  # the input is left unfitted
    with pytest.raises(ValueError, match="rows"):
        rf.validate(pipe, ds.X[cols].head(10), ds.y, bootstrap=0)


def test_volume_repr_is_short(tmp_path: Path) -> None:
    import nibabel as nib

    path = tmp_path / "pdff.nii.gz"
    nib.save(nib.Nifti1Image(np.full((40, 30, 20), 12.0, np.float32), np.diag([1, 1, 4, 1])), path)
    vol = rf.load_volume(path, "pdff")
    text = repr(vol)
    assert text.startswith("Volume(kind='pdff', shape=(40, 30, 20), spacing=1x1x4 mm")
    assert len(text) < 200 and "12." not in text


def test_public_api_names_resolve() -> None:
    for name in rf.__all__:
        assert getattr(rf, name) is not None
    with pytest.raises(AttributeError):
        rf.no_such_name  # noqa: B018


def test_parallel_extraction_from_stdin_needs_no_main_guard(synth_nifti: Path, tmp_path) -> None:
    code = (
        "import refracture as rf\n"
        "from refracture.config import ExtractionConfig\n"
        f"r = rf.extract_cohort(r'{synth_nifti / 'manifest.csv'}', "
        "ExtractionConfig(r2star_units='per_s'), jobs=2)\n"
        "print('patients', len(r.features) + len(r.errors))\n"
    )
    run = subprocess.run(
        [sys.executable, "-"], input=code, cwd=tmp_path, env=ENV, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "patients 8" in run.stdout
    assert run.stdout.count("patients") == 1  # the script ran once, not again in each worker


def test_make_outcome_is_the_api_outcome() -> None:
    y = make_outcome([0, 1, 2], [10.0, 20.0, 30.0])
    assert y.dtype.names == ("event", "time")
