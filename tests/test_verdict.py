"""Every rule and boundary of `verdict.decide`, on hand-built outcomes, flags and policies."""
from __future__ import annotations

import math

import pytest

from abproxy.verdict import Flag, Outcome, Policy, decide, guardrail_harmed

CONTROL = "v1"
POLICY = Policy(alpha=0.05, min_days=7, min_units_per_variant=1000)
UNITS = {"v1": 2000, "v2": 2000}
UNITS3 = {"v1": 2000, "v2": 2000, "v3": 2000}


def primary(rel=0.031, ci=(0.012, 0.050), sig=True, variant="v2", hib=True, extra=None,
            metric="spend_per_user", label="Spend per user", base=10.0):
    """A primary outcome; absolute effects are the relative ones times a control mean of `base`."""
    return Outcome(metric, label, "primary", variant, rel * base, (ci[0] * base, ci[1] * base), rel, ci, sig,
                   higher_is_better=hib, extra_units_needed=extra)


def guard(rel, ci, sig, margin=0.05, variant="v2", hib=False, relative=True, abs_effect=None, abs_ci=None,
          proportion=True, metric="refund_rate", label="Refund rate"):
    base = 0.05
    return Outcome(metric, label, "guardrail", variant,
                   rel * base if abs_effect is None else abs_effect,
                   (ci[0] * base, ci[1] * base) if abs_ci is None else abs_ci,
                   rel, ci, sig, higher_is_better=hib, margin=margin, margin_relative=relative,
                   proportion=proportion)


def run(outcomes, flags=(), days=14.0, units=None, policy=POLICY):
    return decide(list(outcomes), list(flags), days, dict(units or UNITS), policy, CONTROL)


def text(verdict) -> str:
    return "\n".join(verdict.reasons)


SEGMENT_DE = Flag("segment_harm", "warn", "country=DE: spend_per_user -15.0% (95% CI -22.0% to -8.0%, adjusted "
                  "p = 0.001) for v2 while the overall effect is +3.1%", segment="country=DE",
                  metric="spend_per_user", variant="v2")


# --------------------------------------------------------------------------- INVALID

class TestInvalid:
    def test_any_fail_flag_makes_it_invalid_and_says_what_to_fix(self):
        flags = [Flag("srm", "fail", "Sample-ratio mismatch: observed v1 2,100, v2 1,900; check the assignment code"),
                 Flag("multiple_exposures", "warn", "30 units (0.7%) were exposed to more than one variant"),
                 Flag("srm", "ok", "all fine")]
        v = run([primary()], flags)   # would otherwise ship
        assert v.decision == "INVALID"
        assert v.ship_variant is None
        assert v.reasons[0].startswith("The numbers cannot be trusted: Sample-ratio mismatch")
        assert "check the assignment code" in v.reasons[0]
        assert v.reasons[1:] == ("Warning: 30 units (0.7%) were exposed to more than one variant",)
        assert "all fine" not in text(v)

    def test_every_failure_is_listed(self):
        flags = [Flag("srm", "fail", "split broken"), Flag("data_quality", "fail", "purchase.value is 40% null")]
        v = run([primary(rel=-0.1, ci=(-0.2, -0.05))], flags)   # would otherwise roll back
        assert v.decision == "INVALID"
        assert v.reasons[0] == "The numbers cannot be trusted: split broken; purchase.value is 40% null"

    def test_warnings_alone_do_not_invalidate(self):
        v = run([primary()], [Flag("late_data", "warn", "2% of events arrived late")])
        assert v.decision == "SHIP"
        assert "Warning: 2% of events arrived late" in v.reasons


# --------------------------------------------------------------------------- SHIP and its blockers

