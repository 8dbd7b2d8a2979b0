"""Two-arm effect estimates from sufficient statistics (METHODS §1–§5, §7).

Every function returns an :class:`Effect`; degenerate input gives NaN
inference fields and a ``warning`` code instead of raising.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scipy.special import stdtr, stdtrit
from statsmodels.stats.proportion import proportions_ztest

from abproxy.stats.sufficient import JointMoments, Moments

NAN = math.nan
NAN_CI = (NAN, NAN)
INF = math.inf
# An arm variance below this fraction of its un-cancelled terms is rounding noise.
REL_NOISE = 1e-10


@dataclass(frozen=True)
class Effect:
    """Variant − control comparison; ``rel_*`` is the lift relative to control."""

    control_mean: float
    variant_mean: float
    abs_effect: float
    abs_se: float
    abs_ci: tuple[float, float]
    rel_effect: float
    rel_se: float
    rel_ci: tuple[float, float]
    p_value: float
    df: float  # inf for z-based tests
    method: str
    alpha: float
    variance_reduction: float | None = None
    warning: str | None = None

    @property
    def significant(self) -> bool:
        """p < α; False when p is NaN."""
        return bool(self.p_value < self.alpha)


# ---------------------------------------------------------------- helpers

def _welch_df(var_c: float, n_c: int, var_t: float, n_t: int) -> float:
    """Welch–Satterthwaite ν; var_* are variances of the arm means (§1)."""
    se2 = var_c + var_t
    return se2 * se2 / (var_t * var_t / (n_t - 1) + var_c * var_c / (n_c - 1))


def _clip(var: float, scale: float) -> float:
    """0 if ``var`` is within rounding noise of the terms it was computed from."""
    return var if var > REL_NOISE * scale else 0.0


def _lift(mc: float, mt: float, var_c: float, var_t: float) -> tuple[float, float]:
    """L = (mT−mC)/mC and its delta-method SE, control mean random (§2)."""
    if mc == 0 or not math.isfinite(mc):
        return NAN, NAN
    var = var_t / mc**2 + mt**2 * var_c / mc**4
    return (mt - mc) / mc, math.sqrt(var)


def _ci(est: float, se: float, q: float) -> tuple[float, float]:
    return (est - q * se, est + q * se)


def _p_value(est: float, se: float, df: float) -> float:
    """Two-sided p = 2·F_t(−|est/se|, df); df = inf gives the normal."""
    if not se > 0:
        return NAN
    return float(2.0 * stdtr(df, -abs(est / se)))


def _make(mc: float, mt: float, abs_: float, abs_se: float, rel: float,
          rel_se: float, df: float, alpha: float, method: str, *,
          p: float | None = None, vr: float | None = None) -> Effect:
    """Assemble an Effect: both CIs use the same t(ν) / z quantile."""
    q = float(stdtrit(df, 1.0 - alpha / 2.0))
    warning = "control_mean_zero" if math.isnan(rel) and mc == 0 else None
    return Effect(
        mc, mt, abs_, abs_se, _ci(abs_, abs_se, q), rel, rel_se, _ci(rel, rel_se, q),
        _p_value(abs_, abs_se, df) if p is None else p, df, method, alpha, vr, warning,
    )


def _degenerate(mc: float, mt: float, method: str, alpha: float, warning: str,
                df: float = NAN) -> Effect:
    """Point estimates where defined, NaN inference, and a warning code."""
    rel = (mt - mc) / mc if mc != 0 and math.isfinite(mc) else NAN
    return Effect(mc, mt, mt - mc, NAN, NAN_CI, rel, NAN, NAN_CI, NAN, df,
                  method, alpha, None, warning)


# ---------------------------------------------------------------- metrics

def mean_effect(control: Moments, variant: Moments, alpha: float = 0.05) -> Effect:
    """Welch t-test on the difference of means (§1) + delta-method lift (§2).

    Both CIs use t(1−α/2, ν) with the Welch df ν (GrowthBook gbstats ``TTest``).
    """
    mc, mt = control.mean, variant.mean
    if control.n < 2 or variant.n < 2:
        return _degenerate(mc, mt, "welch", alpha, "too_few_units")
    var_c, var_t = control.var / control.n, variant.var / variant.n
    if var_c + var_t == 0:
        return _degenerate(mc, mt, "welch", alpha, "zero_variance")
    df = _welch_df(var_c, control.n, var_t, variant.n)
    rel, rel_se = _lift(mc, mt, var_c, var_t)
    return _make(mc, mt, mt - mc, math.sqrt(var_c + var_t), rel, rel_se, df, alpha, "welch")


def proportion_effect(control: Moments, variant: Moments, alpha: float = 0.05) -> Effect:
    """Two-proportion comparison (§3); ``Moments.sum`` = number converted (sum_sq unused).

    p-value: pooled z-test (statsmodels ``proportions_ztest``). CIs: unpooled
    Wald SE; lift by §2 with variance p(1−p) (no Bessel), z quantile.
    """
    method = "z-proportion"
    mc, mt = control.mean, variant.mean
    if control.n < 2 or variant.n < 2:
        return _degenerate(mc, mt, method, alpha, "too_few_units", INF)
    if not (0 <= control.sum <= control.n and 0 <= variant.sum <= variant.n):
        return _degenerate(mc, mt, method, alpha, "invalid_counts", INF)
    var_c, var_t = mc * (1 - mc) / control.n, mt * (1 - mt) / variant.n
    pooled = (control.sum + variant.sum) / (control.n + variant.n)
    if var_c + var_t == 0 or pooled in (0.0, 1.0):
        return _degenerate(mc, mt, method, alpha, "zero_variance", INF)
    _, p = proportions_ztest([variant.sum, control.sum], [variant.n, control.n])
    rel, rel_se = _lift(mc, mt, var_c, var_t)
    return _make(mc, mt, mt - mc, math.sqrt(var_c + var_t), rel, rel_se, INF, alpha,
                 method, p=float(p))


def _ratio_arm(m: JointMoments) -> tuple[float, float]:
    """R = Σy/Σx and Var(R) = σR²/n, σR² = (sy² − 2R·cov + R²sx²)/x̄² (§4)."""
    r = m.sum_y / m.sum_x
    vy, vx = m.y.var, r * r * m.x.var
    return r, _clip(vy - 2 * r * m.cov + vx, vy + vx) / m.x.mean**2 / m.n


def ratio_effect(control: JointMoments, variant: JointMoments, alpha: float = 0.05) -> Effect:
    """Ratio metric ΣY/ΣX per arm, delta-method z-test (§4; Deng et al. 2018).

    Relative lift by §2 with (R, σR²); df = inf.
    """
    method = "delta-ratio"
    rc = control.sum_y / control.sum_x if control.sum_x != 0 else NAN
    rt = variant.sum_y / variant.sum_x if variant.sum_x != 0 else NAN
    if control.n < 2 or variant.n < 2:
        return _degenerate(rc, rt, method, alpha, "too_few_units", INF)
    if control.sum_x == 0 or variant.sum_x == 0:
        return _degenerate(rc, rt, method, alpha, "denominator_zero", INF)
    (rc, var_c), (rt, var_t) = _ratio_arm(control), _ratio_arm(variant)
    if var_c + var_t == 0:
        return _degenerate(rc, rt, method, alpha, "zero_variance", INF)
    rel, rel_se = _lift(rc, rt, var_c, var_t)
    return _make(rc, rt, rt - rc, math.sqrt(var_c + var_t), rel, rel_se, INF, alpha, method)


def _theta(pooled: JointMoments) -> float:
    """θ = cov(y,x)/var(x) over the pooled units of all arms (§5); 0 if var(x)=0."""
    vx = pooled.x.var
    return pooled.cov / vx if vx > 0 else 0.0


def _quad(g0: float, g1: float, m: JointMoments) -> float:
    """gᵀ·[[sy², cov], [cov, sx²]]·g / n for one arm."""
    return (g0 * g0 * m.y.var + 2 * g0 * g1 * m.cov + g1 * g1 * m.x.var) / m.n


def _cuped_lift(c: JointMoments, t: JointMoments, theta: float) -> tuple[float, float]:
    """(ȳT,adj − ȳC,adj)/ȳC with the 4-gradient delta method of §5."""
    yc, yt, xc, xt = c.y.mean, t.y.mean, c.x.mean, t.x.mean
    if yc == 0:
        return NAN, NAN
    var = (_quad(1 / yc, -theta / yc, t)
           + _quad(-(yt - theta * xt + theta * xc) / yc**2, theta / yc, c))
    return ((yt - theta * xt) - (yc - theta * xc)) / yc, math.sqrt(max(var, 0.0))


def cuped_effect(control: JointMoments, variant: JointMoments, alpha: float = 0.05) -> Effect:
    """CUPED (§5; Deng et al. 2013): y outcome, x pre-period covariate.

    One θ from the pooled arms; Welch t on adjusted variances (§1); lift over the
    unadjusted control mean. ``control_mean`` is ȳC (unadjusted) and
    ``variant_mean`` = ȳC + Δ_cuped, so abs_effect = variant_mean − control_mean.
    ``variance_reduction`` = 1 − Var(Δ_cuped)/Var(Δ_unadjusted).
    """
    method = "cuped"
    yc, yt = control.y.mean, variant.y.mean
    if control.n < 2 or variant.n < 2:
        return _degenerate(yc, yt, method, alpha, "too_few_units")
    theta = _theta(control + variant)
    delta = (yt - theta * variant.x.mean) - (yc - theta * control.x.mean)
    var_c, var_t = (_clip(_quad(1, -theta, m), (m.y.var + theta**2 * m.x.var) / m.n)
                    for m in (control, variant))
    if var_c + var_t == 0:
        return _degenerate(yc, yc + delta, method, alpha, "zero_variance")
    df = _welch_df(var_c, control.n, var_t, variant.n)
    unadj = control.y.var / control.n + variant.y.var / variant.n
    vr = 1 - (var_c + var_t) / unadj if unadj > 0 else NAN
    rel, rel_se = _cuped_lift(control, variant, theta)
    return _make(yc, yc + delta, delta, math.sqrt(var_c + var_t), rel, rel_se, df,
                 alpha, method, vr=vr)


# ---------------------------------------------------------------- sequential

def _rho_sq(alpha: float, tuning: float) -> float:
    return (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning


def sequential_multiplier(n_total: int, alpha: float, tuning: float = 5000.0) -> float:
    """The confidence sequence's half-width in SEs at N units (§7): it replaces z(1−α/2)."""
    nr = n_total * _rho_sq(alpha, tuning)
    return math.sqrt(2 * (nr + 1) * math.log(math.sqrt(nr + 1) / alpha) / nr)


