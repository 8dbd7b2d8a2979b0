"""Pure decision rules: statistics + health → a rollout decision with plain-language reasons.

Order of precedence (first that applies wins):
  INVALID              a health check failed: the numbers cannot be trusted.
  SHIP                 some treatment has a primary metric significantly better, no primary worse, no
                       guardrail harmed beyond its margin, no harmed segment (policy 'block'), and
                       min_days / min_units_per_variant reached. The best such treatment is named.
  ROLLBACK             a treatment's primary metric is significantly worse, or a guardrail is
                       significantly worse beyond its margin, or (policy 'block') a segment is harmed.
  KEEP_RUNNING         not enough data yet (days, units, or power for the target effect).
  NO_DETECTABLE_EFFECT planned sample reached and nothing significant: effects beyond the CI are ruled out.
This module imports nothing from the project and does no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["SHIP", "ROLLBACK", "KEEP_RUNNING", "NO_DETECTABLE_EFFECT", "INVALID"]


@dataclass(frozen=True)
class Outcome:
    """One metric × treatment comparison, as the verdict needs it."""

    metric: str
    label: str
    role: str                      # primary | guardrail | secondary
    variant: str
    abs_effect: float
    abs_ci: tuple[float, float]
    rel_effect: float
    rel_ci: tuple[float, float]
    significant: bool              # after multiple-testing adjustment
    higher_is_better: bool = True
    margin: float = 0.0            # guardrails: tolerated harm (relative fraction or absolute units)
    margin_relative: bool = True
    proportion: bool = False       # absolute effects print as percentage points
    extra_units_needed: float | None = None   # per variant, to reach the target MDE (power)


@dataclass(frozen=True)
class Flag:
    """A health check result that matters to the decision."""

    check: str
    status: str                    # ok | warn | fail
    detail: str
    segment: str | None = None
    metric: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Policy:
    alpha: float = 0.05
    min_days: float = 7
    min_units_per_variant: int = 1000
    max_days: float | None = None
    segment_harm: str = "warn"     # block | warn
    units_per_day: float | None = None   # per variant, recent enrollment rate, to turn units into days
    enrollment_stopped: str | None = None   # when no new unit arrived lately: the last enrollment day
    shipped: bool = False          # status 'shipped': a holdback monitors the model already rolled out


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    ship_variant: str | None
    reasons: tuple[str, ...]
    per_variant: dict[str, str] = field(default_factory=dict)
    cautions: tuple[str, ...] = ()   # warnings the decision carries, in the warnings' own words


def pct(x: float, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _has_lift(o: Outcome) -> bool:
    return all(math.isfinite(v) for v in (o.rel_effect, *o.rel_ci))


def _effect_text(o: Outcome, level: float, absolute: bool = False) -> str:
    """'Label +3.1% (95% CI +1.2% to +5.0%)'; absolute effects of proportions in percentage points.
    Without a lift interval (control mean not clearly away from 0) the absolute effect is shown."""
    if _has_lift(o) and not absolute:
        return f"{o.label} {pct(o.rel_effect)} ({level:.0%} CI {pct(o.rel_ci[0])} to {pct(o.rel_ci[1])})"
    if o.proportion:
        lo, hi = o.abs_ci
        return f"{o.label} {o.abs_effect * 100:+.2f} pt ({level:.0%} CI {lo * 100:+.2f} to {hi * 100:+.2f} pt)"
    return f"{o.label} {o.abs_effect:+.4g} ({level:.0%} CI {o.abs_ci[0]:+.4g} to {o.abs_ci[1]:+.4g})"


def better(o: Outcome) -> bool:
    return o.significant and (o.abs_effect > 0) == o.higher_is_better and o.abs_effect != 0


def worse(o: Outcome) -> bool:
    return o.significant and (o.abs_effect < 0) == o.higher_is_better and o.abs_effect != 0


def _harm_ci(o: Outcome) -> tuple[float, float]:
    """The CI bounds in the guardrail's margin units, signed so that positive means harm, sorted."""
    sign = -1 if o.higher_is_better else 1
    ci = o.rel_ci if o.margin_relative and _has_lift(o) else o.abs_ci
    lo, hi = sorted((sign * ci[0], sign * ci[1]))
    return lo, hi


