"""What an experiment's per-unit state holds, and the SQL that computes its rows (`abproxy.state`).

`Agg` is one mergeable per-unit aggregate (a source's events in a window around the exposure; the
per-unit columns come from the metric type classes of `abproxy.metric_types`); a `Plan` is an
experiment's aggregates, column names, table and definition spec; `StateSource` is a built state as
`metrics.experiment_sql` reads it instead of exposures/events.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass

from .config import Config, EventSource, Experiment, Metric, definition_hash
from .metric_types import columns_for
from .metrics import MetricColumns, interval_days, literal, predicate, quote_ident, timestamp_literal
from .quality_scope import make_scope

MAX_BITMASK_DAYS = 62          # count_distinct_days: the window's days as bits of a UBIGINT


@dataclass(frozen=True)
class Agg:
    """One per-unit aggregate the state keeps: a source's events in a window around the exposure."""

    source: EventSource
    side: str            # post: [exposed, exposed + days) | pre: [exposed - days, exposed)
    days: float

    def __post_init__(self) -> None:   # 14 and 14.0 are one aggregate (one column of the state)
        object.__setattr__(self, "days", float(self.days))

    @property
    def key(self) -> str:
        return json.dumps([self.source.model_dump(mode="json"), self.side, self.days], sort_keys=True)

    def condition(self, metric: str) -> str:
        """Over `aggregates_sql`'s joined rows e, whose `_age` is occurred_at - exposed_at in
        microseconds: the window [0, d) or [-d, 0) as two integer comparisons (the same rows as the
        timestamp comparisons with `interval_days`, which rounds to whole seconds)."""
        d = int(round(self.days * 86400)) * 1_000_000
        window = f"e._age >= 0 AND e._age < {d}" if self.side == "post" else f"e._age < 0 AND e._age >= -{d}"
        return f"e.event = {literal(self.source.event)} AND {window} AND {predicate(self.source.where, metric)}"

    def parts(self, name: str) -> list[tuple[str, str, str, str]]:
        """(column, aggregate over joined events e / units u, type, merge rule)."""
        col, cond, agg = f"e.{quote_ident(self.source.column)}", self.condition(name), self.source.aggregate
        f = f" FILTER (WHERE {cond})"
        if agg == "sum":
            return [(f"{name}_s", f"fsum({col}){f}", "DOUBLE", "sum")]
        if agg in ("count", "exists"):
            return [(f"{name}_c", f"count(*){f}", "BIGINT", "add")]
        if agg in ("max", "min"):
            return [(f"{name}_m", f"CAST({agg}({col}){f} AS DOUBLE)", "DOUBLE", agg)]
        if agg == "avg":
            return [(f"{name}_s", f"fsum({col}){f}", "DOUBLE", "sum"), (f"{name}_c", f"count({col}){f}", "BIGINT", "add")]
        shift = 0 if self.side == "post" else math.ceil(self.days) + 1
        day = f"date_diff('day', CAST(e._exposed_at AS DATE), CAST(e.occurred_at AS DATE)) + {shift}"
        bit = f"CAST(greatest(0, least(63, {day})) AS INTEGER)"   # clamped: rows outside the FILTER too
        return [(f"{name}_b", f"bit_or(CAST(1 AS UBIGINT) << {bit}){f}", "UBIGINT", "or")]

    def value(self, name: str, as_bool: bool, prefix: str = "u.") -> str:
        """The per-unit value the full query computes (`metrics._aggregate`), from the state columns."""
        agg, p = self.source.aggregate, prefix + name
        expr = {"sum": f"{p}_s", "count": f"CAST({p}_c AS DOUBLE)", "exists": f"CAST({p}_c > 0 AS DOUBLE)",
                "max": f"{p}_m", "min": f"{p}_m", "avg": f"{p}_s / nullif({p}_c, 0)",
                "count_distinct_days": f"CAST(bit_count({p}_b) AS DOUBLE)"}[agg]
        if as_bool and agg != "exists":
            expr = f"CAST(coalesce({expr}, 0) > 0 AS DOUBLE)"
        return f"coalesce(CAST({expr} AS DOUBLE), 0)"



def metric_aggs(metric: Metric) -> list[tuple[str, Agg, bool]]:
    """(y | x, aggregate, as 0/1) behind a metric's per-unit numbers, from its type's unit columns
    (`metric_types`); none for raw-SQL metrics."""
    cols = columns_for("", "m", metric)
    return [("y" if c.name == cols.y else "x", Agg(c.source, c.window, c.days), c.as_bool)
            for c in cols.unit_columns()]