def sequential(effect: Effect, n_total: int, tuning: float = 5000.0) -> Effect:
    """Asymptotic confidence sequence (§7; Waudby-Smith et al. 2103.06476).

    ρ² = (−2lnα + ln(1−2lnα))/N*, half-width
    h = SE·√[2(Nρ²+1)·ln(√(Nρ²+1)/α)/(Nρ²)], applied to the abs and rel CIs
    with their own SEs. Always-valid p from the abs effect (GrowthBook):
    p = min(1, √(Nρ²+1)·exp(−Nρ²z²/(2(Nρ²+1)))). Normal, so df = inf.
    """
    method = effect.method + "+sequential"
    if n_total < 1 or not tuning > 0:
        return replace(effect, abs_ci=NAN_CI, rel_ci=NAN_CI, p_value=NAN, df=INF,
                       method=method, warning=effect.warning or "too_few_units")
    a = effect.alpha
    nr = n_total * _rho_sq(a, tuning)
    mult = sequential_multiplier(n_total, a, tuning)
    p = NAN
    if effect.abs_se > 0:
        z = effect.abs_effect / effect.abs_se
        log_e = nr * z * z / (2 * (nr + 1)) - 0.5 * math.log(nr + 1)
        p = min(1.0, math.exp(-log_e))
    return replace(
        effect,
        abs_ci=_ci(effect.abs_effect, effect.abs_se, mult),
        rel_ci=_ci(effect.rel_effect, effect.rel_se, mult),
        p_value=p, df=INF, method=method,
    )
