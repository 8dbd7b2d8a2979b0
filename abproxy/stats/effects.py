"""Two-arm effect estimates from sufficient statistics (METHODS §1–§5, §7, §19).

Every function returns an :class:`Effect`; degenerate input gives NaN
inference fields and a ``warning`` code instead of raising.

One coherent design (§19): the decision is the absolute test; the relative
lift L = (A − B)/|B| (B the control side, A the variant side) gets Fieller's
interval from the *same* test statistic and critical value, so 0 lies outside
the lift's interval exactly when the absolute test is significant, and the lift
has the sign of the absolute effect for any control mean ≠ 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from abproxy.stats.sufficient import JointMoments, Moments

NAN = math.nan
NAN_CI = (NAN, NAN)
INF = math.inf
# An arm variance below this fraction of its un-cancelled terms is rounding noise.
REL_NOISE = 1e-10


@dataclass(frozen=True)
class RatioParts:
    """Fieller's inputs: the variant-side mean A, the control-side mean B (L = (A − B)/|B|), their
    variances and covariance. A − B is the absolute effect and Var(A − B) its variance."""

    a: float
    b: float
    var_a: float
    var_b: float
    cov: float = 0.0


@dataclass(frozen=True)
class Effect:
    """Variant − control comparison; ``rel_*`` is the lift relative to |control|.

    ``abs_ci`` and ``rel_ci`` are at level 1 − ``ci_alpha`` (``alpha`` unless a multiple-testing
    adjustment widened them, see :func:`at_level`); ``tuning`` is set in sequential mode.
    """

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
    parts: RatioParts | None = None
    ci_alpha: float | None = None
    n_total: int = 0
    tuning: float | None = None
    looks: tuple[int, int] | None = None   # group-sequential: (look, planned looks)

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
    """L = (mT−mC)/|mC| and its delta-method SE, control mean random (§2).

    Written without powers of mC, so a control mean near 1e77 or above cannot overflow."""
    if mc == 0 or not math.isfinite(mc):
        return NAN, NAN
    r = mt / mc
    var = (var_t / mc) / mc + r * r * ((var_c / mc) / mc)
    return (mt - mc) / abs(mc), math.sqrt(var) if var >= 0 else NAN


def critical(alpha: float, df: float, n_total: int = 0, tuning: float | None = None,
             design_alpha: float | None = None) -> float:
    """The interval's half-width in SEs: t(1−α/2, ν) (z for ν = inf), or the confidence
    sequence's multiplier at N units in sequential mode (§7; ρ tuned at `design_alpha`)."""
    if tuning is not None:
        return sequential_multiplier(n_total, alpha, tuning, design_alpha)
    from scipy.special import stdtrit

    return float(stdtrit(df, 1.0 - alpha / 2.0))


def fieller(parts: RatioParts, q: float) -> tuple[float, float]:
    """Fieller's interval for L = (A − B)/|B| = sign(B)·(A/B − 1): the ρ = A/B with
    |A − ρB| ≤ q·√(var_a − 2ρ·cov + ρ²var_b) (Fieller 1954; §19). Bounded only when B is
    itself significantly different from 0 (B² > q²·var_b); NaN otherwise."""
    a, b, va, vb, c = parts.a, parts.b, parts.var_a, parts.var_b, parts.cov
    q2 = q * q
    k2 = b * b - q2 * vb                       # ρ² coefficient
    k1 = a * b - q2 * c                        # −½ ρ coefficient
    k0 = a * a - q2 * va
    disc = k1 * k1 - k2 * k0
    if not (k2 > 0 and disc >= 0 and math.isfinite(disc)):
        return NAN_CI
    root = math.sqrt(disc)
    lo, hi = (k1 - root) / k2 - 1, (k1 + root) / k2 - 1
    if b < 0:
        lo, hi = -hi, -lo
    return (lo, hi)


