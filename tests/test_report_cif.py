"""Nomogram and closed-form specification under competing risks (estimand cif).

A cause-specific Cox model's risk of re-fracture also depends on its model of death, so no
nomogram or one-line link maps its linear predictor to the risk; `refracture train` on a cohort
with deaths (the synthetic one) used to stop while logging it. Fine-Gray's risk is a function
of its one linear predictor, so it keeps both.
"""

from __future__ import annotations

import pytest

from refracture.models import make_outcome, make_pipeline
from refracture.report.nomogram import nomogram_for
from refracture.report.spec import model_specification
from refracture.synth.cohort import simulate_cohort
from refracture.validation import validate

KINDS = {"age": "numeric", "bmd_tscore": "numeric", "sex": "categorical"}


@pytest.fixture(scope="module")
def data():
    clinical = simulate_cohort(n=300, n_sites=2, seed=0).clinical.set_index("patient_id")
    assert (clinical["event"] == 2).any()  # deaths compete with re-fracture
    y = make_outcome(clinical["event"], clinical["time_days"])
    return clinical[list(KINDS)], y


@pytest.mark.parametrize(
    ("name", "estimand", "drawn"),
    [("cox", "cif", False), ("cox", "net", True), ("finegray", "cif", True)],
)
def test_nomogram_and_spec_only_when_risk_follows_from_lp(data, name, estimand, drawn) -> None:
    X, y = data
    pipe = make_pipeline(
        name, numeric=["age", "bmd_tscore"], categorical={"sex": "F"}, estimand=estimand
    )
    result = validate(pipe, X, y, bootstrap=0, seed=0)
    assert result.final_model.estimand == estimand
    nomo = nomogram_for(result, X, KINDS, [], 365)
    spec = model_specification(result, X)
    assert (nomo is not None) == drawn
    assert (spec is not None) == drawn
    if drawn:  # the points of a patient still add up to the model's own risk
        row = X.iloc[0]
        risk = float(nomo.risk_from_points(nomo.total_points(row))[0])
        assert risk == pytest.approx(float(result.final_model.predict_risk(X.iloc[[0]])[0]))
