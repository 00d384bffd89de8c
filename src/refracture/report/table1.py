"""Table 1: baseline characteristics by group, as clinical papers print them.

Numbers are mean ± SD for roughly symmetric variables and median [IQR] for skewed ones
(|skewness| > 1 or a count), n (%) for binary and categorical ones. P-values: Welch's t-test or
one-way ANOVA for mean ± SD rows, Mann-Whitney U or Kruskal-Wallis for median [IQR] rows, and
chi-square (Fisher's exact test for a 2x2 table with an expected count < 5) for n (%) rows; all from
scipy.stats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

SKEW_LIMIT = 1.0


@dataclass(frozen=True)
class Variable:
    name: str
    kind: str  # numeric | binary | categorical
    label: str | None = None


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _summary_kind(x: pd.Series) -> str:
    x = x.dropna()
    if len(x) < 3:
        return "mean"
    integer_counts = bool(np.all(np.equal(np.mod(x, 1), 0))) and x.nunique() <= 6
    return "median" if integer_counts or abs(stats.skew(x)) > SKEW_LIMIT else "mean"


def _numeric_cell(x: pd.Series, kind: str) -> str:
    x = x.dropna()
    if x.empty:
        return "-"
    if kind == "mean":
        return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else f"{x.mean():.1f}"
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return f"{med:.1f} [{q1:.1f}, {q3:.1f}]"


def _numeric_p(groups: list[pd.Series], kind: str) -> float:
    groups = [g.dropna() for g in groups if g.notna().sum() >= 2]
    if len(groups) < 2:
        return float("nan")
    if kind == "mean":
        if len(groups) == 2:
            return float(stats.ttest_ind(groups[0], groups[1], equal_var=False).pvalue)
        return float(stats.f_oneway(*groups).pvalue)
    if len(groups) == 2:
        return float(stats.mannwhitneyu(groups[0], groups[1]).pvalue)
    return float(stats.kruskal(*groups).pvalue)


def _count_p(table: np.ndarray) -> float:
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    expected = stats.contingency.expected_freq(table)
    if table.shape == (2, 2) and expected.min() < 5:
        return float(stats.fisher_exact(table).pvalue)
    return float(stats.chi2_contingency(table).pvalue)


def _pct(k: int, n: int) -> str:
    return f"{k} ({100.0 * k / n:.1f}%)" if n else "0"


def table_one(df: pd.DataFrame, variables: list[Variable], by: pd.Series) -> pd.DataFrame:
    """One row per variable (and per level of a categorical one), one column per group.

    ``by`` labels each row of ``df`` with its group (e.g. outcome or site); the first columns are
    ``characteristic`` and ``overall``, the last ``p``.
    """
    by = by.reindex(df.index)
    labels = [g for g in pd.unique(by.dropna())]
    order = sorted(labels, key=str)
    header = {g: f"{g} (n={int((by == g).sum())})" for g in order}
    rows: list[dict[str, str]] = [
        {
            "characteristic": "n",
            "overall": str(len(df)),
            **{header[g]: str(int((by == g).sum())) for g in order},
            "p": "",
        }
    ]
    for var in variables:
        if var.name not in df:
            continue
        col = df[var.name]
        label = var.label or var.name
        n_missing = int(col.isna().sum())
        miss = f" (missing {n_missing})" if n_missing else ""
        if var.kind == "numeric":
            x = pd.to_numeric(col, errors="coerce")
            kind = _summary_kind(x)
            stat = "mean ± SD" if kind == "mean" else "median [IQR]"
            row = {"characteristic": f"{label}, {stat}{miss}", "overall": _numeric_cell(x, kind)}
            for g in order:
                row[header[g]] = _numeric_cell(x[by == g], kind)
            row["p"] = _fmt_p(_numeric_p([x[by == g] for g in order], kind))
            rows.append(row)
        elif var.kind == "binary":
            x = pd.to_numeric(col, errors="coerce")
            row = {
                "characteristic": f"{label}, n (%){miss}",
                "overall": _pct(int((x == 1).sum()), int(x.notna().sum())),
            }
            table = []
            for g in order:
                xg = x[by == g]
                row[header[g]] = _pct(int((xg == 1).sum()), int(xg.notna().sum()))
                table.append([int((xg == 1).sum()), int((xg == 0).sum())])
            row["p"] = _fmt_p(_count_p(np.array(table).T))
            rows.append(row)
        else:
            levels = sorted(col.dropna().astype(str).unique())
            table = np.array(
                [[int(((col.astype(str) == lv) & (by == g)).sum()) for g in order] for lv in levels]
            )
            rows.append(
                {
                    "characteristic": f"{label}, n (%){miss}",
                    "overall": "",
                    **{header[g]: "" for g in order},
                    "p": _fmt_p(_count_p(table)),
                }
            )
            n_all = int(col.notna().sum())
            for i, lv in enumerate(levels):
                row = {
                    "characteristic": f"    {lv}",
                    "overall": _pct(int((col.astype(str) == lv).sum()), n_all),
                }
                for j, g in enumerate(order):
                    row[header[g]] = _pct(int(table[i, j]), int(table[:, j].sum()))
                row["p"] = ""
                rows.append(row)
    return pd.DataFrame(rows, columns=["characteristic", "overall", *header.values(), "p"])


def outcome_groups(time: pd.Series, event: pd.Series, horizon: float) -> pd.Series:
    """'re-fracture by <h> d' vs 'no re-fracture by <h> d' (event-free, censored or died)."""
    h = int(round(horizon))
    hit = (event == 1) & (time <= horizon)
    return pd.Series(
        np.where(hit, f"re-fracture by {h} d", f"no re-fracture by {h} d"), index=time.index
    )
