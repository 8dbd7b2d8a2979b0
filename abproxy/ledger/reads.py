"""Reading the ledger as rows: what the analysis needs of earlier runs (launch estimates, recent
decisions, the previous verdict, failed checks, the last registry lineage) and what the read layer
(`history`, `diff`, `leaderboard`) composes into records. Every function takes a connection to the
warehouse or to the published snapshot; a table an older snapshot lacks reads as empty."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..lineage import ModelLineage
from .core import (LATEST_FIRST, OLDEST_FIRST, RUN_SELECT, latest_first, latest_runs_sql, loads, rows,
                   tables)
from .write import LINEAGE_JSON

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import pandas as pd

# the overall results the read layer shows, in a stable order (primary, guardrail, secondary)
OVERALL_COLUMNS = ("run_id, metric, role, variant, control, control_units, variant_units, control_mean, "
                   "variant_mean, abs_effect, abs_ci_lo, abs_ci_hi, rel_effect, rel_ci_lo, rel_ci_hi, p_value, "
                   "p_value_adjusted, significant, method")
ROLE_ORDER = "CASE role WHEN 'primary' THEN 0 WHEN 'guardrail' THEN 1 ELSE 2 END"
LINEAGE_KEYS = ("source", "ref", "model", "version", "alias", "model_run_id", "arm_status")


# --------------------------------------------------------------------------- for the analysis

def recent_decisions(con: duckdb.DuckDBPyConnection, experiment: str, definition_hash: str, as_of: dt.datetime,
                     exclude_run: str, limit: int) -> list[str]:
    """The decisions of the latest `limit` ok runs with these definitions up to `as_of`, oldest first."""
    found = con.execute(f"""
        SELECT decision FROM runs WHERE experiment = ? AND status = 'ok' AND decision IS NOT NULL
          AND definition_hash = ? AND as_of <= ? AND run_id <> ?
        ORDER BY {LATEST_FIRST} LIMIT ?""", [experiment, definition_hash, as_of, exclude_run, limit]).fetchall()
    return [r[0] for r in reversed(found)]


def launch_rows(con: duckdb.DuckDBPyConnection, experiment: str, as_of: dt.datetime, metrics: list[str]) -> pd.DataFrame:
    """Every ok run up to `as_of` (oldest first) with the overall relative effects of `metrics`."""
    return con.execute("""
        SELECT r.run_id, r.as_of, r.started_at, r.decision, x.metric, x.variant, x.rel_effect
        FROM runs r JOIN results x ON x.run_id = r.run_id
        WHERE r.experiment = ? AND r.status = 'ok' AND r.as_of <= ? AND x.segment = ''
          AND list_contains(?, x.metric)
        ORDER BY r.as_of, r.started_at""", [experiment, as_of, list(metrics)]).df()


def previous_verdict(con: duckdb.DuckDBPyConnection, experiment: str, started_before: dt.datetime,
                     exclude: list[str]) -> tuple[Any, ...] | None:
    """(run_id, decision, units, days_running) of the run with a verdict announced last before
    `started_before` (notifications compare with what was announced, so by when runs ran)."""
    return con.execute(
        """SELECT run_id, decision, units, days_running FROM runs
           WHERE experiment = ? AND status = 'ok' AND decision IS NOT NULL
             AND started_at <= ? AND NOT list_contains(?, run_id)
           ORDER BY started_at DESC, finished_at DESC NULLS LAST LIMIT 1""",
        [experiment, started_before, exclude]).fetchone()


def failed_checks(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[Any, ...]]:
    return con.execute("SELECT check_name, metric, segment, variant FROM health WHERE run_id = ? AND status = 'fail'",
                       [run_id]).fetchall()


def last_lineage(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, ModelLineage]:
    """Per variant, the latest lineage a registry gave (resolved then, or kept from before), by when
    the runs ran: what the registry said last, whatever date a run analysed."""
    cur = con.execute("""
        SELECT l.* FROM lineage l JOIN runs r USING (run_id)
        WHERE l.experiment = ? AND l.source IN ('mlflow', 'ledger') AND l.version <> ''
        QUALIFY row_number() OVER (PARTITION BY l.variant ORDER BY r.started_at DESC, r.run_id DESC) = 1""",
                      [experiment])
    names = [d[0] for d in cur.description]
    return {row["variant"]: lineage_from_row(row) for row in (dict(zip(names, t)) for t in cur.fetchall())}


def lineage_from_row(row: dict[str, Any]) -> ModelLineage:
    """A `lineage` ledger row back into a ModelLineage."""
    fields = ModelLineage.__dataclass_fields__
    values = {k: row[k] for k in fields if k in row}
    for k in LINEAGE_JSON:
        values[k] = loads(row.get(k), [] if k == "datasets" else {})
    for k in ("model", "version", "training_data", "link"):
        values[k] = values.get(k) or ""
    values["is_control"] = bool(values.get("is_control"))
    return ModelLineage(**values)


# --------------------------------------------------------------------------- for the read layer

def run_experiments(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every experiment key with a run in the ledger."""
    if "runs" not in tables(con):
        return []
    return [r[0] for r in con.execute("SELECT DISTINCT experiment FROM runs ORDER BY 1").fetchall()]


