"""Runs the builder's SQL and returns what the statistics need: the table of sufficient statistics of one
experiment (plus the order statistics of quantile metrics), and the up-front check of the definitions.

Builders only build SQL (`metrics.py`); this module is the client that runs it (mozanalysis' split).
"""
from __future__ import annotations

import datetime as dt

import duckdb

from .config import Config
from .effects import StatsTable
from .metrics import ExperimentQuery, experiment_sql, quantile_sql
from .stats.quantile import RANK_Z, QuantileSummary


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _query(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime) -> ExperimentQuery:
    return experiment_sql(config, key, as_of, _columns(con, "exposures"), _columns(con, "events"))


def run_query(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
              plain: frozenset[str] = frozenset()) -> StatsTable:
    """The sufficient statistics, plus one order-statistics query per quantile metric (METHODS §14)."""
    query = _query(con, config, key, as_of)
    return StatsTable(con.execute(query.sql).df(), query, quantile_summaries(con, query), plain)


def quantile_summaries(con: duckdb.DuckDBPyConnection, query: ExperimentQuery) -> dict[str, dict[str, QuantileSummary]]:
    out: dict[str, dict[str, QuantileSummary]] = {}
    for col in (c for c in query.columns if not c.additive):
        rows = con.execute(quantile_sql(query, col, RANK_Z)).fetchall()
        out[col.key] = {str(v): QuantileSummary(int(n), float(col.metric.quantile), float(est), float(lo), float(hi))
                        for v, n, est, lo, hi in rows if n}
    return out


def _check_definitions(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime) -> None:
    """Run the metric query once, so a broken definition fails even before this experiment's data
    arrives; segment columns are only checked once the workspace holds some exposures."""
    if con.execute("SELECT count(*) FROM (SELECT 1 FROM exposures LIMIT 1)").fetchone()[0]:
        con.execute(_query(con, config, key, as_of).sql).fetchall()
        return
    lean = config.model_copy(update={"experiments": {
        **config.experiments, key: config.experiments[key].model_copy(update={"segments": []})}})
    con.execute(experiment_sql(lean, key, as_of, None, _columns(con, "events")).sql).fetchall()