class TestShip:
    def test_ship_names_the_variant_with_numbers(self):
        v = run([primary(), guard(0.01, (-0.03, 0.04), False)])
        assert v.decision == "SHIP" and v.ship_variant == "v2"
        assert v.reasons[0] == "Ship v2: the primary metric improved and no guardrail was harmed"
        assert "Spend per user +3.1% (95% CI +1.2% to +5.0%), significantly better" in v.reasons
        assert "Refund rate unchanged within its 5% margin (+1.0%, 95% CI -3.0% to +4.0%)" in v.reasons
        assert v.reasons[-1] == "Ran 14.0 days (minimum 7); 2,000 units in the smallest arm (minimum 1,000)"
        assert v.per_variant == {"v2": "SHIP"}

    def test_confidence_level_follows_alpha(self):
        v = run([primary()], policy=Policy(alpha=0.10, min_days=7, min_units_per_variant=1000))
        assert "Spend per user +3.1% (90% CI +1.2% to +5.0%), significantly better" in v.reasons

    def test_exactly_min_days_ships(self):
        assert run([primary()], days=7.0).decision == "SHIP"

    @pytest.mark.parametrize("days, more", [(7 - 1e-9, 1), (6.6, 1), (6.4, 1), (5.0, 2), (0.0, 7)])
    def test_before_min_days_keeps_running_and_says_how_many_days(self, days, more):
        v = run([primary()], days=days)
        assert v.decision == "KEEP_RUNNING" and v.ship_variant is None
        assert v.reasons[0] == f"Promising but too early to ship: Needs {more} more day(s) to reach the 7-day minimum"
        assert "Spend per user +3.1% (95% CI +1.2% to +5.0%), significantly better" in v.reasons

    def test_exactly_min_units_ships(self):
        assert run([primary()], units={"v1": 5000, "v2": 1000}).decision == "SHIP"

    def test_one_unit_short_keeps_running(self):
        v = run([primary()], units={"v1": 5000, "v2": 999})
        assert v.decision == "KEEP_RUNNING"
        assert v.reasons[0] == "Promising but too early to ship: Needs 1 more units in the smallest arm"
        assert "999 units in the smallest arm (minimum 1,000)" in v.reasons[-1]

    def test_the_control_counts_as_an_arm_for_min_units(self):
        v = run([primary()], units={"v1": 400, "v2": 5000})
        assert v.decision == "KEEP_RUNNING"
        assert "600 more units in the smallest arm" in v.reasons[0]

    def test_days_and_units_both_short_lists_both(self):
        v = run([primary()], days=3.0, units={"v1": 700, "v2": 800})
        assert v.reasons[0] == ("Promising but too early to ship: Needs 4 more day(s) to reach the 7-day minimum; "
                                "300 more units in the smallest arm")

    def test_power_is_not_needed_to_ship_a_significant_effect(self):
        assert run([primary(extra=50_000)]).decision == "SHIP"

    def test_lower_is_better_primary_ships_when_it_goes_down(self):
        v = run([primary(rel=-0.05, ci=(-0.08, -0.02), hib=False, metric="churn", label="Churn rate")])
        assert v.decision == "SHIP"
        assert "Churn rate -5.0% (95% CI -8.0% to -2.0%), significantly better" in v.reasons

    def test_one_better_primary_and_one_flat_primary_ships(self):
        flat = primary(rel=0.002, ci=(-0.01, 0.014), sig=False, metric="buyer_rate", label="Buyer rate")
        v = run([primary(), flat])
        assert v.decision == "SHIP"
        assert "Buyer rate +0.2% (95% CI -1.0% to +1.4%), not significant" in v.reasons

    def test_secondary_metrics_never_decide(self):
        worse_secondary = Outcome("sessions", "Sessions", "secondary", "v2", -1.0, (-1.5, -0.5), -0.1,
                                  (-0.15, -0.05), True)
        assert run([primary(), worse_secondary]).decision == "SHIP"
        flat = primary(rel=0.0, ci=(-0.02, 0.02), sig=False)
        better_secondary = Outcome("sessions", "Sessions", "secondary", "v2", 1.0, (0.5, 1.5), 0.1, (0.05, 0.15), True)
        assert run([flat, better_secondary], days=3).decision == "KEEP_RUNNING"

    def test_an_insignificant_point_estimate_is_not_better(self):
        assert run([primary(rel=0.05, ci=(-0.001, 0.10), sig=False)], days=3).decision == "KEEP_RUNNING"

    def test_effect_without_a_relative_value_prints_the_absolute_one(self):
        o = Outcome("spend_per_user", "Spend per user", "primary", "v2", 0.5, (0.2, 0.8), math.nan,
                    (math.nan, math.nan), True)
        v = run([o])
        assert v.decision == "SHIP"
        assert "Spend per user +0.5 (95% CI +0.2 to +0.8), significantly better" in v.reasons


