"""Difference of per-unit quantiles between two arms from order statistics (METHODS §14).

Per arm the engine returns n, the sample quantile x_(k), k = ⌈n·q⌉ (inverse of the empirical CDF),
and two order statistics x_(l), x_(u) at the ranks n·q ∓ z·√(n·q(1−q)) (z = z₀.₉₇₅, the binomial
bounds of a 95% distribution-free CI for the quantile). Their spread estimates the sparsity
1/f(ξ_q) (Siddiqui 1960; Bloch & Gastwirth 1968), so SE(x̂_q) = (x_(u) − x_(l))·√(n·q(1−q))/(u − l):
the asymptotic normal variance q(1−q)/(n·f²) with a density-free estimate of f. The difference
of two independent arms is then a z-test, the relative lift by the delta method (§2) — the method
of Price & Bonett (2002) for medians, GrowthBook's quantile tests (gbstats ``QuantileStatistic``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from abproxy.stats.effects import Effect, RatioParts, with_critical

RANK_Z = 1.959963984540054   # ranks of the 95% order-statistic bounds, whatever the test's α
METHOD = "quantile-order-stat"


@dataclass(frozen=True)
class QuantileSummary:
    """One arm: n units, the sample q-quantile and the order statistics at ranks l < k < u."""

    n: int
    q: float
    estimate: float
    lower: float
    upper: float

    @property
    def ranks(self) -> tuple[int, int, int]:
        return quantile_ranks(self.n, self.q)

    @property
    def se(self) -> float:
        """(x_(u) − x_(l))·√(n·q(1−q))/(u − l); NaN when n is too small for two distinct ranks."""
        lo, _, hi = self.ranks
        if self.n < 2 or hi <= lo:
            return math.nan
        return (self.upper - self.lower) * math.sqrt(self.n * self.q * (1 - self.q)) / (hi - lo)


def quantile_ranks(n: int, q: float, z: float = RANK_Z) -> tuple[int, int, int]:
    """1-based ranks (l, k, u): k = ⌈n·q⌉, l = ⌊n·q − z·√(nq(1−q))⌋, u = ⌈n·q + z·√(nq(1−q))⌉,
    clipped to 1..n. The SQL builder computes the same expressions in the engine."""
    if n < 1:
        return 0, 0, 0
    half = z * math.sqrt(n * q * (1 - q))
    k = min(n, max(1, math.ceil(n * q)))
    return max(1, math.floor(n * q - half)), k, min(n, math.ceil(n * q + half))


def _degenerate(mc: float, mt: float, alpha: float, warning: str) -> Effect:
    rel = (mt - mc) / abs(mc) if mc != 0 and math.isfinite(mc) else math.nan
    nan2 = (math.nan, math.nan)
    return Effect(mc, mt, mt - mc, math.nan, nan2, rel, math.nan, nan2, math.nan, math.inf, METHOD,
                  alpha, None, warning)


def quantile_effect(control: QuantileSummary, variant: QuantileSummary, alpha: float = 0.05) -> Effect:
    """x̂_q,T − x̂_q,C with SE² = SE_T² + SE_C², z CI and p; lift (x̂T − x̂C)/x̂C with the §2 delta
    method. Warnings: too_few_units (a rank interval needs the tail: n·min(q,1−q) ≥ z²),
    zero_spread (the bounds fall on tied values: no density estimate), control_mean_zero."""
    mc, mt = control.estimate, variant.estimate
    tail = RANK_Z**2 * max(control.q / (1 - control.q), (1 - control.q) / control.q)
    if min(control.n, variant.n) <= tail:
        return _degenerate(mc, mt, alpha, "too_few_units")
    var_c, var_t = control.se**2, variant.se**2
    if not var_c + var_t > 0:
        return _degenerate(mc, mt, alpha, "zero_spread")
    from scipy.special import ndtr, ndtri

    se = math.sqrt(var_c + var_t)
    zq = float(ndtri(1 - alpha / 2))
    delta = mt - mc
    parts = RatioParts(mt, mc, var_t, var_c)
    if mc == 0 or not math.isfinite(mc):
        rel, rel_se, warning = math.nan, math.nan, "control_mean_zero"
    else:   # the lift over |x̂C| with Fieller's interval from the same z test (METHODS §19)
        rel, warning = delta / abs(mc), None
        rel_se = math.sqrt((var_t / mc) / mc + (mt / mc) ** 2 * ((var_c / mc) / mc))
    p = float(2 * ndtr(-abs(delta) / se))
    e = Effect(mc, mt, delta, se, (math.nan, math.nan), rel, rel_se, (math.nan, math.nan), p,
               math.inf, METHOD, alpha, None, warning, parts)
    return with_critical(e, zq, alpha)
