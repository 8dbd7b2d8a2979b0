"""Group-sequential testing with Lan–DeMets O'Brien–Fleming alpha spending (METHODS §12).

A planned number of equally spaced looks K; at look k (information fraction t_k = k/K) the two-sided
test rejects when |z| ≥ c_k, the boundaries c_1..c_K spending α(t) = 2 − 2Φ(z_{1−α/2}/√t) in total
(Lan & DeMets 1983). Boundaries come from the recursive numerical integration of Armitage, McPherson
& Rowe (1969) (Jennison & Turnbull 2000, ch. 19) over the score process S_k = Z_k·√t_k.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from abproxy.stats.effects import Effect, with_critical

GRID = 201          # points of the continuation-region grid at each look (Simpson; 801 agrees to 1e-5)
TAIL = 9.0          # |z| beyond which the density is negligible: grid limit when c_k = inf
NEGLIGIBLE = 1e-15  # spending below this is rounding: the look cannot reject
ALPHA_GRID = np.concatenate([np.geomspace(1e-10, 0.5, 36), [0.7, 0.9, 0.99]])  # levels at which the repeated p-value is interpolated


@dataclass(frozen=True)
class Boundary:
    """Critical |z| at each of the looks so far; ``spent`` = cumulative α(t_k)."""

    alpha: float
    looks: int
    fractions: tuple[float, ...]
    z: tuple[float, ...]
    spent: tuple[float, ...]


def obf_spending(t: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-type spending α(t) = 2 − 2Φ(z_{1−α/2}/√t), α(1) = α."""
    if t <= 0:
        return 0.0
    from scipy.special import ndtr, ndtri

    return float(2.0 * (2.0 - 2.0 * ndtr(ndtri(1.0 - alpha / 4.0) / math.sqrt(min(t, 1.0)))))


def _crossing(density: np.ndarray, grid: np.ndarray, weights: np.ndarray, c: float,
              t: float, dt: float) -> float:
    """P(|S_k| ≥ c·√t and no earlier crossing) given the sub-density of S_{k−1} on ``grid``."""
    from scipy.special import ndtr

    sd = math.sqrt(dt)
    b = c * math.sqrt(t)
    tails = ndtr((-b - grid) / sd) + ndtr((grid - b) / sd)
    return float(np.sum(weights * density * tails))


