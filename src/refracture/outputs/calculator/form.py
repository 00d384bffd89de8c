"""The calculator's model side, without HTTP: the form's fields, the refusal of values out of
range, the prediction, the per-term contributions and the what-if curve.

Every risk comes from :func:`refracture.scoring.rows.predict_frame`, the function ``refracture
score`` and the registered pyfunc call, so the calculator answers exactly as ``score`` does
for the same values. It is stricter on one point: a value outside the plausible range (an age
of 400, a PDFF of 120 %) is refused with the field named, where ``score`` scores the row and
warns; the calculator is typed into by hand, and a typo should not produce a risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from refracture.ids import PATIENT_ID
from refracture.outputs.words import describe, term_words
from refracture.ranges import plausible_range
from refracture.scoring.model import ScoringModel
from refracture.scoring.rows import death_risk_column, predict_frame, risk_column

__all__ = ["CURVE_POINTS", "Calculator", "Field", "Refused"]

#: Points of the what-if curve across a numeric covariate's range.
CURVE_POINTS = 41


@dataclass(frozen=True)
class Field:
    """One input of the form: its column, words, kind (``number``, ``binary``, ``category``),
    unit, levels (categories), plausible range (values outside are refused), the range of the
    patients the model learned from, and the default (the typical training patient)."""

    name: str
    label: str
    kind: str
    unit: str = ""
    levels: tuple[str, ...] = ()
    plausible: tuple[float, float] | None = None
    training: tuple[float, float] | None = None
    default: Any = None
    imaging: bool = False
    imputed: bool = False  # left empty, the model imputes it (multiple imputation)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "unit": self.unit,
            "levels": list(self.levels),
            "plausible": self.plausible,
            "training": self.training,
            "default": self.default,
            "imaging": self.imaging,
            "imputed": self.imputed,
        }


class Refused(ValueError):
    """Values the calculator will not compute a risk from: ``problems`` maps each field to
    why (one line each)."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(problems.values()))
        self.problems = problems


