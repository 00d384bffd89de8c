"""What every refracture survival estimator shares.

Estimators follow scikit-learn: parameters are stored by ``__init__`` untouched, ``fit`` learns
trailing-underscore attributes, and ``predict`` returns the absolute risk of re-fracture by the
horizon (``predict_risk``) in the estimator's ``estimand``: ``"net"`` (death censored) or
``"cif"`` (cumulative incidence, death competing). Inputs are the DataFrame the preprocessing
step produces and the structured outcome of :func:`refracture.models.make_outcome`.

Every ``fit`` takes ``groups`` (the original patient of each row, for resampled data with
repeated patients); models with an inner cross-validation keep a patient's copies in one fold,
the others ignore it. ``score`` is Harrell's C of the linear predictor, so scikit-learn's
``cross_val_score`` and ``GridSearchCV`` work with these estimators.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from sksurv.metrics import concordance_index_censored

from refracture.errors import ModelError
from refracture.models.ipcw import step_at
from refracture.models.outcome import ESTIMAND_TEXT, ESTIMANDS, EVENT, check_outcome


def as_frame(X: pd.DataFrame | np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    return pd.DataFrame(np.asarray(X, dtype=float), columns=columns)


class SurvivalEstimator(BaseEstimator):
    """Base class: input checks, ``predict`` = ``predict_risk``, shared helpers.

    What a model can do is said by class attributes, never by its name elsewhere in the code,
    so a new model is one new class plus one line in :data:`refracture.models.MODELS`.
    """

    #: The name configs, MLflow tags and score rows use (``cox``, ``logistic``, ...).
    name: ClassVar[str] = ""
    #: One coefficient per term with a CI (coefficients.csv, forest plot, nomogram).
    has_coefficients: ClassVar[bool] = False
    #: What exp(coef) is: "hazard" (HR), "odds" (OR), "subdistribution hazard" (SHR); or None.
    ratio_name: ClassVar[str | None] = None
    #: Column of coefficients.csv holding exp(coef): "hr", "or", "shr"; or None.
    ratio_column: ClassVar[str | None] = None
    #: Standardise numeric inputs before the model (penalised models).
    needs_scaling: ClassVar[bool] = False
    #: ``predict_survival`` gives a curve (integrated Brier score, risk over time).
    supports_survival: ClassVar[bool] = True
    #: ``contributions`` per term (``refracture score --explain``).
    supports_contributions: ClassVar[bool] = False
    #: A proportional-hazards test exists (Schoenfeld residuals).
    has_ph_test: ClassVar[bool] = False
    #: A maximised (partial) likelihood, so nested models compare by a likelihood-ratio test.
    has_likelihood: ClassVar[bool] = False
    #: A separate hazard of death under "cif" (``death_linear_predictor``).
    has_death_hazard: ClassVar[bool] = False
    #: Estimands the model can be fitted for ("net": death censored; "cif": death competing).
    estimands: ClassVar[tuple[str, ...]] = ("net",)
    #: Under estimand "cif", the risk is a function of ``linear_predictor`` alone, so
    #: ``risk_from_lp(lp)`` is exact (a nomogram's points map to the risk). False for the
    #: cause-specific models, whose risk also depends on the death model (``lp_death``).
    cif_from_lp: ClassVar[bool] = True
    #: An ensemble of trees: it memorises its training patients, so internal validation uses
    #: estimates that test on patients a refit did not see (.632+) rather than Harrell's.
    tree_ensemble: ClassVar[bool] = False
    #: ``oob_risk(X, y)`` gives each training patient's out-of-bag risk (bagged forests).
    has_oob_predictions: ClassVar[bool] = False

    #: Set by the ``__init__`` of subclasses that take an estimand; a model that does not is a
    #: net-risk model.
    estimand: str = "net"

    def _check_estimand(self) -> str:
        """The estimand parameter, refused with a one-line ModelError if the model lacks it."""
        estimand = getattr(self, "estimand", "net")
        if estimand not in ESTIMANDS:
            raise ModelError(f"estimand must be one of {', '.join(ESTIMANDS)}, not {estimand!r}")
        if estimand not in self.estimands:
            raise ModelError(estimand_refusal(type(self), estimand))
        return estimand

    def _validate_fit(self, X: pd.DataFrame, y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        self._check_estimand()
        X = as_frame(X)
        y = check_outcome(y)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if not np.any(y["event"] == EVENT):
            raise ModelError("cannot fit a survival model: no events in the training data")
        values = X.to_numpy(dtype=float)
        if not np.all(np.isfinite(values)):
            raise ValueError("X contains missing or infinite values: impute before the model")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return X, y

    def _design(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The fitted columns of X, in order, as floats."""
        check_is_fitted(self, "feature_names_in_")
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names_in_ if c not in X.columns]
            if missing:
                raise ValueError(f"X lacks the fitted columns: {', '.join(missing)}")
            return X[list(self.feature_names_in_)].to_numpy(dtype=float)
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns")
        return X

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Absolute risk of re-fracture by the horizon (same as :meth:`predict_risk`)."""
        return self.predict_risk(X)

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:  # pragma: no cover
        raise ModelError(f"{type(self).__name__} does not define predict_risk")

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:  # pragma: no cover
        raise ModelError(f"{type(self).__name__} does not define linear_predictor")

    def _require_cif(self, what: str) -> None:
        check_is_fitted(self, "feature_names_in_")
        if self.estimand != "cif":
            raise ModelError(
                f"the {self.name or type(self).__name__} model was fitted for estimand "
                f"{self.estimand} (death censored), so it has no {what}; fit it with estimand cif"
            )

    def predict_death_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Cumulative incidence of death before re-fracture by the horizon (estimand cif)."""
        self._require_cif("risk of death")
        return self.predict_cif(X, np.array([float(self.horizon)]))[:, 1, 0]

    def predict_cif(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """Cumulative incidence curves, (n patients, 2, len(times)): [:, 0] re-fracture,
        [:, 1] death (estimand cif)."""
        self._require_cif("cumulative incidence of death")
        raise ModelError(  # pragma: no cover - every cif model overrides this
            f"{type(self).__name__} does not define predict_cif"
        )

    def score(self, X: pd.DataFrame | np.ndarray, y: np.ndarray) -> float:
        """Harrell's C of ``linear_predictor`` for re-fracture (death and censoring censored).

        scikit-survival's ``concordance_index_censored``; higher is better, as scikit-learn's
        model selection expects. ``y`` is the structured outcome array.
        """
        y = check_outcome(y)
        lp = np.asarray(self.linear_predictor(X), dtype=float)
        event = y["event"] == EVENT
        if not event.any():
            return float("nan")
        return float(concordance_index_censored(event, y["time"], lp)[0])


def estimand_refusal(cls: type[SurvivalEstimator], estimand: str) -> str:
    """One line saying that ``cls`` cannot model ``estimand`` and which models can."""
    from refracture.models.pipeline import MODELS  # the registry imports every model

    able = [name for name, other in MODELS.items() if estimand in other.estimands]
    others = [e for e in cls.estimands if e != estimand]
    name = cls.name or cls.__name__
    return (
        f"{name} cannot model {ESTIMAND_TEXT[estimand]}; use estimand: "
        f"{' or '.join(others) or 'another'} or the models {', '.join(able)}"
    )


class ProportionalHazardsMixin:
    """Risk from a linear predictor and a baseline cumulative hazard (Cox-type models).

    ``baseline_times_`` / ``baseline_cumhaz_`` hold the step function H0(t) for a patient with
    linear predictor 0, so H(t | x) = H0(t) exp(lp(x)) and risk(h) = 1 - exp(-H(h | x)).
    Everything is vectorised: H0 at the horizon is computed once in ``fit``.
    """

    horizon: float
    baseline_times_: np.ndarray
    baseline_cumhaz_: np.ndarray
    baseline_cumhaz_horizon_: float

    def _set_baseline(self, times: np.ndarray, cumhaz: np.ndarray) -> None:
        order = np.argsort(times, kind="mergesort")
        self.baseline_times_ = np.asarray(times, dtype=float)[order]
        self.baseline_cumhaz_ = np.asarray(cumhaz, dtype=float)[order]
        self.baseline_cumhaz_horizon_ = float(
            step_at(self.baseline_times_, self.baseline_cumhaz_, np.array([self.horizon]), 0.0)[0]
        )

    def risk_from_lp(self, lp: np.ndarray) -> np.ndarray:
        """1 - exp(-H0(h) exp(lp))."""
        return -np.expm1(-self.baseline_cumhaz_horizon_ * np.exp(np.asarray(lp, dtype=float)))

    def predict_risk(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.risk_from_lp(self.linear_predictor(X))

    def predict_survival(self, X: pd.DataFrame | np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | x) at each of ``times``: an array (n patients, len(times))."""
        h0 = step_at(self.baseline_times_, self.baseline_cumhaz_, np.atleast_1d(times), 0.0)
        return np.exp(-np.exp(self.linear_predictor(X))[:, None] * h0[None, :])