def _next_density(density: np.ndarray, grid: np.ndarray, weights: np.ndarray, new_grid: np.ndarray,
                  dt: float) -> np.ndarray:
    """Sub-density of S_k on ``new_grid``: ∫ f_{k−1}(s)·φ((u−s)/√Δ)/√Δ ds."""
    sd = math.sqrt(dt)
    kernel = np.exp(-0.5 * ((new_grid[:, None] - grid[None, :]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return kernel @ (weights * density)


def _simpson(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(lo, hi, GRID)
    w = np.full(GRID, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return grid, w * (hi - lo) / (GRID - 1) / 3.0


@lru_cache(maxsize=256)
def _boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from scipy.optimize import brentq
    from scipy.special import ndtri

    spent = tuple(obf_spending(t, alpha) for t in fractions)
    z: list[float] = []
    grid, weights = _simpson(-TAIL * math.sqrt(fractions[0]), TAIL * math.sqrt(fractions[0]))
    density = np.exp(-0.5 * grid**2 / fractions[0]) / math.sqrt(2 * math.pi * fractions[0])
    prev_t = 0.0
    for k, t in enumerate(fractions):
        target = spent[k] - (spent[k - 1] if k else 0.0)
        dt = t - prev_t
        if target <= NEGLIGIBLE:
            c = math.inf        # nothing to spend yet (O'Brien–Fleming's first looks): cannot reject
        elif k == 0:
            c = float(ndtri(1.0 - target / 2.0))
        else:
            c = brentq(lambda x: _crossing(density, grid, weights, x, t, dt) - target, 0.0, 40.0, xtol=1e-10)
        if k + 1 < len(fractions):
            half = min(c, TAIL) * math.sqrt(t)
            new_grid, new_w = _simpson(-half, half)
            if k == 0:
                density = np.exp(-0.5 * new_grid**2 / t) / math.sqrt(2 * math.pi * t)
            else:
                density = _next_density(density, grid, weights, new_grid, dt)
            grid, weights = new_grid, new_w
        z.append(c)
        prev_t = t
    return tuple(z), spent


def obf_boundary(looks: int, alpha: float, upto: int | None = None) -> Boundary:
    """Two-sided Lan–DeMets O'Brien–Fleming boundaries at t_k = k/K for the first ``upto`` looks."""
    if looks < 1 or not 0 < alpha < 1:
        raise ValueError("looks must be ≥ 1 and 0 < alpha < 1")
    k = looks if upto is None else max(1, min(upto, looks))
    fractions = tuple((i + 1) / looks for i in range(k))
    z, spent = _boundaries(fractions, float(alpha))
    return Boundary(alpha, looks, fractions, z, spent)


def current_look(fraction: float, looks: int) -> int:
    """The last planned look reached at information fraction ``fraction`` (1..K; 1 before the first)."""
    if not math.isfinite(fraction):
        return looks
    return max(1, min(looks, int(math.floor(fraction * looks + 1e-9))))


@lru_cache(maxsize=256)
def _critical_by_level(look: int, looks: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    levels = tuple(float(a) for a in ALPHA_GRID)
    return levels, tuple(obf_boundary(looks, a, look).z[-1] for a in levels)


def _p_curve(look: int, looks: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(c, log level) points of the boundary at look ``look`` on the level grid plus ``alpha`` itself,
    c increasing (the level decreases as c grows): the one curve the repeated p-value and the
    repeated interval at any other level both read, so that they agree exactly."""
    levels, crit = _critical_by_level(look, looks)
    c_alpha = obf_boundary(looks, alpha, look).z[-1]
    pts = sorted(set(zip(crit, levels)) | {(c_alpha, alpha)})
    return np.array([c for c, _ in pts]), np.log([a for _, a in pts])


def repeated_p_value(z: float, look: int, looks: int, alpha: float) -> float:
    """Smallest level at which look ``look`` rejects: c_k(p) = |z| (Jennison & Turnbull §9.1).
    Interpolated (log p against c) on a level grid that includes ``alpha`` itself, so that
    p < α exactly when |z| > c_k(α).
    """
    if not math.isfinite(z):
        return math.nan
    cs, logp = _p_curve(look, looks, alpha)
    a = abs(z)
    if a <= cs[0]:
        return 1.0          # weaker than the boundary at the largest level on the grid
    if a >= cs[-1]:
        return float(math.exp(logp[-1]))  # stronger than at the smallest level: report that bound
    return float(math.exp(np.interp(a, cs, logp)))


def critical_at_level(look: int, looks: int, alpha: float, level: float) -> float:
    """The boundary c_k at another level (a multiple-testing-adjusted α', METHODS §19), read from
    the same interpolated curve as :func:`repeated_p_value`: |z| > c_k(α') exactly when p < α'.
    At the grid's levels and at ``alpha`` it is the exact Lan–DeMets boundary."""
    cs, logp = _p_curve(look, looks, alpha)
    return float(np.interp(math.log(level), logp[::-1], cs[::-1]))


def group_sequential(effect: Effect, look: int, looks: int) -> Effect:
    """Repeated confidence intervals at look k: estimate ± c_k·SE for the abs and rel effects
    (Jennison & Turnbull ch. 9), with the repeated p-value from the abs effect. Normal: df = inf."""
    method = effect.method + "+group-sequential"
    k = max(1, min(look, looks))
    c = obf_boundary(looks, effect.alpha, k).z[-1]
    if not effect.abs_se > 0:
        return replace(effect, abs_ci=(math.nan, math.nan), rel_ci=(math.nan, math.nan), p_value=math.nan,
                       df=math.inf, method=method, warning=effect.warning or "no_standard_error")
    p = repeated_p_value(effect.abs_effect / effect.abs_se, k, looks, effect.alpha)
    rcs = replace(effect, p_value=p, df=math.inf, method=method, looks=(k, looks))
    if effect.parts is not None:      # the lift's repeated interval is Fieller's at c_k (METHODS §19)
        return with_critical(rcs, c, effect.alpha)
    return replace(
        rcs,
        abs_ci=(effect.abs_effect - c * effect.abs_se, effect.abs_effect + c * effect.abs_se),
        rel_ci=(effect.rel_effect - c * effect.rel_se, effect.rel_effect + c * effect.rel_se),
    )
