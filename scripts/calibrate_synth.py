"""Calibrate the Weibull scale of the synthetic cohort's re-fracture baseline.

Finds the scale for which the mean true cumulative incidence of re-fracture at 365 days (with
competing death) is the target (15 %), over a large simulated population, and prints JSON.
The result is copied into ``WEIBULL_SCALE_DAYS`` in ``refracture/synth/cohort.py``; run this
again whenever the covariate model or the hazard ratios change.

    python scripts/calibrate_synth.py [--target 0.15] [--n 200000]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.optimize import brentq

from refracture.synth import cohort as c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.15)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()

    sim = c.simulate_cohort(args.n, 4, args.seed)
    lp = sim.truth["linear_predictor"].to_numpy()
    age = sim.clinical["age"].to_numpy(float)
    death_rate = c.DEATH_RATE_PER_DAY * np.exp(c.DEATH_LOG_HR_AGE * (age - c.AGE_MEAN))
    original = c.WEIBULL_SCALE_DAYS

    def mean_cif(scale: float) -> float:
        c.WEIBULL_SCALE_DAYS = scale
        return float(c.true_cif(lp[:20000], death_rate[:20000]).mean())

    scale = brentq(lambda s: mean_cif(s) - args.target, 200.0, 200_000.0, xtol=0.5)
    c.WEIBULL_SCALE_DAYS = original
    print(
        json.dumps(
            {
                "target_cif_365d": args.target,
                "weibull_shape": c.WEIBULL_SHAPE,
                "weibull_scale_days": round(scale, 0),
                "n": args.n,
            }
        )
    )


if __name__ == "__main__":
    main()
