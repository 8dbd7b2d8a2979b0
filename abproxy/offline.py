"""Offline vs online: each model version's offline metrics (from its registry lineage) beside its
online effects, and, across past experiments, whether an offline metric predicted the online lift.

For every treatment arm with registry lineage, x = its offline metric minus the control's (both from
the training runs), y = the relative lift of the experiment's first primary metric in its latest
successful run; Spearman's ρ over arms, with its interval and n (below MIN_EXPERIMENTS: not enough
experiments yet). Rolled-back and failed models count like shipped ones.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


from .stats.rank import rank_correlation

MIN_EXPERIMENTS = 5
NOT_ENOUGH = "not enough experiments yet"


def registry_fields(lin: dict[str, Any] | None) -> dict[str, Any]:
    """What a leaderboard row shows of a variant's registry lineage."""
    if not lin:
        return {"offline_metrics": {}, "registry": None}
    registry = None
    if lin.get("ref"):
        registry = {k: lin.get(k) for k in ("ref", "source", "alias", "previous_version", "model_run_id", "error")}
        registry["datasets"] = lin.get("datasets") or []
        registry["created_at"] = lin["created_at"].isoformat() if lin.get("created_at") else None
    return {"offline_metrics": dict(lin.get("metrics") or {}), "registry": registry}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _pairs(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    controls = {r["experiment"]: r for r in rows if r.get("is_control")}
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        base = controls.get(r["experiment"])
        primary = [e for e in r.get("effects") or [] if e.get("role") == "primary"]
        if r.get("is_control") or base is None or not primary or not _finite(primary[0].get("rel_effect")):
            continue
        online = primary[0]
        for name, value in (r.get("offline_metrics") or {}).items():
            before = (base.get("offline_metrics") or {}).get(name)
            if _finite(value) and _finite(before):
                out.setdefault((name, online["metric"]), []).append({
                    "experiment": r["experiment"], "variant": r["variant"], "model": r.get("model"),
                    "version": r.get("version"), "offline_delta": value - before, "online_lift": online["rel_effect"],
                    "outcome": r.get("variant_status") or r.get("verdict")})
    return out


def offline_vs_online(rows: Iterable[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """One entry per (offline metric, online primary metric) pair seen in at least one experiment."""
    out = []
    for (offline, online), points in sorted(_pairs(list(rows)).items()):
        entry: dict[str, Any] = {"offline_metric": offline, "online_metric": online, "n": len(points),
                                 "rho": None, "ci": [None, None], "p_value": None, "points": points}
        if len(points) < MIN_EXPERIMENTS:
            entry["status"] = NOT_ENOUGH
            entry["message"] = (f"{NOT_ENOUGH}: {len(points)} of the {MIN_EXPERIMENTS} experiments needed to "
                                f"say whether {offline} predicts {online}")
        else:
            rc = rank_correlation([p["offline_delta"] for p in points], [p["online_lift"] for p in points], alpha)
            entry.update(status=rc.warning or "ok", rho=rc.rho, ci=list(rc.ci), p_value=rc.p_value,
                         message=_message(offline, online, rc))
        out.append(entry)
    return out


def _message(offline: str, online: str, rc) -> str:
    if rc.warning == "constant":
        return f"{offline} did not vary across the {rc.n} experiments: no ranking to compare"
    level = f"{1 - rc.alpha:.0%}"
    return (f"Spearman ρ = {rc.rho:+.2f} ({level} CI {rc.ci[0]:+.2f} to {rc.ci[1]:+.2f}, n = {rc.n}) between "
            f"the change in {offline} and the online lift in {online}")
