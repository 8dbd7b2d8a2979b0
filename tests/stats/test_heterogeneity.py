import math

import numpy as np
import pytest
from scipy import stats

from abproxy.stats.heterogeneity import cochran_q


def hand(e, v):
    e, w = np.asarray(e), 1 / np.asarray(v)
    mean = (w * e).sum() / w.sum()
    q = (w * (e - mean) ** 2).sum()
    k = len(e)
    return q, stats.chi2.sf(q, k - 1), max(0.0, (q - (k - 1)) / q), mean


def test_matches_hand_formula_heterogeneous():
    e, v = [0.10, 0.02, 0.15, -0.05], [0.001, 0.002, 0.0015, 0.001]
    r = cochran_q(e, v)
    q, p, i2, mean = hand(e, v)
    assert (r.q, r.p_value, r.i2, r.pooled) == pytest.approx((q, p, i2, mean), rel=1e-10)
    assert r.df == 3 and r.i2 > 0.5 and r.p_value < 0.01 and r.warning is None


def test_i2_clipped_at_zero_when_homogeneous():
    e, v = [0.05, 0.051, 0.049], [0.01, 0.01, 0.02]
    r = cochran_q(e, v)
    assert r.q < 2 and r.i2 == 0.0
    assert r.q == pytest.approx(hand(e, v)[0], rel=1e-10)
    same = cochran_q([0.1, 0.1], [0.01, 0.02])
    assert same.q == pytest.approx(0.0, abs=1e-15) and same.i2 == 0.0


def test_invalid_segments_dropped_and_too_few_warns():
    r = cochran_q([0.1, math.nan, 0.3, 0.2], [0.01, 0.01, 0.0, 0.02])
    assert r.df == 1 and r.q == pytest.approx(hand([0.1, 0.2], [0.01, 0.02])[0])
    one = cochran_q([0.1, 0.2], [0.01, math.inf])
    assert one.warning == "too_few_segments" and math.isnan(one.q) and one.pooled == 0.1
    none = cochran_q([], [])
    assert none.warning == "too_few_segments" and math.isnan(none.pooled)
