"""One coherent design (METHODS §19): the lift has the sign of the absolute effect for any control
mean ≠ 0, the interval shown excludes 0 exactly when the decision says 'significant' (fixed horizon
and sequential, after multiple-testing adjustment), and impossible sums never look significant."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import optimize, stats
from statsmodels.stats import proportion as sm_proportion

from abproxy.stats import adjust_pvalues, at_level
from abproxy.stats.effects import (
    RatioParts,
    adjusted_alpha,
    cuped_effect,
    fieller,
    mean_effect,
    proportion_effect,
    ratio_effect,
    sequential,
)
from abproxy.stats.groupseq import group_sequential
from abproxy.stats.sufficient import JointMoments, Moments

settings.register_profile("coherence", deadline=None, max_examples=200)


def moments(x):
    x = np.asarray(x, dtype=float)
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def joint(y, x):
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return JointMoments(len(y), float(y.sum()), float((y * y).sum()), float(x.sum()), float((x * x).sum()),
                        float((x * y).sum()))


arms = st.tuples(st.floats(-50, 50), st.floats(0.1, 20), st.integers(5, 400), st.integers(0, 10_000))


def sample(spec):
    mean, sd, n, seed = spec
    return np.random.default_rng(seed).normal(mean, sd, n)


def excludes_zero(ci) -> bool:
    lo, hi = ci
    return lo > 0 or hi < 0


# ------------------------------------------------------------------ 1: the sign of the lift

@settings(settings.get_profile("coherence"))
@given(arms, arms)
def test_lift_has_the_sign_of_the_absolute_effect_for_any_control_mean(c, t):
    xc, xt = sample(c), sample(t)
    assume(xc.mean() != 0)
    rng = np.random.default_rng(c[3])
    pre_c, pre_t = xc + rng.normal(0, 3, xc.size), xt + rng.normal(0, 3, xt.size)
    for e in (mean_effect(moments(xc), moments(xt)), cuped_effect(joint(xc, pre_c), joint(xt, pre_t)),
              ratio_effect(joint(xc, np.ones_like(xc)), joint(xt, np.ones_like(xt)))):
        if not math.isfinite(e.rel_effect):
            continue
        assert np.sign(e.rel_effect) == np.sign(e.abs_effect)
        assert e.rel_effect == pytest.approx(e.abs_effect / abs(e.control_mean), rel=1e-9, abs=1e-12)
        if math.isfinite(e.rel_ci[0]):
            assert e.rel_ci[0] <= e.rel_effect <= e.rel_ci[1]


def test_negative_control_mean_lift_points_the_way_of_the_harm():
    """Net margin −4 → −5 per user is 25% worse, not 25% better."""
    rng = np.random.default_rng(1)
    c, t = rng.normal(-4, 2, 20_000), rng.normal(-5, 2, 20_000)
    for e in (mean_effect(moments(c), moments(t)),
              cuped_effect(joint(c, rng.normal(0, 1, c.size)), joint(t, rng.normal(0, 1, t.size)))):
        assert e.abs_effect < 0 and e.rel_effect == pytest.approx(-0.25, abs=0.01)
        assert e.rel_ci[1] < 0


# ------------------------------------------------------------------ Fieller's interval

def test_fieller_interval_matches_root_finding_on_the_welch_statistic():
    """The lift interval's ends are where the Welch statistic of x̄T − ρ·x̄C reaches ±t(ν), computed
    from the raw data with numpy/scipy."""
    rng = np.random.default_rng(3)
    c, t = rng.lognormal(0, 1.0, 900), rng.lognormal(0.4, 1.2, 700)
    e = mean_effect(moments(c), moments(t))
    vc, vt = c.var(ddof=1) / c.size, t.var(ddof=1) / t.size
    welch = stats.ttest_ind(t, c, equal_var=False)
    q = stats.t.ppf(0.975, welch.df)

    def stat(rho):
        return (t.mean() - rho * c.mean()) / math.sqrt(vt + rho * rho * vc)

    hat = t.mean() / c.mean()
    lo = optimize.brentq(lambda r: stat(r) - q, 1e-3, hat, xtol=1e-14)
    hi = optimize.brentq(lambda r: stat(r) + q, hat, 100, xtol=1e-14)
    assert e.rel_ci == pytest.approx((lo - 1, hi - 1), rel=1e-8)
    assert e.p_value == pytest.approx(welch.pvalue, rel=1e-8)


def test_fieller_is_unbounded_when_the_control_mean_is_not_clearly_away_from_zero():
    assert all(math.isnan(v) for v in fieller(RatioParts(1.0, 0.1, 0.01, 0.01), 1.96))


def test_large_lifts_the_interval_agrees_with_the_test():
    """'Spend +70.7% (95% CI -3.5% to +145.0%), significantly better' cannot happen any more."""
    rng = np.random.default_rng(4)
    c, t = rng.exponential(1.0, 60), rng.exponential(1.7, 60)
    e = mean_effect(moments(c), moments(t))
    assert e.significant == excludes_zero(e.rel_ci) == excludes_zero(e.abs_ci)


def test_proportion_test_is_the_unpooled_wald_test_of_statsmodels():
    nc, nt, sc, st_ = 4000, 4200, 410, 480
    e = proportion_effect(Moments(nc, sc, sc), Moments(nt, st_, st_))
    ref = sm_proportion.test_proportions_2indep(st_, nt, sc, nc, method="wald", compare="diff")
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert e.significant == excludes_zero(e.rel_ci)


# ------------------------------------------------------------------ 3: significant ⇔ the interval excludes 0

def _effects(specs, mode: str):
    out = []
    for i, (c, t) in enumerate(specs):
        xc, xt = sample(c), sample(t)
        kind = i % 3
        if kind == 0:
            e = mean_effect(moments(xc), moments(xt))
        elif kind == 1:
            pc, pt = [np.random.default_rng(s[3]).random(s[2]) < min(0.95, abs(s[0]) / 50 + 0.02) for s in (c, t)]
            e = proportion_effect(moments(pc), moments(pt))
        else:
            rng = np.random.default_rng(c[3] + 1)
            e = cuped_effect(joint(xc, xc + rng.normal(0, 5, xc.size)), joint(xt, xt + rng.normal(0, 5, xt.size)))
        if mode == "sequential":
            e = sequential(e, int(c[2] + t[2]), 500.0)
        elif mode == "group-sequential":
            e = group_sequential(e, 1 + c[3] % 4, 4)
        out.append(e)
    return out


@pytest.mark.parametrize("mode", ["fixed-horizon", "sequential", "group-sequential"])
@settings(settings.get_profile("coherence"), max_examples=60)
@given(specs=st.lists(st.tuples(arms, arms), min_size=1, max_size=4), method=st.sampled_from(["holm", "fdr_bh"]))
def test_significant_iff_the_displayed_interval_excludes_zero(mode, specs, method):
    effects = _effects(specs, mode)
    adjusted = adjust_pvalues([e.p_value for e in effects], method, 0.05)
    for e, p_adj in zip(effects, adjusted):
        shown = at_level(e, adjusted_alpha(0.05, e.p_value, p_adj))
        significant = bool(p_adj < 0.05)
        assume(math.isfinite(e.p_value) and abs(p_adj - 0.05) > 1e-9)
        assert significant == excludes_zero(shown.abs_ci)
        if math.isfinite(shown.rel_ci[0]):
            assert significant == excludes_zero(shown.rel_ci)


def test_sequential_interval_at_the_adjusted_level_agrees_with_the_adjusted_p():
    """Hypothesis found it: p = 0.030, Holm-adjusted 0.060 (not significant), yet the confidence
    sequence drawn at α·p/p_adj = 0.025 excluded 0, because its ρ² was re-tuned at 0.025 while the
    always-valid p uses ρ² tuned at α. ρ² now stays at the design α for every level."""
    specs = [((0.0, 1.0, 48, 0), (-3.0, 9.5, 31, 4004)), ((0.0, 1.0, 5, 0), (0.0, 1.0, 5, 0))]
    effects = _effects(specs, "sequential")
    adjusted = adjust_pvalues([e.p_value for e in effects], "holm", 0.05)
    e, p_adj = effects[0], adjusted[0]
    assert e.p_value < 0.05 < p_adj
    shown = at_level(e, adjusted_alpha(0.05, e.p_value, p_adj))
    assert not excludes_zero(shown.abs_ci)
    assert at_level(e, 0.05).abs_ci == pytest.approx(e.abs_ci, rel=1e-12)   # the design level: unchanged
    for level in (0.01, 0.02, 0.03, 0.05, 0.1):
        assert excludes_zero(at_level(e, level).abs_ci) == (e.p_value < level)


def test_group_sequential_interval_at_the_adjusted_level_agrees_with_the_repeated_p():
    """Hypothesis found it (CI run): BH-adjusted p just under 0.05 (significant) while the repeated
    interval at α' = α·p/p_adj reached 0.0009 past 0: the boundary at α' came from the exact
    Lan–DeMets recursion, the repeated p from its interpolated curve. Both now read one curve."""
    specs = [((0.0, 1.0, 5, 0), (0.0, 1.0, 5, 0)), ((0.0, 1.0, 5, 1), (26.0, 1.0, 5, 6)),
             ((0.0, 1.0, 5, 0), (0.0, 1.0, 5, 0)), ((1.0, 0.375, 187, 771), (0.0, 11.0, 178, 42))]
    effects = _effects(specs, "group-sequential")
    adjusted = adjust_pvalues([e.p_value for e in effects], "fdr_bh", 0.05)
    for e, p_adj in zip(effects, adjusted):
        if not math.isfinite(e.p_value):
            continue
        shown = at_level(e, adjusted_alpha(0.05, e.p_value, p_adj))
        assert excludes_zero(shown.abs_ci) == bool(p_adj < 0.05)
        assert at_level(e, 0.05).abs_ci == pytest.approx(e.abs_ci, rel=1e-12)   # the design level: exact
        for level in (0.001, 0.01, 0.025, 0.05, 0.1):
            assert excludes_zero(at_level(e, level).abs_ci) == (e.p_value < level)


# ------------------------------------------------------------------ 2: impossible or non-finite sums

@pytest.mark.parametrize("control", [
    Moments(100, 1000.0, 5000.0),          # Σx² < (Σx)²/n: a negative variance
    Moments(100, math.inf, 1e6),
    Moments(100, 10.0, math.nan),
])
def test_impossible_sums_give_nan_inference_and_a_warning(control):
    variant = Moments(100, 1200.0, 20_000.0)
    for e in (mean_effect(control, variant), cuped_effect(JointMoments(100, control.sum, control.sum_sq, 0, 0, 0),
                                                          JointMoments(100, 1200.0, 20_000.0, 0, 0, 0))):
        assert e.warning == "invalid_sums"
        assert math.isnan(e.p_value) and not e.significant
        assert all(math.isnan(v) for v in (*e.abs_ci, *e.rel_ci))
    ratio = ratio_effect(JointMoments(100, control.sum, control.sum_sq, 100, 100, control.sum),
                         JointMoments(100, 1200.0, 20_000.0, 100, 100, 1200.0))
    assert ratio.warning == "invalid_sums" and not ratio.significant


def test_a_huge_control_mean_does_not_overflow():
    rng = np.random.default_rng(5)
    c, t = rng.normal(1e80, 1e79, 500), rng.normal(1.1e80, 1e79, 500)
    e = mean_effect(moments(c), moments(t))          # mc**4 used to raise OverflowError
    assert e.warning in (None, "overflow", "invalid_sums")
    if e.warning is None:
        assert e.rel_effect == pytest.approx(0.1, abs=0.02)
    else:
        assert math.isnan(e.p_value) and not e.significant


def test_rounding_noise_is_not_an_impossible_variance():
    assert Moments(3, 3 * 0.1, 3 * 0.1 * 0.1).valid
    assert not Moments(3, 3.0, 2.0).valid