def guardrail_harmed(o: Outcome) -> bool:
    """Significantly worse and the whole CI lies beyond the tolerated margin."""
    return worse(o) and _harm_ci(o)[0] > o.margin


def _margin_text(o: Outcome) -> str:
    if o.margin_relative and _has_lift(o):
        return f"{o.margin * 100:g}%"
    return f"{o.margin * 100:g} pt" if o.proportion else f"{o.margin:g}"


def _guardrail_reason(o: Outcome, level: float) -> str:
    text = _effect_text(o, level, absolute=not o.margin_relative)
    if guardrail_harmed(o):
        return f"{text}: guardrail harmed beyond its {_margin_text(o)} margin"
    if worse(o):
        return f"{text}: significantly worse, but within its {_margin_text(o)} margin"
    if better(o):
        return f"{text}: significantly better (guardrail, {_margin_text(o)} margin)"
    ci = "(" + text.removeprefix(o.label + " ").replace(" (", ", ", 1)
    if _harm_ci(o)[1] <= o.margin:
        return f"{o.label} unchanged within its {_margin_text(o)} margin {ci}"
    if o.margin == 0:
        return f"{o.label} not significantly changed {ci}"
    return f"{o.label} not significantly changed {ci}; harm beyond its {_margin_text(o)} margin not yet ruled out"


def _harmful(arm: list[Outcome]) -> bool:
    """A primary metric significantly worse, or a guardrail harmed beyond its margin."""
    return (any(worse(o) for o in arm if o.role == "primary")
            or any(guardrail_harmed(o) for o in arm if o.role == "guardrail"))


def _arm_status(arm: list[Outcome], harmed_segments: list[Flag], policy: Policy) -> str:
    if _harmful(arm) or (policy.segment_harm == "block" and harmed_segments):
        return "ROLLBACK"
    if any(better(o) for o in arm if o.role == "primary"):
        return "SHIP"
    return "NONE"


def _progress(days: float, units: dict[str, int], policy: Policy) -> tuple[bool, str]:
    fewest = min(units.values()) if units else 0
    enough = days >= policy.min_days and fewest >= policy.min_units_per_variant
    text = (f"ran {days:.1f} days (minimum {policy.min_days:g}); {fewest:,} units in the smallest arm "
            f"(minimum {policy.min_units_per_variant:,})")
    return enough, text


def _more_needed(primary: list[Outcome], days: float, units: dict[str, int], policy: Policy) -> str:
    fewest = min(units.values()) if units else 0
    parts = []
    if days < policy.min_days:
        parts.append(f"{math.ceil(policy.min_days - days):,} more day(s) to reach the {policy.min_days:g}-day minimum")
    if fewest < policy.min_units_per_variant:
        parts.append(f"{policy.min_units_per_variant - fewest:,} more units in the smallest arm")
    extra = max((o.extra_units_needed or 0) for o in primary) if primary else 0
    if extra > 0:
        text = f"about {math.ceil(extra):,} more units per variant for the power to detect the target effect"
        if policy.enrollment_stopped:
            text += (f", but enrollment has stopped (no new units since {policy.enrollment_stopped}), so the "
                     "target sample cannot be reached")
        elif policy.units_per_day:
            text += f" (~{math.ceil(extra / policy.units_per_day):,} more day(s) at the recent enrollment rate)"
        parts.append(text)
    elif policy.enrollment_stopped and parts:
        parts.append(f"enrollment has stopped (no new units since {policy.enrollment_stopped})")
    return "Needs " + "; ".join(parts) if parts else "Needs more data"


def _planned_reached(primary: list[Outcome], days: float, units: dict[str, int], policy: Policy) -> bool:
    enough, _ = _progress(days, units, policy)
    if policy.max_days is not None and days >= policy.max_days:
        return True
    powered = all((o.extra_units_needed or 0) <= 0 for o in primary)
    return enough and (powered or policy.enrollment_stopped is not None)


