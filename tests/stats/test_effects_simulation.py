"""Seeded simulations with known truth: false-positive rates and CI coverage.

Data generation is vectorised with numpy; each simulated experiment is reduced
to sufficient statistics and passed through the public functions.
"""
import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.effects import (
    cuped_effect,
    mean_effect,
    proportion_effect,
    ratio_effect,
    sequential,
)
from abproxy.stats.sufficient import JointMoments, Moments

ALPHA = 0.05
SIMS = 2000
N = 1000  # units per arm
LIFT = 0.05


def moments_rows(x):
    n = x.shape[-1]
    return [Moments(n, float(s), float(q)) for s, q in zip(x.sum(-1), (x * x).sum(-1))]


def joint_rows(y, x):
    n = y.shape[-1]
    cols = (y.sum(-1), (y * y).sum(-1), x.sum(-1), (x * x).sum(-1), (x * y).sum(-1))
    return [JointMoments(n, *map(float, row)) for row in zip(*cols)]


def fpr_bounds(sims, alpha=ALPHA):
    lo, hi = stats.binom.interval(0.99, sims, alpha)
    return lo / sims, hi / sims


# Each scenario: rng, lift -> (control stats, variant stats, true abs, true rel)

def mean_scenario(rng, lift):
    c = rng.lognormal(0.0, 1.0, (SIMS, N))
    t = (1 + lift) * rng.lognormal(0.0, 1.0, (SIMS, N))
    mu = math.exp(0.5)
    return moments_rows(c), moments_rows(t), lift * mu, lift


def proportion_scenario(rng, lift):
    p = 0.1
    n = 3 * N
    sc, st = rng.binomial(n, p, SIMS), rng.binomial(n, p * (1 + lift), SIMS)
    return ([Moments(n, float(s), float(s)) for s in sc],
            [Moments(n, float(s), float(s)) for s in st], p * lift, lift)


def ratio_scenario(rng, lift):
    """Sessions x per user, clicks y ~ Bin(x, p_i), user-level p_i (clustered)."""
    def arm(scale):
        x = 1 + rng.poisson(2.0, (SIMS, N))
        y = rng.binomial(x, scale * 0.5 * rng.beta(2, 8, (SIMS, N)))
        return joint_rows(y.astype(float), x.astype(float))
    return arm(1.0), arm(1 + lift), 0.1 * lift, lift


def cuped_scenario(rng, lift):
    def arm(scale):
        x = rng.lognormal(0.0, 1.0, (SIMS, N))
        y = scale * (1 + 0.8 * x + rng.normal(0.0, 1.0, (SIMS, N)))
        return joint_rows(y, x)
    mu = 1 + 0.8 * math.exp(0.5)
    return arm(1.0), arm(1 + lift), lift * mu, lift


SCENARIOS = {
    "mean": (mean_scenario, mean_effect),
    "proportion": (proportion_scenario, proportion_effect),
    "ratio": (ratio_scenario, ratio_effect),
    "cuped": (cuped_scenario, cuped_effect),
}


def covered(ci, truth):
    return ci[0] <= truth <= ci[1]


@pytest.mark.parametrize("name", SCENARIOS)
def test_aa_false_positive_rate_fixed_horizon(name):
    scenario, analyse = SCENARIOS[name]
    c, t, _, _ = scenario(np.random.default_rng(100), 0.0)
    effects = [analyse(a, b, ALPHA) for a, b in zip(c, t)]
    assert all(e.warning is None for e in effects)
    fpr = np.mean([e.significant for e in effects])
    lo, hi = fpr_bounds(SIMS)
    assert lo <= fpr <= hi, fpr
    # p-values are uniform under H0 (guards against a test that is right only at 5%)
    assert stats.kstest([e.p_value for e in effects], "uniform").pvalue > 0.001


@pytest.mark.parametrize("name", SCENARIOS)
def test_ci_coverage_of_known_lift(name):
    scenario, analyse = SCENARIOS[name]
    c, t, true_abs, true_rel = scenario(np.random.default_rng(200), LIFT)
    effects = [analyse(a, b, ALPHA) for a, b in zip(c, t)]
    abs_cov = np.mean([covered(e.abs_ci, true_abs) for e in effects])
    rel_cov = np.mean([covered(e.rel_ci, true_rel) for e in effects])
    assert 0.93 <= abs_cov <= 0.97, abs_cov
    assert 0.93 <= rel_cov <= 0.97, rel_cov
    if name == "cuped":
        vr = np.mean([e.variance_reduction for e in effects])
        assert 0.3 < vr < 0.9


# ---------------------------------------------------------------- sequential (§7)

DAYS, PER_DAY, SEQ_SIMS = 14, 150, 1000


def _daily_cumulative(rng, lift):
    """Cumulative per-arm Moments after each day: lists [sim][day]."""
    def arm(scale):
        x = scale * rng.lognormal(0.0, 1.0, (SEQ_SIMS, DAYS, PER_DAY))
        s, q = x.sum(-1).cumsum(1), (x * x).sum(-1).cumsum(1)
        n = PER_DAY * np.arange(1, DAYS + 1)
        return [[Moments(int(n[d]), float(s[i, d]), float(q[i, d])) for d in range(DAYS)]
                for i in range(SEQ_SIMS)]
    return arm(1.0), arm(1 + lift)


def _peek(c, t, seq):
    out = []
    for ci, ti in zip(c, t):
        row = []
        for a, b in zip(ci, ti):
            e = mean_effect(a, b, ALPHA)
            row.append(sequential(e, a.n + b.n, 5000.0) if seq else e)
        out.append(row)
    return out


def test_sequential_daily_peeking_controls_false_positives():
    c, t = _daily_cumulative(np.random.default_rng(300), 0.0)
    ever_seq = np.mean([any(e.significant for e in row) for row in _peek(c, t, True)])
    ever_fixed = np.mean([any(e.significant for e in row) for row in _peek(c, t, False)])
    assert ever_seq <= ALPHA, ever_seq
    # the same data read with fixed-horizon p-values every day is inflated
    assert ever_fixed > fpr_bounds(SEQ_SIMS)[1], ever_fixed


def test_sequential_time_uniform_coverage():
    c, t = _daily_cumulative(np.random.default_rng(301), LIFT)
    true_abs = LIFT * math.exp(0.5)
    rows = _peek(c, t, True)
    miss_abs = np.mean([any(not covered(e.abs_ci, true_abs) for e in row) for row in rows])
    miss_rel = np.mean([any(not covered(e.rel_ci, LIFT) for e in row) for row in rows])
    assert miss_abs <= ALPHA, miss_abs
    assert miss_rel <= ALPHA, miss_rel
