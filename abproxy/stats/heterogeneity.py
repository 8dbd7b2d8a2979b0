"""Cochran's Q test of effect heterogeneity across segments (METHODS §11)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Heterogeneity:
    q: float
    df: int
    p_value: float
    i2: float
    pooled: float  # fixed-effect (inverse-variance) mean ē
    warning: str | None = None


def cochran_q(effects: Sequence[float], variances: Sequence[float]) -> Heterogeneity:
    """Q = Σw_k(e_k − ē)², w = 1/v, p = χ²_sf(Q, K−1), I² = max(0, (Q−(K−1))/Q).

    Via statsmodels ``combine_effects``. Segments with a non-finite effect or a
    non-positive / non-finite variance are dropped; fewer than 2 left → warning.
    """
    e = np.asarray(effects, dtype=float)
    v = np.asarray(variances, dtype=float)
    keep = np.isfinite(e) & np.isfinite(v) & (v > 0)
    e, v = e[keep], v[keep]
    k = len(e)
    if k < 2:
        pooled = float(e[0]) if k == 1 else math.nan
        return Heterogeneity(math.nan, max(k - 1, 0), math.nan, math.nan, pooled,
                             "too_few_segments")
    from scipy.special import chdtrc   # what scipy.stats.chi2.sf calls
    from statsmodels.stats.meta_analysis import combine_effects

    with np.errstate(invalid="ignore", divide="ignore"):  # RE parts unused; τ²=0 → 0/0
        res = combine_effects(e, v, method_re="dl")
    q = float(res.q)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return Heterogeneity(q, k - 1, float(chdtrc(k - 1, q)), i2, float(res.mean_effect_fe))
