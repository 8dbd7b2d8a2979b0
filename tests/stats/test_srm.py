import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from abproxy.stats.srm import pearson_chisquare, srm_test


def test_matches_scipy_chisquare_with_unnormalised_weights():
    obs = {"control": 5210, "a": 4790, "b": 10150}
    r = srm_test(obs, {"control": 1, "a": 1, "b": 2})
    ref = stats.chisquare([5210, 4790, 10150], [20150 / 4, 20150 / 4, 20150 / 2])
    assert r.chi2 == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert r.df == 2 and r.expected["b"] == pytest.approx(10075.0)
    assert r.ok == (ref.pvalue >= 0.001) and r.threshold == 0.001
    # same answer with normalised weights
    r2 = srm_test(obs, {"control": 0.25, "a": 0.25, "b": 0.5})
    assert (r2.chi2, r2.p_value) == pytest.approx((r.chi2, r.p_value), rel=1e-12)


def test_hand_computed_mismatch_is_flagged():
    r = srm_test({"c": 5000, "t": 5400}, {"c": 0.5, "t": 0.5})
    chi2 = 2 * 200**2 / 5200.0
    assert r.chi2 == pytest.approx(chi2, rel=1e-12)
    assert r.p_value == pytest.approx(stats.chi2.sf(chi2, 1), rel=1e-9)
    assert r.p_value < 0.001 and not r.ok and r.warning is None


def test_balanced_is_ok():
    r = srm_test({"c": 1000, "t": 1000}, {"c": 1, "t": 1})
    assert r.ok and r.chi2 == 0.0 and r.p_value == pytest.approx(1.0)


def test_zero_total_and_single_variant():
    r = srm_test({}, {"c": 0.5, "t": 0.5})
    assert r.ok and r.p_value == 1.0 and r.warning == "no_units"
    assert r.observed == {"c": 0, "t": 0}
    r1 = srm_test({"c": 10}, {"c": 1})
    assert r1.ok and r1.warning == "too_few_variants" and r1.df == 0


def test_missing_and_unexpected_variants():
    r = srm_test({"c": 100}, {"c": 1, "t": 1})
    assert r.observed["t"] == 0 and not r.ok
    u = srm_test({"c": 100, "t": 100, "x": 5}, {"c": 1, "t": 1})
    assert not u.ok and u.warning == "unexpected_variant" and math.isinf(u.chi2)
    z = srm_test({"c": 100, "t": 100, "x": 0}, {"c": 1, "t": 1, "x": 0})
    assert z.ok and z.warning is None


@pytest.mark.parametrize("weights", [{"c": 0, "t": 0}, {"c": -1, "t": 2}, {}])
def test_invalid_weights_raise(weights):
    with pytest.raises(ValueError):
        srm_test({"c": 1, "t": 1}, weights)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=2, max_size=8), st.data())
def test_pearson_chisquare_is_scipys_to_the_bit(observed, data):
    """Without scipy.stats, the same X² and p as scipy's chisquare, bit for bit (not just close)."""
    total = sum(observed)
    assume(total > 0)
    weights = data.draw(st.lists(st.floats(0.01, 100), min_size=len(observed), max_size=len(observed)))
    expected = [w / sum(weights) * total for w in weights]
    ref = stats.chisquare(observed, expected)
    assert pearson_chisquare(observed, expected) == (float(ref.statistic), float(ref.pvalue))
