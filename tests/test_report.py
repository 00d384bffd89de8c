"""Study report, nomogram, Table 1, and the report in a real browser.

The browser tests open the report in headless Chromium at 1400 px: a copy of the page gets the
script ``tests/browser_check.js``, which measures what a reader sees (sizes of sections and
figures, horizontal overflow, where each TRIPOD+AI link scrolls to) and writes it as JSON into
the page; ``--dump-dom`` prints the page after the load event. They need Debian's ``chromium``
package (or ``REFRACTURE_CHROMIUM`` naming a Chromium or Chrome binary) and are skipped only
when no such binary exists.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from refracture.models.outcome import EVENT
from refracture.report import (
    QC_PAGE,
    SECTIONS,
    build_context,
    render,
    report_files,
    small_sample_warnings,
    write_per_site,
)
from refracture.report.nomogram import Nomogram, correlated_pairs, nomogram_for
from refracture.report.predictors import predictor_kinds, unit_of
from refracture.report.sample_size import events_per_parameter
from refracture.report.spec import model_specification
from refracture.report.table1 import Variable, outcome_groups, table_one
from refracture.report.tripod import ITEMS, checklist


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


# --- a small element tree (html.parser; the report is well-formed) ---------------------------

VOID = {"img", "br", "meta", "link", "hr", "input", "col", "source", "wbr"}


@dataclasses.dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = dataclasses.field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None):
        for c in self.children:
            if isinstance(c, Node):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)

    def tables(self) -> list[pd.DataFrame]:
        """Each <table> below as a DataFrame of cell texts (first row = header)."""
        out = []
        for t in self.iter("table"):
            rows = [[" ".join(c.text().split()) for c in tr.iter() if c.tag in ("td", "th")]
                    for tr in t.iter("tr")]  # fmt: skip
            out.append(pd.DataFrame(rows[1:], columns=rows[0]))
        return out


class Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("root", {})
        self.stack = [self.root]
        self.ids: dict[str, Node] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if "id" in node.attrs:
            assert node.attrs["id"] not in self.ids, f"duplicate id {node.attrs['id']}"
            self.ids[node.attrs["id"]] = node
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def tree(html: str) -> Tree:
    t = Tree()
    t.feed(html)
    assert len(t.stack) == 1, "unclosed elements"
    return t


def tripod_links(t: Tree) -> dict[str, str]:
    """TRIPOD item -> anchor it links to."""
    return {
        a.attrs["data-tripod"]: a.attrs["href"].removeprefix("#")
        for a in t.ids["tripod"].iter("a")
        if "data-tripod" in a.attrs
    }


# --- the report of a real training run --------------------------------------------------------


def test_report_holds_every_section_self_contained(trained) -> None:
    report = trained.result.report
    assert report.parent.parent.parent == trained.root  # beside the store
    p = parse(report)
    assert set(SECTIONS) <= set(p.images)
    assert not p.external  # one self-contained page: every picture embedded
    for section in ("calibration", "decision-curve", "km", "roc", "nomogram"):
        assert p.images[section], section
    sel = trained.result.selected
    assert len(p.images["nomogram"]) == 1  # the registered model's
    assert f'alt="nomogram {sel.label}"' in report.read_text()
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


def test_qc_pictures_are_on_their_own_page(trained) -> None:
    report = trained.result.report
    qc = report.parent / QC_PAGE
    t = tree(report.read_text(encoding="utf-8"))
    assert not list(t.ids["qc"].iter("img"))  # no QC picture in the report itself
    assert [a.attrs["href"] for a in t.ids["qc"].iter("a") if a.attrs["href"] == QC_PAGE]
    sheets = sorted((report.parent / "extraction" / "qc").glob("contact_sheet*.png"))
    assert sheets
    page = parse(qc)
    assert not page.external
    assert len(page.images["qc-sheets"]) == len(sheets)
    # the pictures weigh on the QC page, not on the report
    assert qc.stat().st_size > sum(s.stat().st_size for s in sheets)
    assert report.stat().st_size < 3_000_000
    assert report_files(trained.result) == [report, qc]  # both pages, for MLflow


def test_every_tripod_link_lands_on_what_it_claims(trained) -> None:
    r = trained.result
    ds, sel = r.dataset, r.selected
    t = tree(r.report.read_text(encoding="utf-8"))
    links = tripod_links(t)
    # every answerable item is linked in this run (imaging, two sites, coefficients), and every
    # link target exists
    assert set(links) == {i.id for i in ITEMS if i.answerable}
    for item, anchor in links.items():
        assert anchor in t.ids, (item, anchor)
        assert len(t.ids[anchor].text().split()) >= 5, (item, anchor)

    def table_with(anchor: str, column: str) -> pd.DataFrame:
        found = [tb for tb in t.ids[anchor].tables() if column in tb.columns]
        assert found, (anchor, column)
        return found[0]

    def text(anchor: str) -> str:
        return " ".join(t.ids[anchor].text().split())

    checked: set[str] = set()

    def claim(item: str) -> str:
        checked.add(item)
        return links[item]

    # 9a: predictors with units and coding
    pred = table_with(claim("9a"), "unit").set_index("predictor")
    assert set(pred.index) == set(predictor_kinds(ds, "clinical+imaging"))
    assert pred.loc["age", "unit"] == "years"
    assert pred.loc["bmd_tscore", "unit"].startswith("SD")
    assert pred.loc["pdff_mean_normal", "unit"].startswith("%")
    assert pred.loc["r2star_mean_normal", "unit"] == "1/s"
    assert pred.loc["prior_fracture", "unit"] == "0/1"
    assert pred.loc["prior_fracture", "coding"].startswith("1 = ")
    assert "reference F" in pred.loc["sex", "coding"]
    # 10 and 21: events per model term, for every model and feature set
    for item in ("10", "21"):
        epv = table_with(claim(item), "events per term")
        assert len(epv) == len(r.candidates)
        for c in r.candidates:
            row = epv[(epv["model"] == c.model) & (epv["features"] == c.feature_set)].iloc[0]
            y = c.result.y_development
            hit = y["event"] == EVENT
            if c.result.final_model.supports_survival:
                events = hit.sum()
            else:
                events = (hit & (y["time"] <= 365)).sum()
            n_terms = len(c.result.final_model.term_names)
            assert row["events per term"] == f"{events / n_terms:.1f}"
            assert row["development patients"] == str(len(c.result.development_ids))
    # 16 and 20c: development vs validation characteristics
    for item in ("16", "20c"):
        role = table_with(claim(item), "characteristic")
        cols = " ".join(role.columns)
        assert f"development (n={len(sel.result.development_ids)})" in cols
        assert f"validation (n={sel.result.n_valid})" in cols
        assert any(row.startswith("age") for row in role["characteristic"])
    # 12d and 23b: metrics per validation site
    counts = sel.result.predictions.groupby("site").size()
    for item in ("12d", "23b"):
        ps = table_with(claim(item), "Harrell C").set_index("site")
        assert {s: int(n) for s, n in ps["patients"].items()} == counts.to_dict()
    # 22: coefficients, constant and link of the registered model
    spec = table_with(claim("22"), "beta")
    assert list(spec["term"]) == list(sel.result.coefficients["term"])
    assert "lp =" in text(links["22"]) and "risk by 365 days" in text(links["22"])
    # the rest: each anchor holds what its checklist line says
    expect = {
        "5a": ["clinical.csv", "manifest.csv", "site_1"],
        "6a": ["site_1", "site_2"],
        "6b": ["Excluded"],
        "7": ["eroded vertebral ROIs", "QC contact sheets"],
        "8a": ["re-fracture", "365 days", "censored"],
        "11": ["Missing values", "imputed"],
        "12a": [sel.result.split],
        "12b": ["reference level", "original units"],
        "12c": ["cox", "logistic", "parameters"],
        "12e": ["Harrell C", "calibration slope", "Brier", "O/E"],
        "12g": ["absolute risk", "365 days"],
        "13": ["no resampling"],
        "15": ["absolute risk", "risk groups"],
        "18f": ["refracture", "Code"],
        "20a": ["Clinical records", "Analysed"],
        "20b": ["re-fracture by 365 d"],
        "23a": ["Harrell C", "["],
        "26": ["events per model term"],
        "27a-c": ["Data needed", "refracture score"],
    }
    for item, words in expect.items():
        for w in words:
            assert w in text(claim(item)), (item, w)
    assert checked == set(links)  # every link's content is checked above
    # 7: the QC page the data-preparation element links to exists
    qc = [a.attrs["href"] for a in t.ids[links["7"]].iter("a") if a.attrs["href"] == QC_PAGE]
    assert qc and (r.report.parent / QC_PAGE).is_file()
    # the navigation lands on sections that exist too
    for a in t.root.iter("a"):
        if a.attrs.get("href", "").startswith("#"):
            assert a.attrs["href"][1:] in t.ids, a.attrs["href"]


def test_an_item_without_its_content_is_not_claimed(trained, tmp_path) -> None:
    r = trained.result
    sel = r.selected
    one_site = sel.result.predictions["site"].iloc[0]
    pred = sel.result.predictions[sel.result.predictions["site"] == one_site]
    val = dataclasses.replace(sel.result, predictions=pred, n_valid=len(pred))
    cand = dataclasses.replace(sel, result=val)
    result = dataclasses.replace(
        r,
        selected=cand,
        candidates=[cand if c is sel else c for c in r.candidates],
        run_dir=tmp_path,
    )
    from refracture.config import load_config

    cfg = load_config(trained.config)
    t = tree(render(build_context(result, cfg)))
    links = tripod_links(t)
    assert "12d" not in links and "23b" not in links
    assert "7" not in links  # no extraction result given: no QC pictures to show
    rows = {}
    for tr in t.ids["tripod"].iter("tr"):
        cells = [" ".join(td.text().split()) for td in tr.iter("td")]
        if cells:
            rows[cells[0]] = cells[-1]
    assert "not reported in this run: the validation data come from one site" in rows["12d"]
    # the checklist itself: an anchor missing from the report is never claimed
    status = {s.id: s for s in checklist({"flow", "predictors"}, {"per-site": "why"})}
    assert status["9a"].answered and status["20a"].answered
    assert status["10"].status == "not reported" and status["12d"].note == "why"
    assert status["1"].status == "authors"


def test_small_samples_are_flagged(trained) -> None:
    r = trained.result
    pred = r.selected.result.predictions
    hit = (pred["event"] == EVENT) & (pred["time"] <= 365)
    warnings = small_sample_warnings(r)
    # 27 validation patients: the validation set and each site are too small
    assert any(w.startswith(f"validation set: {len(pred)} patients, {hit.sum()} re-fractures")
               for w in warnings)  # fmt: skip
    for site, g in pred.groupby("site"):
        n_hit = int(hit[g.index].sum())
        assert any(w.startswith(f"site {site}: {len(g)} patients, {n_hit} re-fractures")
                   for w in warnings)  # fmt: skip
    t = tree(r.report.read_text(encoding="utf-8"))
    shown = " ".join(t.ids["small-sample-warnings"].text().split())
    for w in warnings:
        assert " ".join(w.split()) in shown
    ps = t.ids["per-site"].tables()[0]
    assert (ps["sample"] == "too small to trust").all()
    # a validation set and sites large enough: only the events-per-term warning stays
    rng = np.random.default_rng(0)
    big = pd.DataFrame(
        {
            "site": np.repeat(["site_1", "site_2"], 150),
            "time": np.tile(np.r_[np.full(20, 100.0), np.full(130, 500.0)], 2),
            "event": np.tile(np.r_[np.ones(20, int), np.zeros(130, int)], 2),
            "risk": rng.uniform(0, 1, 300),
        }
    )
    sel = dataclasses.replace(
        r.selected, result=dataclasses.replace(r.selected.result, predictions=big)
    )
    (only,) = small_sample_warnings(dataclasses.replace(r, selected=sel))
    assert only.startswith(f"{sel.label}: ") and "events per model term" in only


def _wolbers_c(g: pd.DataFrame, horizon: float) -> float:
    """Wolbers et al. (2009) time-truncated C with death competing, by a plain double loop:
    case i a re-fracture by the horizon; j comparable if still event-free after T_i (or
    censored at T_i, Harrell's tie rule) or dead before T_i. Ranked by the linear predictor
    when it orders the patients as the risk does (as the metrics do), else by the risk."""
    t, ev = g["time"].to_numpy(float), g["event"].to_numpy(int)
    risk, lp = g["risk"].to_numpy(float), g["lp"].to_numpy(float)
    order = np.argsort(lp, kind="mergesort")
    score = lp if np.all(np.diff(risk[order]) >= -1e-12) else risk
    num = den = 0.0
    for i in range(len(t)):
        if ev[i] != 1 or t[i] > horizon:
            continue
        for j in range(len(t)):
            if j == i:
                continue
            if t[j] > t[i] or (t[j] == t[i] and ev[j] == 0) or (ev[j] == 2 and t[j] <= t[i]):
                den += 1
                num += 1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0
    return num / den


def test_per_site_artifact_matches_an_independent_c_index(trained, tmp_path) -> None:
    r = trained.result
    path = write_per_site(r, tmp_path / "per_site.csv", bootstrap=20)
    table = pd.read_csv(path)
    sites = sorted(r.selected.result.predictions["site"].unique())
    assert len(table) == len(r.candidates) * len(sites)
    for c in r.candidates:
        pred = c.result.predictions
        for site in sites:
            row = table[(table.model == c.model) & (table.feature_set == c.feature_set)
                        & (table.site == site)].iloc[0]  # fmt: skip
            g = pred[pred.site == site]
            expected = _wolbers_c(g, c.result.horizon)
            assert c.result.estimand == "cif"  # the synthetic cohort has deaths
            assert row.cindex_harrell == pytest.approx(expected, abs=1e-12)
            assert row.n == len(g)
            assert row.cindex_harrell_lo <= row.cindex_harrell <= row.cindex_harrell_hi
            assert bool(row.small_sample)


def test_per_site_uses_the_leave_one_site_out_folds() -> None:
    """Under leave-one-site-out the fold metrics are kept and only the CI is added."""
    from types import SimpleNamespace

    from refracture.report.per_site import per_site_metrics

    rng = np.random.default_rng(1)
    n = 240
    pred = pd.DataFrame(
        {
            "site": np.repeat(["a", "b"], n // 2),
            "risk": rng.uniform(0, 1, n),
            "time": rng.uniform(10, 700, n),
            "event": rng.integers(0, 2, n),
        }
    )
    fold = pd.DataFrame(
        {
            "site": ["a", "b"],
            "n": [120, 120],
            "events": [60, 60],
            "events_by_horizon": [30, 4],
            "cindex_harrell": [0.61, 0.72],
            "calibration_slope": [0.9, 1.1],
        }  # fmt: skip
    )
    v = SimpleNamespace(horizon=365.0, predictions=pred, per_site=fold, y_development=None)
    out = per_site_metrics(v, bootstrap=30).set_index("site")
    assert out.loc["a", "cindex_harrell"] == 0.61 and out.loc["b", "calibration_slope"] == 1.1
    assert np.isfinite(out["cindex_harrell_lo"]).all()
    assert not out.loc["a", "small_sample"] and out.loc["b", "small_sample"]  # 4 events


def test_events_per_parameter_counts_the_events_each_model_learns_from(trained) -> None:
    epv = events_per_parameter(trained.result.candidates, 365.0)
    cox = epv[(epv.model == "cox") & (epv.features == "clinical")].iloc[0]
    # clinical: age, bmd_tscore, prior_fracture, anti_osteoporosis, sex[M]
    assert cox["model terms"] == 5
    assert cox["events per term"] == pytest.approx(cox["events (all follow-up)"] / 5)
    logit = epv[(epv.model == "logistic") & (epv.features == "clinical")].iloc[0]
    assert logit["counted from"] == "by the horizon"
    assert logit["events per term"] == pytest.approx(logit["events by 365 d"] / 5)
    assert epv["below 10"].all()  # 16 events for 5-7 terms


def test_model_specification_computes_the_models_risk(trained) -> None:
    ds = trained.result.dataset
    for c in trained.result.candidates:
        spec = model_specification(c.result, ds.X)
        model = c.result.final_model.model
        if model.estimand == "cif" and not model.cif_from_lp:
            assert spec is None  # risk also depends on the death model (test_report_cif.py)
            continue
        assert spec is not None
        X = ds.X.head(20)
        design = c.result.final_model.transform_features(X)[list(spec.terms["term"])]
        lp = spec.constant + design.to_numpy(float) @ spec.terms["beta"].to_numpy()
        np.testing.assert_allclose(lp, c.result.final_model.linear_predictor(X), atol=1e-8)
        # the link as written, with its printed constant (6 significant digits)
        risk = c.result.final_model.predict_risk(X)
        if c.model == "cox":
            s = float(re.search(r"S = ([0-9.e-]+)", spec.link).group(1))
            np.testing.assert_allclose(1 - s ** np.exp(lp), risk, rtol=1e-4)
        else:
            assert spec.link == "risk by 365 days = 1 / (1 + exp(-lp))"
            np.testing.assert_allclose(1 / (1 + np.exp(-lp)), risk, rtol=1e-9)


def test_units_of_predictors() -> None:
    assert unit_of("age") == "years" and unit_of("bmi") == "kg/m²"
    assert unit_of("cement_volume_ml") == "ml"
    assert unit_of("pdff_median_adjacent").startswith("%")
    assert unit_of("r2star_p90_L1") == "1/s"
    assert unit_of("pdff_n_L2") == "voxels" and unit_of("r2star_volume_ml_L3") == "ml"
    assert unit_of("pdff_skewness_normal") == "unitless"
    assert unit_of("morph_ha_mm_L1") == "mm" and unit_of("morph_wedge_ratio_T12") == "ratio"
    assert unit_of("morph_height_loss_pct_L1") == "%"
    assert unit_of("morph_wedge_angle_deg_index") == "degrees"
    assert unit_of("morph_genant_max").startswith("Genant")
    assert unit_of("follow_up_years") == "years"
    assert unit_of("serum_ctx") == "as recorded"


# --- Table 1 and the nomogram ---------------------------------------------------------------


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
    model_ = cand.result.final_model.model
    if model_.estimand == "cif" and not model_.cif_from_lp:
        # a cause-specific model under competing risks has no nomogram (test_report_cif.py)
        assert (
            nomogram_for(cand.result, ds.X, ds.covariate_kinds(cand.feature_set), [], 365) is None
        )
        return
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
    # binary covariates carry their coded values, not an interpretation of them
    binary = {ax.covariate: ax.labels for ax in nomo.axes if ax.kind == "binary"}
    assert binary == {"prior_fracture": ["0", "1"], "anti_osteoporosis": ["0", "1"]}


def test_nomogram_cautions_on_strongly_correlated_imaging_terms(tmp_path) -> None:
    from refracture.config import CovariatesConfig
    from refracture.models import make_outcome
    from refracture.models.pipeline import make_pipeline

    rng = np.random.default_rng(4)
    n = 300
    fat = rng.normal(60, 10, n)
    X = pd.DataFrame(
        {
            "age": rng.normal(72, 8, n),
            "pdff_mean_normal": fat,
            "pdff_mean_adjacent": fat + rng.normal(0, 3, n),  # r about 0.96
            "r2star_mean_normal": rng.normal(70, 20, n),  # independent
        }
    )
    lp = 0.04 * (X.age - 72) + 0.05 * (fat - 60)
    time = rng.exponential(900 * np.exp(-lp))
    y = make_outcome(np.where(time < 700, 1, 0), np.minimum(time, 700))
    imaging = ["pdff_mean_normal", "pdff_mean_adjacent", "r2star_mean_normal"]
    pipe = make_pipeline("cox", CovariatesConfig(numeric=["age"]), imaging, horizon=365,
                         random_state=0).fit(X, y)  # fmt: skip
    kinds = {c: "numeric" for c in X}
    r = np.corrcoef(X.pdff_mean_normal, X.pdff_mean_adjacent)[0, 1]
    pairs = correlated_pairs(X, imaging)
    assert pairs == [("pdff_mean_normal", "pdff_mean_adjacent", pytest.approx(r))]
    nomo = Nomogram.from_pipeline(pipe, X, kinds, 365, imaging=imaging)
    assert "pdff_mean_normal and pdff_mean_adjacent" in nomo.caution
    assert "r2star" not in nomo.caution
    assert Nomogram.from_pipeline(pipe, X, kinds, 365).caution == ""  # nothing to check
    assert nomo.plot(tmp_path / "n.png").stat().st_size > 10_000
    # the points still map exactly to the risk
    got = [nomo.risk_from_points(nomo.total_points(row))[0] for _, row in X.head(10).iterrows()]
    np.testing.assert_allclose(got, pipe.predict_risk(X.head(10)), rtol=1e-9)


# --- in a real browser ----------------------------------------------------------------------

WIDTH, HEIGHT = 1400, 900
CHECK_SCRIPT = Path(__file__).parent / "browser_check.js"


def chromium() -> str | None:
    named = os.environ.get("REFRACTURE_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_in_browser(page: Path, folder: Path) -> dict:
    """Open a copy of ``page`` in headless Chromium at WIDTH x HEIGHT; return the measurements."""
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium binary: install Debian's chromium package")
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    script = CHECK_SCRIPT.read_text(encoding="utf-8")
    copy = folder / page.name
    copy.write_text(text.replace("</body>", f"<script>{script}</script></body>"), "utf-8")
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", f"--user-data-dir={folder / 'profile'}",
        f"--window-size={WIDTH},{HEIGHT}", "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000", "--dump-dom", copy.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="__browser_check__">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no measurements from Chromium (exit {done.returncode}): {done.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_in_chromium_at_1400_px(trained, tmp_path) -> None:
    report = trained.result.report
    seen = render_in_browser(report, tmp_path)
    assert WIDTH - 40 <= seen["viewport"] <= WIDTH  # the page is laid out at 1400 px
    # every section is there and visible
    sections = {s["id"]: s for s in seen["sections"]}
    for sid in SECTIONS:
        s = sections[sid]
        assert s["shown"] and s["width"] > 0 and s["height"] > 0, s
    # every figure is decoded and drawn at a non-zero size
    n_img = report.read_text(encoding="utf-8").count("<img ")
    assert len(seen["images"]) == n_img >= 6
    for img in seen["images"]:
        assert img["shown"] and img["natural"] > 0, img
        assert img["width"] > 100 and img["height"] > 100, img
    # nothing is wider than the page: no table, figure or section scrolls sideways
    assert seen["overflow"] == []
    # every TRIPOD+AI link scrolls its target into view
    expected = tripod_links(tree(report.read_text(encoding="utf-8")))
    assert {link["item"]: link["id"] for link in seen["links"]} == expected
    for link in seen["links"]:
        assert link["exists"], link
        assert link["hash"] == "#" + link["id"], link
        assert link["shown"] and link["inView"], link


def test_qc_page_in_chromium(trained, tmp_path) -> None:
    qc = trained.result.report.parent / QC_PAGE
    seen = render_in_browser(qc, tmp_path)
    assert seen["images"] and seen["overflow"] == []
    for img in seen["images"]:
        assert img["shown"] and img["natural"] > 0 and img["width"] > 100, img


def _candidate(label: str, feature_set: str, role: str, **metrics: float):
    from types import SimpleNamespace

    result = SimpleNamespace(metrics=metrics, validation_role=role)
    return SimpleNamespace(label=label, feature_set=feature_set, result=result)


def test_a_choice_the_validation_data_do_not_confirm_is_flagged() -> None:
    """The demo's case before internal validation chose on .632+: a forest wins on Harrell's
    optimism-corrected C while it is the worst imaging model on the held-out patients."""
    from types import SimpleNamespace

    from refracture.report import selection_caution

    def run(selected, candidates, metric="cindex_harrell_optcorr"):
        ds = SimpleNamespace(horizon=365.0)
        return SimpleNamespace(
            selection_metric=metric, selected=selected, candidates=candidates, dataset=ds
        )

    k = "cindex_harrell"
    rsf = _candidate("rsf (clinical+imaging)", "clinical+imaging", "test",
                     **{f"{k}_optcorr": 0.805, k: 0.728})  # fmt: skip
    cox = _candidate("cox (clinical+imaging)", "clinical+imaging", "test",
                     **{f"{k}_optcorr": 0.782, k: 0.795})  # fmt: skip
    clinical = _candidate("cox (clinical)", "clinical", "test", **{k: 0.9})
    text = selection_caution(run(rsf, [clinical, rsf, cox]))
    assert text is not None
    assert "rsf (clinical+imaging)" in text and "Harrell 0.805" in text
    # the best held-out imaging model is named (the clinical-only one is not a contender)
    assert "0.728 against 0.795 for cox (clinical+imaging)" in text
    # confirmed by the held-out data, or chosen on them: nothing to say
    assert selection_caution(run(cox, [rsf, cox])) is None
    assert selection_caution(run(rsf, [rsf, cox], metric=k)) is None
    # no independent validation data (apparent predictions): nothing to compare with
    alone = _candidate("rsf (clinical+imaging)", "clinical+imaging", "apparent",
                       **{f"{k}_632plus": 0.78, k: 0.9})  # fmt: skip
    other = _candidate("cox (clinical+imaging)", "clinical+imaging", "apparent",
                       **{f"{k}_632plus": 0.77, k: 0.95})  # fmt: skip
    assert selection_caution(run(alone, [alone, other], "cindex_harrell_632plus")) is None


def test_train_warns_what_the_report_warns(trained) -> None:
    """The terminal's warnings of a run are the report's: sample sizes and the model choice."""
    from refracture.report import run_warnings

    assert trained.result.warnings == run_warnings(trained.result)
    # the fixture's random split wastes patients: the warning quotes the held-out events
    r = trained.result.selected.result
    held_out = [w for w in trained.result.warnings if "split random holds out" in w]
    assert held_out and f"holds out {r.n_valid} patients" in held_out[0]


def test_intervals_that_covered_too_rarely_in_simulation_say_so(trained) -> None:
    """Next to an interval whose method covered the truth less than 90 % of the time in the
    recorded simulation (validation/coverage.json) the report writes the measured coverage;
    an interval whose method covered 90 % or more carries no note."""
    from refracture.report.validation_tables import internal_metric_table
    from refracture.validation.catalogue import ESTIMATORS
    from refracture.validation.coverage import COVERAGE_FILE

    recorded = json.loads(COVERAGE_FILE.read_text())["coverage"]["cox"]
    cox = next(c for c in trained.result.candidates if c.model == "cox")
    table = internal_metric_table(cox, 365).set_index("metric")
    seen_low = seen_ok = 0
    for base, label in (
        ("cindex_harrell", "Harrell C"),
        ("calibration_slope", "calibration slope"),
    ):
        for est, cov in recorded[base].items():
            cell = table.loc[label, ESTIMATORS[est].label]
            note = cell.get("note", "") if isinstance(cell, dict) else ""
            if cov < 0.90:
                assert f"in {cov:.0%} of simulated cohorts" in note, (base, est)
                seen_low += 1
            else:
                assert note == "", (base, est)
                seen_ok += 1
    assert seen_low and seen_ok  # both cases exercised by the recorded simulation
    # the report's comparison of the candidates notes cox's Harrell-corrected C
    harrell = recorded["cindex_harrell"][cox.result.internal]
    assert harrell < 0.90
    assert f"in {harrell:.0%} of simulated cohorts" in trained.result.report.read_text()
