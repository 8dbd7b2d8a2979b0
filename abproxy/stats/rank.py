"""Spearman rank correlation with a confidence interval (METHODS §18): does an offline metric rank
model versions the way their online lifts do?"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class RankCorrelation:
    n: int
    rho: float
    ci: tuple[float, float]
    p_value: float
    alpha: float
    warning: str | None = None     # too_few | constant | perfect


def rank_correlation(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> RankCorrelation:
    """Spearman's ρ (ties get average ranks), its two-sided p-value (scipy: t with n−2 df) and a
    Fisher-z interval with the variance of Bonett & Wright (2000, Psychometrika 65:23–28):
    tanh(atanh ρ ± z₁₋α/₂·√((1 + ρ²/2)/(n − 3))).

    Fewer than 4 pairs → NaN with warning ``too_few``; a constant side → NaN, ``constant``;
    |ρ| = 1 → the interval collapses to ρ, ``perfect`` (the Fisher interval does not apply).
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} and {len(y)})")
    n = len(x)
    nan = float("nan")
    if n < 4:
        return RankCorrelation(n, nan, (nan, nan), nan, alpha, "too_few")
    if len(set(x)) < 2 or len(set(y)) < 2:
        return RankCorrelation(n, nan, (nan, nan), nan, alpha, "constant")
    from scipy.stats import norm, spearmanr

    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    if abs(rho) >= 1 - 1e-12:
        return RankCorrelation(n, rho, (rho, rho), p, alpha, "perfect")
    se = math.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z, crit = math.atanh(rho), norm.ppf(1 - alpha / 2)
    return RankCorrelation(n, rho, (math.tanh(z - crit * se), math.tanh(z + crit * se)), p, alpha)
