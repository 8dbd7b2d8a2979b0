"""Pre-exposure balance: Welch test on the covariate, sizes, CUPED's correction, KS p."""
import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.balance import cuped_correction, ks_p_value, pre_exposure_balance
from abproxy.stats.sufficient import JointMoments, Moments


def mom(x):
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def test_balance_against_scipy_welch_on_raw_data():
    rng = np.random.default_rng(0)
    c, t = rng.lognormal(0, 1, 3000), rng.lognormal(0.05, 1, 2500)
    b = pre_exposure_balance(mom(c), mom(t))
    assert b.p_value == pytest.approx(stats.ttest_ind(t, c, equal_var=False).pvalue)
    assert b.difference == pytest.approx(t.mean() - c.mean())
    assert b.relative == pytest.approx(t.mean() / c.mean() - 1)
    assert b.smd == pytest.approx((t.mean() - c.mean()) / math.sqrt((t.var(ddof=1) + c.var(ddof=1)) / 2))


def test_constant_covariate_is_balanced():
    b = pre_exposure_balance(Moments(100, 100.0, 100.0), Moments(100, 100.0, 100.0))
    assert b.p_value == 1.0


def test_cuped_correction_is_the_gap_between_unadjusted_and_cuped():
    from abproxy.stats.effects import cuped_effect, mean_effect

    rng = np.random.default_rng(1)
    xc, xt = rng.normal(10, 2, 4000), rng.normal(10.5, 2, 4000)   # imbalanced pre-period
    yc, yt = xc + rng.normal(0, 1, 4000), xt + rng.normal(0, 1, 4000)
    jc = JointMoments(4000, yc.sum(), (yc**2).sum(), xc.sum(), (xc**2).sum(), (xc * yc).sum())
    jt = JointMoments(4000, yt.sum(), (yt**2).sum(), xt.sum(), (xt**2).sum(), (xt * yt).sum())
    unadj = mean_effect(jc.y, jt.y).abs_effect
    assert unadj - cuped_effect(jc, jt).abs_effect == pytest.approx(cuped_correction(jc, jt))
    assert abs(cuped_effect(jc, jt).abs_effect) < 0.1 < unadj


def test_ks_p_value_matches_scipy_asymptotic():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=4000), rng.normal(0.03, 1, size=3500)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert ks_p_value(ref.statistic, 4000, 3500) == pytest.approx(ref.pvalue)


def test_aa_balance_false_positive_rate():
    rng = np.random.default_rng(3)
    sims, n = 2000, 1000
    c, t = rng.lognormal(0, 1, (sims, n)), rng.lognormal(0, 1, (sims, n))
    p = [pre_exposure_balance(Moments(n, float(a.sum()), float((a * a).sum())),
                              Moments(n, float(b.sum()), float((b * b).sum()))).p_value for a, b in zip(c, t)]
    lo, hi = stats.binom.interval(0.99, sims, 0.05)
    assert lo <= np.sum(np.array(p) < 0.05) <= hi
