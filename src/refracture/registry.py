"""The champion alias of the model registry: when it moves, and how it stays right when several
``refracture train`` processes finish at once.

The rule
--------
A new version takes the alias from the current holder only when

1. both were validated under the same **design**: split kind (with the test site of a site
   split), horizon, estimand, outcome columns (time and event) and selection metric;
2. it is better on the selection metric (oriented so larger is better, :func:`orient`) by more
   than the **margin**: ``auto`` = the 95% CI of the difference lies above zero (normal
   approximation, each version's standard error taken from its bootstrap 95% CI, the two
   versions' bootstraps independent), or a number = an absolute gain on the oriented scale.

Otherwise a new version is registered and the alias stays; ``promote`` moves it on purpose.

Convergence without compare-and-set
-----------------------------------
MLflow cannot set an alias only if it still points where we last saw it, so the alias is not
decided from "the current holder" (two processes would each see the old champion and the later
write would win). Instead the holder is a deterministic function of the registry's contents
(:func:`replay`): start from the latest deliberate promotion (or from nothing), walk the
versions registered after it in version order, and apply the rule to each against the holder
so far. A version is created with all its inputs as tags in one transaction, so a version that
exists is complete. Every process, after creating its version, reads all versions, computes
the replay, writes the alias, then reads again; if anything the replay depends on changed in
between, it computes and writes again (:func:`settle`). The last write to the alias therefore
comes from a process whose final read saw every version created before that write, and any
version created after it triggers a new settle by its own process: the alias ends where the
replay of all versions says, whatever the interleaving.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import io
import json
import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from refracture.errors import InputError, ModelError

__all__ = [
    "AliasDecision",
    "Design",
    "Promotion",
    "Replay",
    "Step",
    "Uncertainty",
    "VersionFacts",
    "comparability",
    "decide",
    "design_from_run",
    "margin_for",
    "orient",
    "promote",
    "register",
    "replay",
    "settle",
    "uncertainty_from_run",
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
    base = metric.removesuffix("_optcorr")
    if base.startswith(("brier_", "ibs_")):
        return -value
    if base == "calibration_slope" or base.startswith("oe_ratio_"):
        return -abs(value - 1.0)
    if base == "calibration_intercept":
        return -abs(value)
    return value


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


def _margin_setting(text: str | None) -> Margin:
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
            margin=_margin_setting(tags.get(TAG_MARGIN)),
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


# --- reading and writing the registry ------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    versions: list[VersionFacts]
    promotion: Promotion | None
    raw_promotion: str | None
    holder: int | None

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        # what the replay depends on: versions (numbers and inputs) and the promotion record
        return (tuple((f.version, f.in_rule) for f in self.versions), self.raw_promotion)


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quoted = name.replace("'", "\\'")
    out: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{quoted}'", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _read_state(client: MlflowClient, name: str, alias: str) -> _State:
    raw = client.get_registered_model(name).tags.get(MODEL_TAG_PROMOTION)
    versions = [
        VersionFacts.from_tags(int(mv.version), mv.tags, mv.description or "")
        for mv in _all_versions(client, name)
    ]
    try:
        holder: int | None = int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        holder = None
    return _State(versions, Promotion.from_json(raw), raw, holder)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _adopt_legacy(client: MlflowClient, name: str, state: _State) -> bool:
    """Versions registered before these rules carry no design: the alias as it stands is taken
    as a deliberate choice among them, once, so the replay does not rewrite history."""
    legacy = [f.version for f in state.versions if not f.in_rule]
    if state.promotion is not None or not legacy:
        return False
    holder_is_legacy = state.holder is None or state.holder in legacy
    if not holder_is_legacy:  # another process adopted (it wrote the record before the alias)
        return client.get_registered_model(name).tags.get(MODEL_TAG_PROMOTION) is not None
    record = Promotion(
        state.holder,
        max(legacy),
        _now(),
        "refracture",
        "the alias as it stood before validation designs were recorded",
    )
    client.set_registered_model_tag(name, MODEL_TAG_PROMOTION, record.to_json())
    return True


def render_description(facts: VersionFacts, decision: str | None) -> str:
    """The version description: the run's summary, the alias decision, deliberate moves."""
    lines = [facts.summary] if facts.summary else []
    if decision:
        lines.append(DECISION_LINE + decision)
    for p in facts.promotions:
        at, by, why = p.get("at", ""), p.get("by", ""), p.get("reason", "")
        lines.append(f"{PROMOTION_LINE}{at} by {by}: {why}")
    return "\n\n".join(lines)