# --------------------------------------------------------------------------- ROLLBACK and guardrails

class TestRollback:
    def test_primary_significantly_worse_rolls_back(self):
        v = run([primary(rel=-0.042, ci=(-0.061, -0.023))])
        assert v.decision == "ROLLBACK" and v.ship_variant is None
        assert v.reasons[0] == "Roll back v2: a primary metric or guardrail got significantly worse"
        assert "Spend per user -4.2% (95% CI -6.1% to -2.3%), significantly worse" in v.reasons
        assert v.per_variant == {"v2": "ROLLBACK"}

    def test_harm_does_not_wait_for_min_days_or_units(self):
        v = run([primary(rel=-0.042, ci=(-0.061, -0.023))], days=1.0, units={"v1": 50, "v2": 50})
        assert v.decision == "ROLLBACK"

    def test_lower_is_better_primary_going_up_rolls_back(self):
        v = run([primary(rel=0.05, ci=(0.02, 0.08), hib=False, label="Churn rate")])
        assert v.decision == "ROLLBACK"
        assert "Churn rate +5.0% (95% CI +2.0% to +8.0%), significantly worse" in v.reasons

    def test_guardrail_beyond_relative_margin_blocks_a_winning_primary(self):
        v = run([primary(), guard(0.10, (0.06, 0.14), True)])
        assert v.decision == "ROLLBACK"
        assert "Refund rate +10.0% (95% CI +6.0% to +14.0%): guardrail harmed beyond its 5% margin" in v.reasons

    def test_guardrail_significantly_worse_within_margin_still_ships(self):
        v = run([primary(), guard(0.05, (0.02, 0.08), True)])
        assert v.decision == "SHIP"
        assert "Refund rate +5.0% (95% CI +2.0% to +8.0%): significantly worse, but within its 5% margin" in v.reasons

    def test_relative_margin_boundary_is_strict(self):
        at = guard(0.08, (0.05, 0.11), True)                    # CI bound exactly at the margin: not harmed
        beyond = guard(0.08, (0.05 + 1e-9, 0.11), True)
        assert not guardrail_harmed(at)
        assert guardrail_harmed(beyond)
        assert run([primary(), at]).decision == "SHIP"
        assert run([primary(), beyond]).decision == "ROLLBACK"

    def test_relative_margin_boundary_higher_is_better_guardrail(self):
        at = guard(-0.08, (-0.11, -0.05), True, hib=True, label="Buyer rate")
        beyond = guard(-0.08, (-0.11, -0.05 - 1e-9), True, hib=True, label="Buyer rate")
        assert not guardrail_harmed(at)
        assert guardrail_harmed(beyond)
        assert run([primary(), beyond]).decision == "ROLLBACK"

    def test_zero_margin_any_significant_harm_rolls_back(self):
        v = run([primary(), guard(0.03, (0.005, 0.055), True, margin=0.0)])
        assert v.decision == "ROLLBACK"
        assert "guardrail harmed beyond its 0% margin" in text(v)

    def test_absolute_margin_uses_the_absolute_ci_in_points(self):
        # absolute margin 0.2 pt on a proportion; the relative CI would be far beyond it either way
        at = guard(0.09, (0.05, 0.14), True, margin=0.002, relative=False, abs_effect=0.0045, abs_ci=(0.002, 0.007))
        beyond = guard(0.09, (0.05, 0.14), True, margin=0.002, relative=False, abs_effect=0.0045,
                       abs_ci=(0.0021, 0.007))
        assert not guardrail_harmed(at)
        assert guardrail_harmed(beyond)
        v = run([primary(), at])
        assert v.decision == "SHIP"
        assert "significantly worse, but within its 0.2 pt margin" in text(v)
        v = run([primary(), beyond])
        assert v.decision == "ROLLBACK"
        assert "guardrail harmed beyond its 0.2 pt margin" in text(v)

    def test_absolute_margin_on_a_mean_metric_prints_units(self):
        g = guard(0.2, (0.1, 0.3), True, margin=0.5, relative=False, proportion=False, abs_effect=1.0,
                  abs_ci=(0.6, 1.4), label="Latency ms")
        v = run([primary(), g])
        assert v.decision == "ROLLBACK"
        assert "guardrail harmed beyond its 0.5 margin" in text(v)

    def test_guardrail_ci_beyond_margin_but_not_significant_after_adjustment_is_not_harm(self):
        g = guard(0.10, (0.06, 0.14), False)
        assert not guardrail_harmed(g)
        assert run([primary(), g]).decision == "SHIP"

    def test_flat_guardrail_whose_ci_reaches_past_the_margin_is_not_called_unchanged(self):
        at = guard(0.01, (-0.03, 0.05), False)        # worst bound exactly at the margin: ruled out
        past = guard(0.01, (-0.05, 0.07), False)
        assert "Refund rate unchanged within its 5% margin (+1.0%, 95% CI -3.0% to +5.0%)" in run([primary(), at]).reasons
        v = run([primary(), past])
        assert v.decision == "SHIP"   # not significant: not harm, but the reader is told it is not ruled out
        assert ("Refund rate not significantly changed (+1.0%, 95% CI -5.0% to +7.0%); harm beyond its 5% margin "
                "not yet ruled out") in v.reasons
        flat = primary(rel=0.004, ci=(-0.011, 0.019), sig=False, extra=0)
        assert "harm beyond its 5% margin not yet ruled out" in text(run([flat, past]))   # listed under no-effect too

    def test_improved_guardrail_is_not_called_unchanged(self):
        v = run([primary(), guard(-0.10, (-0.15, -0.05), True)])
        assert v.decision == "SHIP"
        assert "Refund rate -10.0% (95% CI -15.0% to -5.0%): significantly better (guardrail, 5% margin)" in v.reasons