def decide(outcomes: list[Outcome], flags: list[Flag], days_running: float, units: dict[str, int],
           policy: Policy, control: str) -> Verdict:
    """The verdict for one experiment. `units` maps every variant (control included) to its units."""
    failed = [f for f in flags if f.status == "fail"]
    if failed:
        reasons = ["The numbers cannot be trusted: " + "; ".join(f.detail for f in failed)]
        reasons += [f"Warning: {f.detail}" for f in flags if f.status == "warn"]
        return Verdict("INVALID", None, tuple(reasons))

    case = _Case.of(outcomes, flags, days_running, units, policy)
    words = _SHIPPED_WORDS if policy.shipped else _WORDS
    primary_all = [o for o in outcomes if o.role == "primary"]
    shippable = [v for v in case.arms if case.status[v] == "SHIP"]
    if shippable and case.enough:
        return _ship(case, shippable, primary_all, words)

    bad = [v for v in case.arms if case.status[v] == "ROLLBACK"]
    if bad:
        cause = ("a primary metric or guardrail got significantly worse"
                 if any(_harmful([o for o in outcomes if o.variant == v]) for v in bad)
                 else "a segment is significantly harmed (policy: block)")
        return case.close("ROLLBACK", [words["rollback"].format(v=", ".join(bad), cause=cause)] + case.reasons_of(bad))

    if shippable:  # significant, but minimum duration or sample not reached
        more = _more_needed(primary_all, days_running, units, policy)
        return case.close("KEEP_RUNNING", [words["early"] + more] + case.reasons_of(shippable))

    if _planned_reached(primary_all, days_running, units, policy):
        return _no_detectable_effect(case, primary_all, policy, words)

    return case.close("KEEP_RUNNING", [words["keep"] + _more_needed(primary_all, days_running, units, policy)]
                      + case.reasons_of(case.arms))


@dataclass(frozen=True)
class _Case:
    """What the branches of `decide` share: the treatment arms, their statuses, the progress line."""

    outcomes: list[Outcome]
    flags: list[Flag]
    level: float
    arms: list[str]
    harmed: dict[str, list[Flag]]
    status: dict[str, str]
    enough: bool
    progress: str
    cautions: tuple

    @classmethod
    def of(cls, outcomes: list[Outcome], flags: list[Flag], days_running: float, units: dict[str, int],
           policy: Policy) -> "_Case":
        arms = sorted({o.variant for o in outcomes})
        harmed = {v: [f for f in flags if f.check == "segment_harm" and f.status == "warn" and f.variant in (v, None)] for v in arms}
        status = {v: _arm_status([o for o in outcomes if o.variant == v], harmed[v], policy) for v in arms}
        enough, progress = _progress(days_running, units, policy)
        cautions = cautions_of(flags, {o.metric for o in outcomes if o.role in ("primary", "guardrail")})
        return cls(outcomes, flags, 1 - policy.alpha, arms, harmed, status, enough, progress, tuple(cautions))

    @property
    def multi(self) -> bool:
        return len(self.arms) > 1

    def arm_reasons(self, v: str) -> list[str]:
        arm = [o for o in self.outcomes if o.variant == v]
        prefix = f"{v}: " if self.multi else ""
        lines = []
        for o in (o for o in arm if o.role == "primary"):
            word = "significantly better" if better(o) else "significantly worse" if worse(o) else "not significant"
            lines.append(f"{prefix}{_effect_text(o, self.level)}, {word}")
        lines += [prefix + _guardrail_reason(o, self.level) for o in arm if o.role == "guardrail"]
        lines += [f"{prefix}Segment harmed: {f.detail}" for f in self.harmed[v]]
        return lines

    def reasons_of(self, variants: list[str]) -> list[str]:
        return [line for v in variants for line in self.arm_reasons(v)]

    def close(self, decision: Decision, lines: list[str], ship: str | None = None) -> Verdict:
        """Every verdict ends with the progress line and the warnings."""
        return Verdict(decision, ship, tuple(lines + [self.progress.capitalize()] + _warnings(self.flags)),
                       self.status, self.cautions)


