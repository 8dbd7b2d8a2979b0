"""Per-variant sufficient statistics (METHODS §1, §4, §5).

DuckDB aggregates n, Σx, Σx² (and Σy, Σy², Σxy for two values); everything
downstream is computed from these sums only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


# Q − S²/n below this fraction of Q is rounding noise of the sums: treat as 0.
REL_NOISE = 1e-12


def _var(n: int, s: float, q: float) -> float:
    """Sample variance (n-1), s² = (Q − S²/n)/(n−1), clipped at 0 (§1).

    Differences smaller than REL_NOISE·Q cannot be told apart from rounding
    in the sums (METHODS: "Q−S²/n cancels badly") and are returned as 0.
    """
    if n < 2:
        return math.nan
    ss = q - s * s / n
    return ss / (n - 1) if ss > REL_NOISE * abs(q) else 0.0


def _valid(n: int, s: float, q: float) -> bool:
    if not (math.isfinite(s) and math.isfinite(q)) or n < 0:
        return False
    if n == 0:
        return s == 0 and q == 0
    ss = q - s * s / n
    return math.isfinite(ss) and ss >= -REL_NOISE * abs(q)


@dataclass(frozen=True)
class Moments:
    """Sums of one per-unit value x over the n units of one variant."""

    n: int
    sum: float
    sum_sq: float

    @property
    def mean(self) -> float:
        """x̄ = Σx/n (NaN for n = 0)."""
        return self.sum / self.n if self.n > 0 else math.nan

    @property
    def var(self) -> float:
        """Sample variance with Bessel's correction; NaN for n < 2 (§1)."""
        return _var(self.n, self.sum, self.sum_sq)

    @property
    def valid(self) -> bool:
        """Sums that some set of real numbers could have: finite, and Σx² ≥ (Σx)²/n up to rounding
        (a clearly negative variance is a broken aggregate, never 'zero variance')."""
        return _valid(self.n, self.sum, self.sum_sq)

    def __add__(self, other: "Moments") -> "Moments":
        """Pool two disjoint groups of units (sums are additive)."""
        return Moments(self.n + other.n, self.sum + other.sum, self.sum_sq + other.sum_sq)


@dataclass(frozen=True)
class JointMoments:
    """Sums of two per-unit values y and x over the n units of one variant.

    y is the outcome (or ratio numerator), x the covariate (or ratio denominator).
    """

    n: int
    sum_y: float
    sum_sq_y: float
    sum_x: float
    sum_sq_x: float
    sum_xy: float

    @property
    def y(self) -> Moments:
        return Moments(self.n, self.sum_y, self.sum_sq_y)

    @property
    def x(self) -> Moments:
        return Moments(self.n, self.sum_x, self.sum_sq_x)

    @property
    def valid(self) -> bool:
        """Both values' sums valid, Σxy finite, and |cov| ≤ sx·sy up to rounding (Cauchy–Schwarz)."""
        if not (self.y.valid and self.x.valid and math.isfinite(self.sum_xy)):
            return False
        if self.n < 2:
            return True
        cov, vy, vx = self.cov, self.y.var, self.x.var
        noise = REL_NOISE * 1e3 * (abs(self.sum_xy) + abs(self.sum_x * self.sum_y / self.n)) / (self.n - 1)
        return math.isfinite(cov) and cov * cov <= vx * vy * (1 + 1e-9) + noise * noise

    @property
    def cov(self) -> float:
        """Sample covariance (Σxy − ΣxΣy/n)/(n−1) (§4); NaN for n < 2."""
        if self.n < 2:
            return math.nan
        return (self.sum_xy - self.sum_x * self.sum_y / self.n) / (self.n - 1)

    def __add__(self, other: JointMoments) -> JointMoments:
        """Pool two sets of units (e.g. all arms, for the CUPED θ of §5)."""
        if not isinstance(other, JointMoments):
            return NotImplemented
        return JointMoments(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_sq_y + other.sum_sq_y,
            self.sum_x + other.sum_x,
            self.sum_sq_x + other.sum_sq_x,
            self.sum_xy + other.sum_xy,
        )
