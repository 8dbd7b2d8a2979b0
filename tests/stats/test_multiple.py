import math

import pytest

from abproxy.stats.multiple import adjust_pvalues

P = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04]


def holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def bh(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, min(1.0, m * p[i] / (rank + 1)))
        out[i] = running
    return out


def test_holm_matches_hand_computation():
    assert adjust_pvalues(P, "holm") == pytest.approx(holm(P), rel=1e-12)
    # explicitly not Holm–Šidák (the multipletests default): it gives smaller values
    assert adjust_pvalues(P, "holm")[3] == pytest.approx(6 * 0.005)


def test_bh_matches_hand_computation():
    assert adjust_pvalues(P, "fdr_bh") == pytest.approx(bh(P), rel=1e-12)
    assert adjust_pvalues(P, "fdr_bh")[1] == pytest.approx(0.048)


def test_nan_passes_through_and_is_not_counted():
    p = [0.01, math.nan, 0.04, 0.03]
    valid = [0.01, 0.04, 0.03]
    for method, ref in (("holm", holm), ("fdr_bh", bh)):
        out = adjust_pvalues(p, method)
        assert math.isnan(out[1])
        assert [out[0], out[2], out[3]] == pytest.approx(ref(valid), rel=1e-12)


def test_none_and_edge_cases():
    assert adjust_pvalues(P, "none") == P
    assert adjust_pvalues([], "holm") == []
    assert all(math.isnan(v) for v in adjust_pvalues([math.nan, math.nan], "fdr_bh"))
    assert adjust_pvalues([0.03], "holm") == [0.03]
    with pytest.raises(ValueError):
        adjust_pvalues(P, "hs")  # type: ignore[arg-type]


def test_numpy_holm_equals_statsmodels_on_random_families():
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    from abproxy.stats.multiple import holm

    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17, 60):
        p = rng.uniform(0, 0.2, size=m) ** 2
        p[rng.integers(0, m)] = p[0]  # ties
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
