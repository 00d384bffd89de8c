"""Short lines for the terminal summary of a training run: the registered model's calibration
for death next to re-fracture's, Riley's minimum sample size for it, and its performance
across the validation sites. Each line
stays within 80 columns and keeps every interval whole, as the summary tables do."""

from __future__ import annotations

import math
from typing import Any

from refracture.report.site_meta import back_transform
from refracture.text import ci_text

__all__ = ["selected_lines"]


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]"


def selected_lines(result: Any, horizon: float) -> list[str]:
    """Lines about the registered model (``result.selected``): O/E of re-fracture and death
    at the horizon (under ``cif``), and the random-effects average across sites with a new
    site's 95 % prediction interval (two or more validation sites)."""
    sel = result.selected
    m = sel.result.metrics
    hd = int(round(horizon))
    out = []
    if f"oe_ratio_death_{hd}d" in m:
        out += [
            f"O/E at {hd} d of the registered model ({sel.label}):",
            f"  re-fracture {ci_text(m, f'oe_ratio_{hd}d', brackets=True)}; "
            f"death {ci_text(m, f'oe_ratio_death_{hd}d', brackets=True)}",
            f"  death by {hd} d: observed {m.get(f'observed_death_{hd}d', math.nan):.3f}, "
            f"predicted {m.get(f'expected_death_{hd}d', math.nan):.3f} on average",
        ]
    out += _sample_size_lines(getattr(result, "sample_size", None), sel.feature_set, hd)
    meta = getattr(sel, "site_meta", None) or {}
    if meta:
        k = max(r.k for r, _ in meta.values())
        out.append(f"across {k} validation sites (random effects, average site and 95% CI):")
        for metric, (r, scale) in meta.items():
            label = "Harrell C" if metric == "cindex_harrell" else f"O/E {hd} d"
            line = f"  {label} {back_transform(scale, r.estimate):.3f} "
            line += _interval(back_transform(scale, r.lo), back_transform(scale, r.hi))
            if math.isfinite(r.pi_lo):
                pi = _interval(back_transform(scale, r.pi_lo), back_transform(scale, r.pi_hi))
                line += ", new site " + pi
            out.append(line)
    return out


def _sample_size_lines(table: Any, feature_set: str, hd: int) -> list[str]:
    """Riley et al.'s minimum for the registered model's feature set, needed vs available."""
    if table is None or not len(table):
        return []
    rows = table[table["feature_set"] == feature_set]
    if rows.empty:
        return []
    out = [f"sample size (Riley et al.), {feature_set}, {rows.iloc[0]['parameters']} parameters:"]
    for r in rows.itertuples(index=False):
        what = "time to event" if r.outcome == "survival" else f"status at {hd} d"
        out.append(
            f"  {what}: needs {r.required_n} patients ({r.required_events} events), has "
            f"{r.available_n} ({r.available_events}); shrinkage {r.expected_shrinkage:.2f}"
        )
    return out
