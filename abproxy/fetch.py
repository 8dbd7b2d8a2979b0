"""Runs the builder's SQL and returns what the statistics need: the table of sufficient statistics of one
experiment (plus the order statistics of quantile metrics), and the up-front check of the definitions.

Builders only build SQL (`metrics.py`); this module is the client that runs it (mozanalysis' split).
"""
from __future__ import annotations

import datetime as dt

import duckdb

from .config import Config
from .effects import StatsTable
from .engines import Engine, as_engine
from .metrics import ExperimentQuery, experiment_sql, quantile_sql
from .stats.quantile import RANK_Z, QuantileSummary


def _query(engine: Engine, config: Config, key: str, as_of: dt.datetime) -> ExperimentQuery:
    return experiment_sql(config, key, as_of, engine.columns("exposures"), engine.columns("events"),
                          dialect=engine.dialect)


def run_query(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
              plain: frozenset[str] = frozenset()) -> StatsTable:
    """The sufficient statistics, plus one order-statistics query per quantile metric (METHODS §14),
    computed by the engine in its dialect (a DuckDB connection is the local engine)."""
    engine = as_engine(engine)
    query = _query(engine, config, key, as_of)
    return StatsTable(engine.frame(query.sql), query, quantile_summaries(engine, query), plain)


def quantile_summaries(engine: Engine | duckdb.DuckDBPyConnection,
                       query: ExperimentQuery) -> dict[str, dict[str, QuantileSummary]]:
    engine = as_engine(engine)
    out: dict[str, dict[str, QuantileSummary]] = {}
    for col in (c for c in query.columns if not c.additive):
        rows = engine.frame(quantile_sql(query, col, RANK_Z, engine.dialect)).itertuples(index=False)
        out[col.key] = {str(v): QuantileSummary(int(n), float(col.metric.quantile), float(est), float(lo), float(hi))
                        for v, n, est, lo, hi in rows if n}
    return out


def _check_definitions(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str,
                       as_of: dt.datetime) -> None:
    """Run the metric query once, so a broken definition fails even before this experiment's data
    arrives; segment columns are only checked once the workspace holds some exposures."""
    engine = as_engine(engine)
    if len(engine.frame("SELECT 1 AS one FROM exposures LIMIT 1")):
        engine.frame(_query(engine, config, key, as_of).sql)
        return
    lean = config.model_copy(update={"experiments": {
        **config.experiments, key: config.experiments[key].model_copy(update={"segments": []})}})
    engine.frame(experiment_sql(lean, key, as_of, None, engine.columns("events"), dialect=engine.dialect).sql)
