"""Reading the ledger as frames, for the report and its HTML export (on the published snapshot): the
latest runs, an experiment's runs and the latest run's results, series and health checks, the primary
results of runs, the portfolio timeline. A table an older snapshot lacks reads as an empty frame."""
from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

from .core import OLDEST_FIRST, RUN_BRIEF, latest_runs_sql, loads, oldest_first, tables


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def latest_runs_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The latest run of each experiment (the run columns without the definitions)."""
    if "runs" not in tables(con):
        return pd.DataFrame()
    return _df(con, latest_runs_sql(RUN_BRIEF))


def runs_frame(con: duckdb.DuckDBPyConnection, experiment: str) -> pd.DataFrame:
    """Every run of an experiment, oldest first (the last row is the latest run)."""
    if "runs" not in tables(con):
        return pd.DataFrame(columns=[c.strip() for c in RUN_BRIEF.split(",")])
    return _df(con, f"SELECT {RUN_BRIEF} FROM runs WHERE experiment = ? ORDER BY {OLDEST_FIRST}", [experiment])


def portfolio_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """Every run's verdict (None without a runs table)."""
    if "runs" not in tables(con):
        return None
    return _df(con, "SELECT run_id, experiment, as_of, started_at, status, decision, ship_variant, days_running "
                    f"FROM runs ORDER BY experiment, {OLDEST_FIRST}")


def primary_results(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Overall results of each run's first primary metric (one row per run × treatment arm), with the
    metric's catalog name and type when the snapshot has them."""
    where = "" if run_ids is None else "AND r.run_id IN (SELECT unnest(?::VARCHAR[]))"
    named = "metrics" in tables(con)
    label = "coalesce(m.name, r.metric)" if named else "r.metric"
    mtype = "m.type" if named else "NULL"
    join = "LEFT JOIN metrics m ON m.metric = r.metric" if named else ""
    sql = """
        WITH firsts AS (
            SELECT run_id, arg_min(metric, ord) AS metric FROM (
                SELECT run_id, metric, min(rowid) AS ord FROM results
                WHERE segment = '' AND role = 'primary' GROUP BY run_id, metric) GROUP BY run_id)
        SELECT r.run_id, r.experiment, r.metric, {label} AS label, {mtype} AS type, r.variant, r.control, r.rel_effect,
               r.rel_ci_lo, r.rel_ci_hi,
               r.abs_effect, r.abs_ci_lo, r.abs_ci_hi, r.p_value_adjusted, r.significant
        FROM results r JOIN firsts f USING (run_id, metric) {join}
        WHERE r.segment = '' {where}
        ORDER BY r.run_id, r.variant""".format(label=label, mtype=mtype, join=join, where=where)
    return _df(con, sql, [run_ids] if run_ids is not None else None)


def problems(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> pd.DataFrame:
    """The failed and warning health checks of these runs, in recorded order."""
    if not run_ids or "health" not in tables(con):
        return pd.DataFrame(columns=["run_id"])
    return _df(con, """SELECT run_id, check_name, status, segment, metric, variant, detail FROM health
                       WHERE status <> 'ok' AND run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY rowid""", [run_ids])


def run_results(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    """A run's results, overall and by segment, in recorded order."""
    return _df(con, "SELECT * EXCLUDE (run_id, experiment) FROM results WHERE run_id = ? ORDER BY rowid", [run_id])


def run_series(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    if "series" not in tables(con):
        return pd.DataFrame()
    return _df(con, "SELECT * EXCLUDE (run_id, experiment) FROM series WHERE run_id = ? "
                    "ORDER BY metric, variant, kind, day", [run_id])


def run_checks(con: duckdb.DuckDBPyConnection, run_id: str) -> pd.DataFrame:
    if "health" not in tables(con):
        return pd.DataFrame()
    return _df(con, "SELECT * EXCLUDE (run_id, experiment) FROM health WHERE run_id = ? ORDER BY rowid", [run_id])


def results_history(con: duckdb.DuckDBPyConnection, experiment: str) -> pd.DataFrame:
    """The overall results of every run of an experiment (metric × variant), oldest run first."""
    if "runs" not in tables(con):
        return pd.DataFrame()
    return _df(con, f"""SELECT r.run_id, u.as_of, u.started_at, r.metric, r.role, r.variant, r.rel_effect, r.rel_ci_lo,
                               r.rel_ci_hi, r.abs_effect, r.p_value_adjusted, r.significant
                        FROM results r JOIN runs u USING (run_id)
                        WHERE r.experiment = ? AND r.segment = '' ORDER BY {oldest_first('u')}, r.rowid""",
               [experiment])


def definitions(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored definitions of these runs, by run id."""
    found = con.execute("SELECT run_id, definitions FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                        [list(run_ids)]).fetchall()
    return {run_id: loads(text, {}) for run_id, text in found}


def arm_effects(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> pd.DataFrame:
    """The overall primary and guardrail results of these runs (the leaderboard's effects)."""
    if not run_ids:
        return pd.DataFrame()
    return _df(con, """SELECT run_id, metric, role, variant, rel_effect, rel_ci_lo, rel_ci_hi, significant
                       FROM results WHERE segment = '' AND role IN ('primary', 'guardrail')
                         AND run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY rowid""", [run_ids])


def latest_data_seen(con: duckdb.DuckDBPyConnection) -> tuple[Any, Any]:
    """(latest event, latest exposure) any run analysed, from the runs' watermarks."""
    if "runs" not in tables(con):
        return None, None
    return con.execute("""SELECT max(TRY_CAST(json_extract_string(watermark, '$.max_occurred_at') AS TIMESTAMP)),
                                 max(TRY_CAST(json_extract_string(watermark, '$.max_exposed_at') AS TIMESTAMP))
                          FROM runs""").fetchone()
