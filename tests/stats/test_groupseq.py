"""Lan–DeMets O'Brien–Fleming boundaries: published numbers, an independent multivariate-normal
integration (scipy, Genz), and A/A peeking simulations at the planned looks."""
import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.effects import mean_effect
from abproxy.stats.groupseq import (
    current_look,
    group_sequential,
    obf_boundary,
    obf_spending,
    repeated_p_value,
)
from abproxy.stats.sufficient import Moments

# Two-sided α = 0.05, K = 5 equally spaced looks, Lan–DeMets O'Brien–Fleming spending: the boundaries
# tabulated by the R packages ldbounds / gsDesign (sfLDOF, α = 0.025 per side) and rpact.
PUBLISHED_K5 = [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]


def test_published_boundaries_k5():
    b = obf_boundary(5, 0.05)
    assert b.z == pytest.approx(PUBLISHED_K5, abs=2e-3)
    assert b.spent[-1] == pytest.approx(0.05)


def _mvn_cross(z, fractions):
    t = np.asarray(fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    c = np.asarray(z)
    return 1 - stats.multivariate_normal(np.zeros(len(c)), cov).cdf(c, lower_limit=-c)


@pytest.mark.parametrize("looks,alpha", [(4, 0.05), (6, 0.01), (8, 0.05)])
def test_spending_matches_multivariate_normal(looks, alpha):
    b = obf_boundary(looks, alpha)
    finite = [i for i, z in enumerate(b.z) if math.isfinite(z)]
    for k in finite[-2:]:
        idx = [i for i in finite if i <= k]
        crossed = _mvn_cross([b.z[i] for i in idx], [b.fractions[i] for i in idx])
        assert crossed == pytest.approx(b.spent[k], abs=2e-4)


def test_spending_function_shape():
    assert obf_spending(0, 0.05) == 0
    assert obf_spending(1, 0.05) == pytest.approx(0.05)
    assert obf_spending(0.5, 0.05) < 0.01
    b = obf_boundary(14, 0.05)
    assert list(b.z[1:]) == sorted(b.z[1:], reverse=True)
    assert b.z[-1] > stats.norm.ppf(0.975)  # the price of 13 interim looks, small with OBF
    assert b.z[-1] < 2.2


def test_current_look():
    assert current_look(0.0, 14) == 1
    assert current_look(0.5, 14) == 7
    assert current_look(1.0, 14) == 14
    assert current_look(3.0, 14) == 14
    assert current_look(6 / 14, 14) == 6


@pytest.mark.parametrize("look", [3, 9, 14])
def test_repeated_p_value_is_coherent_with_the_boundary(look):
    c = obf_boundary(14, 0.05, look).z[-1]
    assert repeated_p_value(c, look, 14, 0.05) == pytest.approx(0.05, rel=1e-6)
    assert repeated_p_value(c + 0.01, look, 14, 0.05) < 0.05 < repeated_p_value(c - 0.01, look, 14, 0.05)
    assert repeated_p_value(0.0, look, 14, 0.05) == 1.0


def test_group_sequential_effect():
    c, t = Moments(5000, 5000.0, 15000.0), Moments(5000, 5300.0, 16000.0)
    fixed = mean_effect(c, t)
    g = group_sequential(fixed, 14, 14)
    crit = obf_boundary(14, 0.05).z[-1]
    assert g.method == "welch+group-sequential"
    assert g.abs_ci[1] - g.abs_ci[0] == pytest.approx(2 * crit * fixed.abs_se)
    assert (g.p_value < 0.05) == (g.abs_ci[0] > 0 or g.abs_ci[1] < 0)
    early = group_sequential(fixed, 2, 14)
    assert early.abs_ci[1] - early.abs_ci[0] > g.abs_ci[1] - g.abs_ci[0]


def test_group_sequential_degenerate():
    e = mean_effect(Moments(1, 1.0, 1.0), Moments(5, 5.0, 5.0))
    g = group_sequential(e, 3, 14)
    assert math.isnan(g.p_value) and g.warning == "too_few_units"


def _band(sims, alpha):
    lo, hi = stats.binom.interval(0.99, sims, alpha)
    return lo / sims, hi / sims


@pytest.mark.parametrize("looks,alpha", [(14, 0.05), (5, 0.01)])
def test_aa_peeking_at_planned_looks_brownian(looks, alpha):
    """A/A: the z process at the planned looks (independent increments) crosses with rate α."""
    rng = np.random.default_rng(7)
    sims = 200_000
    fractions = np.arange(1, looks + 1) / looks
    s = np.cumsum(rng.normal(0, math.sqrt(1 / looks), (sims, looks)), axis=1)
    z = s / np.sqrt(fractions)
    c = np.array(obf_boundary(looks, alpha).z)
    fpr = np.mean(np.any(np.abs(z) >= c, axis=1))
    lo, hi = _band(sims, alpha)
    assert lo <= fpr <= hi, fpr


def test_aa_peeking_on_skewed_units_and_rci_coverage():
    """A/A on lognormal spend, Welch statistic at 14 daily looks with uneven daily traffic: rejection
    rate ≤ α (within the 99% band), simultaneous coverage of the repeated CIs 95 ± 2% under a lift."""
    rng = np.random.default_rng(11)
    sims, looks, per_look = 2000, 14, 100
    daily = rng.poisson(per_look, looks).clip(20)
    n_total = int(daily.sum())
    bounds = np.cumsum(daily)
    c = np.array(obf_boundary(looks, 0.05).z)
    mu = math.exp(0.5)
    rejected, covered = np.zeros(sims, bool), np.ones(sims, bool)
    for lift, check in ((0.0, "fpr"), (0.1, "coverage")):
        xc = rng.lognormal(0, 1, (sims, n_total))
        xt = (1 + lift) * rng.lognormal(0, 1, (sims, n_total))
        hit = np.zeros(sims, bool)
        for k, n in enumerate(bounds):
            mc, mt = xc[:, :n].mean(1), xt[:, :n].mean(1)
            se = np.sqrt(xc[:, :n].var(1, ddof=1) / n + xt[:, :n].var(1, ddof=1) / n)
            z = (mt - mc - lift * mu) / se
            hit |= np.abs(z) >= c[k]
        if check == "fpr":
            rejected = hit
        else:
            covered = ~hit
    lo, hi = _band(sims, 0.05)
    assert rejected.mean() <= hi, rejected.mean()
    assert 0.93 <= covered.mean() <= 0.97, covered.mean()
