"""What differs between SQL engines, behind one small interface; DuckDB is its one implementation here.

The metric query builder (`metrics.py`), ingest and the data-quality checks write SQL only through
these methods for anything engine-specific: quoting (identifiers, literals, timestamps, dates),
intervals, compensated sums and means, arg_min, exact quantiles, casts to text and to a date.
Everything else the builder emits is plain ANSI SQL with FILTER, GROUPING SETS and GROUPING(),
which DuckDB and Spark SQL both speak.

To add an engine, subclass `Dialect` and override what differs (see `DuckDB`); pass the instance to
`metrics.experiment_sql(..., dialect=...)`. A dialect only *writes* SQL; running it is the caller's job.
"""
from __future__ import annotations

import datetime as dt
import math


class Dialect:
    """ANSI defaults; an engine overrides what it spells differently."""

    name = "ansi"

    # ------------------------------------------------------------------ quoting
    def ident(self, name: str) -> str:
        """A quoted identifier (any text; validation of config names is the builder's job)."""
        return '"' + str(name).replace('"', '""') + '"'

    def literal(self, value: str) -> str:
        return "'" + str(value).replace("'", "''") + "'"

    def number(self, value: float) -> str:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return repr(float(value))

    def timestamp(self, value: dt.datetime) -> str:
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"

    def date(self, value: dt.date) -> str:
        return f"DATE '{value.isoformat()}'"

    def interval_days(self, days: float) -> str:
        """An interval of `days` (fractional), to whole seconds."""
        return f"INTERVAL {int(round(days * 86400))} SECOND"

    # ------------------------------------------------------------------ casts
    def text(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)"

    def double(self, expr: str) -> str:
        return f"CAST({expr} AS DOUBLE)"

    def try_double(self, expr: str) -> str:
        """`expr` as DOUBLE, NULL where it does not convert."""
        return f"TRY_CAST({expr} AS DOUBLE)"

    def day(self, expr: str) -> str:
        """The calendar day (UTC) of a timestamp."""
        return f"CAST({expr} AS DATE)"

    # ------------------------------------------------------------------ aggregates
    def sum(self, expr: str) -> str:
        """A sum that gives the same bits whatever the thread schedule (compensated where available)."""
        return f"sum({expr})"

    def avg(self, expr: str) -> str:
        return f"avg({expr})"

    def arg_min(self, value: str, key: str) -> str:
        """`value` of the row with the smallest `key`."""
        return f"min_by({value}, {key})"

    def quantile(self, expr: str, q: float) -> str:
        """The interpolated (continuous) q-quantile of `expr`."""
        return f"percentile_cont({self.number(q)}) WITHIN GROUP (ORDER BY {expr})"

    def any_value(self, expr: str) -> str:
        return f"any_value({expr})"


class DuckDB(Dialect):
    name = "duckdb"

    def sum(self, expr: str) -> str:
        # fsum (Kahan–Babuska): a plain parallel DOUBLE sum depends on the thread schedule, so the same
        # data and as_of gave results differing in the last bits from run to run
        return f"fsum({expr})"

    def avg(self, expr: str) -> str:
        return f"favg({expr})"

    def arg_min(self, value: str, key: str) -> str:
        return f"arg_min({value}, {key})"

    def quantile(self, expr: str, q: float) -> str:
        return f"quantile_cont({expr}, {q!r})"


DUCKDB = DuckDB()