# --------------------------------------------------------------------------- segments (bias)

class TestSegmentHarm:
    def test_block_policy_rolls_back(self):
        policy = Policy(min_days=7, min_units_per_variant=1000, segment_harm="block")
        v = run([primary()], [SEGMENT_DE], policy=policy)
        assert v.decision == "ROLLBACK"
        assert v.reasons[0] == "Roll back v2: a segment is significantly harmed (policy: block)"
        assert f"Segment harmed: {SEGMENT_DE.detail}" in v.reasons

    def test_warn_policy_ships_with_the_warning_in_reasons(self):
        v = run([primary()], [SEGMENT_DE])
        assert v.decision == "SHIP" and v.ship_variant == "v2"
        assert f"Segment harmed: {SEGMENT_DE.detail}" in v.reasons
        assert sum(SEGMENT_DE.detail in r for r in v.reasons) == 1   # not repeated as a generic warning

    def test_segment_flag_of_another_arm_does_not_block_this_one(self):
        policy = Policy(min_days=7, min_units_per_variant=1000, segment_harm="block")
        other = Flag("segment_harm", "warn", "country=DE harmed for v3", variant="v3")
        v = run([primary(variant="v2"), primary(variant="v3", rel=0.01, ci=(-0.01, 0.03), sig=False)], [other],
                units=UNITS3, policy=policy)
        assert v.decision == "SHIP" and v.ship_variant == "v2"
        assert "Not shipped: v3 (harmful: roll it back)" in v.reasons

    def test_segment_flag_without_variant_applies_to_every_arm(self):
        policy = Policy(min_days=7, min_units_per_variant=1000, segment_harm="block")
        flag = Flag("segment_harm", "warn", "platform=web harmed")
        v = run([primary(variant="v2"), primary(variant="v3")], [flag], units=UNITS3, policy=policy)
        assert v.decision == "ROLLBACK"
        assert v.reasons[0].startswith("Roll back v2, v3:")


# --------------------------------------------------------------------------- several treatment arms

