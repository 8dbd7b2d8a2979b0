import dataclasses
import math

import numpy as np
import pytest

from abproxy.stats.sufficient import JointMoments, Moments


def moments(x):
    x = np.asarray(x, dtype=float)
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def joint(y, x):
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return JointMoments(len(y), y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum())


def test_mean_and_var_match_numpy():
    x = np.random.default_rng(1).lognormal(1.0, 1.0, 5000)
    m = moments(x)
    assert m.mean == pytest.approx(x.mean(), rel=1e-12)
    assert m.var == pytest.approx(x.var(ddof=1), rel=1e-9)


def test_var_clipped_at_zero_for_constant_large_values():
    m = moments(np.full(7, 1e9 + 0.1))
    assert m.var >= 0.0
    assert m.var == pytest.approx(0.0, abs=1e-3)


def test_too_few_units_give_nan():
    assert math.isnan(Moments(0, 0.0, 0.0).mean)
    assert math.isnan(Moments(1, 3.0, 9.0).var)
    assert Moments(1, 3.0, 9.0).mean == 3.0
    assert math.isnan(JointMoments(1, 1, 1, 1, 1, 1).cov)


def test_joint_moments_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(3, 2, 1000)
    y = 0.5 * x + rng.normal(0, 1, 1000)
    j = joint(y, x)
    c = np.cov(y, x, ddof=1)
    assert j.y.var == pytest.approx(c[0, 0], rel=1e-9)
    assert j.x.var == pytest.approx(c[1, 1], rel=1e-9)
    assert j.cov == pytest.approx(c[0, 1], rel=1e-9)
    assert j.y.mean == pytest.approx(y.mean()) and j.x.n == 1000


def test_add_pools_units():
    rng = np.random.default_rng(3)
    y1, x1, y2, x2 = rng.normal(size=(4, 50))
    pooled = joint(y1, x1) + joint(y2, x2)
    ref = joint(np.r_[y1, y2], np.r_[x1, x2])
    for f in dataclasses.fields(JointMoments):
        assert getattr(pooled, f.name) == pytest.approx(getattr(ref, f.name), rel=1e-12, abs=1e-12)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Moments(1, 1.0, 1.0).n = 2  # type: ignore[misc]


def test_moments_pool_by_addition():
    a, b = Moments(3, 6.0, 14.0), Moments(2, 9.0, 41.0)
    pooled = a + b
    assert (pooled.n, pooled.sum, pooled.sum_sq) == (5, 15.0, 55.0)
    assert pooled.mean == 3.0
