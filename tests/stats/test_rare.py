"""Rare-event proportions: Fisher's exact test when an expected cell < 10 (reference + A/A)."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from abproxy.stats.rare import exact_proportion_effect, min_expected_count, proportion_auto
from abproxy.stats.sufficient import Moments


def arm(n, k):
    return Moments(n, float(k), float(k))


def test_reference_against_scipy_and_statsmodels_on_raw_table():
    c, t = arm(4000, 3), arm(4000, 11)
    e = exact_proportion_effect(c, t)
    assert e.method == "fisher-exact"
    assert e.p_value == pytest.approx(stats.fisher_exact([[11, 3989], [3, 3997]]).pvalue)
    assert e.abs_ci == pytest.approx(confint_proportions_2indep(11, 4000, 3, 4000, method="newcomb"))
    lo, hi = confint_proportions_2indep(11, 4000, 3, 4000, method="score", compare="ratio")
    assert e.rel_ci == pytest.approx((lo - 1, hi - 1))
    assert e.rel_effect == pytest.approx(11 / 3 - 1)


def test_hand_checked_fisher_value():
    # 2×2 table [[3, 1], [1, 3]]: two-sided Fisher p = 0.4857 (Agresti 2002, tea-tasting example)
    e = exact_proportion_effect(arm(4, 1), arm(4, 3))
    assert e.p_value == pytest.approx(0.485714, abs=1e-6)


def test_auto_switches_on_expected_count():
    assert min_expected_count(arm(1000, 5), arm(1000, 7)) == pytest.approx(6.0)
    assert proportion_auto(arm(1000, 5), arm(1000, 7)).method == "fisher-exact"
    assert proportion_auto(arm(10_000, 500), arm(10_000, 560)).method == "z-proportion"


def test_swap_arms_flips_difference():
    a, b = exact_proportion_effect(arm(3000, 4), arm(3000, 9)), exact_proportion_effect(arm(3000, 9), arm(3000, 4))
    assert a.abs_effect == pytest.approx(-b.abs_effect)
    assert a.p_value == pytest.approx(b.p_value)
    assert a.abs_ci == pytest.approx((-b.abs_ci[1], -b.abs_ci[0]))


def test_zero_control_conversions_and_degenerate():
    e = exact_proportion_effect(arm(500, 0), arm(500, 4))
    assert math.isnan(e.rel_effect) and e.warning == "control_mean_zero"
    assert 0 < e.p_value < 1 and e.abs_ci[0] < e.abs_ci[1]
    d = exact_proportion_effect(arm(1, 0), arm(500, 4))
    assert math.isnan(d.p_value) and d.warning == "too_few_units"


def _pvalues(n, p, sims, rng, lift=0.0):
    xt, xc = rng.binomial(n, p * (1 + lift), sims), rng.binomial(n, p, sims)
    cache = {}
    for key in set(zip(xt.tolist(), xc.tolist())):
        cache[key] = exact_proportion_effect(arm(n, key[1]), arm(n, key[0]))
    return [cache[k] for k in zip(xt.tolist(), xc.tolist())]


@pytest.mark.parametrize("n,p", [(2000, 0.002), (20_000, 0.0003), (500, 0.012)])
def test_aa_size_at_most_alpha_and_coverage(n, p):
    """A/A: an exact test's size is at most α (below it, by the discreteness of few counts: measured
    0.018–0.023 at α = 0.05); the Newcombe CI of the difference covers 0 in 95 ± 2% (measured 96%)."""
    rng = np.random.default_rng(3)
    sims = 20_000
    effects = _pvalues(n, p, sims, rng)
    fpr = np.mean([e.p_value < 0.05 for e in effects])
    hi = stats.binom.interval(0.99, sims, 0.05)[1] / sims
    assert fpr <= hi, fpr
    covered = np.mean([e.abs_ci[0] <= 0 <= e.abs_ci[1] for e in effects])
    assert 0.93 <= covered <= 0.97, covered


def test_exact_result_is_calibrated_where_the_z_result_is_not():
    """Why the switch: with a 10/90 split and 2 expected conversions in the small arm, the z-test's Wald
    CI covers only ~86%; the exact result keeps size ≤ α and its Newcombe CI covers 95 ± 2%."""
    from abproxy.stats.effects import proportion_effect

    rng = np.random.default_rng(5)
    nt, nc, p, sims = 500, 4500, 0.004, 20_000
    xt, xc = rng.binomial(nt, p, sims), rng.binomial(nc, p, sims)
    keys = set(zip(xt.tolist(), xc.tolist()))
    z = {k: proportion_effect(arm(nc, k[1]), arm(nt, k[0])) for k in keys}
    ex = {k: exact_proportion_effect(arm(nc, k[1]), arm(nt, k[0])) for k in keys}
    pairs = list(zip(xt.tolist(), xc.tolist()))
    covers = lambda d: np.mean([d[k].abs_ci[0] <= 0 <= d[k].abs_ci[1] for k in pairs])  # noqa: E731
    assert covers(z) < 0.9
    assert 0.93 <= covers(ex) <= 0.97
    assert np.mean([ex[k].p_value < 0.05 for k in pairs]) <= 0.05


def test_an_arm_converting_100_percent_gives_a_real_interval():
    """statsmodels' score roots come back complex (imaginary part ~1e-8) when control converts 5/5."""
    control, variant = arm(5, 5), arm(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no ComplexWarning: the real part is taken
        effect = exact_proportion_effect(control, variant)
    lo, hi = effect.rel_ci
    assert isinstance(lo, float) and isinstance(hi, float) and lo < effect.rel_effect < hi
    # the score interval of pC/pT (arms swapped), inverted: statsmodels' own pT/pC roots are wrong here
    swapped = confint_proportions_2indep(5, 5, 2, 5, method="score", compare="ratio")
    assert math.isclose(lo, 1 / swapped[1] - 1, rel_tol=1e-12) and math.isclose(hi, 1 / swapped[0] - 1, rel_tol=1e-12)
    # where statsmodels is right, swapping and inverting gives its interval to 1e-12
    a = confint_proportions_2indep(7, 30, 12, 40, method="score", compare="ratio")
    b = confint_proportions_2indep(12, 40, 7, 30, method="score", compare="ratio")
    assert math.isclose(a[0], 1 / b[1], rel_tol=1e-12) and math.isclose(a[1], 1 / b[0], rel_tol=1e-12)
    none_converted = exact_proportion_effect(arm(40, 5), arm(40, 0)).rel_ci     # 0/40 vs 5/40: lift −100%
    assert math.isclose(none_converted[0], -1.0, abs_tol=1e-9) and none_converted[1] > -0.9