class TestMultiArm:
    def test_one_arm_ships_other_harmful(self):
        v = run([primary(variant="v2"), primary(variant="v3", rel=-0.05, ci=(-0.08, -0.02))], units=UNITS3)
        assert v.decision == "SHIP" and v.ship_variant == "v2"
        assert "v2: Spend per user +3.1% (95% CI +1.2% to +5.0%), significantly better" in v.reasons
        assert "Not shipped: v3 (harmful: roll it back)" in v.reasons
        assert v.per_variant == {"v2": "SHIP", "v3": "ROLLBACK"}

    def test_all_arms_harmful_rolls_back_naming_them(self):
        v = run([primary(variant="v2", rel=-0.03, ci=(-0.05, -0.01)),
                 primary(variant="v3", rel=-0.05, ci=(-0.08, -0.02))], units=UNITS3)
        assert v.decision == "ROLLBACK"
        assert v.reasons[0] == "Roll back v2, v3: a primary metric or guardrail got significantly worse"
        assert "v2: Spend per user -3.0% (95% CI -5.0% to -1.0%), significantly worse" in v.reasons
        assert "v3: Spend per user -5.0% (95% CI -8.0% to -2.0%), significantly worse" in v.reasons

    def test_only_harmful_arms_are_named(self):
        v = run([primary(variant="v2", rel=0.0, ci=(-0.02, 0.02), sig=False),
                 primary(variant="v3", rel=-0.05, ci=(-0.08, -0.02))], units=UNITS3)
        assert v.decision == "ROLLBACK"
        assert v.reasons[0].startswith("Roll back v3:")

    def test_best_of_two_shippable_arms(self):
        v = run([primary(variant="v2", rel=0.03, ci=(0.01, 0.05)),
                 primary(variant="v3", rel=0.05, ci=(0.03, 0.07))], units=UNITS3)
        assert v.decision == "SHIP" and v.ship_variant == "v3"
        assert "Not shipped: v2 (also significantly better, but by less)" in v.reasons

    def test_best_arm_when_lower_is_better(self):
        v = run([primary(variant="v2", rel=-0.03, ci=(-0.05, -0.01), hib=False),
                 primary(variant="v3", rel=-0.06, ci=(-0.08, -0.04), hib=False)], units=UNITS3)
        assert v.ship_variant == "v3"

    def test_best_arm_is_judged_by_its_weakest_primary(self):
        v = run([primary(variant="v2", rel=0.10, ci=(0.05, 0.15)),
                 primary(variant="v2", rel=0.01, ci=(-0.01, 0.03), sig=False, metric="buyer_rate", label="Buyer rate"),
                 primary(variant="v3", rel=0.04, ci=(0.02, 0.06)),
                 primary(variant="v3", rel=0.04, ci=(0.02, 0.06), metric="buyer_rate", label="Buyer rate")],
                units=UNITS3)
        assert v.ship_variant == "v3"

    def test_a_winner_too_early_next_to_a_harmful_arm_rolls_back(self):
        v = run([primary(variant="v2"), primary(variant="v3", rel=-0.05, ci=(-0.08, -0.02))], days=3.0,
                units=UNITS3)
        assert v.decision == "ROLLBACK"
        assert v.reasons[0].startswith("Roll back v3:")

    def test_multi_arm_no_effect_names_each_arm(self):
        v = run([primary(variant="v2", rel=0.002, ci=(-0.01, 0.014), sig=False, extra=0),
                 primary(variant="v3", rel=-0.004, ci=(-0.016, 0.008), sig=False, extra=0)], units=UNITS3)
        assert v.decision == "NO_DETECTABLE_EFFECT"
        assert "Spend per user (v2): effects outside -1.0% to +1.4% ruled out" in v.reasons
        assert "Spend per user (v3): effects outside -1.6% to +0.8% ruled out" in v.reasons


# --------------------------------------------------------------------------- NO_DETECTABLE_EFFECT vs KEEP_RUNNING

