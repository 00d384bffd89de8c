"""The alias rule, as pure functions of what versions record (no MLflow calls).

:func:`decide` applies the rule to one challenger and the holder; :func:`replay` applies it to
every version in order, from the latest deliberate promotion. See :mod:`refracture.registry`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

__all__ = [
    "Design",
    "Promotion",
    "Replay",
    "Step",
    "Uncertainty",
    "VersionFacts",
    "comparability",
    "decide",
    "margin_for",
    "orient",
    "parse_margin",
    "render_description",
    "replay",
]

Margin = Literal["auto"] | float
Checkpoint = Callable[[str], None]

Z95 = NormalDist().inv_cdf(0.975)
RULE_VERSION = "1"
TAG_RULE = "refracture.alias_rule"  # present: the version was registered under these rules
TAG_SELECTION_METRIC = "refracture.selection_metric"
TAG_SELECTION_VALUE = "refracture.selection_value"
TAG_SELECTION_SCORE = "refracture.selection_score"  # the value oriented so larger is better
TAG_SELECTION_LO = "refracture.selection_lo"
TAG_SELECTION_HI = "refracture.selection_hi"
TAG_SELECTION_SE = "refracture.selection_se"
TAG_MARGIN = "refracture.promote_margin"
TAG_REGISTERED_BY = "refracture.registered_by"
TAG_SUMMARY = "refracture.summary"  # the description's first paragraph, to rebuild it
TAG_DECISION = "refracture.alias_decision"
TAG_PROMOTIONS = "refracture.promotions"  # JSON list of deliberate moves onto this version
MODEL_TAG_PROMOTION = "refracture.promotion"  # on the registered model: the latest move
DESIGN_PREFIX = "refracture.design."
DECISION_LINE = "Champion alias: "
PROMOTION_LINE = "Promoted by hand: "


# --- the rule ---------------------------------------------------------------------------------


def orient(metric: str, value: float) -> float:
    """The metric's value oriented so that larger is better.

    Brier and IBS are losses; calibration slope and O/E are best at 1, the intercept at 0.
    The orientation has slope +-1, so a standard error is the same on both scales.
    """
    from refracture.validation.catalogue import selection_score

    horizon = _horizon_of(metric)
    return selection_score(metric, value, horizon)


def _horizon_of(metric: str) -> float:
    """The horizon a metric name carries (``auc_365d`` -> 365); 365 when it carries none."""
    for part in metric.removesuffix("_optcorr").split("_"):
        if part.endswith("d") and part[:-1].isdigit():
            return float(part[:-1])
    return 365.0


SPLIT_WORDS = {
    "random": "random split",
    "site": "site split",
    "leave_one_site_out": "leave_one_site_out",
    "kfold": "kfold cross-validation",
    "none": "no hold-out (apparent performance)",
}


@dataclass(frozen=True)
class Design:
    """How a version was validated: what must match for two versions' metrics to compare.

    Parameters
    ----------
    split : {'random', 'site', 'leave_one_site_out', 'kfold', 'none'}
    test_site : str or None
        The external site of a ``site`` split (None otherwise).
    horizon_days : float
    estimand : str
        ``cif`` or ``net`` (resolved, not ``None``).
    time, event : str
        The outcome columns.
    """

    split: str
    test_site: str | None
    horizon_days: float
    estimand: str
    time: str
    event: str

    @classmethod
    def from_config(cls, cfg: Any, *, estimand: str | None = None) -> Design:
        """The design of a run config (``refracture.config.RunConfig``); ``estimand`` is the
        one the run resolved (the config's, else the caller's, else ``net``)."""
        v, o = cfg.validation, cfg.outcome
        return cls(
            split=v.split,
            test_site=str(v.test_site) if v.split == "site" and v.test_site else None,
            horizon_days=float(o.horizon_days),
            estimand=o.estimand or estimand or "net",
            time=o.time,
            event=o.event,
        )

    def tags(self) -> dict[str, str]:
        return {
            f"{DESIGN_PREFIX}split": self.split,
            f"{DESIGN_PREFIX}test_site": self.test_site or "",
            f"{DESIGN_PREFIX}horizon_days": f"{self.horizon_days:g}",
            f"{DESIGN_PREFIX}estimand": self.estimand,
            f"{DESIGN_PREFIX}time": self.time,
            f"{DESIGN_PREFIX}event": self.event,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Design | None:
        try:
            return cls(
                split=tags[f"{DESIGN_PREFIX}split"],
                test_site=tags.get(f"{DESIGN_PREFIX}test_site") or None,
                horizon_days=float(tags[f"{DESIGN_PREFIX}horizon_days"]),
                estimand=tags[f"{DESIGN_PREFIX}estimand"],
                time=tags[f"{DESIGN_PREFIX}time"],
                event=tags[f"{DESIGN_PREFIX}event"],
            )
        except (KeyError, ValueError):
            return None

    @property
    def split_text(self) -> str:
        words = SPLIT_WORDS.get(self.split, self.split)
        return f"{words} (test site {self.test_site})" if self.test_site else words


@dataclass(frozen=True)
class Uncertainty:
    """The bootstrap 95% CI of a version's selection metric, and the standard error it implies
    (normal approximation: SE = CI width / (2 x 1.96)), the input of the ``auto`` margin."""

    lo: float
    hi: float

    @property
    def se(self) -> float:
        return (self.hi - self.lo) / (2 * Z95)

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], metric: str) -> Uncertainty | None:
        """From a ValidationResult's ``metrics`` (``m_lo``/``m_hi``, ``m_optcorr_lo``/...)."""
        lo, hi = metrics.get(f"{metric}_lo"), metrics.get(f"{metric}_hi")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
            return None
        return cls(float(lo), float(hi))

    def tags(self) -> dict[str, str]:
        return {
            TAG_SELECTION_LO: repr(float(self.lo)),  # float(): numpy 2 reprs np.float64(...)
            TAG_SELECTION_HI: repr(float(self.hi)),
            TAG_SELECTION_SE: repr(float(self.se)),
        }