def with_critical(e: Effect, q: float, ci_alpha: float | None = None) -> Effect:
    """Both intervals at critical value q: est ± q·SE for the absolute effect, Fieller's for the lift."""
    if not (e.abs_se > 0 and math.isfinite(e.abs_se)) or not math.isfinite(q):
        return replace(e, abs_ci=NAN_CI, rel_ci=NAN_CI, ci_alpha=ci_alpha)
    abs_ci = (e.abs_effect - q * e.abs_se, e.abs_effect + q * e.abs_se)
    rel_ci = fieller(e.parts, q) if e.parts is not None and math.isfinite(e.rel_effect) else NAN_CI
    return replace(e, abs_ci=abs_ci, rel_ci=rel_ci, ci_alpha=ci_alpha)


def adjusted_alpha(alpha: float, p_value: float, p_adjusted: float) -> float:
    """The interval level matching a multiplicity-adjusted p-value: α·p/p_adj (Ludbrook 2000 for
    Holm; Jung, Friede & Beißbarth 2011 for BH). α itself when the adjustment is undefined."""
    if not (math.isfinite(p_value) and math.isfinite(p_adjusted)) or p_value <= 0 or p_adjusted <= 0:
        return alpha
    return alpha * min(1.0, p_value / p_adjusted)


def _p_value(est: float, se: float, df: float) -> float:
    """Two-sided p = 2·F_t(−|est/se|, df); df = inf gives the normal."""
    if not se > 0:
        return NAN
    from scipy.special import stdtr

    return float(2.0 * stdtr(df, -abs(est / se)))


def _make(mc: float, mt: float, abs_: float, abs_se: float, parts: RatioParts, rel_se: float,
          df: float, alpha: float, method: str, *, vr: float | None = None) -> Effect:
    """Assemble an Effect: the p-value of the absolute test, and both CIs at its critical value."""
    if not all(math.isfinite(v) for v in (mc, mt, abs_, abs_se)):
        return _degenerate(mc, mt, method, alpha, "overflow", df)
    rel = abs_ / abs(mc) if mc != 0 else NAN
    warning = "control_mean_zero" if mc == 0 else None
    if mc != 0 and not (math.isfinite(rel) and math.isfinite(rel_se)):
        rel, rel_se, warning = NAN, NAN, "overflow"
    e = Effect(mc, mt, abs_, abs_se, NAN_CI, rel, rel_se, NAN_CI, _p_value(abs_, abs_se, df), df, method,
               alpha, vr, warning, parts)
    return with_critical(e, critical(alpha, df), alpha)


def _degenerate(mc: float, mt: float, method: str, alpha: float, warning: str,
                df: float = NAN) -> Effect:
    """Point estimates where defined, NaN inference, and a warning code."""
    finite = math.isfinite(mc) and math.isfinite(mt)
    diff = mt - mc if finite else NAN
    rel = diff / abs(mc) if finite and mc != 0 and math.isfinite(diff) else NAN
    return Effect(mc if math.isfinite(mc) else NAN, mt if math.isfinite(mt) else NAN,
                  diff if math.isfinite(diff) else NAN, NAN, NAN_CI, rel if math.isfinite(rel) else NAN,
                  NAN, NAN_CI, NAN, df, method, alpha, None, warning)


def _invalid(*arms) -> bool:
    return not all(m.valid for m in arms)


# ---------------------------------------------------------------- metrics

def mean_effect(control: Moments, variant: Moments, alpha: float = 0.05) -> Effect:
    """Welch t-test on the difference of means (§1) + lift over |x̄C| with Fieller's interval (§2, §19).

    Both CIs use t(1−α/2, ν) with the Welch df ν (GrowthBook gbstats ``TTest``).
    """
    if _invalid(control, variant):
        return _degenerate(control.mean, variant.mean, "welch", alpha, "invalid_sums")
    mc, mt = control.mean, variant.mean
    if control.n < 2 or variant.n < 2:
        return _degenerate(mc, mt, "welch", alpha, "too_few_units")
    var_c, var_t = control.var / control.n, variant.var / variant.n
    if var_c + var_t == 0:
        return _degenerate(mc, mt, "welch", alpha, "zero_variance")
    df = _welch_df(var_c, control.n, var_t, variant.n)
    _, rel_se = _lift(mc, mt, var_c, var_t)
    return _make(mc, mt, mt - mc, math.sqrt(var_c + var_t), RatioParts(mt, mc, var_t, var_c), rel_se,
                 df, alpha, "welch")


