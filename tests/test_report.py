"""Study report, nomogram, Table 1 and `refracture demo`."""

from __future__ import annotations

from html.parser import HTMLParser

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from refracture.report import SECTIONS
from refracture.report.nomogram import Nomogram
from refracture.report.table1 import Variable, outcome_groups, table_one


class Sections(HTMLParser):
    """Collects section ids, and per section its images and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.images: dict[str, list[str]] = {}
        self.cells: dict[str, list[str]] = {}
        self.external: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.images.setdefault(self.current, [])
            self.cells.setdefault(self.current, [])
        elif tag == "img":
            src = a.get("src") or ""
            self.images.setdefault(self.current, []).append(src)
            if not src.startswith("data:image/png;base64,"):
                self.external.append(src)
        elif tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src") or "")
        elif tag in ("td", "th"):
            self._in_cell = True
            self.cells.setdefault(self.current, []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self.current is not None:
            self.cells[self.current][-1] += data


def parse(path) -> Sections:
    p = Sections()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_holds_every_section_self_contained(trained) -> None:
    report = trained.result.report
    assert report.parent.parent.parent == trained.root  # beside the store
    p = parse(report)
    assert set(SECTIONS) <= set(p.images)
    assert not p.external  # one self-contained page: every picture embedded
    for section in ("calibration", "decision-curve", "km", "roc", "qc"):
        assert p.images[section], section
    assert len(p.images["nomogram"]) == 2  # cox and logistic
    t1 = " ".join(p.cells["table1"])
    assert "mean ± SD" in t1 and "n (%)" in t1 and "re-fracture by 365 d" in t1
    assert "site_1" in " ".join(p.cells["table1-site"])
    hr = p.cells["hr"]
    assert "age" in hr and "sex[M]" in hr and "HR" in hr and "OR" in hr
    assert any("delta" in c for c in p.cells["added-value"])
    tripod = p.cells["tripod"]
    assert "20a" in tripod and "for the authors to report" in tripod
    flow = trained.result.flow
    text = report.read_text()
    assert f"<b>{flow['analysed']}</b>" in text and f"<b>{flow['clinical_rows']}</b>" in text
    # and it is an MLflow artifact of the parent run
    mlflow.set_tracking_uri(trained.tracking_uri)
    arts = {a.path for a in MlflowClient().list_artifacts(trained.result.parent_run_id)}
    assert "report.html" in arts


def test_table_one_numbers_match_the_data() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.normal(70, 8, 200),
            "bmi": rng.lognormal(3.2, 0.5, 200),  # skewed -> median [IQR]
            "diabetes": rng.integers(0, 2, 200),
            "sex": rng.choice(["F", "M"], 200, p=[0.8, 0.2]),
        }
    )
    time = pd.Series(rng.uniform(10, 700, 200))
    event = pd.Series(rng.integers(0, 3, 200))
    groups = outcome_groups(time, event, 365)
    vars_ = [Variable("age", "numeric"), Variable("bmi", "numeric"),
             Variable("diabetes", "binary"), Variable("sex", "categorical")]  # fmt: skip
    t = table_one(df, vars_, groups).set_index("characteristic")
    hit = (event == 1) & (time <= 365)
    assert t.loc["age, mean ± SD", "overall"] == f"{df.age.mean():.1f} ± {df.age.std():.1f}"
    q1, med, q3 = np.percentile(df.bmi, [25, 50, 75])
    assert t.loc["bmi, median [IQR]", "overall"] == f"{med:.1f} [{q1:.1f}, {q3:.1f}]"
    k = int(df.diabetes[hit].sum())
    col = next(c for c in t.columns if c.startswith("re-fracture"))
    assert t.loc["diabetes, n (%)", col] == f"{k} ({100 * k / hit.sum():.1f}%)"
    from scipy import stats

    p = stats.ttest_ind(df.age[hit], df.age[~hit], equal_var=False).pvalue
    assert t.loc["age, mean ± SD", "p"] == ("<0.001" if p < 0.001 else f"{p:.3f}")


@pytest.mark.parametrize("model", ["cox", "logistic"])
def test_nomogram_points_map_to_the_model_risk(trained, model, tmp_path) -> None:

    cand = next(
        c
        for c in trained.result.candidates
        if c.model == model and c.feature_set == "clinical+imaging"
    )
    ds = trained.result.dataset
    dev = ds.X.loc[cand.result.development_ids]
    nomo = Nomogram.from_pipeline(
        cand.result.final_model, dev, ds.covariate_kinds(cand.feature_set), 365
    )
    patients = ds.X.head(15)
    expected = cand.result.final_model.predict_risk(patients)
    got = [nomo.risk_from_points(nomo.total_points(row))[0] for _, row in patients.iterrows()]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # points: 0 to 100 for the widest covariate, none negative
    assert max(float(ax.points.max()) for ax in nomo.axes) == pytest.approx(100.0)
    assert min(float(ax.points.min()) for ax in nomo.axes) == pytest.approx(0.0)
    # more risk with more points
    totals = np.array([nomo.total_points(row) for _, row in patients.iterrows()])
    assert np.all(np.diff(np.asarray(got)[np.argsort(totals)]) >= -1e-12)
    assert nomo.plot(tmp_path / "n.png").stat().st_size > 10_000
