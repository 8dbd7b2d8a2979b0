"""The model leaderboard: every model version of every experiment with its latest verdict, the arm's
status and outcome (the one vocabulary of `lineage`), and its overall effects against the control.
`abproxy models`, the report's Models page and its offline-vs-online table read these records."""
from __future__ import annotations

import math
import re
from typing import Any

import duckdb

from . import ledger
from .ledger import loads
from .lineage import arm_outcome, arm_status_of_run, outcome_rank, status_words
from .offline import offline_vs_online, registry_fields
from .reading import connect, effect_record, iso, rows, tables


def _version_key(version: str | None) -> tuple:
    """Natural order: 1.10.0 after 1.9.0; numbers before text within a position."""
    parts = re.split(r"(\d+)", version or "")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _lineage(con: duckdb.DuckDBPyConnection, have: set[str]) -> list[dict[str, Any]]:
    """Variant lineage rows: the snapshot's `variants` table, plus experiments that only survive in
    the ledger (removed from abproxy.yaml), taken from their latest run's stored definitions."""
    found: list[dict[str, Any]] = []
    experiments: dict[str, dict[str, Any]] = {}
    if "experiments" in have:
        experiments = {r["experiment"]: r for r in rows(con, "SELECT experiment, name, status, control "
                                                              "FROM experiments")}
    if "variants" in have:
        for r in rows(con, "SELECT experiment, variant, is_control, model, version, params, training_data, link "
                            "FROM variants"):
            e = experiments.get(r["experiment"], {})
            found.append({**r, "params": loads(r["params"], {}), "experiment_name": e.get("name") or r["experiment"],
                           "experiment_status": e.get("status"), "source": "config"})
    seen = {r["experiment"] for r in found}
    for run in ledger.latest_runs(con, "experiment, definitions").values():
        if run["experiment"] in seen:
            continue
        exp = (loads(run["definitions"], {}) or {}).get("experiment") or {}
        for name, v in (exp.get("variants") or {}).items():
            found.append({"experiment": run["experiment"], "variant": name, "is_control": name == exp.get("control"),
                           "model": v.get("model", ""), "version": v.get("version", ""), "params": v.get("params") or {},
                           "training_data": v.get("training_data", ""), "link": v.get("link", ""),
                           "experiment_name": exp.get("name") or run["experiment"],
                           "experiment_status": exp.get("status"), "source": "ledger"})
    return found


def models(ws) -> list[dict[str, Any]]:
    """Every (model, version) of every experiment — running, shipped, rolled back or failed — with
    the latest run's verdict and, for treatments, its overall effect on each metric against the control."""
    con = connect(ws)
    try:
        return models_on(con)
    finally:
        con.close()


def models_on(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """`models` on an open snapshot connection (the report's Models page reads the same records)."""
    lineage = _lineage(con, tables(con))
    latest = ledger.latest_runs(con)
    latest_ok = ledger.latest_runs(con, "run_id, experiment, started_at", "status = 'ok'")
    results = ledger.overall_results(con, [r["run_id"] for r in latest_ok.values()])
    recorded = ledger.latest_lineage(con)
    out = [_row(v, latest.get(v["experiment"]), latest_ok.get(v["experiment"]), results,
                recorded.get((v["experiment"], v["variant"]))) for v in lineage]
    out.sort(key=lambda r: (outcome_rank(r["variant_status"]), -_lift_of(r), (r["model"] or "").lower(),
                            _version_key(r["version"]), r["experiment"], r["variant"]))
    return out


EFFECT_KEYS = ("metric", "role", "rel_effect", "rel_ci", "abs_effect", "p_value_adjusted", "significant", "control")


def _row(v: dict[str, Any], run: dict[str, Any] | None, ok: dict[str, Any] | None,
         results: dict[str, list[dict[str, Any]]], lin: dict[str, Any] | None) -> dict[str, Any]:
    """One arm's leaderboard record: its model (as the registry resolved it, when it did), the latest
    run's verdict, the arm's status and outcome, and its effects in the latest ok run."""
    key = v["experiment"]
    if lin and lin.get("model"):      # resolved from a registry: the version the run actually saw
        v = {**v, "model": lin["model"], "version": lin.get("version") or v["version"],
             "params": {**(lin.get("params") or {}), **(v["params"] or {})}}
    treatment = not v["is_control"]
    effects = [{k: e[k] for k in EFFECT_KEYS} for e in (effect_record(r) for r in results.get(ok["run_id"], []))
               if e["variant"] == v["variant"]] if treatment and ok else []
    decision = run["decision"] if run else None
    ship = run["ship_variant"] if run else None
    status = _arm(v, run, lin)
    return {
        "model": v["model"], "version": v["version"], "experiment": key,
        "experiment_name": v["experiment_name"], "experiment_status": v["experiment_status"],
        "variant": v["variant"], "role": "treatment" if treatment else "baseline",
        "is_control": bool(v["is_control"]), "params": v["params"], "training_data": v["training_data"],
        "link": v["link"], "source": v["source"],
        "run_id": run["run_id"] if run else None, "run_at": iso(run["started_at"]) if run else None,
        "as_of": iso(run["as_of"]) if run else None, "run_status": run["status"] if run else None,
        "error": run["error"] if run else None,
        "decision": decision, "ship_variant": ship,
        "status": status, "status_words": status_words(status),
        "variant_status": arm_outcome(v["variant"], bool(v["is_control"]), v.get("experiment_status"), run),
        "shipped": bool(treatment and decision == "SHIP" and ship == v["variant"]
                        and v["experiment_status"] == "shipped"),
        "effects_run_id": ok["run_id"] if ok and treatment else None,
        "effects": effects,
        **registry_fields(lin),
    }


def _arm(v: dict[str, Any], run: dict[str, Any] | None, lin: dict[str, Any] | None) -> str:
    """The arm's status as its latest run recorded it (lineage.arm_status, with the verdict's own word
    per arm), else by the same rule from the run row."""
    if run is not None and lin and lin.get("run_id") == run["run_id"] and lin.get("arm_status"):
        return lin["arm_status"]
    return arm_status_of_run(v["variant"], bool(v["is_control"]), run)


def _lift_of(row: dict[str, Any]) -> float:
    """The first primary lift in the metric's good direction (−inf when there is none)."""
    for e in row["effects"]:
        value = e.get("rel_effect")
        if e.get("role") == "primary" and value is not None and math.isfinite(value):
            return value if e.get("higher_is_better", True) else -value
    return -math.inf



def models_report(ws) -> dict[str, Any]:
    """`abproxy models --json`: the leaderboard rows and the offline-vs-online correlations."""
    rows = models(ws)
    return {"models": rows, "offline_vs_online": offline_vs_online(rows)}
