"""One registry of metrics: a metric added in one place reaches the config check, the
validation, the terminal, the report, the model card, the summary table and MLflow; and a
training run under the default design (no hold-out: bootstrap internal validation and
internal-external validation across sites) reports it all."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console

from refracture.cli.terminal import print_train_summary
from refracture.config import parse_config
from refracture.errors import ConfigError
from refracture.study import train
from refracture.study.selection import check_selection_metric
from refracture.synth.cohort import simulate_cohort
from refracture.tracking import quiet_mlflow
from refracture.validation.catalogue import METRICS, MetricSpec, selection_choices


def mean_risk(ev) -> float:
    """A toy metric: the mean predicted risk (lower is 'better', so selection has a side)."""
    return float(np.mean(ev.risk))


TOY = MetricSpec(
    "toy_{h}", "Toy {h} d", mean_risk, "mean predicted risk, a toy", higher_is_better=False
)


def _config(root, **extra) -> dict:
    cohort = simulate_cohort(160, 4, 9)
    cohort.clinical.to_csv(root / "clinical.csv", index=False)
    return {
        "data": {"clinical": str(root / "clinical.csv")},
        "covariates": {"numeric": ["age", "bmd_tscore"], "binary": ["prior_fracture"]},
        "models": ["cox"],
        "feature_sets": ["clinical"],
        "validation": {"bootstrap": 4, "jobs": 1},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "toy"},
        **extra,
    }


def test_a_metric_is_one_registry_entry_and_the_default_design_reports_it(tmp_path) -> None:
    """A toy metric appended to the registry reaches the config check, the validation, the
    terminal, the report, the model card, summary.csv and MLflow. The run uses the defaults:
    split none (every patient develops the registered model; each site is also predicted by
    the model refitted on the others) and selection on the .632+ C."""
    METRICS.append(TOY)
    try:
        assert {"toy_365d", "toy_365d_632plus", "toy_365d_loo"} <= set(selection_choices(365))
        check_selection_metric(parse_config(_config(tmp_path, selection_metric="toy_365d_loo")))
        cfg = parse_config(_config(tmp_path, models=["cox", "rsf"]))
        quiet_mlflow()
        with contextlib.chdir(tmp_path):
            result = train(cfg)
        sel = result.selected.result
        for name in ("toy_365d", "toy_365d_optcorr", "toy_365d_632plus", "toy_365d_loo"):
            assert np.isfinite(sel.metrics[name]), name
        assert sel.metrics["toy_365d"] == pytest.approx(sel.predictions["risk"].mean())
        buf = io.StringIO()
        print_train_summary(Console(file=buf, width=200, color_system=None), result, 365)
        assert "Toy 365 d" in buf.getvalue()
        page = result.report.read_text(encoding="utf-8")
        assert "Toy 365 d" in page
        folder = result.selected.folder
        assert "mean predicted risk, a toy" in (folder / "model_card.md").read_text()
        assert "toy_365d_632plus" in pd.read_csv(result.run_dir / "summary.csv").columns
        logged = MlflowClient(result.tracking_uri).get_run(result.selected.run_id).data.metrics
        assert {"toy_365d", "toy_365d_632plus", "toy_365d_632plus_lo"} <= set(logged)
    finally:
        METRICS.remove(TOY)
    with pytest.raises(ConfigError) as err:  # gone from the registry: gone from the config
        check_selection_metric(parse_config(_config(tmp_path, selection_metric="toy_365d")))
    assert err.value.key == "selection_metric"

    # the default design
    assert cfg.validation.split == "none" and cfg.selection_metric == "auto"
    assert result.selection_metric == "cindex_harrell_632plus"
    best = max(result.candidates, key=lambda c: c.result.metrics["cindex_harrell_632plus"])
    assert result.selected is best
    assert sel.n_train == 160 and sel.metrics["n_development"] == 160
    assert set(sel.predictions["role"]) == {"internal-external"} and len(sel.per_site) == 4
    assert not any("split random" in w for w in result.warnings)
    internal = {c.model: c.result.internal for c in result.candidates}
    assert internal == {"cox": "optcorr", "rsf": "632plus"}
    rsf = next(c for c in result.candidates if c.model == "rsf").result
    assert 0.5 < rsf.metrics["cindex_oob"] < 1
    for anchor in ('id="internal-validation"', 'id="stability"', 'id="calibration-smooth"',
                   'id="selection"'):  # fmt: skip
        assert anchor in page, anchor
    assert "ICI 365 d" in page and "classification instability at 10%" in page
    assert "internal-external" in page.lower()


def test_the_docs_metric_table_is_the_registry() -> None:
    """docs/training.md's table of metric names lists exactly the registry's metrics."""
    import re
    from pathlib import Path

    from refracture.validation.catalogue import metric_names

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    table = text[text.index("### Metric names") : text.index("Suffixes, as in")]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    documented = [name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+)`", cell)]
    assert documented == metric_names(365)
