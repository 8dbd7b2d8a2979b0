"""Linear trend of daily effects, to flag fading (novelty) effects."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trend:
    slope: float  # effect change per day
    slope_se: float
    p_value: float
    n_points: int
    warning: str | None = None


def effect_trend(days: Sequence[float], effects: Sequence[float],
                 variances: Sequence[float]) -> Trend:
    """WLS of effect_d on [1, day_d] with weights 1/variance_d (statsmodels WLS).

    The residual scale is estimated (t-test, df = n−2), so day-to-day
    heterogeneity beyond the sampling variances widens the SE. Points with
    non-finite values or non-positive variance are dropped; < 3 points or a
    single distinct day → warning.
    """
    d, e, v = (np.asarray(a, dtype=float) for a in (days, effects, variances))
    keep = np.isfinite(d) & np.isfinite(e) & np.isfinite(v) & (v > 0)
    d, e, v = d[keep], e[keep], v[keep]
    n = len(d)
    if n < 3:
        return Trend(math.nan, math.nan, math.nan, n, "too_few_points")
    if np.ptp(d) == 0:
        return Trend(math.nan, math.nan, math.nan, n, "constant_days")
    from statsmodels.regression.linear_model import WLS

    res = WLS(e, np.column_stack([np.ones(n), d]), weights=1 / v).fit()
    return Trend(float(res.params[1]), float(res.bse[1]), float(res.pvalues[1]), n)
