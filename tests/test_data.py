"""Data assembly: joins, typing, exclusions and the errors that name what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from refracture.dataset import assemble, coerce_covariates
from refracture.errors import ConfigError, InputError
from survival_cohort import IMAGING, cohort, config, imaging_features


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    c = cohort(200, 5)  # 36 re-fractures by one year for 18 model parameters
    return c.clinical.copy(), imaging_features(c)


def test_assemble_joins_and_types(tables):
    clinical, feats = tables
    ds = assemble(clinical, feats, config())
    assert len(ds) == 200
    assert list(ds.X.columns) == [*config().covariates.names, *IMAGING]
    assert ds.X.index.name == "patient_id"
    assert ds.X.index.tolist() == clinical["patient_id"].tolist()
    assert ds.y.dtype.names == ("event", "time")
    np.testing.assert_array_equal(ds.y["event"], clinical["event"])
    assert ds.X["age"].dtype == float and ds.X["sex"].dtype == object
    assert ds.categories["cement_leakage"][0] == "none"  # reference level first
    assert set(ds.categories["cement_leakage"]) == {"none", "intradiscal", "paravertebral"}
    assert ds.site.loc["P0001"] == clinical.set_index("patient_id").loc["P0001", "site"]
    assert ds.feature_names("clinical+imaging")[-4:] == IMAGING
    assert ds.excluded.empty


def test_missing_values_are_counted_not_imputed(tables):
    clinical, feats = tables
    clinical = clinical.copy()
    clinical.loc[[0, 5, 9], "bmi"] = np.nan
    clinical.loc[3, "sex"] = None
    feats = feats.copy()
    feats.loc[[1, 2], "pdff_mean_normal"] = np.nan
    ds = assemble(clinical, feats, config())
    assert ds.n_missing["bmi"] == 3
    assert ds.n_missing["sex"] == 1
    assert ds.n_missing["pdff_mean_normal"] == 2
    assert ds.X["bmi"].isna().sum() == 3  # left for the pipeline's imputer


def test_unmatched_ids_are_excluded_by_name(tables):
    clinical, feats = tables
    feats = feats[~feats["patient_id"].isin(["P0002", "P0007"])].copy()
    extra = feats.iloc[:1].assign(patient_id="X9999")
    feats = pd.concat([feats, extra], ignore_index=True)
    ds = assemble(clinical, feats, config())
    assert len(ds) == 198
    reasons = dict(zip(ds.excluded["patient_id"], ds.excluded["reason"], strict=True))
    assert set(reasons) == {"P0002", "P0007", "X9999"}
    assert "no imaging features" in reasons["P0002"]
    assert "not in the clinical table" in reasons["X9999"]
    assert "P0002" not in ds.X.index


def test_no_features_means_clinical_only(tables):
    clinical, _ = tables
    cfg = config(data={"clinical": "c.csv"})  # no manifest
    assert cfg.feature_sets == ["clinical"]
    ds = assemble(clinical, None, cfg)
    assert list(ds.X.columns) == cfg.covariates.names
    assert not ds.has_imaging
    with pytest.raises(ConfigError) as err:
        ds.feature_names("clinical+imaging")
    assert err.value.key == "feature_sets"


def test_site_taken_from_features_when_clinical_has_none(tables):
    clinical, feats = tables
    ds = assemble(clinical.drop(columns="site"), feats, config())
    assert ds.site.nunique() == 4
    ds2 = assemble(clinical.drop(columns="site"), None, config())
    assert set(ds2.site) == {"all"}


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("time_days", -3, "time_days"),
        ("time_days", "soon", "time_days"),
        ("time_days", np.nan, "time_days"),
        ("event", 3, "event"),
        ("event", "x", "event"),
    ],
)
def test_bad_outcome_names_the_patient(tables, column, value, message):
    clinical, feats = tables
    clinical = clinical.copy()
    clinical[column] = clinical[column].astype(object)
    clinical.loc[clinical["patient_id"] == "P0011", column] = value
    with pytest.raises(InputError) as err:
        assemble(clinical, feats, config())
    assert err.value.patient_id == "P0011"
    assert message in err.value.message


def test_missing_covariate_is_named(tables):
    clinical, feats = tables
    with pytest.raises(InputError) as err:
        assemble(clinical.drop(columns=["bmd_tscore", "diabetes"]), feats, config())
    assert "bmd_tscore" in str(err.value) and "diabetes" in str(err.value)
    assert err.value.key == "covariates"


def test_missing_outcome_column_is_named(tables):
    clinical, feats = tables
    with pytest.raises(InputError) as err:
        assemble(clinical.drop(columns=["time_days"]), feats, config())
    assert err.value.key == "outcome.time"


def test_missing_imaging_feature_is_named(tables):
    clinical, feats = tables
    with pytest.raises(InputError) as err:
        assemble(clinical, feats.drop(columns=["r2star_mean_adjacent"]), config())
    assert err.value.key == "imaging.features"
    assert "r2star_mean_adjacent" in str(err.value)


def test_non_numeric_value_names_patient_and_column(tables):
    clinical, feats = tables
    clinical = clinical.copy()
    clinical["bmi"] = clinical["bmi"].astype(object)
    clinical.loc[4, "bmi"] = "twenty"
    with pytest.raises(InputError) as err:
        assemble(clinical, feats, config())
    assert err.value.patient_id == clinical.loc[4, "patient_id"]
    assert "'bmi'" in err.value.message and "twenty" in err.value.message


def test_impossible_value_names_patient_and_column(tables):
    clinical, feats = tables
    clinical = clinical.copy()
    clinical.loc[3, "age"] = 400
    with pytest.raises(InputError) as err:
        assemble(clinical, feats, config())
    assert err.value.patient_id == clinical.loc[3, "patient_id"]
    assert "'age'" in err.value.message and "400" in err.value.message
    assert err.value.exit_code == 2


def test_study_ranges_check_renamed_columns(tables):
    clinical, feats = tables
    clinical = clinical.rename(columns={"age": "age_years"}).copy()
    clinical.loc[3, "age_years"] = 400
    cfg = config()
    cfg.covariates.numeric = ["age_years" if c == "age" else c for c in cfg.covariates.numeric]
    assemble(clinical, feats, cfg)  # no range known for the study's own name: accepted
    cfg.covariates.ranges = {"age_years": (18.0, 110.0)}
    with pytest.raises(InputError) as err:
        assemble(clinical, feats, cfg)
    assert (
        "'age_years'" in err.value.message and err.value.patient_id == clinical.loc[3, "patient_id"]
    )


def test_binary_must_be_zero_or_one(tables):
    clinical, feats = tables
    clinical = clinical.copy()
    clinical.loc[7, "diabetes"] = 2
    with pytest.raises(InputError) as err:
        assemble(clinical, feats, config())
    assert err.value.patient_id == clinical.loc[7, "patient_id"]
    assert "diabetes" in err.value.message


def test_reference_level_absent_is_a_config_error(tables):
    clinical, feats = tables
    cfg = config(
        covariates={"categorical": {"sex": "female", "procedure": "PVP", "cement_leakage": "none"}}
    )
    with pytest.raises(ConfigError) as err:
        assemble(clinical, feats, cfg)
    assert err.value.key == "covariates.categorical.sex"
    assert "F, M" in err.value.message


def test_duplicated_ids_are_named(tables):
    clinical, feats = tables
    dup = pd.concat([clinical, clinical[clinical["patient_id"].isin(["P0003", "P0004"])]])
    with pytest.raises(InputError) as err:
        assemble(dup, feats, config())
    assert err.value.patient_id == "P0003, P0004"
    feats_dup = pd.concat([feats, feats.iloc[[0]]])
    with pytest.raises(InputError) as err:
        assemble(clinical, feats_dup, config())
    assert err.value.patient_id == "P0001"


def test_all_censored_is_an_error(tables):
    clinical, feats = tables
    censored = clinical.assign(event=np.where(clinical["event"] == 1, 0, clinical["event"]))
    with pytest.raises(InputError, match="no re-fracture"):
        assemble(censored, feats, config())


def test_horizon_past_follow_up_is_a_config_error(tables):
    clinical, feats = tables
    with pytest.raises(ConfigError) as err:
        assemble(clinical, feats, config(outcome={"horizon_days": 5000}))
    assert err.value.key == "outcome.horizon_days"
    longest = f"{clinical['time_days'].max():g}"
    assert f"beyond the longest follow-up ({longest}," in err.value.message
    assert f"choose a horizon of at most {longest}" in err.value.message


def one_year_protocol(clinical: pd.DataFrame) -> pd.DataFrame:
    """Every patient still followed at day 365 is censored at exactly day 365."""
    late = clinical["time_days"] > 365
    return clinical.assign(
        time_days=np.where(late, 365.0, clinical["time_days"]),
        event=np.where(late, 0, clinical["event"]),
    )


def test_horizon_equal_to_the_last_follow_up_is_accepted(tables):
    """A study that follows everyone for one year: the horizon is the last follow-up."""
    clinical, feats = tables
    cut = one_year_protocol(clinical)
    assert cut["time_days"].max() == 365
    ds = assemble(cut, feats, config(outcome={"horizon_days": 365}))
    assert ds.y["time"].max() == ds.horizon == 365
    censored_at_horizon = (ds.y["event"] == 0) & (ds.y["time"] == 365)
    assert censored_at_horizon.sum() == (clinical["time_days"] > 365).sum()
    assert ds.n_events_by_horizon == int(
        ((clinical["event"] == 1) & (clinical["time_days"] <= 365)).sum()
    )
    with pytest.raises(ConfigError, match=r"beyond the longest follow-up \(365,"):
        assemble(cut, feats, config(outcome={"horizon_days": 366}))


def test_zero_times_are_times(tables):
    """An event or a loss on the day of surgery is time 0; a negative time is refused."""
    clinical, feats = tables
    zero = clinical.copy()
    zero.loc[[0, 1], "time_days"] = 0
    ds = assemble(zero, feats, config())
    assert (ds.y["time"][:2] == 0).all()
    zero.loc[2, "time_days"] = -1
    with pytest.raises(InputError, match="must be a number >= 0") as err:
        assemble(zero, feats, config())
    assert err.value.patient_id == zero.loc[2, "patient_id"]


def test_empty_clinical_table_is_no_patients(tables):
    clinical, feats = tables
    with pytest.raises(InputError, match="no patients"):
        assemble(clinical.iloc[:0], feats, config())


def test_no_event_names_the_counts(tables):
    clinical, feats = tables
    censored = clinical.assign(event=np.where(clinical["event"] == 1, 0, clinical["event"]))
    with pytest.raises(InputError) as err:
        assemble(censored, feats, config())
    n0, n2 = int((censored["event"] == 0).sum()), int((censored["event"] == 2).sum())
    assert f"among {len(censored)} patients: {n0} censored, {n2} died" in err.value.message
    assert err.value.key == "outcome.event"


def test_parameters_count_each_non_reference_level(tables):
    clinical, feats = tables
    ds = assemble(clinical, feats, config())
    cov = config().covariates
    levels = sum(clinical[c].nunique() - 1 for c in cov.categorical)
    n_clinical = len(cov.numeric) + len(cov.binary) + levels
    assert ds.n_parameters("clinical") == n_clinical
    assert ds.n_parameters("clinical+imaging") == n_clinical + len(IMAGING)
    events = int(((clinical["event"] == 1) & (clinical["time_days"] <= 365)).sum())
    assert ds.n_events_by_horizon == events
    assert ds.epv == {
        "clinical": events / n_clinical,
        "clinical+imaging": events / (n_clinical + len(IMAGING)),
    }


def test_fewer_than_ten_events_per_parameter_is_a_warning_with_the_figure(tables):
    clinical, feats = tables
    ds = assemble(clinical, feats, config())
    assert ds.epv["clinical+imaging"] < 10
    warning = next(w for w in ds.warnings if "'clinical+imaging'" in w)
    assert warning.startswith(f"{ds.epv['clinical+imaging']:.1f} events per model parameter")
    few = config(covariates={"numeric": ["age"], "binary": [], "categorical": {}})
    ds = assemble(clinical, feats.iloc[:, :2].assign(), few.model_copy(
        update={"feature_sets": ["clinical"]}))  # fmt: skip
    assert ds.epv["clinical"] >= 10 and ds.warnings == []


def test_fewer_events_than_parameters_is_refused_with_the_counts(tables):
    clinical, feats = tables
    # keep 16 of the re-fractures by the horizon: enough for the 14 clinical parameters, not
    # for the 18 with imaging
    early = np.flatnonzero(((clinical["event"] == 1) & (clinical["time_days"] <= 365)).to_numpy())
    fewer = clinical.copy()
    fewer.loc[early[16:], "event"] = 0
    with pytest.raises(InputError) as err:
        assemble(fewer, feats, config())
    msg = err.value.message
    assert "16 re-fractures by the horizon (365) for 18 model parameters" in msg
    assert "feature set 'clinical+imaging'" in msg and err.value.key == "covariates"


def test_coerce_covariates_types_scoring_input():
    cfg = config()
    table = pd.DataFrame(
        {
            "patient_id": ["a", "b"], "age": ["70", 80], "bmi": [22.5, None],
            "bmd_tscore": [-2, -3], "cement_volume_ml": [4, 5], "n_fractured": [1, 2],
            "prior_fracture": [True, False],
            "glucocorticoid": [0, 1], "anti_osteoporosis": [1, 1], "diabetes": [0, 0],
            "index_tl_junction": [1, 0], "sex": ["F", "M"], "procedure": ["PVP", None],
            "cement_leakage": ["none", " intradiscal "],
        }
    )  # fmt: skip
    out = coerce_covariates(table, cfg.covariates)
    assert out["age"].tolist() == [70.0, 80.0]
    assert out["prior_fracture"].tolist() == [1.0, 0.0]
    assert np.isnan(out.loc[1, "bmi"])
    assert out["cement_leakage"].tolist() == ["none", "intradiscal"]
    assert pd.isna(out.loc[1, "procedure"])
