"""The Spark SQL dialect of the metric builder (`metrics.experiment_sql(..., dialect=SPARK)`), and the
few extra pieces the data-quality checks need (epoch arithmetic, day series), for both engines.

Spark 4 in ANSI mode, with UTC TIMESTAMP_NTZ timestamps (see `spark.register_source`): DuckDB's
TIMESTAMP semantics, so windows, days and literals mean the same on both engines.
"""
from __future__ import annotations

from .dialect import Dialect, DuckDB


class DuckDBExtras(DuckDB):
    """DuckDB plus the pieces the data-quality checks use."""

    wide_integer = "HUGEINT"

    def epoch_us(self, expr: str) -> str:
        return f"epoch_us({expr})"

    def epoch_seconds(self, expr: str) -> str:
        return f"epoch({expr})"

    def day_floor(self, expr: str) -> str:
        return f"date_trunc('day', {expr})"

    def day_series(self, first: str, last: str) -> str:
        return f"unnest(generate_series({first}, {last}, INTERVAL 1 DAY))"

    def quantile_disc_time(self, expr: str, q: float) -> str:
        """The discrete q-quantile of a timestamp (the ⌈q·n⌉-th smallest)."""
        return f"quantile_disc({expr}, {q!r})"

    def day_diff(self, start: str, end: str) -> str:
        """Whole calendar days from the day of `start` to the day of `end`."""
        return f"date_diff('day', CAST({start} AS DATE), CAST({end} AS DATE))"


class Spark(Dialect):
    """Spark SQL (Spark 4, ANSI mode, timestamps as UTC TIMESTAMP_NTZ: see `spark.register_source`).

    Sums are exact: every term is cast to DECIMAL(38, 12) before `sum`, so the sum is associative and
    the result has the same bits whatever the partitioning and the order in which tasks finish (a
    DOUBLE sum depends on that order). Terms are rounded to 12 decimal places; a sum beyond ±10²⁶ stops
    with an overflow error (ANSI) rather than losing digits. Quantiles: exact `percentile` (linear
    interpolation, as DuckDB's quantile_cont) unless `approximate` picks `percentile_approx`."""

    name = "spark"
    decimal = "DECIMAL(38, 12)"
    wide_integer = "DECIMAL(38, 0)"

    def __init__(self, quantiles: str = "exact"):
        self.approximate = quantiles == "approximate"

    def ident(self, name: str) -> str:
        return "`" + str(name).replace("`", "``") + "`"

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS STRING)"

    def sum(self, expr: str) -> str:
        return f"sum(CAST({expr} AS {self.decimal}))"

    def avg(self, expr: str) -> str:
        return f"avg(CAST({expr} AS {self.decimal}))"

    def quantile(self, expr: str, q: float) -> str:
        if self.approximate:
            return f"percentile_approx({expr}, {self.number(q)}, 100000)"
        return f"percentile({expr}, {self.number(q)})"

    def epoch_us(self, expr: str) -> str:
        return f"unix_micros(CAST({expr} AS TIMESTAMP))"

    def epoch_seconds(self, expr: str) -> str:
        return f"(unix_micros(CAST({expr} AS TIMESTAMP)) / 1e6)"

    def day_floor(self, expr: str) -> str:
        return f"CAST(CAST({expr} AS DATE) AS TIMESTAMP_NTZ)"

    def day_series(self, first: str, last: str) -> str:
        return f"explode(sequence({first}, {last}, INTERVAL 1 DAY))"

    def quantile_disc_time(self, expr: str, q: float) -> str:
        """percentile_disc over epoch microseconds (Spark's takes no timestamps): the ⌈q·n⌉-th smallest,
        as DuckDB's quantile_disc; exact, since microseconds since 1970 fit a double's 53 bits."""
        micros = f"percentile_disc({self.number(q)}) WITHIN GROUP (ORDER BY {self.epoch_us(expr)})"
        return f"CAST(timestamp_micros(CAST({micros} AS BIGINT)) AS TIMESTAMP_NTZ)"

    def day_diff(self, start: str, end: str) -> str:
        return f"datediff(CAST({end} AS DATE), CAST({start} AS DATE))"


DUCKDB_EXTRAS = DuckDBExtras()
SPARK = Spark()
SPARK_APPROXIMATE = Spark("approximate")
