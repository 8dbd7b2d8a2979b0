"""Cautions: warnings that make a SHIP verdict one to double-check before rolling out.

A caution is a harmed segment under policy `warn`, a fading lift (novelty, launch decay), a fragile
decision (it flips with capping, CUPED or the window), a data warning on a decision metric, or a
registry alias of an arm that moved to another model version since the previous run.
The deployment gate and registry promotion refuse a SHIP that carries one (unless told otherwise).

When the verdict itself carries `cautions` (recorded with the run), those are used; otherwise they
are derived from the run's health checks by the rules below — one place to switch.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

ALWAYS = {"segment_harm", "novelty", "launch_decay", "decision_robustness", "model_alias_moved"}
DATA = {"null_values", "event_missing", "event_volume", "duplicate_events", "late_data", "future_timestamps",
        "distribution_drift"}


def _get(item: Any, name: str) -> Any:
    if isinstance(item, Mapping):
        return item.get(name if name != "check" else ("check" if "check" in item else "check_name"))
    return getattr(item, name, None)


def from_checks(checks: Iterable[Any], decision_metrics: Iterable[str]) -> list[str]:
    """The details of the warning checks that count as cautions (checks as `Check` or ledger rows)."""
    metrics = set(decision_metrics)
    out = []
    for c in checks:
        name, status = _get(c, "check"), _get(c, "status")
        if status != "warn":
            continue
        if name in ALWAYS or (name in DATA and _get(c, "metric") in metrics):
            out.append(str(_get(c, "detail")))
    return list(dict.fromkeys(out))


def of_run(run: Any, decision_metrics: Iterable[str]) -> list[str]:
    """Cautions of an AnalysisRun: the verdict's own, else derived from its health checks."""
    own = getattr(run.verdict, "cautions", None) if run.verdict is not None else None
    if own is not None:
        return [str(c.get("detail", c)) if isinstance(c, Mapping) else str(c) for c in own]
    return from_checks(run.health, decision_metrics)
