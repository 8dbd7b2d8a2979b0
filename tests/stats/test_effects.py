"""Reference cross-checks and degenerate cases for abproxy.stats.effects."""
import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from statsmodels.stats.proportion import test_proportions_2indep as proportions_2indep_test
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from abproxy.stats.effects import (
    Effect,
    RatioParts,
    fieller,
    cuped_effect,
    mean_effect,
    proportion_effect,
    ratio_effect,
    sequential,
)
from abproxy.stats.sufficient import JointMoments, Moments


def moments(x):
    x = np.asarray(x, dtype=float)
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def joint(y, x):
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return JointMoments(len(y), float(y.sum()), float((y * y).sum()), float(x.sum()),
                        float((x * x).sum()), float((x * y).sum()))


# ------------------------------------------------------------------ mean (§1, §2)

@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_mean_effect_matches_scipy_and_statsmodels(alpha):
    rng = np.random.default_rng(10)
    c = rng.lognormal(0.0, 1.0, 800)
    t = rng.lognormal(0.1, 1.3, 1300)
    e = mean_effect(moments(c), moments(t), alpha)
    ref = stats.ttest_ind(t, c, equal_var=False)
    lo, hi = CompareMeans(DescrStatsW(t), DescrStatsW(c)).tconfint_diff(alpha=alpha, usevar="unequal")
    assert e.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert e.df == pytest.approx(ref.df, rel=1e-6)
    assert e.abs_effect == pytest.approx(t.mean() - c.mean(), rel=1e-9)
    assert e.abs_ci[0] == pytest.approx(lo, rel=1e-6)
    assert e.abs_ci[1] == pytest.approx(hi, rel=1e-6)
    assert e.method == "welch" and e.alpha == alpha and e.warning is None
    assert e.significant == (ref.pvalue < alpha)


def test_mean_relative_lift_delta_method():
    rng = np.random.default_rng(11)
    c, t = rng.normal(10, 3, 500), rng.normal(11, 4, 700)
    e = mean_effect(moments(c), moments(t))
    mc, mt = c.mean(), t.mean()
    vc, vt = c.var(ddof=1) / len(c), t.var(ddof=1) / len(t)
    se = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)  # GrowthBook / Eppo eq. 8
    q = stats.t.ppf(0.975, e.df)
    assert e.rel_effect == pytest.approx(mt / mc - 1, rel=1e-9)
    assert e.rel_se == pytest.approx(se, rel=1e-9)
    # the interval is Fieller's (METHODS §12), close to the delta method's at this precision
    assert e.rel_ci == pytest.approx(fieller(RatioParts(mt, mc, vt, vc), q), rel=1e-9)
    assert e.rel_ci == pytest.approx((mt / mc - 1 - q * se, mt / mc - 1 + q * se), rel=0.05)
    # dropping the control-mean term would be too narrow (METHODS pitfalls)
    assert e.rel_se > math.sqrt(vt) / mc


# ------------------------------------------------------------------ proportion (§3)

def test_proportion_effect_matches_statsmodels():
    nc, nt, sc, st = 4000, 4200, 410, 480
    e = proportion_effect(Moments(nc, sc, sc), Moments(nt, st, st))
    # the unpooled Wald test, so that the test and its interval share one SE (METHODS §12)
    p = proportions_2indep_test(st, nt, sc, nc, method="wald", compare="diff").pvalue
    assert proportions_ztest([st, sc], [nt, nc])[1] == pytest.approx(p, rel=0.05)   # the pooled test: close
    lo, hi = confint_proportions_2indep(st, nt, sc, nc, method="wald", compare="diff")
    assert e.p_value == pytest.approx(p, rel=1e-9)
    assert e.abs_ci == pytest.approx((lo, hi), rel=1e-9)
    pc, pt = sc / nc, st / nt
    vc, vt = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    assert e.abs_se == pytest.approx(math.sqrt(vc + vt), rel=1e-12)
    assert e.rel_se == pytest.approx(math.sqrt(vt / pc**2 + pt**2 * vc / pc**4), rel=1e-9)
    assert e.df == math.inf and e.method == "z-proportion"
    z = stats.norm.ppf(0.975)
    assert e.rel_ci == pytest.approx(fieller(RatioParts(pt, pc, vt, vc), z), rel=1e-9)


