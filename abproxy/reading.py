"""Shared pieces of the read layer (`history`, `diff`, `leaderboard`): the snapshot connection, the
known experiments, one overall result as a record, and the small text pieces the CLI prints with.

The read layer reads the published report snapshot (never the warehouse, which the scheduler may hold
open for writing) through the ledger gateway, so its commands work while a job runs.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import duckdb

from . import format as fmt
from . import ledger
from .warehouse import open_snapshot

MISSING = "(absent)"
tables = ledger.tables
rows = ledger.rows


def connect(ws) -> duckdb.DuckDBPyConnection:
    return open_snapshot(ws.snapshot)


def iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else str(value)


def num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def known_experiments(con: duckdb.DuckDBPyConnection, ws=None) -> list[str]:
    keys = set(ledger.run_experiments(con))
    if "experiments" in tables(con):
        keys |= {r[0] for r in con.execute("SELECT experiment FROM experiments").fetchall()}
    if ws is not None and getattr(ws, "config", None) is not None:
        keys |= set(ws.config.experiments)
    return sorted(keys)


def effect_record(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "metric": r["metric"], "role": r["role"], "variant": r["variant"], "control": r["control"],
        "control_mean": num(r["control_mean"]), "variant_mean": num(r["variant_mean"]),
        "abs_effect": num(r["abs_effect"]), "abs_ci": [num(r["abs_ci_lo"]), num(r["abs_ci_hi"])],
        "rel_effect": num(r["rel_effect"]), "rel_ci": [num(r["rel_ci_lo"]), num(r["rel_ci_hi"])],
        "p_value": num(r["p_value"]), "p_value_adjusted": num(r["p_value_adjusted"]),
        "significant": bool(r["significant"]) if r["significant"] is not None else None,
        "control_units": r["control_units"], "variant_units": r["variant_units"],
    }


def pct(x: float | None, digits: int = 1) -> str:
    return fmt.pct(x, digits)


def ci_text(ci: list[float | None] | None) -> str:
    if not ci:
        return "n/a"
    return f"{pct(ci[0])} to {pct(ci[1])}"


def code_text(version: str | None, commit: str | None) -> str:
    return f"{version or 'unknown'}" + (f" ({commit[:10]})" if commit else "")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def p_text(p: float | None) -> str:
    return fmt.pvalue(p)


def value_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    return json.dumps(value, sort_keys=True, default=str)