def _float(tags: Mapping[str, str], key: str) -> float | None:
    try:
        x = float(tags[key])
    except (KeyError, ValueError):
        return None
    return x if math.isfinite(x) else None


def parse_margin(text: str | None) -> Margin:
    """A recorded ``mlflow.promote_margin``: ``auto`` or a number >= 0 (unreadable: auto)."""
    if text is None or text == "auto":
        return "auto"
    try:
        return max(0.0, float(text))
    except ValueError:
        return "auto"


@dataclass(frozen=True)
class VersionFacts:
    """What the rule reads from one registered version (all written when it was created)."""

    version: int
    in_rule: bool
    metric: str | None = None
    value: float | None = None
    score: float | None = None
    se: float | None = None
    design: Design | None = None
    margin: Margin = "auto"
    decision: str | None = None
    description: str = ""
    summary: str | None = None  # set: refracture writes this version's description
    promotions: tuple[dict[str, str], ...] = ()

    @classmethod
    def from_tags(
        cls, version: int, tags: Mapping[str, str], description: str = ""
    ) -> VersionFacts:
        metric = tags.get(TAG_SELECTION_METRIC)
        value = _float(tags, TAG_SELECTION_VALUE)
        score = _float(tags, TAG_SELECTION_SCORE)
        if score is None and value is not None and metric:
            score = orient(metric, value)
        try:
            promotions = tuple(json.loads(tags.get(TAG_PROMOTIONS, "[]")))
        except ValueError:
            promotions = ()
        return cls(
            version=version,
            in_rule=TAG_RULE in tags,
            metric=metric,
            value=value,
            score=score,
            se=_float(tags, TAG_SELECTION_SE),
            design=Design.from_tags(tags),
            margin=parse_margin(tags.get(TAG_MARGIN)),
            decision=tags.get(TAG_DECISION),
            description=description or "",
            summary=tags.get(TAG_SUMMARY),
            promotions=promotions,
        )


def comparability(challenger: VersionFacts, holder: VersionFacts) -> list[str]:
    """Why two versions' metrics cannot be compared (empty: comparable)."""
    h = holder.version
    if not holder.in_rule:
        return [f"version {h} was registered before validation designs were recorded"]
    why = []
    a, b = challenger.design, holder.design
    if (a is None) != (b is None):
        who = h if a is not None else challenger.version
        why.append(f"version {who} has no recorded validation design")
    elif a is not None and b is not None:
        if (a.split, a.test_site) != (b.split, b.test_site):
            why.append(f"validated under {a.split_text}, the champion under {b.split_text}")
        if a.horizon_days != b.horizon_days:
            why.append(f"horizon {a.horizon_days:g} days, the champion's {b.horizon_days:g} days")
        if a.estimand != b.estimand:
            why.append(f"estimand {a.estimand}, the champion's {b.estimand}")
        if (a.time, a.event) != (b.time, b.event):
            why.append(f"outcome columns {a.time}/{a.event}, the champion's {b.time}/{b.event}")
    if challenger.metric != holder.metric:
        why.append(f"selected on {challenger.metric}, the champion on {holder.metric}")
    elif holder.score is None:
        why.append(f"version {h} has no recorded {holder.metric}")
    return why


def margin_for(
    setting: Margin, challenger_se: float | None, holder_se: float | None
) -> float | None:
    """The gain on the oriented scale a challenger must exceed.

    ``auto``: the half-width of the 95% CI of the difference of two independent estimates,
    1.96 x sqrt(se1^2 + se2^2), so the gain must put the whole CI above zero; None when a
    standard error is missing (no bootstrap). A number: that number.
    """
    if setting != "auto":
        return float(setting)
    if challenger_se is None or holder_se is None:
        return None
    return Z95 * math.hypot(challenger_se, holder_se)


