"""The deployment gate: `abproxy gate KEY` turns the latest verdict into an exit code a CI/CD step or
a pipeline component can act on. It reads the published snapshot only (never the warehouse).

  0  the latest verdict lets the variant roll out: SHIP for it, without cautions (unless allowed)
  3  KEEP_RUNNING (also a SHIP that carries cautions: hold for a review)
  4  ROLLBACK or NO_DETECTABLE_EFFECT (or SHIP of another variant)
  5  INVALID, a failed analysis, no verdict yet, or a verdict older than --max-age
  2  configuration error: unknown experiment or variant, bad option
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from . import cautions as caution_rules
from .errors import UsageError
from .ledger import loads

PASS, HOLD, STOP, INVALID, USAGE = 0, 3, 4, 5, 2
OUTCOME = {PASS: "pass", HOLD: "hold", STOP: "stop", INVALID: "invalid", USAGE: "error"}


class GateError(UsageError):
    """The gate was asked about something that does not exist (exit 2)."""


@dataclass(frozen=True)
class GateResult:
    exit_code: int
    experiment: str
    variant: str | None
    decision: str | None
    ship_variant: str | None
    arm_status: str | None
    run_id: str | None
    decided_at: str | None
    age_hours: float | None
    max_age_hours: float | None
    stale: bool
    message: str
    reasons: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    allow_cautions: bool = False

    @property
    def outcome(self) -> str:
        return OUTCOME[self.exit_code]

    def record(self) -> dict[str, Any]:
        return {"outcome": self.outcome, **asdict(self)}


def _decided_at(run: dict[str, Any]) -> dt.datetime:
    return run.get("finished_at") or run["started_at"]


def evaluate(key: str, run: dict[str, Any] | None, variant: str | None, arm_status: str | None,
             cautions: list[str], now: dt.datetime, max_age_hours: float | None = None,
             allow_cautions: bool = False) -> GateResult:
    """The gate's decision on the latest run of experiment `key` (a `runs` row, or None)."""
    target = variant or (run or {}).get("ship_variant")

    def result(code: int, message: str, **extra: Any) -> GateResult:
        base = dict(experiment=key, variant=target, decision=None, ship_variant=None, arm_status=arm_status,
                    run_id=None, decided_at=None, age_hours=None, max_age_hours=max_age_hours, stale=False,
                    reasons=[], cautions=cautions, allow_cautions=allow_cautions)
        return GateResult(code, message=message, **{**base, **extra})

    if run is None:
        return result(INVALID, f"{key}: no verdict recorded yet; run 'abproxy run' first")
    decided = _decided_at(run)
    age = max(0.0, (now - decided).total_seconds() / 3600)
    info = dict(decision=run.get("decision"), ship_variant=run.get("ship_variant"), run_id=run["run_id"],
                decided_at=decided.isoformat() + "Z", age_hours=round(age, 3), reasons=loads(run.get("reasons"), []))
    if max_age_hours is not None and age > max_age_hours:
        return result(INVALID, f"{key}: the latest verdict is {age:.1f} h old (more than --max-age "
                               f"{max_age_hours:g} h); is the scheduler running?", stale=True, **info)
    if run.get("status") != "ok" or not run.get("decision"):
        return result(INVALID, f"{key}: the latest analysis failed: {run.get('error') or 'no verdict'}", **info)
    decision, ship = run["decision"], run.get("ship_variant")
    if decision == "INVALID":
        return result(INVALID, f"{key}: INVALID, the numbers cannot be trusted", **info)
    if decision == "KEEP_RUNNING":
        return result(HOLD, f"{key}: KEEP_RUNNING, not enough data yet", **info)
    if decision in ("ROLLBACK", "NO_DETECTABLE_EFFECT"):
        return result(STOP, f"{key}: {decision}", **info)
    if target != ship:
        return result(STOP, f"{key}: SHIP of {ship}, not of {target}", **info)
    if cautions and not allow_cautions:
        return result(HOLD, f"{key}: SHIP {ship} with {len(cautions)} caution(s); review them, or pass "
                            "--allow-cautions", **info)
    return result(PASS, f"{key}: SHIP {ship}" + (" (cautions allowed)" if cautions else ""), **info)


def decision_metrics(definitions: dict[str, Any]) -> list[str]:
    """Primary and guardrail metric keys of an experiment definition stored with a run."""
    exp = (definitions or {}).get("experiment") or {}
    guards = [g["metric"] if isinstance(g, dict) else g for g in exp.get("guardrails") or []]
    return list(exp.get("primary") or []) + guards


def run_cautions(run: dict[str, Any], health: list[dict[str, Any]]) -> list[str]:
    """The run's recorded cautions, else those derived from its health checks (cautions.py)."""
    recorded = loads(run.get("cautions"), None)
    if recorded is not None:
        return [str(c.get("detail", c)) if isinstance(c, dict) else str(c) for c in recorded]
    return caution_rules.from_checks(health, decision_metrics(loads(run.get("definitions"), {})))


def gate(ws, key: str, variant: str | None = None, max_age_hours: float | None = None,
         allow_cautions: bool = False, now: dt.datetime | None = None) -> GateResult:
    """Read the snapshot and evaluate the gate (GateError for an unknown experiment or variant)."""
    from .history import latest_verdict

    if max_age_hours is not None and max_age_hours <= 0:
        raise GateError(f"--max-age {max_age_hours:g}: give a positive number of hours")
    found = latest_verdict(ws, key)
    if found is None:
        raise GateError(f"unknown experiment '{key}'; see 'abproxy history' or abproxy.yaml for experiment keys")
    run, variants, arms, health = found
    if variant is not None and variants and variant not in variants:
        raise GateError(f"experiment '{key}' has no variant '{variant}' (variants: {', '.join(variants)})")
    target = variant or (run or {}).get("ship_variant")
    arm = arms.get(target) if target else None
    cautions = run_cautions(run, health) if run else []
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return evaluate(key, run, variant, arm, cautions, now, max_age_hours, allow_cautions)


def print_gate(result: GateResult) -> None:
    print(f"{result.outcome.upper()} (exit {result.exit_code}): {result.message}")
    if result.run_id:
        print(f"  run {result.run_id}, decided {result.decided_at} ({result.age_hours:.1f} h ago)")
    for reason in result.reasons:
        print(f"  - {reason}")
    for caution in result.cautions:
        print(f"  caution: {caution}")
