"""Outputs of patients from a scanner the model never saw, when the model estimates a new
scanner's effects from the scoring input (``harmonisation.unseen_batch: estimate``): each
patient's outputs are recomputed with the effects the batch estimated from all its patients,
not from the patient alone (one patient is too few and would be refused)."""

from __future__ import annotations

import json

import numpy as np

from refracture.outputs import OutputOptions, write_outputs
from refracture.scoring.batch import score
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import predict_frame
from refracture.synth.cohort import SITE_SCANNERS
from test_harmonisation_study import _bundle


def test_fhir_of_a_new_scanners_patients_carry_the_batch_estimate(tmp_path) -> None:
    mr1, mr2 = SITE_SCANNERS[0]
    bundle, ds = _bundle("estimate", tmp_path, split="none")
    rows = ds.model_input("clinical+imaging").reset_index()
    rows = rows[(rows["site"] == "site_1") & (rows["scanner_id"] == mr1.name)].head(25)
    again = rows.assign(
        r2star_mean_normal=rows["r2star_mean_normal"] * mr2.r2star_factor / mr1.r2star_factor,
        scanner_id="MR-new-3T",
    )
    again.to_csv(tmp_path / "features.csv", index=False)
    model = ScoringModel("local", "test", bundle)
    result = score(model, out=tmp_path / "scores.csv", features=tmp_path / "features.csv")
    assert result.n_ok == len(again) and result.bundle is not None
    # alone, a patient of the new scanner is refused: the outputs must not score it alone
    alone = predict_frame(bundle, again.head(1).reset_index(drop=True))
    assert alone.loc[0, "status"] == "error"

    done = write_outputs(result, result.data, OutputOptions(fhir=tmp_path / "fhir"))
    index = done.index["fhir"]
    assert (index["status"] == "written").all(), index["reason"].tolist()
    got = [
        json.loads((tmp_path / "fhir" / f"{pid}.json").read_text())["prediction"][0]
        for pid in result.scores["patient_id"]
    ]
    np.testing.assert_array_equal(
        [p["probabilityDecimal"] for p in got], result.scores["risk_365d"].to_numpy()
    )
