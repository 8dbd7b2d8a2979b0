"""Concurrent experiments sharing units (METHODS §15): independent assignment, no interaction.

Two checks, both on sufficient statistics of the units the experiments share:
- assignment independence: Pearson's χ² on the arm-of-A × arm-of-B cross-tab (scipy
  ``chi2_contingency``, no continuity correction); a dependence means one assignment steers the other;
- interaction: the effect of A's treatment estimated within each arm of B, then Cochran's Q of
  equality across B's arms (§11) — the Wald test of the A×B interaction term, equal to OLS with the
  interaction and HC2 standard errors on the raw units for two arms of B (Eppo's interaction detection
  tests the same hypothesis: the treatment effect does not depend on the other experiment's arm).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from abproxy.stats.heterogeneity import cochran_q


@dataclass(frozen=True)
class Independence:
    chi2: float
    df: int
    p_value: float
    shared_units: int
    warning: str | None = None


@dataclass(frozen=True)
class Interaction:
    q: float
    df: int
    p_value: float
    effects: tuple[float, ...]   # A's effect within each arm of B, in the order given
    warning: str | None = None


def assignment_independence(table: Sequence[Sequence[float]]) -> Independence:
    """χ² test of independence of the two assignments; rows = arms of A, columns = arms of B.

    Empty rows/columns are dropped; fewer than two non-empty rows or columns → warning
    ``too_few_arms`` (nothing to test, p = 1)."""
    t, total, untestable = _trimmed(table)
    if untestable is not None:
        return untestable
    from scipy.stats import chi2_contingency

    res = chi2_contingency(t, correction=False)
    return Independence(float(res.statistic), int(res.dof), float(res.pvalue), total)


def _trimmed(table: Sequence[Sequence[float]]) -> tuple[np.ndarray, int, Independence | None]:
    """The table without its empty rows and columns, its total, and the `too_few_arms` result when
    fewer than two non-empty rows or columns are left (None when it can be tested)."""
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or not t.size:
        return t, 0, Independence(0.0, 0, 1.0, 0, "too_few_arms")
    total = int(t.sum())
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        return t, total, Independence(0.0, 0, 1.0, total, "too_few_arms")
    return t, total, None


def assignment_independence_all(tables: Sequence[Sequence[Sequence[float]]]) -> list[Independence]:
    """`assignment_independence` of each table, the tables of one shape (after dropping empty rows and
    columns) in one vectorised call: the expected counts of each (scipy ``expected_freq``), then
    Pearson's χ² along the last axis of the stacked tables (scipy ``chisquare``, the test
    ``chi2_contingency`` runs on one table)."""
    out: list[Independence | None] = [None] * len(tables)
    shapes: dict[tuple[int, int], list[tuple[int, np.ndarray, int]]] = {}
    for i, table in enumerate(tables):
        t, total, out[i] = _trimmed(table)
        if out[i] is None:
            shapes.setdefault(t.shape, []).append((i, t, total))
    if shapes:
        from scipy.stats import chisquare
        from scipy.stats.contingency import expected_freq

    for (r, c), group in shapes.items():
        observed = np.stack([t.ravel() for _, t, _ in group])
        expected = np.stack([expected_freq(t).ravel() for _, t, _ in group])
        dof = (r - 1) * (c - 1)
        res = chisquare(observed, expected, ddof=r * c - 1 - dof, axis=-1)
        for (i, _, total), chi2, p in zip(group, np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)):
            out[i] = Independence(float(chi2), dof, float(p), total)
    return out  # type: ignore[return-value]


def interaction_test(effects: Sequence[float], variances: Sequence[float]) -> Interaction:
    """Cochran's Q of A's effect across the arms of B (k arms → df k−1); < 2 usable → warning."""
    het = cochran_q(effects, variances)
    warning = "too_few_arms" if het.warning else None
    return Interaction(het.q, het.df, het.p_value, tuple(float(e) for e in effects), warning)