class TestNoEffectOrKeepRunning:
    FLAT = dict(rel=0.004, ci=(-0.011, 0.019), sig=False)

    def test_no_detectable_effect_states_the_ruled_out_range(self):
        v = run([primary(extra=0, **self.FLAT), guard(0.01, (-0.03, 0.04), False)])
        assert v.decision == "NO_DETECTABLE_EFFECT" and v.ship_variant is None
        assert v.reasons[0] == "No detectable effect on the primary metric with the planned sample"
        assert "Spend per user: effects outside -1.1% to +1.9% ruled out" in v.reasons
        assert "Refund rate unchanged within its 5% margin (+1.0%, 95% CI -3.0% to +4.0%)" in v.reasons
        assert v.per_variant == {"v2": "NONE"}

    def test_unknown_power_counts_as_powered(self):
        assert run([primary(extra=None, **self.FLAT)]).decision == "NO_DETECTABLE_EFFECT"

    def test_extra_units_needed_boundary(self):
        assert run([primary(extra=0.0, **self.FLAT)]).decision == "NO_DETECTABLE_EFFECT"
        v = run([primary(extra=1.0, **self.FLAT)])
        assert v.decision == "KEEP_RUNNING"
        assert v.reasons[0] == ("Keep running: Needs about 1 more units per variant for the power to detect "
                                "the target effect")

    def test_keep_running_says_how_many_units_and_days(self):
        policy = Policy(min_days=7, min_units_per_variant=1000, units_per_day=500)
        v = run([primary(extra=2500, **self.FLAT)], policy=policy)
        assert v.decision == "KEEP_RUNNING"
        assert v.reasons[0] == ("Keep running: Needs about 2,500 more units per variant for the power to detect "
                                "the target effect (~5 more day(s) at the recent enrollment rate)")
        assert "Spend per user +0.4% (95% CI -1.1% to +1.9%), not significant" in v.reasons

    def test_power_uses_the_hungriest_primary(self):
        v = run([primary(extra=300, **self.FLAT),
                 primary(extra=1200.2, metric="buyer_rate", label="Buyer rate", **self.FLAT)])
        assert "about 1,201 more units per variant" in v.reasons[0]

    def test_powered_but_too_early_keeps_running(self):
        v = run([primary(extra=0, **self.FLAT)], days=4.0)
        assert v.decision == "KEEP_RUNNING"
        assert v.reasons[0] == "Keep running: Needs 3 more day(s) to reach the 7-day minimum"

    def test_powered_but_too_few_units_keeps_running(self):
        v = run([primary(extra=0, **self.FLAT)], units={"v1": 2000, "v2": 900})
        assert v.decision == "KEEP_RUNNING"
        assert v.reasons[0] == "Keep running: Needs 100 more units in the smallest arm"

    def test_max_days_reached_ends_the_test_even_when_underpowered(self):
        policy = Policy(min_days=7, min_units_per_variant=1000, max_days=28)
        assert run([primary(extra=5000, **self.FLAT)], days=28.0, policy=policy).decision == "NO_DETECTABLE_EFFECT"
        assert run([primary(extra=5000, **self.FLAT)], days=28 - 1e-6, policy=policy).decision == "KEEP_RUNNING"

    def test_significant_guardrail_within_margin_is_still_no_effect(self):
        v = run([primary(extra=0, **self.FLAT), guard(0.03, (0.01, 0.05), True)])
        assert v.decision == "NO_DETECTABLE_EFFECT"
        assert "Refund rate +3.0% (95% CI +1.0% to +5.0%): significantly worse, but within its 5% margin" in v.reasons

    def test_warnings_are_listed_last(self):
        v = run([primary(extra=0, **self.FLAT)], [Flag("late_data", "warn", "3% late events")])
        assert v.reasons[-1] == "Warning: 3% late events"


def test_guardrail_without_margin_is_simply_not_significantly_changed():
    from abproxy.verdict import Outcome, Policy, decide

    primary = Outcome("spend", "Spend", "primary", "t", 1.0, (0.5, 1.5), 0.05, (0.02, 0.08), True)
    guard = Outcome("buyers", "Buyers", "guardrail", "t", -0.001, (-0.003, 0.001), -0.009, (-0.019, 0.002),
                    False, True, 0.0, True, True)
    reasons = decide([primary, guard], [], 14, {"c": 5000, "t": 5000}, Policy(), "c").reasons
    line = next(r for r in reasons if r.startswith("Buyers"))
    assert line == "Buyers not significantly changed (-0.9%, 95% CI -1.9% to +0.2%)"