def settle(
    client: MlflowClient,
    name: str,
    alias: str,
    *,
    checkpoint: Checkpoint | None = None,
    max_rounds: int = 50,
) -> tuple[Replay, int]:
    """Write the replay's alias holder and decisions until a re-read finds nothing new.

    Returns the final replay and the number of rounds (1 when nothing changed meanwhile).
    ``checkpoint(event)`` is called at each protocol step (``read``, ``written``), so a test
    can force interleavings.
    """
    hook = checkpoint or (lambda _event: None)
    state = _read_state(client, name, alias)
    failure: MlflowException | None = None
    for rounds in range(1, max_rounds + 1):
        if _adopt_legacy(client, name, state):
            state = _read_state(client, name, alias)
        hook("read")
        result = replay(state.versions, state.promotion, name=name, alias=alias)
        writes: list[Callable[[], Any]] = []
        if result.champion is not None:
            writes.append(
                partial(client.set_registered_model_alias, name, alias, str(result.champion))
            )
        elif state.holder is not None:
            writes.append(partial(client.delete_registered_model_alias, name, alias))
        for f in state.versions:
            if f.summary is None:  # registered before these rules: left as it was
                continue
            step = result.steps.get(f.version)
            description = render_description(f, step.reason if step else f.decision)
            if step and f.decision != step.reason:
                writes.append(
                    partial(
                        client.set_model_version_tag,
                        name,
                        str(f.version),
                        TAG_DECISION,
                        step.reason,
                    )
                )
            if description != f.description:
                writes.append(
                    partial(
                        client.update_model_version, name, str(f.version), description=description
                    )
                )
        failure = None
        for write in writes:
            try:
                write()
            except MlflowException as err:
                # Another process wrote the same tag at the same moment (MLflow's tag upsert is
                # select-then-insert), or the version was deleted: another round sorts it out.
                failure = err
        hook("written")
        again = _read_state(client, name, alias)
        if again.fingerprint == state.fingerprint and failure is None:
            return result, rounds
        state = again
    last = f" (last error: {failure.message})" if failure is not None else ""
    raise ModelError(
        f"the alias '{alias}' of '{name}' could not be settled in {max_rounds} rounds{last}; "
        "run `refracture promote` once concurrent registrations have finished"
    )


@dataclass(frozen=True)
class AliasDecision:
    """What happened to the alias after registering (or promoting) a version."""

    model_name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    previous_version: str | None
    previous_value: float | None
    value: float
    metric: str
    champion: str | None = None
    difference: float | None = None
    margin: float | None = None
    comparable: bool | None = None
    rounds: int = 1


def _source(client: MlflowClient, model_uri: str) -> tuple[str, str | None, str | None]:
    """(source, run_id, model_id) as ``mlflow.register_model`` resolves them."""
    if model_uri.startswith("models:/m-"):
        model_id = model_uri.removeprefix("models:/").split("/")[0]
        return model_uri, client.get_logged_model(model_id).source_run_id, model_id
    if model_uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        run_id = RunsArtifactRepository.parse_runs_uri(model_uri)[0]
        return RunsArtifactRepository.get_underlying_uri(model_uri), run_id, None
    return model_uri, None, None


