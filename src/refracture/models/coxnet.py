"""Elastic-net Cox model (scikit-survival ``CoxnetSurvivalAnalysis``).

The penalty ``alpha`` is chosen by inner k-fold cross-validation over the regularisation path:
the path is computed once on all the data, every fold refits on that same path, and the alpha
with the highest mean out-of-fold Harrell's C wins. The preprocessing step standardises the
columns for this model only, so the penalty treats them alike.

Resampled data (a bootstrap replicate) repeats patients. Copies of one patient on both sides of
an inner fold make the out-of-fold C reward memorising, and the penalty chosen collapses towards
none; ``fit(X, y, groups=...)`` with the original patient of each row keeps a patient's copies
in one inner fold (scikit-learn's ``StratifiedGroupKFold``).

Under estimand ``cif`` the elastic net is the re-fracture cause-specific hazard, combined with
a shrunk Cox model of death (:mod:`refracture.models.death`) into the cumulative incidence
(:mod:`refracture.models.competing`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model import CoxnetSurvivalAnalysis

from refracture.errors import ModelError
from refracture.models.base import SurvivalEstimator
from refracture.models.competing import CauseSpecificHazardsMixin
from refracture.models.outcome import EVENT, to_sksurv


class CoxNet(CauseSpecificHazardsMixin, SurvivalEstimator):
    """Elastic-net Cox with the penalty chosen by inner cross-validation.

    Parameters
    ----------
    horizon : days at which ``predict_risk`` gives the absolute risk.
    random_state : seed of the inner fold split.
    l1_ratio : elastic-net mixing (1 = lasso, near 0 = ridge).
    n_alphas, alpha_min_ratio : the regularisation path (as scikit-survival).
    cv_folds : inner folds for choosing alpha.
    estimand : "net" (death censored) or "cif" (death competing).

    Attributes
    ----------
    alpha_ : chosen penalty; alphas_ the path; cv_cindex_ mean inner C per alpha.
    coef_ : coefficients at ``alpha_`` (per standard deviation of each column).
    grouped_cv_ : whether the inner folds were grouped by patient.
    death_model_ : under cif, the shrunk Cox model of death (None if no patient died).
    """

    name = "coxnet"
    needs_scaling = True
    supports_contributions = True
    estimands = ("net", "cif")
    cif_from_lp = False

    def __init__(
        self,
        horizon: float = 365.0,
        random_state: int | None = None,
        l1_ratio: float = 0.5,
        n_alphas: int = 40,
        alpha_min_ratio: float = 0.01,
        cv_folds: int = 5,
        estimand: str = "net",
    ):
        self.horizon = horizon
        self.random_state = random_state
        self.l1_ratio = l1_ratio
        self.n_alphas = n_alphas
        self.alpha_min_ratio = alpha_min_ratio
        self.cv_folds = cv_folds
        self.estimand = estimand

    def _net(
        self, alphas: np.ndarray | None = None, baseline: bool = False
    ) -> CoxnetSurvivalAnalysis:
        return CoxnetSurvivalAnalysis(
            l1_ratio=self.l1_ratio,
            n_alphas=self.n_alphas,
            alpha_min_ratio=self.alpha_min_ratio,
            alphas=alphas,
            fit_baseline_model=baseline,
            max_iter=100_000,
        )

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        inference: bool = True,
    ) -> CoxNet:
        """Fit on X (n, p) and the outcome y (n,).

        ``groups`` (n,): the original patient of each row when rows repeat patients (a
        bootstrap replicate); the inner folds then keep each patient's rows together.
        ``inference=False`` (a bootstrap refit): the Cox model of death under cif skips the
        summaries only inference reads (:meth:`refracture.models.cox.CoxPH.fit`).
        """
        X, y = self._validate_fit(X, y)
        Xa = X.to_numpy(dtype=float)
        ys = to_sksurv(y)
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (len(y),):
                raise ValueError(f"groups must have one label per row ({len(y)})")
            if len(np.unique(groups)) < self.cv_folds:
                raise ModelError(
                    f"the elastic-net Cox model needs at least {self.cv_folds} patients "
                    "for its inner cross-validation"
                )
        with warnings.catch_warnings():
            # "all coefficients are zero" at the top of the path is expected
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                alphas = self._net().fit(Xa, ys).alphas_
                scores = self._inner_cv(Xa, ys, alphas, groups)
                best = int(np.nanargmax(scores))  # first maximum: the largest such penalty
                final = self._net(alphas[: best + 1], baseline=True).fit(Xa, ys)
            except ArithmeticError as err:
                raise ModelError(f"the elastic-net Cox model failed ({err})") from None
        self.alphas_ = alphas
        self.cv_cindex_ = scores
        self.alpha_ = float(alphas[best])
        self.coef_ = final.coef_[:, -1].copy()
        self.offset_ = float(final.offset_[-1])
        self.means_ = Xa.mean(axis=0)
        self.contribution_baseline_ = float(self.means_ @ self.coef_ - self.offset_)
        self.net_ = final
        # H0(t) of scikit-survival's Breslow estimator, for lp = X @ coef - offset: recovered
        # from one patient's cumulative hazard so only public API is used.
        lp0 = final.predict(Xa[:1], alpha=self.alpha_)
        ch = final.predict_cumulative_hazard_function(Xa[:1], alpha=self.alpha_, return_array=True)
        self._set_baseline(final.unique_times_, ch[0] / np.exp(lp0[0]))
        self.grouped_cv_ = groups is not None
        self._fit_death(X, y, inference)
        return self

    def inner_folds(
        self, y: np.ndarray, groups: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The inner (train, test) row indices used to choose alpha, stratified by event.

        With ``groups`` every row of a patient falls in the same fold (StratifiedGroupKFold).
        """
        event = np.asarray(y["event"]) == EVENT
        dummy = np.zeros((len(event), 1))
        if groups is None:
            folds = StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.random_state)
            return list(folds.split(dummy, event))
        grouped = StratifiedGroupKFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        return list(grouped.split(dummy, event, np.asarray(groups)))

    def _inner_cv(
        self, Xa: np.ndarray, ys: np.ndarray, alphas: np.ndarray, groups: np.ndarray | None
    ) -> np.ndarray:
        splits = self.inner_folds(ys, groups)
        scores = np.zeros((self.cv_folds, len(alphas)))
        for k, (tr, te) in enumerate(splits):
            net = self._net(alphas).fit(Xa[tr], ys[tr])
            # the path can stop early; missing alphas score as the last one fitted
            lps = Xa[te] @ net.coef_
            if not ys["event"][te].any():
                scores[k] = np.nan
                continue
            cols = np.minimum(np.arange(len(alphas)), lps.shape[1] - 1)
            scores[k] = harrell_c_columns(ys["event"][te], ys["time"][te], lps[:, cols])
        return np.nanmean(scores, axis=0)

    def linear_predictor(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self._design(X) @ self.coef_ - self.offset_

    def contributions(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """beta_j (z_j - mean_j) per term on the standardised inputs the penalty sees;
        ``contribution_baseline_`` + row sum = lp (for nomograms and ``--explain``)."""
        values = (self._design(X) - self.means_) * self.coef_
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, columns=list(self.feature_names_in_), index=index)


def harrell_c_columns(event: np.ndarray, time: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """Harrell's C of every column of ``estimates`` (n, k): scikit-survival's
    ``concordance_index_censored(event, time, estimates[:, j])[0]`` for each j, bit for bit.

    The penalty path asks for 40 C's per inner fold; scikit-survival checks its inputs and
    loops over the events in Python once per column, which took half the fit. This counts
    the same pairs for all columns at once: an event i is compared with every patient j whose
    time is later, or equal and censored; a pair is tied when the scores differ by at most
    1e-8 (half credit) and concordant when i's score is higher. The counts are whole and
    half numbers, so their sums and the final quotient are the same floats as scikit-survival's
    (a test compares the two). It raises where scikit-survival does: ``ValueError`` for fewer
    than two patients or no event, ``NoComparablePairException`` when the only events are
    sorted last and alone.
    """
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=float)
    est = np.asarray(estimates, dtype=float)
    if len(time) < 2:
        raise ValueError("Need a minimum of two samples")
    if not event.any():
        raise ValueError("All samples are censored")
    cases = np.flatnonzero(event)
    last = time == time.max()
    if not np.any(event & ~(last & (last.sum() == 1))):
        raise NoComparablePairException(
            "Data has no comparable pairs, cannot estimate concordance index."
        )
    ti = time[cases][:, None]
    comparable = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
    num = np.zeros(est.shape[1])
    den = float(comparable.sum())
    for j in range(est.shape[1]):  # (cases x patients) per column keeps memory small
        diff = est[cases, j][:, None] - est[None, :, j]
        tied = np.abs(diff) <= 1e-8
        num[j] = np.sum(comparable & (diff > 0) & ~tied) + 0.5 * np.sum(comparable & tied)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den
