"""Reading and writing the registry: register a version, promote one, settle the alias.

See :mod:`refracture.registry` for the protocol that makes concurrent trains converge.
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from refracture.errors import InputError, ModelError
from refracture.registry.rule import (
    MODEL_TAG_PROMOTION,
    RULE_VERSION,
    TAG_DECISION,
    TAG_MARGIN,
    TAG_PROMOTIONS,
    TAG_REGISTERED_BY,
    TAG_RULE,
    TAG_SELECTION_METRIC,
    TAG_SELECTION_SCORE,
    TAG_SELECTION_VALUE,
    TAG_SUMMARY,
    Checkpoint,
    Design,
    Margin,
    Promotion,
    Replay,
    Step,
    Uncertainty,
    VersionFacts,
    orient,
    render_description,
    replay,
)

__all__ = [
    "AliasDecision",
    "promote",
    "register",
    "settle",
    "whoami",
]


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
        Default: a client of MLflow's current tracking/registry URI (``train`` passes one
        bound to its store, see :func:`refracture.tracking.use_store`).
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
