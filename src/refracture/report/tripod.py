"""TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) items and where a refracture report answers
them.

Each item the run can answer names the anchor of the report element that holds the answer.
An item counts as answered only when the report built for this run has that element with its
content (:func:`checklist`): a run without imaging has no extraction settings, a run validated
at one site has no heterogeneity across sites, and the checklist says "not reported" for them.
Items a tool cannot answer (title, background, ethics, funding, interpretation...) are the
authors' to report, so the checklist is complete and honest.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = ["ITEMS", "Item", "ItemStatus", "checklist"]


@dataclass(frozen=True)
class Item:
    id: str
    topic: str
    where: str  # what in the report answers it, or "" when the authors must
    anchor: str = ""  # id of the report element holding the answer

    @property
    def answerable(self) -> bool:
        """Whether a refracture run can answer it at all."""
        return bool(self.where)


@dataclass(frozen=True)
class ItemStatus:
    item: Item
    status: str  # answered | not reported | authors
    note: str = ""  # why an answerable item is not reported in this run

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def topic(self) -> str:
        return self.item.topic

    @property
    def where(self) -> str:
        return self.item.where

    @property
    def anchor(self) -> str:
        return self.item.anchor


ITEMS: list[Item] = [
    Item("1", "Title", ""),
    Item("2", "Abstract", ""),
    Item("3a-c", "Background, target population, health inequalities", ""),
    Item("4", "Objectives", ""),
    Item("5a", "Data sources", "clinical table, image manifest and sites of the cohort flow", "flow"),
    Item("5b", "Study dates", ""),
    Item("6a", "Setting, number and location of centres", "Table 1 by site", "table1-site"),
    Item("6b", "Eligibility criteria", "cohort flow: exclusions with reasons", "flow"),
    Item("6c", "Treatments received", ""),
    Item("7", "Data preparation", "image extraction settings; QC pictures on their own page", "data-preparation"),
    Item("8a", "Outcome definition", "event coding, horizon and competing death", "outcome"),
    Item("8b-c", "Outcome assessment and blinding", ""),
    Item("9a", "Predictors", "predictors with kind, unit and coding", "predictors"),
    Item("9b-c", "Predictor assessment and blinding", ""),
    Item("10", "Sample size", "Riley et al.'s minimum sample size, events per model term, small validation samples", "sample-size"),
    Item("11", "Missing data", "missing values per predictor and how they were imputed", "missing"),
    Item("12a", "Data use (development / evaluation)", "validation design", "validation-design"),
    Item("12b", "Predictor handling", "imputation, coding against reference levels, scaling", "predictor-handling"),
    Item("12c", "Model type, building, hyperparameters", "models and their parameters", "model-params"),
    Item("12d", "Heterogeneity across clusters", "metrics per validation site", "per-site"),
    Item("12e", "Performance measures", "discrimination, calibration, Brier, O/E with CIs", "models"),
    Item("12f", "Model updating", ""),
    Item("12g", "How predictions were calculated (evaluation)", "absolute risk at the horizon from the final model", "model-output"),
    Item("13", "Class imbalance", "no resampling or reweighting of events", "class-imbalance"),
    Item("14", "Fairness", ""),
    Item("15", "Model output", "absolute risk and risk groups (thresholds)", "model-output"),
    Item("16", "Training versus evaluation data", "Table 1 by development and validation data", "table1-role"),
    Item("17", "Ethical approval", ""),
    Item("18a-d", "Funding, conflicts, protocol, registration", ""),
    Item("18e", "Data sharing", ""),
    Item("18f", "Code sharing", "refracture version and git commit of the run", "code"),
    Item("19", "Patient and public involvement", ""),
    Item("20a", "Participant flow", "cohort flow", "flow"),
    Item("20b", "Participant characteristics", "Table 1 by outcome", "table1"),
    Item("20c", "Development vs evaluation characteristics", "Table 1 by development and validation data", "table1-role"),
    Item("21", "Number of participants and outcome events", "patients and events per model and data part", "sample-size"),
    Item("22", "Full model specification", "coefficients, constant and link of the registered model", "model-spec"),
    Item("23a", "Model performance with CIs", "model comparison table with 95% CIs", "models"),
    Item("23b", "Heterogeneity of performance", "metrics per validation site, their random-effects meta-analysis with a prediction interval", "per-site"),
    Item("24", "Model updating results", ""),
    Item("25", "Interpretation", ""),
    Item("26", "Limitations", "limitations the run can detect (the authors add their own)", "limitations"),
    Item("27a-c", "Usability, intended use, data needed", "intended use and the data a score needs", "intended-use"),
]  # fmt: skip


def checklist(
    available: Collection[str], reasons: Mapping[str, str] | None = None
) -> list[ItemStatus]:
    """Every item with its status in a report whose answered anchors are ``available``.

    ``reasons`` maps an anchor to why its content is missing from this run (shown in the
    checklist instead of a link).
    """
    reasons = reasons or {}
    out = []
    for item in ITEMS:
        if not item.answerable:
            out.append(ItemStatus(item, "authors"))
        elif item.anchor in available:
            out.append(ItemStatus(item, "answered"))
        else:
            out.append(ItemStatus(item, "not reported", reasons.get(item.anchor, "")))
    return out
