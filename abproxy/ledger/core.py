"""What every ledger query shares: the ledger tables, the run columns, "the latest run", and the JSON
and error-text helpers of the ledger's columns."""
from __future__ import annotations

import json
import math
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AbproxyError

if TYPE_CHECKING:  # pragma: no cover - duckdb is imported when a database opens (not at start-up)
    import duckdb

# the tables of the analysis ledger: only the `ledger` package reads or writes them (tests/test_ledger_gateway)
LEDGER_TABLES = ("runs", "results", "series", "health", "lineage", "registry_writes")

RUN_COLUMNS = ("run_id", "job_id", "experiment", "started_at", "finished_at", "as_of", "status", "error",
               "definition_hash", "definitions", "watermark", "code_version", "git_commit", "parameters", "method",
               "decision", "ship_variant", "reasons", "srm_p", "units", "days_running")
RUN_SELECT = ", ".join(RUN_COLUMNS)
# the run columns without the (large) stored definitions, for lists of runs
RUN_BRIEF = ", ".join(c for c in RUN_COLUMNS if c != "definitions")
LATEST_KEYS = ("as_of", "started_at", "run_id")


def latest_first(alias: str = "") -> str:
    """ORDER BY text of "the latest run" of an experiment, everywhere (CLI, report, gate, lineage): the
    one analysed furthest in time (as_of), ties by when it ran; so a backfill with an earlier --as-of
    never hides the current verdict."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{k} DESC" for k in LATEST_KEYS)


def oldest_first(alias: str = "") -> str:
    """The same order, oldest first (lists of runs end with the latest run)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{k}" for k in LATEST_KEYS)


LATEST_FIRST = latest_first()
OLDEST_FIRST = oldest_first()


def latest_runs_sql(columns: str = RUN_SELECT, where: str = "TRUE") -> str:
    """The latest run of each experiment (rows of `runs` satisfying `where`)."""
    return (f"SELECT {columns} FROM runs WHERE {where} "
            f"QUALIFY row_number() OVER (PARTITION BY experiment ORDER BY {LATEST_FIRST}) = 1")


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The tables of a connection (an older snapshot may lack the newer ledger tables)."""
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


@lru_cache(maxsize=1)
def code_version() -> tuple[str, str | None]:
    """(package version, git commit or None)."""
    from importlib import metadata

    try:
        version = metadata.version("abproxy")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return version, commit


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, tuples → lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_clean = json_safe   # the former private name


def loads(value: Any, default: Any = None) -> Any:
    """JSON text from a ledger column (or an already parsed value) → Python; None/NaN/garbage → default."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return default


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, default=str)


ERROR_LIMIT = 500


def error_text(exc: BaseException, limit: int = ERROR_LIMIT) -> str:
    """An error as stored in the ledger and shown on pages: one line, without DuckDB's echo of the
    query and its hints, at most `limit` characters (a message never carries pages of data)."""
    text = str(exc).strip()
    for marker in ("\nLINE ", "\nPossible fixes", "\nPossible Solution"):
        text = text.split(marker, 1)[0]
    text = " ".join(text.split())
    own = isinstance(exc, AbproxyError)   # already says what and where
    return clip(text if own else f"{type(exc).__name__}: {text}", limit)


def clip(text: str, limit: int = ERROR_LIMIT) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
