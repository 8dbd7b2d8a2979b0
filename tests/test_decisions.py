"""Decisions a go/no-go review can quote: negative-valued guardrails, stopped enrollment, cautions and
the words for shipped models (issue 11, items 1, 5, 8, 9)."""
from __future__ import annotations

import numpy as np

from abproxy.stats.effects import mean_effect, sequential
from abproxy.stats.sufficient import Moments
from abproxy.verdict import Flag, Outcome, Policy, decide

UNITS = {"c": 20_000, "t": 20_000}


def moments(x):
    return Moments(len(x), float(x.sum()), float((x * x).sum()))


def outcome(effect, metric, role, **kw):
    return Outcome(metric, metric.replace("_", " ").capitalize(), role, "t", effect.abs_effect, effect.abs_ci,
                   effect.rel_effect, effect.rel_ci, effect.significant, **kw)


def simulated(mean_c, mean_t, sd, n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    e = mean_effect(moments(rng.normal(mean_c, sd, n)), moments(rng.normal(mean_t, sd, n)))
    return sequential(e, 2 * n)


def test_a_negative_mean_guardrail_25_percent_worse_rolls_back():
    """Net margin per user −4 → −5 (25% worse) with a 5% relative margin: ROLLBACK, not SHIP."""
    spend = simulated(10.0, 10.5, 4.0, seed=1)
    margin = simulated(-4.0, -5.0, 3.0, seed=2)
    assert margin.rel_effect < 0 and margin.rel_ci[1] < -0.05
    v = decide([outcome(spend, "spend", "primary"),
                outcome(margin, "net_margin", "guardrail", margin=0.05, margin_relative=True)],
               [], 14, UNITS, Policy(), "c")
    assert v.decision == "ROLLBACK"
    text = " ".join(v.reasons)
    assert "Net margin -2" in text and "guardrail harmed beyond its 5% margin" in text


def test_enrollment_stopped_says_so_and_lets_the_policy_decide():
    flat = simulated(10.0, 10.02, 4.0, n=3000, seed=3)
    o = outcome(flat, "spend", "primary", extra_units_needed=50_000)
    units = {"c": 3000, "t": 3000}
    running = decide([o], [], 10, units, Policy(units_per_day=1500), "c")
    assert running.decision == "KEEP_RUNNING" and "recent enrollment rate" in " ".join(running.reasons)
    stopped = decide([o], [], 10, units, Policy(units_per_day=0.0, enrollment_stopped="2026-11-20"), "c")
    assert stopped.decision == "NO_DETECTABLE_EFFECT"
    text = " ".join(stopped.reasons)
    assert "enrollment stopped" in text and "no new units since 2026-11-20" in text and "ruled out" in text
    assert "at the current rate" not in text and "more day(s)" not in text
    early = decide([o], [], 3, units, Policy(enrollment_stopped="2026-11-20"), "c")
    assert early.decision == "KEEP_RUNNING"
    assert "cannot be reached" in " ".join(early.reasons)


def test_a_ship_with_a_warning_carries_it_as_a_caution():
    win = simulated(10.0, 10.8, 4.0, seed=4)
    flags = [Flag("segment_harm", "warn", "country=DE: spend -12.8% …", segment="country=DE", metric="spend",
                  variant="t"),
             Flag("novelty", "warn", "spend (t): the lift is fading …", metric="spend", variant="t"),
             Flag("null_values", "warn", "'coupon' of 'purchase' is often null", metric="coupon_rate"),
             Flag("srm", "ok", "fine")]
    v = decide([outcome(win, "spend", "primary")], flags, 14, UNITS, Policy(), "c")
    assert v.decision == "SHIP"
    assert v.cautions == ("Segment harmed: country=DE: spend -12.8% …", "spend (t): the lift is fading …")
    plain = decide([outcome(win, "spend", "primary")], flags[3:], 14, UNITS, Policy(), "c")
    assert plain.cautions == ()


def test_a_shipped_model_is_kept_or_reverted_not_shipped():
    win = simulated(10.0, 11.0, 4.0, seed=5)
    v = decide([outcome(win, "spend", "primary")], [], 30, UNITS, Policy(shipped=True), "c")
    assert v.decision == "SHIP"
    assert v.reasons[0].startswith("Keep the shipped model t: it still beats the holdback by +")
    assert not any(r.startswith("Ship ") for r in v.reasons)
    loss = simulated(10.0, 9.0, 4.0, seed=6)
    v = decide([outcome(loss, "spend", "primary")], [], 30, UNITS, Policy(shipped=True), "c")
    assert v.decision == "ROLLBACK" and v.reasons[0].startswith("Revert the shipped model t")
    flat = simulated(10.0, 10.0, 4.0, seed=7)
    v = decide([outcome(flat, "spend", "primary")], [], 30, UNITS, Policy(shipped=True), "c")
    assert v.decision == "NO_DETECTABLE_EFFECT" and "the lift has faded" in v.reasons[0]
