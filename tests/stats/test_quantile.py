"""Quantile differences from order statistics: raw-data references and A/A calibration."""
import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.quantile import QuantileSummary, quantile_effect, quantile_ranks


def summary(x, q):
    """What the engine returns for one arm, computed with numpy on the raw units."""
    x = np.sort(np.asarray(x, dtype=float))
    lo, k, hi = quantile_ranks(len(x), q)
    return QuantileSummary(len(x), q, float(x[k - 1]), float(x[lo - 1]), float(x[hi - 1]))


def test_ranks_hand_checked():
    # n = 100, q = 0.5: n·q = 50, half-width 1.96·√25 = 9.8 → ranks 40, 50, 60
    assert quantile_ranks(100, 0.5) == (40, 50, 60)
    assert quantile_ranks(1000, 0.9) == (881, 900, 919)  # 900 ∓ 18.59
    assert quantile_ranks(3, 0.9) == (1, 3, 3)


def test_estimate_is_numpy_inverted_cdf():
    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 1, 5001)
    s = summary(x, 0.9)
    assert s.estimate == pytest.approx(np.quantile(x, 0.9, method="inverted_cdf"))
    # the rank bounds are the distribution-free binomial CI of the quantile (normal approximation)
    lo, hi = stats.binom.interval(0.95, len(x), 0.9)
    assert abs(s.ranks[0] - lo) <= 2 and abs(s.ranks[2] - hi) <= 2


def test_difference_and_se_against_statsmodels_quantreg():
    """QuantReg(y ~ treated) at q: the slope is the difference of sample quantiles; its kernel
    (Hall–Sheather) SE estimates the same asymptotic variance by another density estimate."""
    from statsmodels.regression.quantile_regression import QuantReg

    rng = np.random.default_rng(1)
    c, t = rng.lognormal(0, 1, 4000), 1.1 * rng.lognormal(0, 1, 4000)
    e = quantile_effect(summary(c, 0.9), summary(t, 0.9))
    y = np.concatenate([c, t])
    x = np.column_stack([np.ones(8000), np.r_[np.zeros(4000), np.ones(4000)]])
    fit = QuantReg(y, x).fit(q=0.9)
    assert e.abs_effect == pytest.approx(fit.params[1], rel=0.02)
    assert e.abs_se == pytest.approx(fit.bse[1], rel=0.2)
    assert e.method == "quantile-order-stat"


def test_swap_and_degenerate():
    rng = np.random.default_rng(2)
    a, b = summary(rng.exponential(size=3000), 0.5), summary(rng.exponential(size=3000), 0.5)
    e1, e2 = quantile_effect(a, b), quantile_effect(b, a)
    assert e1.abs_effect == pytest.approx(-e2.abs_effect) and e1.p_value == pytest.approx(e2.p_value)
    assert quantile_effect(summary(np.arange(10.0), 0.99), summary(np.arange(10.0), 0.99)).warning == "too_few_units"
    zeros = summary(np.zeros(2000), 0.5)
    assert quantile_effect(zeros, zeros).warning == "zero_spread"
    assert quantile_effect(zeros, summary(np.r_[np.zeros(1000), np.ones(1000)], 0.9)).warning in (
        "control_mean_zero", "zero_spread")


def _summaries(x, q):
    """Vectorised summaries of many simulated arms (rows)."""
    n = x.shape[1]
    lo, k, hi = quantile_ranks(n, q)
    s = np.sort(x, axis=1)
    return [QuantileSummary(n, q, float(a), float(b), float(c))
            for a, b, c in zip(s[:, k - 1], s[:, lo - 1], s[:, hi - 1])]


def _spend(rng, shape):
    """Heavy-tailed per-unit spend: 60% non-spenders, lognormal(0, 1.5) spenders."""
    return (rng.random(shape) < 0.4) * rng.lognormal(0, 1.5, shape)


@pytest.mark.parametrize("q", [0.9, 0.75])
def test_aa_fpr_and_coverage_on_heavy_tailed_spend(q):
    rng = np.random.default_rng(17)
    sims, n, lift = 2000, 2000, 0.1
    c, t = _summaries(_spend(rng, (sims, n)), q), _summaries(_spend(rng, (sims, n)), q)
    fpr = np.mean([quantile_effect(a, b).p_value < 0.05 for a, b in zip(c, t)])
    lo, hi = stats.binom.interval(0.99, sims, 0.05)
    assert lo / sims <= fpr <= hi / sims, fpr
    # true quantile of the spend: P(X ≤ x) = 0.6 + 0.4·F_lognormal(x) → x_q = F⁻¹((q − 0.6)/0.4)
    true_q = math.exp(1.5 * stats.norm.ppf((q - 0.6) / 0.4))
    t2 = _summaries((1 + lift) * _spend(rng, (sims, n)), q)
    effects = [quantile_effect(a, b) for a, b in zip(c, t2)]
    cover_abs = np.mean([e.abs_ci[0] <= lift * true_q <= e.abs_ci[1] for e in effects])
    cover_rel = np.mean([e.rel_ci[0] <= lift <= e.rel_ci[1] for e in effects])
    assert 0.93 <= cover_abs <= 0.97, cover_abs
    assert 0.93 <= cover_rel <= 0.97, cover_rel


@pytest.mark.slow
def test_aa_peeking_with_sequential_and_group_sequential_quantiles():
    """A/A with a look after every 400 units per arm (10 looks): the confidence sequence (§7) and the
    O'Brien–Fleming boundaries (§12) applied to the quantile's SE keep the peeking false-positive rate
    ≤ α (measured: CS 0.015, group-sequential 0.056, 99% band of 1000 runs 0.033–0.068)."""
    from abproxy.stats.effects import sequential
    from abproxy.stats.groupseq import group_sequential

    rng = np.random.default_rng(5)
    sims, looks, per = 1000, 10, 400
    xc, xt = _spend(rng, (sims, looks * per)), _spend(rng, (sims, looks * per))
    hit_cs, hit_gs = np.zeros(sims, bool), np.zeros(sims, bool)
    for k in range(1, looks + 1):
        c, t = _summaries(xc[:, :k * per], 0.9), _summaries(xt[:, :k * per], 0.9)
        for i, (a, b) in enumerate(zip(c, t)):
            e = quantile_effect(a, b)
            hit_cs[i] |= sequential(e, 2 * k * per).p_value < 0.05
            hit_gs[i] |= group_sequential(e, k, looks).p_value < 0.05
    hi = stats.binom.interval(0.99, sims, 0.05)[1] / sims
    assert hit_cs.mean() <= hi and hit_gs.mean() <= hi, (hit_cs.mean(), hit_gs.mean())
