"""Concurrent experiments: assignment independence and the interaction test (reference + A/A)."""
import numpy as np
import pytest
from scipy import stats

from abproxy.stats.interaction import assignment_independence, assignment_independence_all, interaction_test


def test_independence_matches_scipy_on_raw_assignments():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 5000), rng.integers(0, 3, 5000)
    table = np.zeros((2, 3))
    np.add.at(table, (a, b), 1)
    res = assignment_independence(table)
    ref = stats.chi2_contingency(table, correction=False)
    assert res.chi2 == pytest.approx(ref.statistic) and res.p_value == pytest.approx(ref.pvalue)
    assert res.df == 2 and res.shared_units == 5000


def test_dependent_assignment_detected_and_degenerate():
    assert assignment_independence([[900, 100], [100, 900]]).p_value < 1e-100
    assert assignment_independence([[10, 0], [20, 0]]).warning == "too_few_arms"
    assert assignment_independence([]).warning == "too_few_arms"


def test_independence_of_many_tables_at_once_equals_each_alone():
    """Tables of mixed shapes, with empty rows and columns and degenerate ones: the vectorised call
    gives what each table gives alone (χ², df, p, shared units, warning), to the last bit."""
    rng = np.random.default_rng(4)
    tables = []
    for _ in range(400):
        t = rng.integers(0, 60, (rng.integers(1, 4), rng.integers(1, 5))).astype(float)
        if rng.random() < 0.2:
            t[rng.integers(0, t.shape[0])] = 0
        if rng.random() < 0.2:
            t[:, rng.integers(0, t.shape[1])] = 0
        tables.append(t.tolist())
    tables += [[], [[0, 0], [0, 0]], [[7]], [[900, 100], [100, 900]]]
    together = assignment_independence_all(tables)
    assert together == [assignment_independence(t) for t in tables]
    assert sum(r.warning is None for r in together) > 100 and {r.df for r in together} >= {1, 2, 3, 6}
    assert assignment_independence_all([]) == []


def test_interaction_equals_ols_with_hc2_on_raw_units():
    """Two arms of B: Q test of A's effect across them = Wald test of the A×B term in
    y ~ a + b + a·b with HC2 standard errors (statsmodels OLS)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    n = 8000
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = rng.lognormal(0, 1, n) * (1 + 0.05 * a + 0.08 * a * b)
    effects, variances = [], []
    for arm in (0, 1):
        yc, yt = y[(b == arm) & (a == 0)], y[(b == arm) & (a == 1)]
        effects.append(yt.mean() - yc.mean())
        variances.append(yt.var(ddof=1) / len(yt) + yc.var(ddof=1) / len(yc))
    res = interaction_test(effects, variances)
    x = sm.add_constant(np.column_stack([a, b, a * b]).astype(float))
    fit = sm.OLS(y, x).fit(cov_type="HC2")
    assert res.p_value == pytest.approx(float(fit.pvalues[3]), rel=1e-6)
    assert res.effects[1] - res.effects[0] == pytest.approx(fit.params[3])


def test_aa_no_interaction_false_positive_rate():
    """Independent 50/50 assignments, A's effect constant across B's arms: Q rejects at rate α."""
    rng = np.random.default_rng(2)
    sims, n = 1000, 400  # units per A×B cell
    def cell(shape):
        x = rng.lognormal(0, 1, shape)
        return x.mean(-1), x.var(-1, ddof=1) / shape[-1]
    rejected = 0
    m = [cell((sims, n)) for _ in range(6)]  # (A arm, B arm) for B with 3 arms
    for i in range(sims):
        eff = [m[2 * j + 1][0][i] * 1.05 - m[2 * j][0][i] for j in range(3)]
        var = [1.05**2 * m[2 * j + 1][1][i] + m[2 * j][1][i] for j in range(3)]
        rejected += interaction_test(eff, var).p_value < 0.05
    lo, hi = stats.binom.interval(0.99, sims, 0.05)
    assert lo <= rejected <= hi, rejected / sims


def test_aa_independence_false_positive_rate():
    rng = np.random.default_rng(3)
    sims = 1000
    tables = rng.multinomial(3000, [0.25, 0.25, 0.25, 0.25], sims).reshape(sims, 2, 2)
    p = np.array([assignment_independence(t).p_value for t in tables])
    lo, hi = stats.binom.interval(0.99, sims, 0.05)
    assert lo <= np.sum(p < 0.05) <= hi