# ------------------------------------------------------------------ ratio (§4)

def test_ratio_effect_matches_independent_delta_method():
    rng = np.random.default_rng(12)
    xc, xt = 1 + rng.poisson(3, 3000), 1 + rng.poisson(3.2, 2500)
    yc, yt = rng.binomial(xc, 0.2), rng.binomial(xt, 0.22)

    def arm(y, x):  # linearisation: influence values (y − R·x)/x̄
        r = y.sum() / x.sum()
        return r, np.var((y - r * x) / x.mean(), ddof=1) / len(y)

    (rc, vc), (rt, vt) = arm(yc, xc), arm(yt, xt)
    e = ratio_effect(joint(yc, xc), joint(yt, xt))
    se = math.sqrt(vc + vt)
    assert (e.control_mean, e.variant_mean) == pytest.approx((rc, rt), rel=1e-12)
    assert e.abs_se == pytest.approx(se, rel=1e-8)
    assert e.p_value == pytest.approx(2 * stats.norm.sf(abs(rt - rc) / se), rel=1e-6)
    assert e.rel_se == pytest.approx(math.sqrt(vt / rc**2 + rt**2 * vc / rc**4), rel=1e-8)
    assert e.df == math.inf and e.method == "delta-ratio"


# ------------------------------------------------------------------ CUPED (§5)

def _cuped_data(rng, n_c, n_t, equal_x_means=False):
    xc, xt = rng.lognormal(0, 1, n_c), rng.lognormal(0, 1, n_t)
    if equal_x_means:
        xt = xt - xt.mean() + xc.mean()
    yc = 2 + 0.8 * xc + rng.normal(0, 1.0, n_c)
    yt = 2.3 + 0.8 * xt + rng.normal(0, 1.6, n_t)  # heteroscedastic arms
    return xc, yc, xt, yt


def _ols(xc, yc, xt, yt, cov_type):
    y = np.r_[yc, yt]
    x = np.r_[xc, xt]
    d = np.r_[np.zeros(len(yc)), np.ones(len(yt))]
    X = np.column_stack([np.ones_like(y), d, x - x.mean()])
    return sm.OLS(y, X).fit(cov_type=cov_type)


def test_cuped_equals_ols_exactly_when_covariate_means_balanced():
    # θ pooled over arms equals the OLS common (within-arm) slope iff x̄T = x̄C.
    xc, yc, xt, yt = _cuped_data(np.random.default_rng(13), 3000, 2000, equal_x_means=True)
    e = cuped_effect(joint(yc, xc), joint(yt, xt))
    fit = _ols(xc, yc, xt, yt, "HC2")
    assert e.abs_effect == pytest.approx(fit.params[1], rel=1e-9)


def test_cuped_matches_ols_with_common_slope():
    """OLS y ~ 1 + treatment + (x − x̄) at n = 40k/30k.

    Point estimate: θ pooled over arms vs the OLS within-arm slope differ by
    O(x̄T − x̄C); observed 1.2e-6 relative, asserted 1e-4. SE: CUPED uses per-arm
    (Welch-type) variances, which is what heteroscedasticity-robust OLS SEs
    estimate; observed 4e-6 vs HC2 and 2e-5 vs HC0, asserted 1e-4. The
    nonrobust SE assumes one residual variance; the arms here differ, so it is
    ~6% off and must not match.
    """
    xc, yc, xt, yt = _cuped_data(np.random.default_rng(14), 40000, 30000)
    e = cuped_effect(joint(yc, xc), joint(yt, xt))
    hc2 = _ols(xc, yc, xt, yt, "HC2")
    assert e.abs_effect == pytest.approx(hc2.params[1], rel=1e-4)
    assert e.abs_se == pytest.approx(hc2.bse[1], rel=1e-4)
    assert e.abs_se == pytest.approx(_ols(xc, yc, xt, yt, "HC0").bse[1], rel=1e-4)
    nonrobust = _ols(xc, yc, xt, yt, "nonrobust").bse[1]
    assert abs(e.abs_se / nonrobust - 1) > 0.02
    assert e.method == "cuped" and e.variance_reduction > 0.2