def _create_version(
    client: MlflowClient, model_uri: str, name: str, tags: dict[str, str], description: str
) -> ModelVersion:
    try:
        client.create_registered_model(name)
    except MlflowException:
        client.get_registered_model(name)  # created by a concurrent train: fine; else raises
    source, run_id, model_id = _source(client, model_uri)
    # tags and description in the creating request: a version is complete once it exists
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return client.create_model_version(
            name, source, run_id=run_id, tags=tags, description=description, model_id=model_id
        )


def register(
    model_uri: str,
    *,
    name: str,
    alias: str,
    metric: str,
    value: float,
    description: str,
    tags: Mapping[str, str],
    design: Design | None = None,
    uncertainty: Uncertainty | None = None,
    margin: Margin = "auto",
    score: float | None = None,
    client: MlflowClient | None = None,
    checkpoint: Checkpoint | None = None,
) -> AliasDecision:
    """Register a new version of ``name`` and settle who holds ``alias`` under the rule.

    Parameters
    ----------
    model_uri : str
        The logged model (``models:/m-...`` from ``log_model``, ``runs:/...`` or a path).
    metric, value : str, float
        The selection metric and its value for this model.
    description : str
        The summary paragraph of the version's description (the decision is appended).
    tags : mapping
        Extra version tags (model, feature set, parent run...).
    design : Design
        How the model was validated; without it the version compares only with others
        registered without one.
    uncertainty : Uncertainty
        The bootstrap 95% CI of ``value``; needed by the ``auto`` margin.
    margin : 'auto' or float
        ``mlflow.promote_margin`` of this run; applied when this version challenges.
    score : float, optional
        ``value`` oriented so larger is better (default :func:`orient`).
    client : MlflowClient, optional
        Default: the tracking/registry URI set by :func:`refracture.tracking.setup`.
    checkpoint : callable, optional
        Called with ``registered``, ``read`` and ``written`` (tests force interleavings).
    """
    client = client or MlflowClient()
    score = orient(metric, value) if score is None else score
    all_tags = {str(k): str(v) for k, v in tags.items()}
    all_tags |= {
        TAG_RULE: RULE_VERSION,
        TAG_SELECTION_METRIC: metric,
        TAG_SELECTION_VALUE: repr(float(value)),
        TAG_SELECTION_SCORE: repr(float(score)),
        TAG_MARGIN: "auto" if margin == "auto" else repr(float(margin)),
        TAG_REGISTERED_BY: whoami(),
        TAG_SUMMARY: description,
        **(design.tags() if design else {}),
        **(uncertainty.tags() if uncertainty else {}),
    }
    try:
        mv = _create_version(client, model_uri, name, all_tags, description)
    except MlflowException as err:
        raise ModelError(f"cannot register model '{name}': {err.message}") from None
    if checkpoint:
        checkpoint("registered")
    result, rounds = settle(client, name, alias, checkpoint=checkpoint)
    v = int(mv.version)
    step = result.steps.get(v)
    if step is None:  # a deliberate promotion made after this version existed decides
        p = result.baseline
        assert p is not None
        if p.version == v:
            reason = f"'{alias}' was moved by hand to this version ({p.by}, {p.at}): {p.reason}"
        else:
            reason = (
                f"version {v} was registered before '{alias}' was moved by hand to version "
                f"{p.version} ({p.by}, {p.at}): alias stays on version {result.champion}"
            )
        step = Step(v, p.version == v, reason, p.version)
    reason = step.reason
    if step.promoted and result.champion != v:
        reason += (
            f"; then version {result.champion}, registered at the same time, took it "
            "(see its decision)"
        )
    return AliasDecision(
        model_name=name,
        version=str(v),
        alias=alias,
        promoted=result.champion == v,
        reason=reason,
        previous_version=None if step.previous is None else str(step.previous),
        previous_value=step.previous_value,
        value=float(value),
        metric=metric,
        champion=None if result.champion is None else str(result.champion),
        difference=step.difference,
        margin=step.margin,
        comparable=step.comparable,
        rounds=rounds,
    )