def _ship(case: _Case, shippable: list[str], primary_all: list[Outcome], words: dict[str, str]) -> Verdict:
    """SHIP the shippable arm whose worst primary effect is the best; name the others not shipped."""
    best = max(shippable, key=lambda v: min((o.rel_effect if o.higher_is_better else -o.rel_effect)
                                            for o in primary_all if o.variant == v))
    head = words["ship"].format(v=best, lift=_lift_words(primary_all, best))
    return case.close("SHIP", [head] + case.arm_reasons(best)
                      + [f"Not shipped: {v} ({_NOT_SHIPPED[case.status[v]]})" for v in case.arms if v != best], best)


def _no_detectable_effect(case: _Case, primary_all: list[Outcome], policy: Policy,
                          words: dict[str, str]) -> Verdict:
    """The planned sample was reached and nothing is significant: say which effects are ruled out."""
    ruled = [f"{o.label}{' (' + o.variant + ')' if case.multi else ''}: effects outside {_ci_text(o)} ruled out"
             for o in primary_all]
    head = words["none"]
    if policy.enrollment_stopped and any((o.extra_units_needed or 0) > 0 for o in primary_all):
        head += (f" (enrollment stopped: no new units since {policy.enrollment_stopped}, so the target "
                 "sample cannot be reached)")
    guardrails = [r for r in case.reasons_of(case.arms) if "unchanged" in r or "margin" in r]
    return case.close("NO_DETECTABLE_EFFECT", [head] + ruled + guardrails)


_WORDS = {
    "ship": "Ship {v}: the primary metric improved and no guardrail was harmed",
    "rollback": "Roll back {v}: {cause}",
    "early": "Promising but too early to ship: ",
    "none": "No detectable effect on the primary metric with the planned sample",
    "keep": "Keep running: ",
}
# status 'shipped': the treatment is already rolled out and a holdback keeps the old model
_SHIPPED_WORDS = {
    "ship": "Keep the shipped model {v}: it still beats the holdback{lift}",
    "rollback": "Revert the shipped model {v}: {cause} against the holdback",
    "early": "The shipped model looks better than the holdback, but it is too early to confirm: ",
    "none": "The shipped model no longer shows a detectable effect over the holdback: the lift has faded",
    "keep": "Keep monitoring the shipped model against the holdback: ",
}
_NOT_SHIPPED = {"SHIP": "also significantly better, but by less", "ROLLBACK": "harmful: roll it back",
                "NONE": "no significant improvement"}
# warnings that qualify a decision whichever metric they name (bias, drift, fragility)
_DECISION_CAUTIONS = {"segment_harm", "novelty", "launch_decay", "decision_robustness", "verdict_stability",
                      "distribution_drift", "segment_heterogeneity"}


def _lift_words(primary: list[Outcome], v: str) -> str:
    arm = [o for o in primary if o.variant == v]
    if not arm:
        return ""
    o = arm[0]
    return f" by {pct(o.rel_effect)} ({o.label})" if _has_lift(o) else f" ({o.label})"


def _ci_text(o: Outcome) -> str:
    if _has_lift(o):
        return f"{pct(o.rel_ci[0])} to {pct(o.rel_ci[1])}"
    if o.proportion:
        return f"{o.abs_ci[0] * 100:+.2f} pt to {o.abs_ci[1] * 100:+.2f} pt"
    return f"{o.abs_ci[0]:+.4g} to {o.abs_ci[1]:+.4g}"


def cautions_of(flags: list[Flag], decisive: set[str]) -> list[str]:
    """Warnings a decision carries: bias, drift and fragility warnings, and data warnings on a
    decision metric (`decisive`: primary and guardrail metrics); a warning about a secondary metric
    only is not one. The report derives the same list from the recorded health checks."""
    out = []
    for f in flags:
        if f.status != "warn":
            continue
        if f.check in _DECISION_CAUTIONS or f.metric is None or f.metric in decisive:
            prefix = "Segment harmed: " if f.check == "segment_harm" else ""
            out.append(prefix + f.detail)
    return list(dict.fromkeys(out))


def _warnings(flags: list[Flag]) -> list[str]:
    return [f"Warning: {f.detail}" for f in flags if f.status == "warn" and f.check != "segment_harm"]