def test_cuped_variance_reduction_and_relative_gradient():
    rng = np.random.default_rng(15)
    xc, yc, xt, yt = _cuped_data(rng, 5000, 5000)
    c, t = joint(yc, xc), joint(yt, xt)
    e, plain = cuped_effect(c, t), mean_effect(c.y, t.y)
    assert e.variance_reduction == pytest.approx(1 - e.abs_se**2 / plain.abs_se**2, rel=1e-12)
    assert e.abs_se < plain.abs_se
    assert e.variant_mean - e.control_mean == pytest.approx(e.abs_effect, rel=1e-12)
    assert e.control_mean == pytest.approx(yc.mean())
    # numerical gradient of L(ȳT, x̄T, ȳC, x̄C) with θ fixed
    pooled = c + t
    theta = pooled.cov / pooled.x.var
    m = np.array([yt.mean(), xt.mean(), yc.mean(), xc.mean()])

    def lift(v):
        return ((v[0] - theta * v[1]) - (v[2] - theta * v[3])) / v[2]

    g = np.array([(lift(m + h) - lift(m - h)) / 2e-6 for h in np.eye(4) * 1e-6])
    st, sc = np.cov(yt, xt) / len(yt), np.cov(yc, xc) / len(yc)
    var = g[:2] @ st @ g[:2] + g[2:] @ sc @ g[2:]
    assert e.rel_effect == pytest.approx(lift(m), rel=1e-9)
    assert e.rel_se == pytest.approx(math.sqrt(var), rel=1e-5)


def test_cuped_without_covariate_equals_welch():
    rng = np.random.default_rng(16)
    yc, yt = rng.normal(5, 1, 300), rng.normal(5.2, 2, 400)
    e = cuped_effect(joint(yc, np.zeros(300)), joint(yt, np.zeros(400)))
    w = mean_effect(moments(yc), moments(yt))
    for f in ("abs_effect", "abs_se", "p_value", "df", "rel_effect", "rel_se"):
        assert getattr(e, f) == pytest.approx(getattr(w, f), rel=1e-9)
    assert e.variance_reduction == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ sequential (§7)

PARTS = RatioParts(1.3, 1.0, 0.005, 0.005)   # Var(A − B) = 0.01 = abs_se²


def _fixed(abs_effect=0.3, abs_se=0.1, alpha=0.05):
    return Effect(1.0, 1.3, abs_effect, abs_se, (0.1, 0.5), 0.3, 0.12, (0.06, 0.54),
                  0.01, 100.0, "welch", alpha, parts=PARTS)


@pytest.mark.parametrize("n", [10, 5000, 123456])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_sequential_halfwidth_equals_eppo_form(n, alpha):
    tuning = 5000.0
    s = sequential(_fixed(alpha=alpha), n, tuning)
    rho_h = tuning / (math.log(1 - 2 * math.log(alpha)) - 2 * math.log(alpha))
    h = 0.1 * math.sqrt((n + rho_h) * math.log((n + rho_h) / (rho_h * alpha**2)) / n)
    assert (s.abs_ci[1] - s.abs_ci[0]) / 2 == pytest.approx(h, rel=1e-10)
    # the lift's interval is Fieller's at the same multiplier (METHODS §12)
    assert s.rel_ci == pytest.approx(fieller(PARTS, h / 0.1), rel=1e-10, nan_ok=True)
    assert s.method == "welch+sequential" and s.df == math.inf
    assert s.abs_se == 0.1 and s.rel_se == 0.12


def test_sequential_width_ratio_at_tuning_n():
    s = sequential(_fixed(), 5000, 5000.0)
    ratio = (s.abs_ci[1] - s.abs_ci[0]) / (2 * stats.norm.ppf(0.975) * 0.1)
    assert ratio == pytest.approx(1.55, abs=0.01)


