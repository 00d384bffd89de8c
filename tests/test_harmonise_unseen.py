"""ComBat for scanners the development data did not contain (``unseen_batch: estimate``): the new
scanner's location and scale from its own outcome-free scans, refused below
``min_batch_patients``, the same in every chunk of a batch score, and the policy inside
leave-one-site-out validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from refracture.errors import InputError
from refracture.models import make_pipeline
from refracture.models.harmonise import ComBatHarmoniser
from refracture.scoring.rows import estimate_new_batches, predict_frame
from refracture.study import validate_candidate
from refracture.study.run import VALIDATION_UNSEEN_BATCH
from test_harmonisation_study import _bundle, harmonisation, study


def _table(seed: int = 0) -> pd.DataFrame:
    """Three development scanners and a new one reading feature f1 1.8 times higher."""
    rng = np.random.default_rng(seed)
    parts = []
    for batch, n, scale, shift in (("a", 60, 1.0, 0.0), ("b", 50, 1.2, 3.0), ("c", 40, 0.9, -2.0),
                                   ("new", 30, 1.8, 10.0)):  # fmt: skip
        age = rng.normal(70, 8, n)
        f1 = (40 + 0.3 * (age - 70) + rng.normal(0, 4, n)) * scale + shift
        f2 = 20 + rng.normal(0, 2, n) * scale + shift / 2
        parts.append(pd.DataFrame({"site": batch, "age": age, "f1": f1, "f2": f2}))
    return pd.concat(parts, ignore_index=True)


def _harmoniser(**kw) -> ComBatHarmoniser:
    return ComBatHarmoniser(batch="site", features=["f1", "f2"], preserve=["age"], **kw)


def test_a_new_scanner_is_standardised_by_its_own_scans():
    df = _table()
    dev, new = df[df["site"] != "new"], df[df["site"] == "new"]
    h = _harmoniser(eb=False, unseen_batch="estimate", min_batch_patients=20).fit(dev)
    out = h.transform(new)
    # without shrinkage its harmonised residuals have mean 0 and variance 1, as a development
    # batch's do: (adjusted - alpha - x'beta) / sigma
    Z, stand = h._standardise(out[["f1", "f2"]].to_numpy(), h._design(new))
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), 1.0, rtol=1e-12)
    # with shrinkage (the default) it lands on the development scale, where pooled does not
    shrunk = _harmoniser(unseen_batch="estimate").fit(dev)
    pooled = _harmoniser(unseen_batch="pooled").fit(dev)
    target = shrunk.transform(dev)["f1"].mean()
    assert abs(shrunk.transform(new)["f1"].mean() - target) < 2.0
    assert abs(pooled.transform(new)["f1"].mean() - target) > 20.0
    assert "estimated from 30 of its patients" in shrunk.row_warnings(new)[0]
    assert shrunk.row_warnings(dev) == [""] * len(dev)


def test_too_few_scans_of_a_new_scanner_are_refused_or_pooled():
    df = _table()
    dev, few = df[df["site"] != "new"], df[df["site"] == "new"].iloc[:12]
    h = _harmoniser(unseen_batch="estimate", min_batch_patients=20).fit(dev)
    with pytest.raises(InputError, match="min_batch_patients") as err:
        h.transform(few)
    assert "fewer than 20" in str(err.value)
    assert h.row_refused(few).all()
    assert "has 12 patient(s) here, fewer than the 20" in h.row_warnings(few)[0]
    fallback = clone(h).set_params(unseen_fallback="pooled").fit(dev)
    pooled = _harmoniser(unseen_batch="pooled").fit(dev)
    pd.testing.assert_frame_equal(fallback.transform(few), pooled.transform(few))
    assert not fallback.row_refused(few).any()


def test_estimates_fixed_from_the_whole_input_are_the_same_in_every_chunk():
    df = _table()
    dev, new = df[df["site"] != "new"], df[df["site"] == "new"]
    h = _harmoniser(unseen_batch="estimate").fit(dev)
    fixed = h.with_estimated_batches(new)
    assert fixed.estimated_batches_ == {"new": 30} and h.batches_ == ["a", "b", "c"]
    whole = h.transform(new)
    chunks = pd.concat([fixed.transform(new.iloc[i : i + 7]) for i in range(0, 30, 7)])
    pd.testing.assert_frame_equal(chunks, whole)


def test_scoring_harmonises_a_new_scanner_with_enough_patients(tmp_path):
    """Site 1's 1.5 T patients scanned again on a new 3 T scanner (R2* x 1.7, PDFF + 0.5):
    scored in chunks, their risks barely move when the model estimates the scanner's effects;
    a scanner with too few patients in the input is refused row by row."""
    from refracture.scoring.batch import score
    from refracture.scoring.model import ScoringModel
    from refracture.synth.cohort import SITE_SCANNERS

    mr1, mr2 = SITE_SCANNERS[0]
    bundle, ds = _bundle("estimate", tmp_path, split="none")
    assert bundle.harmonisation["unseen_batch"] == "estimate"
    rows = ds.model_input("clinical+imaging").reset_index()
    rows = rows[(rows["site"] == "site_1") & (rows["scanner_id"] == mr1.name)].head(40)
    again = rows.assign(
        r2star_mean_normal=rows["r2star_mean_normal"] * mr2.r2star_factor / mr1.r2star_factor,
        pdff_mean_normal=rows["pdff_mean_normal"] + mr2.pdff_bias - mr1.pdff_bias,
        scanner_id="MR-new-3T",
    )
    base = predict_frame(bundle, rows.reset_index(drop=True))
    out = predict_frame(bundle, again.reset_index(drop=True))
    assert (out["status"] == "ok").all()
    assert out["warnings"].str.contains("estimated from 40 of its patients").all()
    moved = np.abs(out["risk_365d"].to_numpy() - base["risk_365d"].to_numpy())
    raw = predict_frame(
        estimate_new_batches(bundle, rows.iloc[:0]), again.assign(scanner_id=mr1.name)
    )
    unharmonised = np.abs(raw["risk_365d"].to_numpy() - base["risk_365d"].to_numpy())
    assert np.median(moved) < 0.5 * np.median(unharmonised), (moved, unharmonised)
    # refracture score in chunks of 7 rows: the same risks as one call
    again.to_csv(tmp_path / "features.csv", index=False)
    model = ScoringModel("local", "test", bundle)
    result = score(model, out=tmp_path / "scores.csv", features=tmp_path / "features.csv",
                   chunk_size=7)  # fmt: skip
    np.testing.assert_allclose(result.scores["risk_365d"], out["risk_365d"], rtol=1e-12)
    few = again.head(8)
    refused = predict_frame(bundle, few.reset_index(drop=True))
    assert (refused["status"] == "error").all()
    assert refused["error"].str.contains("harmonisation.min_batch_patients").all()


def test_leave_one_site_out_harmonises_each_held_out_site_from_its_own_scans():
    cfg, ds = study(
        harmonisation(batch="scanner", unseen_batch="refuse"),
        validation={"split": "leave_one_site_out", "bootstrap": 0, "seed": 0},
    )
    assert VALIDATION_UNSEEN_BATCH == "estimate"
    result = validate_candidate("cox", "clinical+imaging", ds, cfg, None).result
    assert result.final_model.harmoniser.unseen_batch == "refuse"  # the registered policy
    X = ds.model_input("clinical+imaging")
    held = (ds.site == "site_2").to_numpy()
    pipe = make_pipeline(
        "cox", cfg.covariates, list(ds.imaging_features), categories=ds.categories,
        harmonisation=ds.harmonisation, estimand=ds.estimand,
    )  # fmt: skip
    pipe.set_params(
        harmonise__unseen_batch="estimate", harmonise__unseen_fallback="pooled",
        harmonise__require_reference=False,
    )  # fmt: skip
    pipe.fit(X[~held], ds.y[~held])
    pred = result.predictions.set_index("patient_id").loc[X.index[held], "risk"]
    np.testing.assert_allclose(pred.to_numpy(), pipe.predict_risk(X[held]), rtol=1e-10)
    # the held-out site's scanners were estimated, not pooled
    h = pipe.harmoniser.with_estimated_batches(X[held])
    assert set(h.estimated_batches_) == {b for b in h.batches_ if b.startswith("site_2/")}
