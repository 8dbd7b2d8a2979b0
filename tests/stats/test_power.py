import math

import pytest
from statsmodels.stats.power import NormalIndPower

from abproxy.stats.effects import mean_effect
from abproxy.stats.power import days_needed, power_analysis
from abproxy.stats.sufficient import Moments


def moments(n, mean, sd):
    """Moments with an exact sample mean and variance."""
    return Moments(n, n * mean, (n - 1) * sd**2 + n * mean**2)


@pytest.mark.parametrize("alpha,power", [(0.05, 0.8), (0.01, 0.9)])
def test_mde_matches_normal_ind_power(alpha, power):
    n, sd, mu = 4000, 2.0, 10.0
    e = mean_effect(moments(n, mu, sd), moments(n, mu, sd))
    p = power_analysis(e, n, n, alpha, power)
    d = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=1)
    assert p.mde_abs == pytest.approx(d * sd, rel=1e-4)
    assert p.mde_rel == pytest.approx(d * sd / mu, rel=1e-4)
    assert p.units_per_variant_now == n and p.units_per_variant_needed is None


@pytest.mark.parametrize("n_c,n_t", [(3000, 3000), (4000, 2000)])
def test_needed_units_match_normal_ind_power(n_c, n_t):
    sd, mu, target = 3.0, 20.0, 0.005
    e = mean_effect(moments(n_c, mu, sd), moments(n_t, mu, sd))
    p = power_analysis(e, n_c, n_t, target_rel=target)
    ratio = n_t / n_c
    n1 = NormalIndPower().solve_power(effect_size=target * mu / sd, nobs1=None, alpha=0.05,
                                      power=0.8, ratio=ratio)
    assert p.units_per_variant_needed == pytest.approx(n1 * (1 + ratio) / 2, rel=1e-4)
    assert p.extra_units_per_variant == pytest.approx(p.units_per_variant_needed - (n_c + n_t) / 2)
    assert p.extra_units_per_variant > 0
    # equal-split formula of METHODS §10
    if n_c == n_t:
        z = 1.959963984540054 + 0.8416212335729143
        assert p.units_per_variant_needed == pytest.approx(z**2 * 2 * sd**2 / (target * mu) ** 2,
                                                           rel=1e-3)


def test_already_powered_needs_no_extra_units():
    e = mean_effect(moments(100000, 10, 1), moments(100000, 10, 1))
    p = power_analysis(e, 100000, 100000, target_rel=0.05)
    assert p.extra_units_per_variant == 0.0 and p.units_per_variant_needed < 100000


def test_degenerate():
    zero = mean_effect(moments(100, 0.0, 1.0), moments(100, 0.0, 1.0))
    p = power_analysis(zero, 100, 100, target_rel=0.1)
    assert p.warning == "control_mean_zero" and math.isnan(p.mde_rel)
    assert p.units_per_variant_needed is None and p.mde_abs > 0
    bad = mean_effect(Moments(1, 1, 1), Moments(1, 1, 1))
    q = power_analysis(bad, 1, 1, target_rel=0.1)
    assert q.warning == "too_few_units" and math.isnan(q.mde_abs)
    ok = mean_effect(moments(100, 5.0, 1.0), moments(100, 5.0, 1.0))
    assert power_analysis(ok, 100, 100, target_rel=0.0).warning == "invalid_target"


def test_days_needed():
    assert days_needed(1000.0, 250.0) == 4.0
    assert days_needed(0.0, 0.0) == 0.0
    assert days_needed(None, 100.0) is None
    assert days_needed(100.0, 0.0) is None
    assert days_needed(math.nan, 10.0) is None


def test_sequential_power_uses_the_confidence_sequence_width():
    import math

    from scipy.stats import norm

    from abproxy.stats import mean_effect, sequential, sequential_multiplier
    from abproxy.stats.sufficient import Moments

    c, t = Moments(20_000, 20_000 * 10.0, 20_000 * 104.0), Moments(20_000, 20_000 * 10.2, 20_000 * 108.0)
    fixed = mean_effect(c, t)
    mult = sequential_multiplier(40_000, 0.05, 5000)
    seq = sequential(fixed, 40_000, 5000)
    assert math.isclose(seq.abs_ci[1] - seq.abs_effect, mult * fixed.abs_se, rel_tol=1e-12)
    plain = power_analysis(fixed, 20_000, 20_000, 0.05, 0.8, 0.02)
    wide = power_analysis(fixed, 20_000, 20_000, 0.05, 0.8, 0.02, critical=mult)
    assert math.isclose(wide.mde_abs, (mult + norm.ppf(0.8)) * fixed.abs_se, rel_tol=1e-12)
    assert mult > norm.ppf(0.975) and wide.mde_abs > plain.mde_abs
    assert wide.units_per_variant_needed > plain.units_per_variant_needed