def runs_of(con: duckdb.DuckDBPyConnection, experiment: str, columns: str = RUN_SELECT) -> list[dict[str, Any]]:
    """Every run of an experiment, oldest first (the last one is the latest run)."""
    return rows(con, f"SELECT {columns} FROM runs WHERE experiment = ? ORDER BY {OLDEST_FIRST}", [experiment])


def run_rows(con: duckdb.DuckDBPyConnection, run_ids: list[str], columns: str = RUN_SELECT) -> dict[str, dict[str, Any]]:
    """The runs with these ids, by id."""
    found = rows(con, f"SELECT {columns} FROM runs WHERE list_contains(?, run_id)", [list(run_ids)])
    return {r["run_id"]: r for r in found}


def run_ids_starting(con: duckdb.DuckDBPyConnection, prefix: str) -> list[str]:
    """Run ids that start with `prefix`, in the order the runs ran."""
    return [r[0] for r in con.execute(
        "SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY started_at", [prefix]).fetchall()]


def latest_run(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, Any] | None:
    """The latest run of an experiment (every column), or None."""
    found = rows(con, f"SELECT * FROM runs WHERE experiment = ? ORDER BY {LATEST_FIRST} LIMIT 1", [experiment])
    return found[0] if found else None


def latest_runs(con: duckdb.DuckDBPyConnection, columns: str = RUN_SELECT, where: str = "TRUE") -> dict[str, dict[str, Any]]:
    """The latest run of each experiment (satisfying `where`), by experiment."""
    if "runs" not in tables(con):
        return {}
    return {r["experiment"]: r for r in rows(con, latest_runs_sql(columns, where))}


def overall_results(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Overall (unsegmented) results of the given runs, grouped by run id, in a stable order."""
    if not run_ids:
        return {}
    found = rows(con, f"""SELECT {OVERALL_COLUMNS} FROM results WHERE segment = '' AND list_contains(?, run_id)
                          ORDER BY run_id, {ROLE_ORDER}, metric, variant""", [list(run_ids)])
    out: dict[str, list[dict[str, Any]]] = {}
    for r in found:
        out.setdefault(r["run_id"], []).append(r)
    return out


def run_lineage(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, dict[str, Any]]:
    """Per variant, the model a run served (LINEAGE_KEYS) and the arm's status."""
    if "lineage" not in tables(con):
        return {}
    found = rows(con, f"SELECT variant, {', '.join(LINEAGE_KEYS)} FROM lineage WHERE run_id = ?", [run_id])
    return {r["variant"]: {k: r[k] for k in LINEAGE_KEYS} for r in found}


def run_health(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """A run's health checks (`check` named as in the records)."""
    return rows(con, "SELECT check_name AS check, status, metric, segment, variant, detail FROM health "
                     "WHERE run_id = ?", [run_id])


def latest_lineage(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, Any]]:
    """(experiment, variant) → the lineage recorded with the experiment's latest run."""
    if "lineage" not in tables(con):
        return {}
    found = rows(con, f"""
        SELECT l.* FROM lineage l JOIN runs r USING (run_id)
        QUALIFY dense_rank() OVER (PARTITION BY l.experiment ORDER BY {latest_first('r')}) = 1""")
    out = {}
    for row in found:
        for k in ("params", "metrics", "tags"):
            row[k] = loads(row[k], {})
        row["datasets"] = loads(row["datasets"], [])
        out[(row["experiment"], row["variant"])] = row
    return out
