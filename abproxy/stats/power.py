"""Minimum detectable effect and sample size from the current SE (METHODS §10)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from abproxy.stats.effects import Effect


@dataclass(frozen=True)
class Power:
    mde_abs: float
    mde_rel: float
    target_rel: float | None
    units_per_variant_now: float
    units_per_variant_needed: float | None
    extra_units_per_variant: float | None
    warning: str | None = None


def power_analysis(effect: Effect, n_control: int, n_variant: int, alpha: float = 0.05,
                   power: float = 0.8, target_rel: float | None = None,
                   critical: float | None = None) -> Power:
    """MDE = (z(1−α/2) + z(power))·SE_now (§10; GrowthBook power-technical).

    mde_rel = MDE/|x̄C|. ``units_per_variant_now`` is the mean arm size; for a
    target relative lift δ, n_needed = n_now·(mde_rel/δ)² per arm (SE ∝ 1/√n,
    allocation kept), extra = max(0, n_needed − n_now). ``critical`` replaces
    z(1−α/2), e.g. by the sequential multiplier at the current N (which grows
    slowly with N, so n_needed is then a slight underestimate).
    """
    from scipy.special import ndtri

    now = (n_control + n_variant) / 2
    crit = ndtri(1 - alpha / 2) if critical is None else critical
    mde_abs = float((crit + ndtri(power)) * effect.abs_se)
    mc = effect.control_mean
    mde_rel = mde_abs / abs(mc) if mc != 0 and math.isfinite(mc) else math.nan
    warning = None
    if not effect.abs_se > 0:
        warning = effect.warning or "no_standard_error"
    elif math.isnan(mde_rel):
        warning = "control_mean_zero"
    if target_rel is None:
        return Power(mde_abs, mde_rel, None, now, None, None, warning)
    if target_rel == 0 or not math.isfinite(target_rel):
        return Power(mde_abs, mde_rel, target_rel, now, None, None, warning or "invalid_target")
    if math.isnan(mde_rel):
        return Power(mde_abs, mde_rel, target_rel, now, None, None, warning)
    needed = now * (mde_rel / abs(target_rel)) ** 2
    return Power(mde_abs, mde_rel, target_rel, now, needed, max(0.0, needed - now), warning)


def days_needed(extra_units_per_variant: float | None,
                units_per_variant_per_day: float) -> float | None:
    """Days to collect the extra units at the current daily rate; None if unknown."""
    if extra_units_per_variant is None or math.isnan(extra_units_per_variant):
        return None
    if extra_units_per_variant <= 0:
        return 0.0
    if not units_per_variant_per_day > 0:
        return None
    return extra_units_per_variant / units_per_variant_per_day
