"""What ComBat does with a batch the development data did not contain (``unseen_batch``).

A mixin of :class:`refracture.models.harmonise.ComBatHarmoniser`: the per-row effects of
known, pooled and estimated batches, the refusal rule, and the per-row texts a score shows.
``estimate`` takes a new scanner's location and scale from its own rows of the data being
transformed - its scans, never an outcome, which ComBat's batch effects do not need - and
shrinks them by empirical Bayes as a development batch's
(:func:`refracture.models.combat_eb.batch_effects`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from refracture.models.combat_eb import batch_effects

__all__ = ["UnseenBatchMixin"]


class UnseenBatchMixin:
    """The ``unseen_batch`` policies of
    :class:`~refracture.models.harmonise.ComBatHarmoniser`."""

    batch: str
    batches_: list[str]
    features_: list[str]
    unseen_batch: str
    unseen_fallback: str
    min_batch_patients: int
    reference_batch_: str | None
    eb: bool
    mean_only: bool
    n_per_batch_: np.ndarray
    gamma_star_: np.ndarray
    delta_star_: np.ndarray
    _check_frame: Any
    _standardise: Any
    _design: Any

    def _refuses(self) -> bool:
        """Whether rows of a batch without effects are refused (else adjusted somehow)."""
        if self.unseen_batch == "estimate":
            return self.unseen_fallback == "refuse"
        return self.unseen_batch == "refuse"

    def with_estimated_batches(self, X: pd.DataFrame) -> Any:
        """A copy that also knows every new batch of ``X`` with at least
        ``min_batch_patients`` rows: its location and scale estimated from those rows' scans
        (standardised by the development fit, shrunk by empirical Bayes), listed in
        ``estimated_batches_`` (batch -> rows used). ``self`` when there is none."""
        check_is_fitted(self, "gamma_star_")
        labels = _labels(self._check_frame(X), self.batch)
        new = labels[labels.notna() & ~labels.isin(self.batches_)]
        counts = new.value_counts()
        big = sorted(str(b) for b, n in counts.items() if n >= self.min_batch_patients)
        if not big:
            return self
        Y = X[self.features_].to_numpy(dtype=np.float64)
        Z, _ = self._standardise(Y, self._design(X))
        out = copy.copy(self)
        gammas, deltas = [out.gamma_star_], [out.delta_star_]
        for b in big:
            g, d = batch_effects(Z[(labels == b).to_numpy()], self.eb, self.mean_only)
            gammas.append(g[None, :])
            deltas.append(d[None, :])
        out.batches_ = [*self.batches_, *big]
        out.gamma_star_, out.delta_star_ = np.vstack(gammas), np.vstack(deltas)
        out.n_per_batch_ = np.r_[self.n_per_batch_, np.zeros(len(big), dtype=int)]
        out.estimated_batches_ = dict(getattr(self, "estimated_batches_", {})) | {
            b: int(counts[b]) for b in big
        }
        return out

    def _row_effects(self, codes: np.ndarray, unseen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = len(self.features_)
        gamma = np.zeros((len(codes), p))
        delta = np.ones((len(codes), p))
        known = ~unseen
        idx = codes[known].astype(int)
        gamma[known] = self.gamma_star_[idx]
        delta[known] = self.delta_star_[idx]
        pooled = self.unseen_batch == "pooled" or (
            self.unseen_batch == "estimate" and self.unseen_fallback == "pooled"
        )
        if unseen.any() and pooled:
            w = self.n_per_batch_ / self.n_per_batch_.sum()  # development batches only
            gamma[unseen] = w @ self.gamma_star_
            delta[unseen] = w @ self.delta_star_
        return gamma, delta

    def unseen_mask(self, X: pd.DataFrame) -> np.ndarray:
        """True for rows whose batch the development data did not contain (or is unknown)."""
        check_is_fitted(self, "gamma_star_")
        return ~_labels(self._check_frame(X), self.batch).isin(self.batches_).to_numpy()

    def row_warnings(self, X: pd.DataFrame) -> list[str]:
        """Per row: '' or the warning for a score's ``warnings`` (unseen batch, what was done)."""
        if self.unseen_batch == "estimate":
            return self._estimate_warnings(X)
        labels = _labels(self._check_frame(X), self.batch)
        unseen = self.unseen_mask(X)
        what = {
            "refuse": "the patient is not scored (harmonisation.unseen_batch: refuse)",
            "reference": "its imaging features were used as measured, as if from the "
            + (
                f"reference batch {self.reference_batch_}"
                if self.reference_batch_
                else "harmonised scale"
            ),  # fmt: skip
            "pooled": "its imaging features were adjusted by the average of the known batches",
        }[self.unseen_batch]
        return [
            (
                f"harmonisation: {self.batch} {label if isinstance(label, str) else '(unknown)'} "
                f"was not in the development data; {what}"
            )
            if u
            else ""
            for label, u in zip(labels, unseen, strict=True)
        ]

    def _estimate_warnings(self, X: pd.DataFrame) -> list[str]:
        """Row texts under ``estimate``: the batch's effects estimated from its N patients
        here, or too few of them (refused, or the pooled adjustment)."""
        model = self.with_estimated_batches(X)
        labels = _labels(self._check_frame(X), self.batch)
        counts = labels.value_counts()
        done = getattr(model, "estimated_batches_", {})
        out = []
        for label in labels:
            name = label if isinstance(label, str) else "(unknown)"
            if isinstance(label, str) and label in self.batches_:
                out.append("")
            elif isinstance(label, str) and label in done:
                out.append(
                    f"harmonisation: {self.batch} {name} was not in the development data; its "
                    f"location and scale were estimated from {done[label]} of its patients' "
                    "scans (harmonisation.unseen_batch: estimate)"
                )
            else:
                n = int(counts.get(label, 0)) if isinstance(label, str) else 0
                what = (
                    "the patient is not scored"
                    if self.unseen_fallback == "refuse"
                    else "its imaging features were adjusted by the average of the known batches"
                )
                out.append(
                    f"harmonisation: {self.batch} {name} was not in the development data and has "
                    f"{n} patient(s) here, fewer than the {self.min_batch_patients} needed to "
                    f"estimate its effects (harmonisation.min_batch_patients); {what}"
                )
        return out

    def row_refused(self, X: pd.DataFrame) -> np.ndarray:
        """True for rows :meth:`transform` would refuse (a new batch it cannot adjust)."""
        model = self.with_estimated_batches(X) if self.unseen_batch == "estimate" else self
        return model.unseen_mask(X) & self._refuses()


def _labels(X: pd.DataFrame, batch: str) -> pd.Series:
    from refracture.models.harmonise import batch_labels  # harmonise imports this module

    return batch_labels(X, batch)
