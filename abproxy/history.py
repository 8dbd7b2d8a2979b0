"""The read layer over the analysis ledger: an experiment's run history (here), what changed between
two runs (`diff`) and the model leaderboard (`leaderboard`), as records. The CLI prints them
(`history_print`), the report and its HTML export show the same records.

Everything here reads the published report snapshot (never the warehouse, which the scheduler may
hold open for writing) through the ledger gateway, so these commands work while a job runs.
"""
from __future__ import annotations

from typing import Any

import duckdb

from . import ledger
from .diff import diff, resolve_run, run_diff  # noqa: F401  (the read layer's one import for the CLI)
from .errors import HistoryError
from .history_print import print_diff, print_history, print_models  # noqa: F401
from .leaderboard import models, models_on, models_report  # noqa: F401
from .ledger import loads
from .lineage import OUTCOMES, arm_outcome, outcome_rank, status_words  # noqa: F401
from .reading import MISSING, connect, effect_record, iso, known_experiments, num, tables  # noqa: F401

PRIMARY_KEYS = ("metric", "variant", "rel_effect", "rel_ci", "abs_effect", "p_value_adjusted", "significant")


def history(ws, key: str) -> list[dict[str, Any]]:
    """Every run of experiment `key`, oldest first, with its verdict and primary-metric effects."""
    con = connect(ws)
    try:
        known = known_experiments(con, ws)
        if key not in known:
            raise HistoryError(f"unknown experiment '{key}' (known: {', '.join(known) or 'none yet'})")
        return history_on(con, key)
    finally:
        con.close()


def history_on(con: duckdb.DuckDBPyConnection, key: str) -> list[dict[str, Any]]:
    """`history` on an open snapshot connection (the report's run history reads the same records)."""
    runs = ledger.runs_of(con, key)
    results = ledger.overall_results(con, [r["run_id"] for r in runs])
    return [_record(r, results.get(r["run_id"], [])) for r in runs]


def _record(r: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    primary = [effect_record(x) for x in results if x["role"] == "primary"]
    return {
        "run_id": r["run_id"], "experiment": r["experiment"], "job_id": r["job_id"],
        "started_at": iso(r["started_at"]), "finished_at": iso(r["finished_at"]), "as_of": iso(r["as_of"]),
        "status": r["status"], "error": r["error"], "decision": r["decision"], "ship_variant": r["ship_variant"],
        "verdict": r["decision"] or "FAILED", "verdict_words": status_words(r["decision"] or "FAILED"),
        "reasons": loads(r["reasons"], []),
        "primary": [{k: e[k] for k in PRIMARY_KEYS} for e in primary],
        "definition_hash": r["definition_hash"], "code_version": r["code_version"],
        "git_commit": r["git_commit"], "method": r["method"], "units": loads(r["units"], {}),
        "days_running": num(r["days_running"]),
    }


# --------------------------------------------------------------------------- latest verdict (gate)

def latest_verdict(ws, key: str) -> tuple[dict[str, Any] | None, list[str], dict[str, str],
                                          list[dict[str, Any]]] | None:
    """(latest run row or None, the variant names, arm status by variant, the run's health rows) of
    experiment `key`; None when the key is unknown."""
    con = connect(ws)
    try:
        if key not in known_experiments(con, ws):
            return None
        have = tables(con)
        run = ledger.latest_run(con, key)
        variants = _variant_names(con, ws, key, run, have)
        arms, health = {}, []
        if run is not None:
            arms = {v: lin["arm_status"] for v, lin in ledger.run_lineage(con, run["run_id"]).items()}
            health = ledger.run_health(con, run["run_id"])
    finally:
        con.close()
    return run, variants, arms, health


def _variant_names(con, ws, key: str, run: dict[str, Any] | None, tables: set[str]) -> list[str]:
    if run is not None:
        exp = (loads(run.get("definitions"), {}) or {}).get("experiment") or {}
        if exp.get("variants"):
            return list(exp["variants"])
    config = getattr(ws, "config", None)
    if config is not None and key in config.experiments:
        return list(config.experiments[key].variants)
    if "variants" in tables:
        return [r[0] for r in con.execute("SELECT variant FROM variants WHERE experiment = ?", [key]).fetchall()]
    return []