@pytest.mark.parametrize("z", np.linspace(0.0, 6.0, 61))
def test_sequential_p_value_consistent_with_interval(z):
    s = sequential(_fixed(abs_effect=z * 0.1), 3000)
    outside = not (s.abs_ci[0] <= 0.0 <= s.abs_ci[1])
    assert 0.0 <= s.p_value <= 1.0
    assert (s.p_value <= 0.05) == outside


def test_sequential_p_value_formula():
    s = sequential(_fixed(abs_effect=0.35), 2000, 5000.0)
    a = 0.05
    rho2 = (-2 * math.log(a) + math.log(1 - 2 * math.log(a))) / 5000
    z, nr = 3.5, 2000 * rho2
    e_val = math.exp(nr * z**2 / (2 * (nr + 1))) / math.sqrt(nr + 1)
    assert s.p_value == pytest.approx(min(1, 1 / e_val), rel=1e-10)
    assert s.p_value > 2 * stats.norm.sf(3.5)


# ------------------------------------------------------------------ degenerate input

def test_too_few_units_warns():
    for c, t in [(Moments(0, 0, 0), Moments(5, 5, 7)), (Moments(1, 2, 4), Moments(5, 5, 7))]:
        for f in (mean_effect, proportion_effect):
            e = f(c, t)
            assert e.warning == "too_few_units"
            assert math.isnan(e.p_value) and math.isnan(e.abs_se)
            assert not e.significant
    j1 = JointMoments(1, 1, 1, 1, 1, 1)
    j5 = joint([1, 2, 3, 4, 5], [1, 1, 2, 2, 3])
    assert ratio_effect(j1, j5).warning == "too_few_units"
    assert cuped_effect(j5, j1).warning == "too_few_units"


def test_zero_variance_warns():
    c, t = moments([3, 3, 3]), moments([4, 4, 4, 4])
    e = mean_effect(c, t)
    assert e.warning == "zero_variance" and math.isnan(e.p_value)
    assert e.abs_effect == 1.0  # point estimate is still reported
    assert proportion_effect(Moments(10, 0, 0), Moments(12, 0, 0)).warning == "zero_variance"
    assert proportion_effect(Moments(10, 0, 0), Moments(12, 12, 12)).warning == "zero_variance"
    j = joint([2, 4, 6], [1, 2, 3])  # y = 2x exactly: R has no variance
    assert ratio_effect(j, j).warning == "zero_variance"
    assert cuped_effect(j, joint([4, 6, 8], [2, 3, 4])).warning == "zero_variance"


def test_control_mean_zero_keeps_absolute_effect():
    c, t = moments([-1.0, 1.0, 0.0]), moments([1.0, 2.0, 3.0])
    e = mean_effect(c, t)
    assert e.warning == "control_mean_zero"
    assert math.isnan(e.rel_effect) and math.isnan(e.rel_se)
    assert all(math.isnan(v) for v in e.rel_ci)
    assert e.abs_effect == 2.0 and math.isfinite(e.p_value)
    cu = cuped_effect(joint([-1, 1, 0], [1, 2, 3]), joint([1, 2, 3], [1, 3, 2]))
    assert cu.warning == "control_mean_zero" and math.isfinite(cu.abs_se)
    r = ratio_effect(joint([0, 0, 0], [1, 2, 3]), joint([1, 0, 2], [1, 2, 3]))
    assert r.warning == "control_mean_zero" and math.isfinite(r.p_value)


def test_ratio_denominator_zero_and_invalid_counts():
    z = joint([1, 2, 3], [0, 0, 0])
    assert ratio_effect(z, joint([1, 2, 3], [1, 2, 3])).warning == "denominator_zero"
    assert proportion_effect(Moments(10, 11, 11), Moments(10, 3, 3)).warning == "invalid_counts"


def test_sequential_on_degenerate_effect_propagates():
    s = sequential(mean_effect(Moments(1, 1, 1), Moments(1, 2, 4)), 2)
    assert s.warning == "too_few_units" and math.isnan(s.p_value)
    assert s.method == "welch+sequential" and not s.significant
    s0 = sequential(_fixed(), 0)
    assert s0.warning == "too_few_units" and math.isnan(s0.p_value)