def promote(
    name: str,
    version: str | int,
    *,
    alias: str = "champion",
    reason: str | None = None,
    by: str | None = None,
    tracking_uri: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> AliasDecision:
    """Move ``alias`` to ``version`` on purpose, recording who, why and when.

    The move is a promotion record on the registered model (the replay restarts from it) and a
    line in the version's tags and description. Raises InputError (exit 2) for a model or
    version that does not exist.
    """
    from refracture.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):  # MLflow would create an empty store by looking
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise InputError(
                "no MLflow store here (run `refracture train` first)", file=path.resolve()
            )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"version must be a version number such as 3, not '{version}'")
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise InputError(f"no registered model '{name}' in the store {uri}") from None
        raise ModelError(f"cannot read the registry at {uri}: {err.message}") from None
    numbers = sorted(int(mv.version) for mv in _all_versions(client, name))
    if int(text) not in numbers:
        have = f"versions {numbers[0]}-{numbers[-1]}" if numbers else "no versions"
        raise InputError(f"model '{name}' has no version {text} ({have} in {uri})")
    try:
        before = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        before = None
    mv = client.get_model_version(name, text)
    record = Promotion(int(text), numbers[-1], _now(), by or whoami(), reason or "no reason given")
    moves = [*VersionFacts.from_tags(int(text), mv.tags).promotions]
    moves.append({"at": record.at, "by": record.by, "reason": record.reason, "from": before or ""})
    client.set_model_version_tag(name, text, TAG_PROMOTIONS, json.dumps(moves))
    if TAG_SUMMARY not in mv.tags:  # from before these rules: keep its description on top
        client.set_model_version_tag(name, text, TAG_SUMMARY, mv.description or "")
    client.set_registered_model_tag(name, MODEL_TAG_PROMOTION, record.to_json())
    result, rounds = settle(client, name, alias, checkpoint=checkpoint)
    src = f"from version {before}" if before and before != text else "(it already held it)"
    said = f"alias '{alias}' moved by hand to version {text} {src} by {record.by} on {record.at}"
    said += f": {record.reason}"
    if result.champion != int(text):
        said += f"; then version {result.champion}, registered meanwhile, took it"
    facts = VersionFacts.from_tags(int(text), client.get_model_version(name, text).tags)
    return AliasDecision(
        model_name=name,
        version=text,
        alias=alias,
        promoted=result.champion == int(text),
        reason=said,
        previous_version=before,
        previous_value=None,
        value=math.nan if facts.value is None else facts.value,
        metric=facts.metric or "",
        champion=None if result.champion is None else str(result.champion),
        rounds=rounds,
    )


# --- what train has logged (for callers that pass no design) -----------------------------------


def design_from_run(client: MlflowClient, run_id: str) -> Design | None:
    """The design from the flattened config logged as parameters of a train's parent run."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    p, tags = run.data.params, run.data.tags

    def value(key: str) -> Any:
        text = p.get(key)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    split = value("validation.split")
    horizon = value("outcome.horizon_days")
    if split is None or horizon is None:
        return None
    site = value("validation.test_site")
    return Design(
        split=str(split),
        test_site=str(site) if split == "site" and site else None,
        horizon_days=float(horizon),
        estimand=str(value("outcome.estimand") or tags.get("refracture.estimand") or "net"),
        time=str(value("outcome.time") or "time_days"),
        event=str(value("outcome.event") or "event"),
    )


def margin_from_run(client: MlflowClient, run_id: str) -> Margin:
    try:
        text = client.get_run(run_id).data.params.get("mlflow.promote_margin")
    except MlflowException:
        return "auto"
    return _margin_setting(None if text is None else text.strip('"'))


def uncertainty_from_run(client: MlflowClient, model_uri: str, metric: str) -> Uncertainty | None:
    """The selection metric's CI logged (``m_lo``/``m_hi``) in the run that logged the model."""
    try:
        _source_uri, run_id, _model_id = _source(client, model_uri)
        if run_id is None:
            return None
        return Uncertainty.from_metrics(client.get_run(run_id).data.metrics, metric)
    except MlflowException:
        return None
