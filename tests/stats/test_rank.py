"""Spearman rank correlation with a Bonett–Wright interval: scipy reference, properties, coverage."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from abproxy.stats.rank import rank_correlation


def test_matches_scipy_and_the_hand_computed_interval():
    x = [0.01, 0.03, -0.02, 0.05, 0.00, 0.02, 0.04]
    y = [0.10, 0.20, -0.05, 0.15, 0.02, 0.30, 0.12]
    rc = rank_correlation(x, y)
    ref = spearmanr(x, y)
    assert rc.rho == pytest.approx(ref.statistic) and rc.p_value == pytest.approx(ref.pvalue)
    se = math.sqrt((1 + rc.rho ** 2 / 2) / (7 - 3))
    assert rc.ci == pytest.approx((math.tanh(math.atanh(rc.rho) - 1.959964 * se),
                                   math.tanh(math.atanh(rc.rho) + 1.959964 * se)), rel=1e-6)
    assert rc.n == 7 and rc.warning is None and rc.ci[0] < rc.rho < rc.ci[1]


def test_ties_get_average_ranks_like_scipy():
    x, y = [1, 1, 2, 3, 3, 4], [2, 1, 3, 3, 5, 4]
    assert rank_correlation(x, y).rho == pytest.approx(spearmanr(x, y).statistic)


def test_properties_symmetry_sign_and_monotone_invariance():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=12)
    a = rank_correlation(list(x), list(y))
    assert rank_correlation(list(y), list(x)).rho == pytest.approx(a.rho)
    flipped = rank_correlation(list(x), list(-y))
    assert flipped.rho == pytest.approx(-a.rho) and flipped.ci == pytest.approx((-a.ci[1], -a.ci[0]))
    assert rank_correlation(list(np.exp(x)), list(y ** 3)).rho == pytest.approx(a.rho)


@pytest.mark.parametrize("x, y, warning", [
    ([1, 2, 3], [1, 2, 3], "too_few"),
    ([1, 1, 1, 1, 1], [1, 2, 3, 4, 5], "constant"),
    ([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], "perfect"),
])
def test_degenerate_inputs_carry_a_warning(x, y, warning):
    rc = rank_correlation(x, y)
    assert rc.warning == warning
    if warning == "perfect":
        assert rc.rho == pytest.approx(1.0) and rc.ci == (rc.rho, rc.rho)
    else:
        assert math.isnan(rc.rho) and all(math.isnan(v) for v in rc.ci)


def test_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        rank_correlation([1, 2, 3, 4], [1, 2, 3])


@pytest.mark.parametrize("n, rho", [(10, 0.5), (30, 0.0)])
def test_interval_covers_the_true_spearman_correlation(n, rho):
    """Bivariate normal with Pearson ρ: Spearman's population value is (6/π)·asin(ρ/2)."""
    truth = 6 / math.pi * math.asin(rho / 2)
    rng = np.random.default_rng(n + int(rho * 10))
    cov = [[1, rho], [rho, 1]]
    reps, hits = 800, 0
    for _ in range(reps):
        xy = rng.multivariate_normal([0, 0], cov, size=n)
        lo, hi = rank_correlation(list(xy[:, 0]), list(xy[:, 1])).ci
        hits += lo <= truth <= hi
    assert abs(hits / reps - 0.95) < 0.035, hits / reps   # 4.5 binomial SEs
