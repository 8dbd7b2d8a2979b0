"""Intervals at a chosen level (METHODS §19): the level that matches a multiplicity-adjusted p-value,
for every kind of decision (fixed horizon, confidence sequence, group-sequential look).

Kept apart from `effects` because the group-sequential boundary lives in `groupseq`, which builds on
`effects`.
"""
from __future__ import annotations

from abproxy.stats.effects import Effect, critical, with_critical
from abproxy.stats.groupseq import critical_at_level


def at_level(effect: Effect, ci_alpha: float) -> Effect:
    """The same effect with both intervals at level 1 − ci_alpha (the test is unchanged): with
    ci_alpha = α·p/p_adjusted the intervals exclude 0 exactly when p_adjusted < α. Effects whose
    interval is not a multiple of their SE (exact tests: no `parts`) keep their own intervals."""
    if not (0 < ci_alpha < 1) or effect.parts is None:
        return effect
    if effect.looks is not None:
        look, looks = effect.looks
        q = critical_at_level(look, looks, effect.alpha, ci_alpha)
    else:
        q = critical(ci_alpha, effect.df, effect.n_total, effect.tuning, effect.alpha)
    return with_critical(effect, q, ci_alpha)