def proportion_effect(control: Moments, variant: Moments, alpha: float = 0.05) -> Effect:
    """Two-proportion comparison (§3); ``Moments.sum`` = number converted (sum_sq unused).

    The test and both CIs use the unpooled Wald SE √(pT(1−pT)/nT + pC(1−pC)/nC) and the normal
    quantile (statsmodels ``test_proportions_2indep(method='wald')``), so the interval shown and
    the test agree (§19); the lift by Fieller with variances p(1−p)/n.
    """
    method = "z-proportion"
    mc, mt = control.mean, variant.mean
    if not all(math.isfinite(v) for v in (control.sum, variant.sum)):
        return _degenerate(mc, mt, method, alpha, "invalid_sums", INF)
    if control.n < 2 or variant.n < 2:
        return _degenerate(mc, mt, method, alpha, "too_few_units", INF)
    if not (0 <= control.sum <= control.n and 0 <= variant.sum <= variant.n):
        return _degenerate(mc, mt, method, alpha, "invalid_counts", INF)
    var_c, var_t = mc * (1 - mc) / control.n, mt * (1 - mt) / variant.n
    pooled = (control.sum + variant.sum) / (control.n + variant.n)
    if var_c + var_t == 0 or pooled in (0.0, 1.0):
        return _degenerate(mc, mt, method, alpha, "zero_variance", INF)
    _, rel_se = _lift(mc, mt, var_c, var_t)
    return _make(mc, mt, mt - mc, math.sqrt(var_c + var_t), RatioParts(mt, mc, var_t, var_c), rel_se,
                 INF, alpha, method)


def _ratio_arm(m: JointMoments) -> tuple[float, float]:
    """R = Σy/Σx and Var(R) = σR²/n, σR² = (sy² − 2R·cov + R²sx²)/x̄² (§4)."""
    r = m.sum_y / m.sum_x
    vy, vx = m.y.var, r * r * m.x.var
    return r, _clip(vy - 2 * r * m.cov + vx, vy + vx) / m.x.mean / m.x.mean / m.n


def ratio_effect(control: JointMoments, variant: JointMoments, alpha: float = 0.05) -> Effect:
    """Ratio metric ΣY/ΣX per arm, delta-method z-test (§4; Deng et al. 2018).

    Lift over |R_C| with Fieller's interval (arms independent, so cov = 0); df = inf.
    """
    method = "delta-ratio"
    if _invalid(control, variant):
        return _degenerate(NAN, NAN, method, alpha, "invalid_sums", INF)
    rc = control.sum_y / control.sum_x if control.sum_x != 0 else NAN
    rt = variant.sum_y / variant.sum_x if variant.sum_x != 0 else NAN
    if control.n < 2 or variant.n < 2:
        return _degenerate(rc, rt, method, alpha, "too_few_units", INF)
    if control.sum_x == 0 or variant.sum_x == 0:
        return _degenerate(rc, rt, method, alpha, "denominator_zero", INF)
    (rc, var_c), (rt, var_t) = _ratio_arm(control), _ratio_arm(variant)
    if var_c + var_t == 0:
        return _degenerate(rc, rt, method, alpha, "zero_variance", INF)
    _, rel_se = _lift(rc, rt, var_c, var_t)
    return _make(rc, rt, rt - rc, math.sqrt(var_c + var_t), RatioParts(rt, rc, var_t, var_c), rel_se,
                 INF, alpha, method)


def _theta(pooled: JointMoments) -> float:
    """θ = cov(y,x)/var(x) over the pooled units of all arms (§5); 0 if var(x)=0."""
    vx = pooled.x.var
    return pooled.cov / vx if vx > 0 else 0.0


def _quad(g0: float, g1: float, m: JointMoments) -> float:
    """gᵀ·[[sy², cov], [cov, sx²]]·g / n for one arm."""
    return (g0 * g0 * m.y.var + 2 * g0 * g1 * m.cov + g1 * g1 * m.x.var) / m.n


