"""Where the data queries run: the local DuckDB warehouse (default) or Spark (`engine: spark`).

An engine answers SQL written in its dialect with a small pandas frame (grouped rows: per variant ×
overall/day/segment value, per day, per event type — never one row per unit), and knows the columns
of `exposures` and `events`. The ledger, the snapshot and the report always stay in the local DuckDB
warehouse, whichever engine computes.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import Config, Source
from .errors import EngineError, SparkUnavailable  # noqa: F401  (EngineError re-exported)
from .spark_dialect import DUCKDB_EXTRAS, SPARK, SPARK_APPROXIMATE

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where a frame is made, duckdb when the warehouse opens
    import duckdb
    import pandas as pd

log = logging.getLogger(__name__)


SPARK_SQL_READY = True          # the builder speaks Spark SQL through spark_dialect.Spark


def __getattr__(name: str) -> Any:
    """`ENGINE_ERRORS` = (duckdb.Error, ValueError), made when first asked for (after the warehouse opened:
    start-up does not import duckdb)."""
    if name == "ENGINE_ERRORS":
        import duckdb

        globals()[name] = (duckdb.Error, ValueError)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Engine(Protocol):
    name: str
    dialect: Any

    def frame(self, sql: str) -> pd.DataFrame: ...

    def columns(self, table: str) -> set[str]: ...

    def watermark(self, experiment: str, as_of: dt.datetime) -> dict[str, Any]: ...

    def first_exposure(self, experiment: str, as_of: dt.datetime) -> dt.datetime | None: ...


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ts(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def as_datetime(value: Any) -> dt.datetime | None:
    """A timestamp cell of a result frame as a datetime (None for NULL/NaT)."""
    import pandas as pd

    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


@dataclass
class DuckDBEngine:
    """The warehouse connection itself: exposures and events were ingested into it."""

    con: duckdb.DuckDBPyConnection
    name: str = "duckdb"
    dialect: Any = DUCKDB_EXTRAS

    def frame(self, sql: str) -> pd.DataFrame:
        return self.con.execute(sql).df()

    def columns(self, table: str) -> set[str]:
        return {r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()}

    def watermark(self, experiment: str, as_of: dt.datetime) -> dict[str, Any]:
        from .ledger import watermark

        return watermark(self.con, experiment, as_of)

    def first_exposure(self, experiment: str, as_of: dt.datetime) -> dt.datetime | None:
        return self.con.execute("SELECT min(exposed_at) FROM exposures WHERE experiment = ? AND exposed_at <= ?",
                                [experiment, as_of]).fetchone()[0]


@dataclass
class SparkEngine:
    """A Spark session whose temporary views `exposures` and `events` read the configured source."""

    session: Any
    view_columns: dict[str, set[str]] = field(default_factory=dict)
    source: Source | None = None
    name: str = "spark"
    dialect: Any = SPARK
    rows_returned: int = 0          # rows shipped back to the driver so far (bench, tests)

    def frame(self, sql: str) -> pd.DataFrame:
        from .spark import frame

        started = time.perf_counter()
        out = frame(self.session, sql)
        self.rows_returned += len(out)
        log.debug("spark query: %d rows in %.2fs: %s", len(out), time.perf_counter() - started,
                  " ".join(sql.split())[:120])
        return out

    def columns(self, table: str) -> set[str]:
        return set(self.view_columns[table])

    def watermark(self, experiment: str, as_of: dt.datetime) -> dict[str, Any]:
        """What data a run saw: row counts and newest timestamps up to as_of, and where it was read."""
        row = self.frame(f"""
            SELECT (SELECT count(*) FROM exposures WHERE experiment = {_lit(experiment)}
                      AND exposed_at <= {_ts(as_of)}) AS exposure_rows,
                   (SELECT max(exposed_at) FROM exposures WHERE experiment = {_lit(experiment)}
                      AND exposed_at <= {_ts(as_of)}) AS max_exposed_at,
                   (SELECT count(*) FROM events WHERE occurred_at <= {_ts(as_of)}) AS event_rows,
                   (SELECT max(occurred_at) FROM events WHERE occurred_at <= {_ts(as_of)}) AS max_occurred_at""").iloc[0]
        sources = [self.source.exposures, self.source.events] if self.source else []
        newest = {k: as_datetime(row[k]) for k in ("max_exposed_at", "max_occurred_at")}
        return {"exposure_rows": int(row["exposure_rows"]), "event_rows": int(row["event_rows"]),
                **{k: v.isoformat() if v else None for k, v in newest.items()},
                "files": [], "file_hashes": [], "engine": "spark", "sources": sources}

    def first_exposure(self, experiment: str, as_of: dt.datetime) -> dt.datetime | None:
        return as_datetime(self.frame(f"SELECT min(exposed_at) AS t FROM exposures WHERE experiment = "
                                    f"{_lit(experiment)} AND exposed_at <= {_ts(as_of)}")["t"].iloc[0])


def as_engine(con_or_engine: Any) -> Engine:
    """A DuckDB connection is the local engine; an engine is itself."""
    return con_or_engine if hasattr(con_or_engine, "frame") else DuckDBEngine(con_or_engine)


def open_engine(config: Config, root: Path, con: duckdb.DuckDBPyConnection) -> Engine:
    """The engine of a workspace: its warehouse connection, or a Spark session reading `source`."""
    if config.engine == "duckdb":
        return DuckDBEngine(con)
    from .spark import register_source, requirements, session

    requirements(config.spark)
    if not SPARK_SQL_READY:
        raise SparkUnavailable("engine: spark: the Spark dialect of the metric builder is not in this build yet; "
                               "use engine: duckdb for now")
    spark = session(config.spark)
    dialect = SPARK_APPROXIMATE if config.spark.quantiles == "approximate" else SPARK
    return SparkEngine(spark, register_source(spark, config.source, root), config.source, dialect=dialect)
