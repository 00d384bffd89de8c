"""Every model by its config name: the one list the config, the command line, training and
the docs read.

Adding a model is one class (a :class:`refracture.models.base.SurvivalEstimator` with a
``name``) and one entry here, or at run time ``MODELS["mine"] = MyModel``. Entries are
``"module:Class"`` texts, imported on first use, so that reading a config (``refracture
check``, ``init``) knows the names without importing scikit-learn or scikit-survival.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["MODELS", "ModelRegistry"]


class ModelRegistry(MutableMapping[str, Any]):
    """Config name -> estimator class; values may be given as ``"module:Class"`` texts, which
    are imported when the class is first asked for."""

    def __init__(self, entries: dict[str, Any]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Any:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, cls = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), cls)
        return entry

    def __contains__(self, name: object) -> bool:  # a name is known without importing it
        return name in self._entries

    def __setitem__(self, name: str, cls: Any) -> None:
        self._entries[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ModelRegistry({', '.join(self._entries)})"


MODELS = ModelRegistry(
    {
        "cox": "refracture.models.cox:CoxPH",
        "coxnet": "refracture.models.coxnet:CoxNet",
        "rsf": "refracture.models.trees:RandomSurvivalForest",
        "gbsa": "refracture.models.trees:GradientBoostedSurvival",
        "logistic": "refracture.models.logistic:IPCWLogistic",
        "finegray": "refracture.models.finegray:FineGray",
    }
)
