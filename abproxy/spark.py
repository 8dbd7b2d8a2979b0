"""engine: spark — the Spark session, the external source as two views, and small result frames.

The metric SQL (the builder's Spark dialect) runs where the data lives; only grouped rows come back
(per variant × overall/day/segment value), never unit rows. Everything else — the ledger, the
snapshot, the report — stays in the local DuckDB warehouse.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Source, SparkSettings
from .errors import EngineError, SourceError, SparkUnavailable  # noqa: F401  (SparkUnavailable re-exported)

VIEWS = {"exposures": ("unit_id", "experiment", "variant", "exposed_at"),
         "events": ("unit_id", "event", "occurred_at")}
TIMESTAMPS = {"exposures": "exposed_at", "events": "occurred_at"}
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",          # the warehouse's timestamps are UTC
    "spark.sql.timestampType": "TIMESTAMP_NTZ",   # literals compare like DuckDB's TIMESTAMP
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.ansi.enabled": "true",             # overflow is an error, never a silent NULL
    "spark.ui.showConsoleProgress": "false",
}
INSTALL_PYSPARK = "engine: spark needs pyspark: pip install 'abproxy[spark]'"
INSTALL_JAVA = ("engine: spark needs Java 17 or newer for a local or cluster-client session: install a JRE "
                "(Debian/Ubuntu: apt-get install default-jre-headless) or set JAVA_HOME")
_SESSIONS: dict[tuple, Any] = {}


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def requirements(settings: SparkSettings) -> None:
    """Raise SparkUnavailable with the one thing to install; Spark Connect clients need no Java."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailable(INSTALL_PYSPARK) from None
    if settings.connect_url is None and _java() is None:
        raise SparkUnavailable(INSTALL_JAVA)


def _java_version() -> str:
    try:
        out = subprocess.run([_java() or "java", "-version"], capture_output=True, text=True, timeout=20)
        return (out.stderr or out.stdout).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def session(settings: SparkSettings):
    """One Spark session per process and settings (local, cluster master or Spark Connect)."""
    requirements(settings)
    conf = {**DEFAULT_CONF, **{k: str(v).lower() if isinstance(v, bool) else str(v)
                               for k, v in settings.conf.items()}}
    key = (settings.master, settings.remote, tuple(sorted(conf.items())))
    if key in _SESSIONS:
        return _SESSIONS[key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # pyspark warns about pandas 3 on import
        from pyspark.sql import SparkSession
    builder = SparkSession.builder.appName("abproxy")
    if settings.connect_url:
        builder = builder.remote(settings.connect_url)
        conf = {k: v for k, v in conf.items() if k not in ("spark.ui.enabled", "spark.ui.showConsoleProgress")}
    elif settings.master:      # none: spark-submit's --master, else pyspark's default (local[*])
        builder = builder.master(settings.master)
    for k, v in conf.items():
        builder = builder.config(k, v)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start or the Connect server is unreachable
        where = settings.connect_url or settings.master or "local[*]"
        hint = (f"is a Spark Connect server listening at {where}?" if settings.connect_url else
                f"Java 17 or newer is needed (found: {_java_version()})")
        raise SparkUnavailable(f"Spark could not start ({where}): {type(exc).__name__}; {hint}") from None
    if not settings.connect_url:
        spark.sparkContext.setLogLevel("ERROR")
    _SESSIONS[key] = spark
    return spark


def location(source_path: str, root: Path) -> str:
    """A relative path is under the workspace; URIs (s3a://, dbfs:/, file:) and absolute paths as is."""
    if "://" in source_path or source_path.startswith(("/", "dbfs:", "file:")):
        return source_path
    return str((root / source_path).resolve())


def register_source(spark, source: Source, root: Path) -> dict[str, set[str]]:
    """Expose the configured source as the temporary views `exposures` and `events` (the names the
    metric SQL and raw-SQL metrics use), with UTC TIMESTAMP_NTZ times and string unit ids.
    Returns the columns of each view."""
    from pyspark.sql import functions as F

    columns = {}
    for view, where in (("exposures", source.exposures), ("events", source.events)):
        frame = _read(spark, view, where, root)
        missing = [c for c in VIEWS[view] if c not in frame.columns]
        if missing:
            raise SourceError(f"source.{view} ({where}): missing column(s) {', '.join(missing)}; the {view} need "
                              f"{', '.join(VIEWS[view])} (README, 'Input contract')")
        frame = frame.withColumn("unit_id", F.col("unit_id").cast("string"))
        frame = frame.withColumn(TIMESTAMPS[view], F.col(TIMESTAMPS[view]).cast("timestamp_ntz"))
        if view == "events" and "value" in frame.columns:
            frame = frame.withColumn("value", F.col("value").cast("double"))
        frame.createOrReplaceTempView(view)
        columns[view] = set(frame.columns)
    return columns


def _read(spark, view: str, where: str, root: Path):
    try:
        if Source.is_table(where):
            return spark.table(where)
        return spark.read.parquet(location(where, root))
    except Exception as exc:
        kind = "table" if Source.is_table(where) else "Parquet path"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"source.{view}: cannot read the {kind} {where!r} ({first[:200]}); check the path "
                          "or table name (a relative folder named like a table is written ./name)") from None


def frame(spark, sql: str) -> pd.DataFrame:
    """Run one query and bring back its (small, grouped) rows as a pandas frame. A failing query
    raises EngineError with Spark's message cut to its first line (no JVM stack)."""
    try:
        result = spark.sql(sql)
        rows = result.collect()
    except Exception as exc:
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            text = str(exc).strip().splitlines()
            raise EngineError(f"Spark: {text[0][:300] if text else type(exc).__name__}") from None
        raise
    out = pd.DataFrame([tuple(r) for r in rows], columns=list(result.columns))
    for name, kind in result.dtypes:
        if kind.startswith("decimal"):      # exact sums come back as Decimal: the statistics take floats
            out[name] = out[name].astype(float)
    return out
