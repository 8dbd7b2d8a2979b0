"""Hypothesis properties: symmetry, location and scale invariance of effects."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from abproxy.stats.effects import cuped_effect, mean_effect, proportion_effect, ratio_effect
from abproxy.stats.sufficient import JointMoments, Moments

REL = 1e-6
values = st.lists(st.integers(-100, 100), min_size=2, max_size=40).map(
    lambda v: np.array(v, dtype=float))
pairs = st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20)), min_size=2, max_size=40).map(
    lambda v: np.array(v, dtype=float))
scales = st.floats(0.01, 100.0)
shifts = st.integers(-1000, 1000)
settings.register_profile("stats", deadline=None, max_examples=150)
settings.load_profile("stats")


def m(x):
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def j(yx):
    y, x = yx[:, 0], yx[:, 1]
    return JointMoments(len(y), y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum())


def approx(v):
    return pytest.approx(v, rel=REL, abs=1e-9)


def check_swap(e1, e2):
    assume(math.isfinite(e1.abs_se))
    assert e2.abs_effect == approx(-e1.abs_effect)
    assert e2.abs_ci == approx((-e1.abs_ci[1], -e1.abs_ci[0]))
    assert e2.p_value == pytest.approx(e1.p_value, rel=REL, abs=1e-300)


def check_same_test(e1, e2, k=1.0):
    """e2 is e1's experiment with outcomes scaled by k (and/or shifted)."""
    assume(math.isfinite(e1.abs_se))
    assert e2.abs_effect == pytest.approx(k * e1.abs_effect, rel=REL, abs=1e-9 * k)
    assert e2.abs_se == pytest.approx(k * e1.abs_se, rel=REL)
    assert e2.abs_ci == pytest.approx((k * e1.abs_ci[0], k * e1.abs_ci[1]), rel=REL, abs=1e-9 * k)
    assert e2.p_value == pytest.approx(e1.p_value, rel=REL, abs=1e-300)


@given(values, values)
def test_mean_swap_flips_sign(c, t):
    check_swap(mean_effect(m(c), m(t)), mean_effect(m(t), m(c)))


@given(values, values, shifts)
def test_mean_shift_invariant(c, t, k):
    check_same_test(mean_effect(m(c), m(t)), mean_effect(m(c + k), m(t + k)))


@given(values, values, scales)
def test_mean_scale_equivariant(c, t, k):
    e1, e2 = mean_effect(m(c), m(t)), mean_effect(m(k * c), m(k * t))
    check_same_test(e1, e2, k)
    if math.isfinite(e1.rel_effect):
        assert e2.rel_effect == approx(e1.rel_effect)
        assert e2.rel_se == pytest.approx(e1.rel_se, rel=REL)


@st.composite
def proportion_arms(draw):
    nc, nt = draw(st.integers(2, 500)), draw(st.integers(2, 500))
    sc, st_ = draw(st.integers(0, nc)), draw(st.integers(0, nt))
    return Moments(nc, sc, sc), Moments(nt, st_, st_)


@given(proportion_arms())
def test_proportion_swap_flips_sign(arms):
    c, t = arms
    check_swap(proportion_effect(c, t), proportion_effect(t, c))


@given(pairs, pairs)
def test_ratio_swap_flips_sign(c, t):
    check_swap(ratio_effect(j(c), j(t)), ratio_effect(j(t), j(c)))


@given(pairs, pairs, scales)
def test_ratio_scale_numerator(c, t, k):
    s = np.array([k, 1.0])
    e1, e2 = ratio_effect(j(c), j(t)), ratio_effect(j(c * s), j(t * s))
    check_same_test(e1, e2, k)
    if math.isfinite(e1.rel_effect):
        assert e2.rel_effect == approx(e1.rel_effect)


@given(pairs, pairs)
def test_cuped_swap_flips_sign(c, t):
    check_swap(cuped_effect(j(c), j(t)), cuped_effect(j(t), j(c)))


@given(pairs, pairs, shifts, shifts)
def test_cuped_shift_invariant(c, t, a, b):
    s = np.array([a, b], dtype=float)
    check_same_test(cuped_effect(j(c), j(t)), cuped_effect(j(c + s), j(t + s)))


@given(pairs, pairs, scales)
def test_cuped_scale_equivariant(c, t, k):
    s = np.array([k, 1.0])
    e1, e2 = cuped_effect(j(c), j(t)), cuped_effect(j(c * s), j(t * s))
    check_same_test(e1, e2, k)
    if math.isfinite(e1.rel_effect):
        assert e2.rel_effect == approx(e1.rel_effect)
