"""What one experiment's data-quality checks look at (`abproxy.quality`): its units, the metric
event types and columns, the post-exposure window, and the thresholds the checks share.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .config import Config, EventSource, Metric
from .dialect import DUCKDB
from .metric_types import columns_for
from .metrics import literal, post_window, quote_ident, timestamp_literal
from .sources import first_exposures_sql

COLUMN_AGGREGATES = {"sum", "max", "min", "avg"}   # aggregates that read the event's column
UNKNOWN_VARIANT_FAIL = 0.01    # share of the experiment's exposure rows with an unknown variant
FUTURE_FAIL = 0.01             # share of rows with a timestamp ahead of their load time
MOSTLY_NULL = 0.5              # a metric's source column null for more than this share → fail
MIN_NULL_ROWS = 200            # rows needed on each side before comparing null rates
DUPLICATE_WARN = 0.005         # share of events repeating (unit, event, occurred_at, value)
LATE_WARN = 0.01               # share of events that arrived late_hours after newer data
VOLUME_P = 0.001               # a volume change must also be this improbable under Poisson noise
MIN_EXPECTED_MISSING = 10.0    # expected events in the silent period before 'vanished' (P(0) < 5e-5)
MIN_TRAILING_DAYS = 3
US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Scope:
    """What one experiment's data-quality checks look at."""

    key: str
    as_of: dt.datetime
    window_days: float
    types: tuple[str, ...]                      # event types the metrics read
    users: dict[str, tuple[str, ...]]           # event type → metric keys (role order)
    columns: dict[EventSource, tuple[str, ...]]  # sources whose column a metric aggregates → metrics
    secondary: frozenset[str]                   # secondary metrics: their problems only warn

    @property
    def units_sql(self) -> str:
        """`units`: each exposed unit's first exposure — the per-unit state's rows when one is in
        place for this analysis (`sources.first_exposures_sql`)."""
        return f"units AS ({first_exposures_sql(self.key, self.as_of, DUCKDB)})"

    @property
    def events_sql(self) -> str:
        """WITH units, ev: the experiment's metric events in the units' post-exposure windows."""
        names = ", ".join(literal(t) for t in self.types)
        return f"""WITH {self.units_sql}, ev AS (
    SELECT e.* FROM units u JOIN events e ON e.unit_id = u.unit_id
    WHERE e.event IN ({names}) AND {post_window(self.window_days)}
      AND e.occurred_at <= {timestamp_literal(self.as_of)}
)"""

    def status(self, metrics: tuple[str, ...], status: str) -> str:
        """A failure that only touches secondary metrics does not invalidate the decision."""
        return "warn" if status == "fail" and set(metrics) <= self.secondary else status


def _sources(metric: Metric) -> list[EventSource]:
    return columns_for("", "q", metric).sources()


def make_scope(config: Config, key: str, as_of: dt.datetime) -> Scope:
    exp = config.experiments[key]
    roles = exp.roles()
    users: dict[str, list[str]] = {}
    columns: dict[EventSource, list[str]] = {}
    for name in roles:
        for s in _sources(config.metrics[name]):
            users.setdefault(s.event, []).append(name)
            if s.aggregate in COLUMN_AGGREGATES:
                quote_ident(s.column)
                columns.setdefault(s, []).append(name)
    window = max((config.metrics[m].window_days for m in roles if config.metrics[m].sql is None), default=0.0)
    return Scope(key, as_of, window, tuple(users), {k: tuple(v) for k, v in users.items()},
                 {k: tuple(v) for k, v in columns.items()},
                 frozenset(m for m, r in roles.items() if r == "secondary"))
