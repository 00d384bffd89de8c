"""TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) items and where a refracture run answers them.

Items a tool cannot answer (title, background, ethics, funding, interpretation...) are listed
as the authors' to report, so the checklist in the report is complete and honest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    id: str
    topic: str
    where: str  # where the run answers it, or "" when the authors must
    section: str = ""  # anchor of the report section

    @property
    def answered(self) -> bool:
        return bool(self.where)


ITEMS: list[Item] = [
    Item("1", "Title", ""),
    Item("2", "Abstract", ""),
    Item("3a-c", "Background, target population, health inequalities", ""),
    Item("4", "Objectives", ""),
    Item("5a", "Data sources", "input digests and schema (MLflow dataset inputs); cohort flow", "flow"),
    Item("5b", "Study dates", ""),
    Item("6a", "Setting, number and location of centres", "Table 1 by site", "table1-site"),
    Item("6b", "Eligibility criteria", "cohort flow: exclusions with reasons", "flow"),
    Item("6c", "Treatments", "procedure, cement, leakage and anti-osteoporosis covariates", "table1"),
    Item("7", "Data preparation", "extraction settings (ROI erosion, units, cement exclusion) and QC", "qc"),
    Item("8a", "Outcome definition", "time to re-fracture, competing death, horizon", "methods"),
    Item("8b-c", "Outcome assessment and blinding", ""),
    Item("9a", "Predictors", "predictor list with units; imaging features", "methods"),
    Item("9b-c", "Predictor assessment and blinding", ""),
    Item("10", "Sample size", "patients, events and events per model term", "methods"),
    Item("11", "Missing data", "missing values per predictor; imputation inside the pipeline", "methods"),
    Item("12a", "Data use (development / evaluation)", "validation split", "methods"),
    Item("12b", "Predictor handling", "imputation, one-hot coding against reference levels", "methods"),
    Item("12c", "Model type, building, hyperparameters", "models and their parameters (MLflow params)", "models"),
    Item("12d", "Heterogeneity across clusters", "per-site metrics when validated by site", "models"),
    Item("12e", "Performance measures", "discrimination, calibration, Brier, net benefit", "models"),
    Item("12f", "Model updating", ""),
    Item("12g", "How predictions were calculated (evaluation)", "absolute risk at the horizon from the final model", "methods"),
    Item("13", "Class imbalance", "none: events weighted by IPCW only for censoring", "methods"),
    Item("14", "Fairness", ""),
    Item("15", "Model output", "absolute risk and risk groups (thresholds)", "methods"),
    Item("16", "Training versus evaluation data", "Table 1 by outcome and by site", "table1"),
    Item("17", "Ethical approval", ""),
    Item("18a-d", "Funding, conflicts, protocol, registration", ""),
    Item("18e", "Data sharing", "dataset digest and schema only (no patient-level rows)", "flow"),
    Item("18f", "Code sharing", "refracture version and git commit tagged on every run", "methods"),
    Item("19", "Patient and public involvement", ""),
    Item("20a", "Participant flow", "cohort flow", "flow"),
    Item("20b", "Participant characteristics", "Table 1", "table1"),
    Item("20c", "Development vs evaluation characteristics", "Table 1 by outcome and by site", "table1"),
    Item("21", "Number of participants and outcome events", "cohort flow; model comparison table", "models"),
    Item("22", "Full model specification", "hazard / odds ratio tables and nomogram", "hr"),
    Item("23a", "Model performance with CIs", "model comparison table, calibration, ROC, decision curve", "models"),
    Item("23b", "Heterogeneity of performance", "per-site metrics (site / leave-one-site-out validation)", "models"),
    Item("24", "Model updating results", ""),
    Item("25", "Interpretation", ""),
    Item("26", "Limitations", "listed in the model card (competing risk, events per term, field strength)", "methods"),
    Item("27a-c", "Usability, intended use, data needed", "model card: intended use; registered model signature", "methods"),
]  # fmt: skip
