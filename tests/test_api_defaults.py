"""One default everywhere, said in our words (issue 22, items 5, 8 and 9).

The Python API resolves the estimand from the data as `refracture train` does; warnings of
the fitting libraries are caught and said once, in words; the biomarker analysis takes its
adjustment columns from the config's roles and says what it cannot adjust for.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from refracture.analysis import run_analysis
from refracture.analysis.study import StudyColumns
from refracture.config import parse_config
from refracture.libwarnings import caught_warnings
from refracture.models import make_outcome, make_pipeline
from refracture.validation import validate
from survival_cohort import cohort
from test_analysis import truth_tables


@pytest.fixture(scope="module")
def study():
    c = cohort(120, 3)
    X = c.clinical.set_index("patient_id")[["age", "bmd_tscore", "sex"]]
    y = make_outcome(c.clinical["event"], c.clinical["time_days"])
    return c, X, y


def test_the_api_resolves_the_estimand_from_the_data_as_train_does(study) -> None:
    _, X, y = study
    assert (y["event"] == 2).any()  # some died before a re-fracture
    kw = {"numeric": ["age", "bmd_tscore"], "categorical": {"sex": "F"}, "horizon": 365}
    pipe = make_pipeline("cox", **kw)
    assert pipe.estimand == "auto"
    assert pipe.fit(X, y).estimand == "cif"
    assert np.isfinite(pipe.predict_death_risk(X.head(3))).all()
    censored = y.copy()
    censored["event"][censored["event"] == 2] = 0  # the same patients with death censored
    assert make_pipeline("cox", **kw).fit(X, censored).estimand == "net"
    result = validate(make_pipeline("cox", **kw), X, y, split="none", bootstrap=0)
    assert result.final_model.estimand == "cif" and result.estimand == "cif"
    assert make_pipeline("cox", estimand="net", **kw).fit(X, y).estimand == "net"  # as asked


def test_library_warnings_are_said_once_in_our_words() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    said: list[str] = []
    with caught_warnings(said):
        for _ in range(3):
            LogisticRegression(max_iter=1).fit(X, y)  # scikit-learn's ConvergenceWarning
        rng.normal()  # not a warning
    assert said == [
        "a model's optimiser stopped before it converged (often a covariate that almost "
        "separates patients with and without a re-fracture): read its coefficients and "
        "intervals with care (ConvergenceWarning from the fitting library, 3 times)"
    ]
    with pytest.warns(ConvergenceWarning):  # outside the block, warnings are as before
        LogisticRegression(max_iter=1).fit(X, y)


def test_the_analysis_adjusts_by_roles_and_says_what_it_cannot(study) -> None:
    c, _, _ = study
    features, _ = truth_tables(c)
    clinical = c.clinical.rename(columns={"age": "Alter", "sex": "Sexo", "bmd_tscore": "T"})
    cfg = parse_config({
        "data": {"clinical": "c.csv"}, "feature_sets": ["clinical"],
        "covariates": {"numeric": ["Alter"], "roles": {"age": "Alter", "sex": "Sexo",
                                                       "tscore": "T"}},
    })  # fmt: skip
    cols = StudyColumns().resolved(cfg)
    assert (cols.tscore, cols.age, cols.sex, cols.bmi) == ("T", "Alter", "Sexo", None)
    res = run_analysis(
        clinical, features.drop(columns="site"), None, tscore=cols.tscore, age=cols.age,
        sex=cols.sex, bmi=cols.bmi, site=None, markers=["pdff_mean_normal"],
    )  # fmt: skip
    a = res.associations
    partial = a[(a["versus"] == "T") & (a["method"] == "partial_pearson")]
    assert partial["adjusted_for"].tolist() == ["Alter;Sexo"]
    note = (
        "no clinical column has the role bmi (covariates.roles.bmi): BMI is not related to "
        "the markers nor adjusted for in the per-vertebra models"
    )
    assert note in res.notes  # the terminal prints them, the page lists them
    without_sex = run_analysis(
        clinical, features.drop(columns="site"), None, tscore="T", age="Alter", sex=None,
        bmi=None, site=None, markers=["pdff_mean_normal"],
    )  # fmt: skip
    assert any(n.startswith("no clinical column has the role sex") and "not adjusted for sex" in n
               for n in without_sex.notes)  # fmt: skip


def test_library_conventions_config_errors_are_value_errors_and_seeds_default_to_zero(
    study,
) -> None:
    import yaml

    from refracture.config import packaged_config
    from refracture.errors import ConfigError
    from refracture.models import MODELS

    raw = yaml.safe_load(packaged_config("synthetic").read_text())
    with pytest.raises(ValueError, match="'models.0': unknown model 'no-such-model'"):
        parse_config({**raw, "models": ["no-such-model"]})
    assert issubclass(ConfigError, ValueError)
    for name, cls in MODELS.items():  # every stochastic model is seeded unless told not to
        assert cls().get_params()["random_state"] in (0, None), name
    _, X, y = study
    kw = {"numeric": ["age", "bmd_tscore"], "categorical": {"sex": "F"}, "estimand": "net"}
    fits = [MODELS["coxnet"]().set_params(cv_folds=3) for _ in range(2)]
    risks = [make_pipeline("cox", **kw).set_params(model=m).fit(X, y).predict_risk(X) for m in fits]
    np.testing.assert_array_equal(risks[0], risks[1])  # the inner CV split is seeded