def _metrics(config: Config, key: str) -> list[Metric]:
    """The experiment's metrics and the alternatives the robustness check re-derives the verdict
    with (halved/doubled windows, CUPED)."""
    from .robustness import _alternatives

    exp = config.experiments[key]
    metrics = [config.metrics[m] for m in exp.roles()]
    return metrics + [m for _, _, changed in _alternatives(config, exp) for m in changed.values()]


def covariates(config: Config, key: str) -> tuple[str, ...]:
    return tuple(sorted({c for m in _metrics(config, key) if (c := getattr(m, "cuped_covariate", None))}))


def experiment_aggs(config: Config, key: str) -> list[Agg]:
    """Every aggregate an analysis of the experiment reads: its metrics and the alternatives the
    robustness check re-derives the verdict with (halved/doubled windows, CUPED)."""
    found = {a.key: a for m in _metrics(config, key) for _, a, _ in metric_aggs(m)}
    return [found[k] for k in sorted(found)]


# ---------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class StateSource:
    """A built state table, as `metrics.experiment_sql` reads it instead of exposures/events."""

    table: str
    names: dict[str, str]          # Agg.key → column prefix
    as_of: dt.datetime
    segments: tuple[str, ...]
    profile: str | None = None     # the data-quality profile table (quality.daily_profile), if any
    covariates: tuple[str, ...] = ()
    ages: str | None = None        # events per day x days since exposure x type (quality.age_profile)

    def covers(self, columns: tuple[MetricColumns, ...], segments: tuple[str, ...]) -> bool:
        return segments == self.segments[:len(segments)] and all(
            a.key in self.names for c in columns for _, a, _ in metric_aggs(c.metric)) and all(
            getattr(c, "covariate", None) in (None, *self.covariates) for c in columns)

    def unit_ctes(self, variants: str) -> list[str]:
        return [f"""exposed AS (
    SELECT *, CASE WHEN multi THEN 2 ELSE 1 END AS n_variants FROM {self.table}
)""", f"""units AS (
    SELECT *, CAST(exposed_at AS DATE) AS exposure_day
    FROM exposed WHERE n_variants = 1 AND variant IN ({variants})
)"""]

    def value_columns(self, col: MetricColumns) -> list[str]:
        out = []
        for which, agg, as_bool in metric_aggs(col.metric):
            alias = col.y if which == "y" else col.x
            out.append(f"{agg.value(self.names[agg.key], as_bool)} AS {alias}")
        return out


@dataclass(frozen=True)
class Plan:
    config: Config
    key: str
    exp: Experiment
    aggs: tuple[Agg, ...]
    names: dict[str, str]
    table: str
    spec: str
    definition_hash: str
    late_hours: float
    covariates: tuple[str, ...] = ()   # CUPAC exposure columns (value at first exposure)

    @property
    def profile(self) -> str | None:
        return self.table.replace("unit_state_", "unit_profile_") if self.scope().types else None

    @property
    def ages(self) -> str | None:
        return self.table.replace("unit_state_", "unit_ages_") if self.profile else None

    def scope(self, as_of: dt.datetime = dt.datetime(2000, 1, 1)):
        return make_scope(self.config, self.key, as_of)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.exp.segments)

    def source(self, as_of: dt.datetime) -> StateSource:
        return StateSource(self.table, self.names, as_of, self.segments, self.profile, self.covariates, self.ages)

    def parts(self) -> list[tuple[str, str, str, str]]:
        return [p for a in self.aggs for p in a.parts(self.names[a.key])]


def plan_for(config: Config, key: str) -> Plan:
    aggs = tuple(experiment_aggs(config, key))
    names = {a.key: f"a{i}" for i, a in enumerate(aggs)}
    exp = config.experiments[key]
    scope = make_scope(config, key, dt.datetime(2000, 1, 1))
    profile = [scope.types, [c.model_dump(mode="json") for c in scope.columns], scope.window_days,
               config.health.late_hours]
    spec = json.dumps({"segments": list(exp.segments), "aggregates": [a.key for a in aggs], "profile": profile,
                       "covariates": list(covariates(config, key))}, sort_keys=True)
    table = "unit_state_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return Plan(config, key, exp, aggs, names, table, spec, definition_hash(config, key), config.health.late_hours,
                 covariates(config, key))


def unsupported(plan: Plan) -> str | None:
    for a in plan.aggs:
        if a.source.aggregate == "count_distinct_days" and math.ceil(a.days) + 2 > 64:
            return (f"a count_distinct_days window of {a.days:g} days (the per-unit state keeps distinct days "
                    f"as bits, up to {MAX_BITMASK_DAYS} days): recomputed from the events at every pass")
    return None


