"""The maps and their statistics are one list each (refracture.maps), and every rule that
depends on what a statistic is reads that list."""

from __future__ import annotations

import numpy as np

from refracture.config import ExtractionConfig
from refracture.features.schema import features_frame
from refracture.imaging.stats import IBSI_STATS, PRODUCT_STATS, grouped_stats
from refracture.maps import MAP_SPECS, MAPS, STATISTICS
from refracture.ranges import plausible_range, unit_mistake


def test_every_statistic_is_computed_and_range_checked_by_what_it_is() -> None:
    assert tuple(s.name for s in STATISTICS) == PRODUCT_STATS
    assert set(PRODUCT_STATS) - {"volume_ml"} <= set(IBSI_STATS)
    got = grouped_stats(np.arange(10.0), np.zeros(10, dtype=np.int64), 1)
    assert set(PRODUCT_STATS) - {"volume_ml"} <= set(got)
    for name, spec in MAP_SPECS.items():
        for stat in STATISTICS:
            column = f"{name}_{stat.name}_normal"
            want = spec.plausible if stat.in_map_units else None
            assert plausible_range(column) == want, column
            # a count, a volume or a shape statistic is never read as a unit mistake
            if not stat.in_map_units:
                assert unit_mistake(column, -5.0) is None, column
    assert unit_mistake("pdff_median_normal", 0.4) is not None


def test_the_config_and_the_outputs_take_the_maps_from_the_one_list() -> None:
    cfg = ExtractionConfig()
    assert (cfg.pdff_range, cfg.r2star_range) == tuple(MAP_SPECS[m].plausible for m in MAPS)
    from refracture.imaging.site_units import CANONICAL
    from refracture.outputs.fhir import _MAP_TEXT

    assert {m: MAP_SPECS[m].unit for m in MAPS} == CANONICAL
    assert set(_MAP_TEXT) == set(MAPS)
    assert any(c.startswith(f"{MAPS[-1]}_") for c in features_frame([], []).columns)
