"""Pre-exposure balance of the arms (METHODS §16): the covariate must not differ by arm.

For a CUPED pre-window (or a CUPAC covariate logged at exposure) the arms are compared on the
covariate itself: randomisation makes E[x̄T − x̄C] = 0, so a significant difference means a broken
split, a pre-period leak, or units that carry an earlier exposure (restarts) — GrowthBook's
pre-exposure bias check. The size is reported as the difference, its ratio to the control mean and
the standardised mean difference d = (x̄T − x̄C)/√((sT² + sC²)/2); CUPED's θ·(x̄T − x̄C) is the part
of the unadjusted effect it removes (Deng et al. 2013 §3.2). ``ks_p_value`` turns a two-sample
Kolmogorov–Smirnov D computed in the engine into the asymptotic p of scipy ``ks_2samp``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from abproxy.stats.effects import mean_effect
from abproxy.stats.sufficient import JointMoments, Moments


@dataclass(frozen=True)
class Balance:
    control_mean: float
    variant_mean: float
    difference: float
    relative: float          # difference / control mean (NaN when that is 0)
    smd: float               # standardised mean difference
    p_value: float           # Welch t-test of equal means
    warning: str | None = None


def pre_exposure_balance(control: Moments, variant: Moments) -> Balance:
    """Welch t-test (§1) of the covariate's means between the arms, with the sizes above."""
    e = mean_effect(control, variant)
    mc, mt = control.mean, variant.mean
    pooled_sd = math.sqrt((control.var + variant.var) / 2) if control.n > 1 and variant.n > 1 else math.nan
    smd = (mt - mc) / pooled_sd if pooled_sd > 0 else math.nan
    rel = (mt - mc) / mc if mc != 0 and math.isfinite(mc) else math.nan
    p = e.p_value if e.warning != "zero_variance" else 1.0
    return Balance(mc, mt, mt - mc, rel, smd, p, e.warning)


def cuped_correction(control: JointMoments, variant: JointMoments) -> float:
    """θ·(x̄T − x̄C), θ from the pooled arms (§5): what CUPED subtracts from the unadjusted effect."""
    pooled = control + variant
    vx = pooled.x.var
    theta = pooled.cov / vx if vx > 0 else 0.0
    return theta * (variant.x.mean - control.x.mean)


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Asymptotic two-sided p of the two-sample KS statistic D (scipy ``ks_2samp(method='asymp')``)."""
    from scipy.stats import kstwo

    if n1 < 1 or n2 < 1 or not math.isfinite(d):
        return math.nan
    return float(min(1.0, kstwo.sf(d, round(n1 * n2 / (n1 + n2)))))