@dataclass
class Calculator:
    """A registered model behind the calculator's form; ``rows``: patients whose inputs can
    be loaded into the form (a features file), by patient_id."""

    model: ScoringModel
    rows: pd.DataFrame | None = None
    fields: list[Field] = field(init=False)

    def __post_init__(self) -> None:
        self.fields = make_fields(self.model)

    def info(self) -> dict[str, Any]:
        """The model and its form, as the page asks for them."""
        bundle = self.model.bundle
        return {
            "model": {
                "uri": self.model.uri,
                "version": self.model.version,
                "label": self.model.label,
                "name": bundle.registered_model,
                "horizon_days": int(round(bundle.horizon_days)),
                "risk_groups": list(bundle.risk_groups),
                "estimand": bundle.estimand,
                "contributions": bool(bundle.estimator.supports_contributions),
            },
            "fields": [f.as_json() for f in self.fields],
            "patients": [] if self.rows is None else [str(p) for p in self.rows[PATIENT_ID]],
        }

    def patient(self, patient_id: str) -> dict[str, Any]:
        """The form values of a patient of the features file (KeyError if unknown)."""
        if self.rows is None:
            raise KeyError(patient_id)
        found = self.rows[self.rows[PATIENT_ID].astype(str) == str(patient_id)]
        if found.empty:
            raise KeyError(patient_id)
        row = found.iloc[0]
        return {f.name: _plain(row.get(f.name)) for f in self.fields}

    def check(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values typed as the model wants them; :class:`Refused` names every field that is
        missing, not a number, not 0/1, not a known level or outside its plausible range. An
        empty imaging feature is one that could not be measured: the model imputes it with the
        training median and warns, as in ``refracture score``; so is an empty covariate of a
        model trained with multiple imputation."""
        problems: dict[str, str] = {}
        clean: dict[str, Any] = {}
        for f in self.fields:
            raw = values.get(f.name)
            text = "" if raw is None else str(raw).strip()
            if text == "" and (f.imaging or f.imputed):  # imputed as `score` does, and said
                clean[f.name] = math.nan
                continue
            if text == "":
                problems[f.name] = f"{f.label}: a value is needed"
                continue
            if f.kind == "category":
                if text not in f.levels:
                    problems[f.name] = f"{f.label}: '{text}' is not one of {', '.join(f.levels)}"
                clean[f.name] = text
                continue
            try:
                number = float(text)
            except ValueError:
                problems[f.name] = f"{f.label}: '{text}' is not a number"
                continue
            if not math.isfinite(number):
                problems[f.name] = f"{f.label}: '{text}' is not a number"
            elif f.kind == "binary" and number not in (0.0, 1.0):
                problems[f.name] = f"{f.label}: must be 0 (no) or 1 (yes)"
            elif f.plausible and not f.plausible[0] <= number <= f.plausible[1]:
                lo, hi = (f"{x:g}" for x in f.plausible)
                unit = f" {f.unit}" if f.unit else ""
                problems[f.name] = (
                    f"{f.label}: {number:g}{unit} is outside the plausible "
                    f"range {lo}-{hi}{unit}; check the value and its unit"
                )
            clean[f.name] = number
        if problems:
            raise Refused(problems)
        return clean

    def predict(self, values: dict[str, Any], vary: str | None = None) -> dict[str, Any]:
        """The risk of the values (:meth:`check`-ed), its contributions, and with ``vary`` the
        risk across that field's range, every other value kept."""
        clean = self.check(values)
        out = self._frame([clean]).iloc[0]
        result = self._result(out, clean)
        if vary:
            result["curve"] = self.curve(clean, vary)
        return result

    def curve(self, clean: dict[str, Any], name: str) -> dict[str, Any]:
        """Risks across ``name``'s range (the training range within the plausible one) or its
        levels, all in one call of the model."""
        f = next((f for f in self.fields if f.name == name), None)
        if f is None:
            raise Refused({name: f"'{name}' is not an input of the model"})
        if f.kind == "category":
            xs: list[Any] = list(f.levels)
        elif f.kind == "binary":
            xs = [0.0, 1.0]
        else:
            lo, hi = f.training or f.plausible or (clean[name] * 0.5, clean[name] * 1.5 or 1.0)
            if f.plausible:
                lo, hi = max(lo, f.plausible[0]), min(hi, f.plausible[1])
            xs = [float(x) for x in np.linspace(lo, hi, CURVE_POINTS)]
        frame = self._frame([{**clean, name: x} for x in xs])
        risk = risk_column(self.model.bundle.horizon_days)
        ok = frame["status"] == "ok"
        return {
            "name": name,
            "label": f.label,
            "unit": f.unit,
            "kind": f.kind,
            "x": [x for x, good in zip(xs, ok, strict=True) if good],
            "risk": [float(r) for r in frame.loc[ok, risk]],
            "current": clean[name],
        }

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        df = pd.DataFrame([{PATIENT_ID: "calculator", **r} for r in rows])
        bundle = self.model.bundle
        for c in bundle.covariates.input_columns:  # harmonisation's columns: the typical ones
            if c not in df:
                df[c] = bundle.typical.get(c)
        explain = bool(bundle.estimator.supports_contributions)
        return predict_frame(bundle, df, explain=explain)

    def _result(self, out: pd.Series, clean: dict[str, Any]) -> dict[str, Any]:
        bundle = self.model.bundle
        death = death_risk_column(bundle.horizon_days)
        terms = [t for t in bundle.terms if f"contrib_{t}" in out.index]
        contributions = [
            {
                "term": t,
                "words": term_words(t, clean.get(t.split("[", 1)[0])),
                "value": _plain(out[f"contrib_{t}"]),
            }
            for t in terms
        ]
        contributions.sort(key=lambda c: -abs(c["value"] or 0.0))
        return {
            "status": out["status"],
            "error": out["error"],
            "warnings": [w for w in str(out["warnings"]).split("; ") if w],
            "risk": _plain(out[risk_column(bundle.horizon_days)]),
            "death_risk": _plain(out[death]) if death in out.index else None,
            "group": out["risk_group"],
            "linear_predictor": _plain(out["linear_predictor"]),
            "lp_reference": (
                float(bundle.pipeline.contribution_baseline) if contributions else None
            ),
            "contributions": contributions,
        }


def make_fields(model: ScoringModel) -> list[Field]:
    """The form of a model: its clinical covariates, then its imaging features."""
    cov = model.bundle.covariates
    typical = model.bundle.typical
    training = model.bundle.training_range
    imputes = "impute" in getattr(model.bundle.pipeline, "named_steps", {})
    out = []
    for name in [*cov.numeric, *cov.binary, *cov.categorical, *cov.imaging]:
        label, unit = describe(name)
        if name in cov.categorical:
            out.append(
                Field(
                    name,
                    label,
                    "category",
                    levels=tuple(cov.categorical[name]),
                    default=typical.get(name, cov.categorical[name][0]),
                    imputed=imputes,
                )
            )
            continue
        kind = "binary" if name in cov.binary else "number"
        out.append(
            Field(
                name,
                label,
                kind,
                unit=unit,
                plausible=plausible_range(name, cov.ranges) if kind == "number" else (0, 1),
                training=training.get(name),
                default=_plain(typical.get(name)),
                imaging=name in cov.imaging,
                imputed=imputes and name not in cov.imaging,
            )
        )
    return out


def _plain(value: Any) -> Any:
    """A JSON value: numpy numbers as floats, NaN/None as None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
