import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.trend import effect_trend


def hand_wls(d, e, v):
    X = np.column_stack([np.ones_like(d), d])
    W = np.diag(1 / v)
    inv = np.linalg.inv(X.T @ W @ X)
    beta = inv @ X.T @ W @ e
    r = e - X @ beta
    n = len(d)
    scale = (r**2 / v).sum() / (n - 2)
    se = math.sqrt(scale * inv[1, 1])
    return beta[1], se, 2 * stats.t.sf(abs(beta[1] / se), n - 2)


def test_matches_hand_wls():
    rng = np.random.default_rng(5)
    d = np.arange(14.0)
    v = rng.uniform(0.5, 2.0, 14) * 1e-3
    e = 0.05 - 0.002 * d + rng.normal(0, np.sqrt(v))
    t = effect_trend(d, e, v)
    assert (t.slope, t.slope_se, t.p_value) == pytest.approx(hand_wls(d, e, v), rel=1e-8)
    assert t.n_points == 14 and t.warning is None


def test_detects_fading_effect_but_not_constant_one():
    rng = np.random.default_rng(6)
    d = np.arange(21.0)
    v = np.full(21, 0.01**2)
    fading = effect_trend(d, 0.10 * np.exp(-d / 5) + rng.normal(0, 0.01, 21), v)
    assert fading.slope < 0 and fading.p_value < 0.001
    flat = effect_trend(d, 0.05 + rng.normal(0, 0.01, 21), v)
    assert flat.p_value > 0.05


def test_too_few_points_and_invalid_dropped():
    t = effect_trend([0, 1, 2], [0.1, math.nan, 0.2], [0.01, 0.01, 0.01])
    assert t.warning == "too_few_points" and t.n_points == 2 and math.isnan(t.slope)
    c = effect_trend([3, 3, 3], [0.1, 0.2, 0.3], [0.01, 0.01, 0.01])
    assert c.warning == "constant_days"
    ok = effect_trend([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.5], [0.01, 0.01, 0.0, 0.01])
    assert ok.n_points == 3 and ok.warning is None
