"""Proportions with few conversions: Fisher's exact (conditional) test (METHODS §13).

When a cell of the 2×2 table (arm × converted) has an expected count below ``MIN_EXPECTED`` the
normal approximation behind the z-test is poor; the p-value then comes from Fisher's exact test
(scipy ``fisher_exact``, two-sided, conditional on both margins; valid at every count, size ≤ α),
the CI of the difference from Newcombe's hybrid score interval and the CI of the relative lift from
the Koopman / Miettinen–Nurminen score interval of the risk ratio (statsmodels
``confint_proportions_2indep`` 'newcomb' / 'score'), both good at small counts.
"""
from __future__ import annotations

import math
import warnings

from abproxy.stats.effects import Effect, proportion_effect
from abproxy.stats.sufficient import Moments

MIN_EXPECTED = 10.0
METHOD = "fisher-exact"


def min_expected_count(control: Moments, variant: Moments) -> float:
    """Smallest expected cell count of the arm × (converted, not) table under independence."""
    n = control.n + variant.n
    if n == 0:
        return 0.0
    conv = control.sum + variant.sum
    return min(arm * k / n for arm in (control.n, variant.n) for k in (conv, n - conv))


def _ci(count_t: float, n_t: int, count_c: float, n_c: int, alpha: float, compare: str,
        method: str) -> tuple[float, float]:
    if compare == "ratio" and count_c == n_c and count_t < n_t:
        # statsmodels' score roots are wrong when the control converts 100% (e.g. 2/5 vs 5/5 gives
        # (0.70, 1.00), excluding the estimate 0.4); the score interval inverts exactly when the
        # arms swap (the test of pC/pT = 1/θ is the test of pT/pC = θ), so take it from there
        lo, hi = _ci(count_c, n_c, count_t, n_t, alpha, compare, method)
        return (1 / hi if hi > 0 else math.inf), (1 / lo if lo > 0 else math.inf)
    from statsmodels.stats.proportion import confint_proportions_2indep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 inside the score roots for 0 counts
        lo, hi = confint_proportions_2indep(count_t, n_t, count_c, n_c, method=method, compare=compare,
                                            alpha=alpha)
    return _real(lo), _real(hi)


def _real(value) -> float:
    """A root of the score equation as a float: statsmodels returns it as a complex number with an
    imaginary part of ~1e-8 when an arm converts 100% (a cubic's roots); the real part is the root."""
    z = complex(value)
    return z.real if abs(z.imag) <= 1e-6 * max(1.0, abs(z.real)) else math.nan


def exact_proportion_effect(control: Moments, variant: Moments, alpha: float = 0.05) -> Effect:
    """Fisher's exact test p; Newcombe CI of pT − pC; score CI of pT/pC − 1 (module docstring).

    ``abs_se`` / ``rel_se`` are the CI half-widths over z(1−α/2) (for power and trend displays).
    """
    mc, mt = control.mean, variant.mean
    if control.n < 2 or variant.n < 2 or not (0 <= control.sum <= control.n and 0 <= variant.sum <= variant.n):
        base = proportion_effect(control, variant, alpha)
        return Effect(base.control_mean, base.variant_mean, base.abs_effect, math.nan, (math.nan, math.nan),
                      base.rel_effect, math.nan, (math.nan, math.nan), math.nan, math.inf, METHOD, alpha,
                      None, base.warning)
    from scipy.special import ndtri
    from scipy.stats import fisher_exact

    xt, xc = int(round(variant.sum)), int(round(control.sum))
    p = float(fisher_exact([[xt, variant.n - xt], [xc, control.n - xc]]).pvalue)
    z = float(ndtri(1 - alpha / 2))
    abs_ci = _ci(xt, variant.n, xc, control.n, alpha, "diff", "newcomb")
    warning = None
    if xc == 0:
        rel, rel_ci, warning = math.nan, (math.nan, math.nan), "control_mean_zero"
    else:
        lo, hi = _ci(xt, variant.n, xc, control.n, alpha, "ratio", "score")
        rel, rel_ci = mt / mc - 1, (lo - 1, hi - 1)
    rel_se = (rel_ci[1] - rel_ci[0]) / (2 * z) if all(map(math.isfinite, rel_ci)) else math.nan
    return Effect(mc, mt, mt - mc, (abs_ci[1] - abs_ci[0]) / (2 * z), abs_ci, rel, rel_se, rel_ci, p,
                  math.inf, METHOD, alpha, None, warning)


def proportion_auto(control: Moments, variant: Moments, alpha: float = 0.05,
                    min_expected: float = MIN_EXPECTED) -> Effect:
    """The z-test of :func:`proportion_effect`, or the exact test when an expected cell < min_expected."""
    if control.n >= 2 and variant.n >= 2 and min_expected_count(control, variant) < min_expected:
        return exact_proportion_effect(control, variant, alpha)
    return proportion_effect(control, variant, alpha)
