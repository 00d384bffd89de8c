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

from refracture.registry.rule import (
    DESIGN_PREFIX,
    MODEL_TAG_PROMOTION,
    TAG_DECISION,
    TAG_MARGIN,
    TAG_PROMOTIONS,
    TAG_REGISTERED_BY,
    TAG_RULE,
    TAG_SELECTION_HI,
    TAG_SELECTION_LO,
    TAG_SELECTION_METRIC,
    TAG_SELECTION_SCORE,
    TAG_SELECTION_SE,
    TAG_SELECTION_VALUE,
    TAG_SUMMARY,
    Design,
    Margin,
    Promotion,
    Replay,
    Step,
    Uncertainty,
    VersionFacts,
    comparability,
    decide,
    margin_for,
    orient,
    replay,
)
from refracture.registry.store import (
    AliasDecision,
    promote,
    register,
    settle,
    whoami,
)

__all__ = [
    "DESIGN_PREFIX",
    "MODEL_TAG_PROMOTION",
    "TAG_DECISION",
    "TAG_MARGIN",
    "TAG_PROMOTIONS",
    "TAG_REGISTERED_BY",
    "TAG_RULE",
    "TAG_SELECTION_HI",
    "TAG_SELECTION_LO",
    "TAG_SELECTION_METRIC",
    "TAG_SELECTION_SCORE",
    "TAG_SELECTION_SE",
    "TAG_SELECTION_VALUE",
    "TAG_SUMMARY",
    "AliasDecision",
    "Design",
    "Margin",
    "Promotion",
    "Replay",
    "Step",
    "Uncertainty",
    "VersionFacts",
    "comparability",
    "decide",
    "margin_for",
    "orient",
    "promote",
    "register",
    "replay",
    "settle",
    "whoami",
]
