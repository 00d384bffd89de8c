"""How patients are divided into development and validation data.

* ``random``: a hold-out stratified on the status at the horizon (event by h / event-free at
  h / censored or dead before h), so both parts have a like share of events.
* ``site``: one named hospital is the external validation set (geographic validation).
* ``leave_one_site_out``: each hospital in turn is held out; predictions are pooled.
* ``kfold``: stratified k-fold cross-validation; out-of-fold predictions are pooled.
* ``none`` (the default): every patient develops the model, which the bootstrap validates
  internally; when at least two sites have re-fractures, each site is also predicted by the
  model refitted on the other sites (internal-external validation, Steyerberg & Harrell 2016),
  and those out-of-site predictions are the validation data. With one such site there are no
  held-out data and the validation metrics are the apparent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from refracture.config import ValidationConfig
from refracture.errors import ConfigError, InputError
from refracture.models.outcome import EVENT, status_at


@dataclass(frozen=True)
class Fold:
    """One fit-and-predict step: train on ``train`` rows, predict ``valid`` rows."""

    label: str
    train: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class SplitPlan:
    kind: str
    description: str
    development: np.ndarray  # rows the final model is fitted on
    folds: list[Fold]  # empty for 'none' without internal-external validation
    role: str  # what the validation predictions are: test, external, internal-external,
    # out-of-fold, apparent
    per_site: bool = False  # each fold holds out one site (its metrics are per-site metrics)

    @property
    def validation_rows(self) -> np.ndarray:
        if not self.folds:
            return self.development
        return np.sort(np.concatenate([f.valid for f in self.folds]))


def _needs_events(y: np.ndarray, rows: np.ndarray, what: str) -> None:
    if not (y["event"][rows] == EVENT).any():
        raise InputError(
            f"the {what} has no re-fracture (event 1): no model can be fitted on it",
            key="validation.split",
        )


def plan_split(
    y: np.ndarray, site: np.ndarray, vcfg: ValidationConfig, horizon: float
) -> SplitPlan:
    """The development rows and the folds of a validation scheme.

    ``y`` is the outcome array, ``site`` each patient's hospital (as text).
    """
    n = len(y)
    rows = np.arange(n)
    kind = vcfg.split
    if kind == "none":
        return _no_hold_out(y, np.asarray(site).astype(str), n)
    if kind == "random":
        strata = status_at(y, horizon)
        try:
            train, test = train_test_split(
                rows, test_size=vcfg.test_fraction, stratify=strata, random_state=vcfg.seed
            )
        except ValueError as err:
            raise ConfigError(
                f"cannot split the data ({err})", key="validation.test_fraction"
            ) from None
        train, test = np.sort(train), np.sort(test)
        _needs_events(y, train, "development part")
        desc = (
            f"random hold-out ({vcfg.test_fraction:.0%} of patients, stratified on the status at "
            f"{horizon:g} days, seed {vcfg.seed}): {len(train)} development, {len(test)} validation"
        )
        return SplitPlan(kind, desc, train, [Fold("test", train, test)], "test")
    site = np.asarray(site).astype(str)
    sites = sorted(set(site.tolist()))
    if kind == "site":
        if vcfg.test_site not in sites:
            raise ConfigError(
                f"site '{vcfg.test_site}' is not in the data (sites: {', '.join(sites)})",
                key="validation.test_site",
            )
        test = rows[site == vcfg.test_site]
        train = rows[site != vcfg.test_site]
        if len(train) == 0:
            raise ConfigError("every patient is at the external site", key="validation.test_site")
        _needs_events(y, train, "development sites")
        desc = (
            f"external validation at {vcfg.test_site} ({len(test)} patients); development on "
            f"the other {len(sites) - 1} sites ({len(train)} patients)"
        )
        return SplitPlan(kind, desc, train, [Fold(str(vcfg.test_site), train, test)], "external")
    if kind == "leave_one_site_out":
        if len(sites) < 2:
            raise ConfigError(
                "leave-one-site-out needs at least two sites (the data have "
                f"{len(sites)}: {', '.join(sites)})",
                key="validation.split",
            )
        folds = []
        for s in sites:
            train, test = rows[site != s], rows[site == s]
            _needs_events(y, train, f"data without {s}")
            folds.append(Fold(s, train, test))
        desc = (
            f"leave-one-site-out over {len(sites)} sites ({', '.join(sites)}); predictions pooled"
        )
        return SplitPlan(kind, desc, rows, folds, "external", per_site=True)
    if kind == "kfold":
        strata = status_at(y, horizon)
        k = vcfg.folds
        if (strata == 1).sum() < k:
            raise ConfigError(
                f"{k} folds but only {(strata == 1).sum()} events by the horizon",
                key="validation.folds",
            )
        splitter = StratifiedKFold(k, shuffle=True, random_state=vcfg.seed)
        folds = [
            Fold(f"fold_{i + 1}", np.sort(tr), np.sort(te))
            for i, (tr, te) in enumerate(splitter.split(rows, strata))
        ]
        for f in folds:
            _needs_events(y, f.train, f"training part of {f.label}")
        desc = (
            f"{k}-fold cross-validation stratified on the status at {horizon:g} days "
            f"(seed {vcfg.seed}); predictions pooled"
        )
        return SplitPlan(kind, desc, rows, folds, "out-of-fold")
    raise ConfigError(f"unknown validation split '{kind}'", key="validation.split")


def sites_with_events(y: np.ndarray, site: np.ndarray) -> list[str]:
    """The sites with at least one re-fracture (event 1), sorted."""
    site = np.asarray(site).astype(str)
    return sorted(set(site[y["event"] == EVENT].tolist()))


def _no_hold_out(y: np.ndarray, site: np.ndarray, n: int) -> SplitPlan:
    """``none``: all patients develop the model; leave-one-site-out folds as internal-external
    validation when two or more sites have re-fractures (each fold's training part then has
    some)."""
    rows = np.arange(n)
    with_events = sites_with_events(y, site)
    if len(with_events) < 2:
        n_sites = len(set(site.tolist()))
        why = "one site" if n_sites < 2 else f"re-fractures at {len(with_events)} site"
        return SplitPlan(
            "none",
            f"no hold-out: internal validation by bootstrap on all {n} patients (apparent "
            f"performance only on the validation data: {why}, so no internal-external "
            "validation)",
            rows,
            [],
            "apparent",
        )
    sites = sorted(set(site.tolist()))
    folds = [Fold(s, rows[site != s], rows[site == s]) for s in sites]
    desc = (
        f"no hold-out: internal validation by bootstrap on all {n} patients, and "
        f"internal-external validation over {len(sites)} sites ({', '.join(sites)}): each "
        "site predicted by the model refitted on the others, predictions pooled"
    )
    return SplitPlan("none", desc, rows, folds, "internal-external", per_site=True)