def exposed_sql(plan: Plan, as_of: dt.datetime, only: str = "") -> str:
    seg = "".join(f", arg_min({quote_ident(s)}, exposed_at) AS seg_{i}" for i, s in enumerate(plan.segments))
    seg += "".join(f", arg_min(TRY_CAST({quote_ident(v)} AS DOUBLE), exposed_at) AS cov_{v}"
                   f", count(DISTINCT {quote_ident(v)}) AS cov_{v}_values" for v in plan.covariates)
    return f"""SELECT unit_id, min(exposed_at) AS exposed_at, count(DISTINCT variant) > 1 AS multi,
           arg_min(variant, exposed_at) AS variant{seg}
    FROM exposures WHERE experiment = {literal(plan.key)} AND exposed_at <= {timestamp_literal(as_of)}{only}
    GROUP BY unit_id"""


def aggregates_sql(plan: Plan, units: str, events: str, as_of: dt.datetime, only: str = "") -> str:
    """Per-unit aggregates of `events` in the windows of `units`: the events joined once to their
    unit's exposure (with the age `_age` every window compares, computed once per row), then one
    filtered aggregate per state column (`Agg.parts`)."""
    return _aggregates_sql(plan, f"{units} u JOIN {events} e ON e.unit_id = u.unit_id", "u.exposed_at",
                           "unit_id", as_of, only)


def joined_delta_sql(plan: Plan, events: str, only: str) -> str:
    """The fold's new rows `events` (alias e, filtered by `only`) joined once to their unit's state
    row: its rowid `_row` and first exposure `_exposed_at`. Both the aggregates
    (`joined_aggregates_sql`) and the quality profile fold read it."""
    return (f"SELECT e.*, u.rowid AS _row, u.exposed_at AS _exposed_at FROM {plan.table} u "
            f"JOIN {events} e ON e.unit_id = u.unit_id WHERE {only}")


def joined_aggregates_sql(plan: Plan, joined: str, as_of: dt.datetime) -> str:
    """`aggregates_sql` of rows already joined to their state row (`joined_delta_sql`), per `_row`."""
    return _aggregates_sql(plan, f"{joined} e", "e._exposed_at", "_row", as_of, "")


def _aggregates_sql(plan: Plan, source: str, exposed: str, key: str, as_of: dt.datetime, only: str) -> str:
    post = max((a.days for a in plan.aggs if a.side == "post"), default=0.0)
    pre = max((a.days for a in plan.aggs if a.side == "pre"), default=0.0)
    lower = f"{exposed} - {interval_days(pre)}" if pre else exposed
    names = ", ".join(sorted({literal(a.source.event) for a in plan.aggs}))
    cols = ",\n           ".join(f"{expr} AS {col}" for col, expr, _, _ in plan.parts())
    carried = f", {exposed} AS _exposed_at" if exposed != "e._exposed_at" else ""
    return f"""SELECT e.{key},
           {cols}
    FROM (SELECT e.*{carried}, epoch_us(e.occurred_at) - epoch_us({exposed}) AS _age
          FROM {source}
          WHERE e.event IN ({names}) AND e.occurred_at <= {timestamp_literal(as_of)}
            AND e.occurred_at >= {lower} AND e.occurred_at < {exposed} + {interval_days(post)}{only}) e
    GROUP BY e.{key}"""


def rows_sql(plan: Plan, units: str, events: str, as_of: dt.datetime) -> str:
    """State rows: the exposure summaries `units` with the aggregates of their `events`."""
    return _joined(plan, units, f"({aggregates_sql(plan, units, events, as_of)})", "USING (unit_id)")


def precomputed_rows_sql(plan: Plan, units: str, aggregates: str) -> str:
    """State rows: the exposure summaries `units` with the aggregates already computed in the table
    `aggregates`, per unit and first exposure (`state_group`)."""
    return _joined(plan, units, aggregates, "ON a.unit_id = x.unit_id AND a.exposed_at = x.exposed_at")


def _joined(plan: Plan, units: str, aggregates: str, on: str) -> str:
    """`units` (alias x) left-joined to `aggregates` (alias a): a unit without events gets 0 for
    counts and day bits, NULL for sums, minima and maxima."""
    if not plan.aggs:
        return f"SELECT * FROM {units}"
    cols = ", ".join(f"coalesce(a.{c}, 0) AS {c}" if rule in ("add", "or") else f"a.{c}"
                     for c, _, _, rule in plan.parts())
    return f"SELECT x.*, {cols} FROM {units} x LEFT JOIN {aggregates} a {on}"


def unfolded(reg: dict, file_id: str, ts: str) -> str:
    """Rows the state does not hold yet: from a later file, or too recent for its as_of."""
    return f"({file_id} > {int(reg['file_id'])} OR {ts} > {timestamp_literal(reg['as_of'])})"