def _cuped_parts(c: JointMoments, t: JointMoments, theta: float, var_t: float) -> RatioParts:
    """A = ȳT − θ(x̄T − x̄C), B = ȳC, so A − B = Δ_cuped and Var(A − B) = Var(Δ_cuped) (§5, §19)."""
    a = t.y.mean - theta * (t.x.mean - c.x.mean)
    return RatioParts(a, c.y.mean, var_t + theta * theta * c.x.var / c.n, c.y.var / c.n,
                      theta * c.cov / c.n)


def _cuped_rel_se(c: JointMoments, t: JointMoments, theta: float) -> float:
    """Delta-method SE of Δ_cuped/|ȳC| with the 4-gradient of §5 (sign-free: Var(L) = Var(Δ/ȳC))."""
    yc, yt, xc, xt = c.y.mean, t.y.mean, c.x.mean, t.x.mean
    if yc == 0:
        return NAN
    g_yc = -((yt - theta * xt + theta * xc) / yc) / yc
    var = _quad(1 / yc, -theta / yc, t) + _quad(g_yc, theta / yc, c)
    return math.sqrt(max(var, 0.0))


def cuped_effect(control: JointMoments, variant: JointMoments, alpha: float = 0.05) -> Effect:
    """CUPED (§5; Deng et al. 2013): y outcome, x pre-period covariate.

    One θ from the pooled arms; Welch t on adjusted variances (§1); lift over the
    unadjusted |control mean| with Fieller's interval (§19). ``control_mean`` is ȳC (unadjusted)
    and ``variant_mean`` = ȳC + Δ_cuped, so abs_effect = variant_mean − control_mean.
    ``variance_reduction`` = 1 − Var(Δ_cuped)/Var(Δ_unadjusted).
    """
    method = "cuped"
    if _invalid(control, variant):
        return _degenerate(control.y.mean, variant.y.mean, method, alpha, "invalid_sums")
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
    parts = _cuped_parts(control, variant, theta, var_t)
    return _make(yc, yc + delta, delta, math.sqrt(var_c + var_t), parts,
                 _cuped_rel_se(control, variant, theta), df, alpha, method, vr=vr)


# ---------------------------------------------------------------- sequential

def _rho_sq(alpha: float, tuning: float) -> float:
    return (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning


def sequential_multiplier(n_total: int, alpha: float, tuning: float = 5000.0,
                          design_alpha: float | None = None) -> float:
    """The confidence sequence's half-width in SEs at N units (§7): it replaces z(1−α/2). ρ² is
    tuned at the test's `design_alpha` (default: `alpha`), the level the always-valid p-value uses,
    so that the interval at any level α' excludes 0 exactly when that p < α' (§19)."""
    nr = n_total * _rho_sq(design_alpha or alpha, tuning)
    return math.sqrt(2 * (nr + 1) * math.log(math.sqrt(nr + 1) / alpha) / nr)


def sequential(effect: Effect, n_total: int, tuning: float = 5000.0) -> Effect:
    """Asymptotic confidence sequence (§7; Waudby-Smith et al. 2103.06476).

    ρ² = (−2lnα + ln(1−2lnα))/N*, half-width
    h = SE·√[2(Nρ²+1)·ln(√(Nρ²+1)/α)/(Nρ²)] for the absolute CI, and Fieller's interval with the
    same multiplier for the lift (§19). Always-valid p from the abs effect (GrowthBook):
    p = min(1, √(Nρ²+1)·exp(−Nρ²z²/(2(Nρ²+1)))). Normal, so df = inf.
    """
    method = effect.method + "+sequential"
    if n_total < 1 or not tuning > 0:
        return replace(effect, abs_ci=NAN_CI, rel_ci=NAN_CI, p_value=NAN, df=INF,
                       method=method, warning=effect.warning or "too_few_units")
    a = effect.alpha
    nr = n_total * _rho_sq(a, tuning)
    p = NAN
    if effect.abs_se > 0:
        z = effect.abs_effect / effect.abs_se
        log_e = nr * z * z / (2 * (nr + 1)) - 0.5 * math.log(nr + 1)
        p = min(1.0, math.exp(-log_e))
    seq = replace(effect, p_value=p, df=INF, method=method, n_total=n_total, tuning=tuning)
    level = effect.ci_alpha or a
    return with_critical(seq, sequential_multiplier(n_total, level, tuning, a), level)