@dataclass(frozen=True)
class Step:
    """The rule applied to one version during the replay."""

    version: int
    promoted: bool
    reason: str
    previous: int | None
    previous_value: float | None = None
    difference: float | None = None
    margin: float | None = None
    comparable: bool | None = None


def _promote_hint(name: str, version: int) -> str:
    return f"use `refracture promote {name} {version}` to move it deliberately"


def decide(
    challenger: VersionFacts,
    holder: VersionFacts | None,
    *,
    name: str,
    alias: str,
    first: bool = False,
) -> Step:
    """Whether ``challenger`` takes ``alias`` from ``holder``, and the sentence that says why."""
    v = challenger.version
    if holder is None:
        what = f"first version of '{name}'" if first else f"no version holds '{alias}'"
        return Step(v, True, f"{what}: alias '{alias}' set on version {v}", None)
    h, stays = holder.version, f"alias '{alias}' stays on version {holder.version}"
    why = comparability(challenger, holder)
    if challenger.score is None or challenger.value is None:
        why.append(f"version {v} has no recorded {challenger.metric}")
    if why:
        reason = f"{'; '.join(why)}: not comparable; {stays}; {_promote_hint(name, v)}"
        return Step(v, False, reason, h, holder.value, comparable=False)
    assert challenger.score is not None and holder.score is not None
    metric, diff = challenger.metric, challenger.score - holder.score
    head = f"{metric} {challenger.value:.4f}"
    base = dict(previous=h, previous_value=holder.value, difference=diff, comparable=True)
    if not diff > 0:
        reason = f"{head} is not better than {holder.value:.4f} of version {h}: {stays}"
        return Step(v, False, reason, **base)
    m = margin_for(challenger.margin, challenger.se, holder.se)
    head = f"{head} is better than {holder.value:.4f} of version {h} by {diff:.4f}"
    if m is None:
        missing = v if challenger.se is None else h
        reason = (
            f"{head}, but version {missing} has no bootstrap CI of {metric}, so the 'auto' "
            f"margin cannot tell the gain from noise: {stays}; set mlflow.promote_margin to a "
            f"number or {_promote_hint(name, v)}"
        )
        return Step(v, False, reason, **base)
    if challenger.margin == "auto":
        rule = f"the margin {m:.4f} (95% CI of the difference {diff - m:.4f} to {diff + m:.4f})"
    else:
        rule = f"the margin {m:.4f} (mlflow.promote_margin)"
    if diff > m:
        reason = f"{head}, beyond {rule}: alias '{alias}' moved to version {v}"
        return Step(v, True, reason, margin=m, **base)
    reason = f"{head}, within {rule}: equal within noise; {stays}"
    return Step(v, False, reason, margin=m, **base)


@dataclass(frozen=True)
class Promotion:
    """A deliberate move of the alias; the replay restarts from it.

    ``watermark`` is the highest version that existed when it was made: the person chose
    ``version`` over all of them, so only later versions challenge it.
    """

    version: int | None
    watermark: int
    at: str
    by: str
    reason: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Promotion | None:
        if not text:
            return None
        try:
            d = json.loads(text)
            return cls(
                version=None if d.get("version") is None else int(d["version"]),
                watermark=int(d["watermark"]),
                at=str(d.get("at", "")),
                by=str(d.get("by", "")),
                reason=str(d.get("reason", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Replay:
    """Who holds the alias after replaying every version, and each replayed step."""

    champion: int | None
    steps: dict[int, Step] = field(default_factory=dict)
    baseline: Promotion | None = None


def replay(
    versions: list[VersionFacts], promotion: Promotion | None, *, name: str, alias: str
) -> Replay:
    """The alias holder as a function of the registry's contents (see the module docstring)."""
    by_number = {f.version: f for f in versions}
    start = promotion.watermark if promotion else 0
    holder = None
    if promotion and promotion.version is not None:
        holder = by_number.get(promotion.version)
    steps: dict[int, Step] = {}
    lowest = min(by_number, default=0)
    for f in sorted(versions, key=lambda f: f.version):
        if f.version <= start or not f.in_rule or (holder and f.version == holder.version):
            continue
        step = decide(f, holder, name=name, alias=alias, first=f.version == lowest)
        steps[f.version] = step
        if step.promoted:
            holder = f
    return Replay(None if holder is None else holder.version, steps, promotion)


def render_description(facts: VersionFacts, decision: str | None) -> str:
    """The version description: the run's summary, the alias decision, deliberate moves."""
    lines = [facts.summary] if facts.summary else []
    if decision:
        lines.append(DECISION_LINE + decision)
    for p in facts.promotions:
        at, by, why = p.get("at", ""), p.get("by", ""), p.get("reason", "")
        lines.append(f"{PROMOTION_LINE}{at} by {by}: {why}")
    return "\n\n".join(lines)
