"""Per-unit state: a scheduled pass costs what arrived since the last one.

For each experiment a table holds one row per exposed unit: first exposure, variant, whether it
saw several variants, segment values, and for every metric window the unit's *mergeable*
aggregates (sum, count, min, max, a day bitmask for distinct days; CUPED pre-windows and the
windows of the robustness alternatives included). Sufficient statistics, segments, the day
series and every check built on per-unit values are grouped queries over this narrow table
(`metrics.experiment_sql` reads it through a `StateSource` that `sources.reading` puts in place), O(units) whatever the events.

Merge by load, not by time: a pass folds in exactly the rows of the files loaded since the
state's watermark (`unit_states.file_id`), plus rows loaded earlier whose time had not yet
reached the state's `as_of`, in one transaction that also advances the watermark:
  * units whose exposure summary changed: new units (with the events already loaded, before or
    after their exposure) and units whose first exposure moved are rebuilt from their events (one
    scan of the events for all experiments' rebuilt units); a variant switch or a changed segment
    value only updates the unit's row;
  * every other unit gets the aggregates of its new events merged in (sum + sum, max of max, …),
    joined once for all experiments.
A changed definition, `--full`, no state yet, or rows changed outside ingest rebuild the table;
an `--as-of` before the state's time reads the raw tables and leaves the state alone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from dataclasses import dataclass

import duckdb

from .config import Config, EventSource, Experiment, Metric, definition_hash
from .errors import MetricSQLError
from .loads import refresh_load_profile
from .metrics import MetricColumns, interval_days, literal, predicate, quote_ident, timestamp_literal

log = logging.getLogger(__name__)

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
        d = interval_days(self.days)
        window = (f"e.occurred_at >= u.exposed_at AND e.occurred_at < u.exposed_at + {d}" if self.side == "post"
                  else f"e.occurred_at < u.exposed_at AND e.occurred_at >= u.exposed_at - {d}")
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
        day = f"date_diff('day', CAST(u.exposed_at AS DATE), CAST(e.occurred_at AS DATE)) + {shift}"
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
    """(y | x, aggregate, as 0/1) behind a metric's per-unit numbers; none for raw-SQL metrics."""
    if metric.sql is not None:
        return []
    w = metric.window_days
    if metric.type == "ratio":
        return [("y", Agg(metric.numerator, "post", w), False), ("x", Agg(metric.denominator, "post", w), False)]
    source, as_bool = metric.source(), metric.type == "proportion"
    out = [("y", Agg(source, "post", w), as_bool)]
    if metric.cuped_days:
        out.append(("x", Agg(source, "pre", metric.cuped_days), as_bool))
    return out


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


# ---------------------------------------------------------------------------------- building and folding

@dataclass(frozen=True)
class Refresh:
    """How a pass brought an experiment's per-unit state up to date (`abproxy run --json`)."""

    mode: str                      # incremental | full
    reason: str
    source: StateSource | None     # None: the analysis reads the raw tables

    def record(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason}


@dataclass(frozen=True)
class _Plan:
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
        from .quality import make_scope

        return make_scope(self.config, self.key, as_of)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.exp.segments)

    def source(self, as_of: dt.datetime) -> StateSource:
        return StateSource(self.table, self.names, as_of, self.segments, self.profile, self.covariates, self.ages)

    def parts(self) -> list[tuple[str, str, str, str]]:
        return [p for a in self.aggs for p in a.parts(self.names[a.key])]


def _plan(config: Config, key: str) -> _Plan:
    aggs = tuple(experiment_aggs(config, key))
    names = {a.key: f"a{i}" for i, a in enumerate(aggs)}
    exp = config.experiments[key]
    from .quality import make_scope

    scope = make_scope(config, key, dt.datetime(2000, 1, 1))
    profile = [scope.types, [c.model_dump(mode="json") for c in scope.columns], scope.window_days,
               config.health.late_hours]
    spec = json.dumps({"segments": list(exp.segments), "aggregates": [a.key for a in aggs], "profile": profile,
                       "covariates": list(covariates(config, key))}, sort_keys=True)
    table = "unit_state_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return _Plan(config, key, exp, aggs, names, table, spec, definition_hash(config, key), config.health.late_hours,
                 covariates(config, key))


def _unsupported(plan: _Plan) -> str | None:
    for a in plan.aggs:
        if a.source.aggregate == "count_distinct_days" and math.ceil(a.days) + 2 > 64:
            return (f"a count_distinct_days window of {a.days:g} days (the per-unit state keeps distinct days "
                    f"as bits, up to {MAX_BITMASK_DAYS} days): recomputed from the events at every pass")
    return None


def _exposed_sql(plan: _Plan, as_of: dt.datetime, only: str = "") -> str:
    seg = "".join(f", arg_min({quote_ident(s)}, exposed_at) AS seg_{i}" for i, s in enumerate(plan.segments))
    seg += "".join(f", arg_min(TRY_CAST({quote_ident(v)} AS DOUBLE), exposed_at) AS cov_{v}"
                   f", count(DISTINCT {quote_ident(v)}) AS cov_{v}_values" for v in plan.covariates)
    return f"""SELECT unit_id, min(exposed_at) AS exposed_at, count(DISTINCT variant) > 1 AS multi,
           arg_min(variant, exposed_at) AS variant{seg}
    FROM exposures WHERE experiment = {literal(plan.key)} AND exposed_at <= {timestamp_literal(as_of)}{only}
    GROUP BY unit_id"""


def _aggregates_sql(plan: _Plan, units: str, events: str, as_of: dt.datetime, only: str = "") -> str:
    """Per-unit aggregates of `events` (alias e) in the windows of `units` (alias u)."""
    post = max((a.days for a in plan.aggs if a.side == "post"), default=0.0)
    pre = max((a.days for a in plan.aggs if a.side == "pre"), default=0.0)
    lower = f"u.exposed_at - {interval_days(pre)}" if pre else "u.exposed_at"
    names = ", ".join(sorted({literal(a.source.event) for a in plan.aggs}))
    cols = ",\n           ".join(f"{expr} AS {col}" for col, expr, _, _ in plan.parts())
    return f"""SELECT u.unit_id,
           {cols}
    FROM {units} u JOIN {events} e ON e.unit_id = u.unit_id
    WHERE e.event IN ({names}) AND e.occurred_at <= {timestamp_literal(as_of)}
      AND e.occurred_at >= {lower} AND e.occurred_at < u.exposed_at + {interval_days(post)}{only}
    GROUP BY u.unit_id"""


def _rows_sql(plan: _Plan, units: str, events: str, as_of: dt.datetime) -> str:
    """State rows: the exposure summaries `units` with the aggregates of their `events`."""
    if not plan.aggs:
        return f"SELECT * FROM {units}"
    cols = ", ".join(f"coalesce(a.{c}, 0) AS {c}" if rule in ("add", "or") else f"a.{c}"
                     for c, _, _, rule in plan.parts())
    return (f"SELECT x.*, {cols} FROM {units} x LEFT JOIN ({_aggregates_sql(plan, units, events, as_of)}) a "
            "USING (unit_id)")


MERGE = {"sum": "coalesce({t} + {d}, {t}, {d})", "add": "{t} + {d}", "or": "{t} | coalesce({d}, 0)",
         "max": "greatest({t}, {d})", "min": "least({t}, {d})"}


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    return tuple(con.execute("SELECT (SELECT count(*) FROM exposures), (SELECT count(*) FROM events)").fetchone())


def _registry(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    cur = con.execute("SELECT * FROM unit_states")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def _save(con, plan: _Plan, file_id: int, as_of: dt.datetime, counts: tuple[int, int], built: bool) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    old = con.execute("SELECT built_at FROM unit_states WHERE experiment = ?", [plan.key]).fetchone()
    con.execute("DELETE FROM unit_states WHERE experiment = ?", [plan.key])
    con.execute("INSERT INTO unit_states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [plan.key, plan.table, plan.definition_hash, plan.spec, file_id, as_of,
                 now if built or old is None else old[0], now, *counts])


def _build(con, plan: _Plan, as_of: dt.datetime, file_id: int, counts: tuple[int, int]) -> None:
    """(Re)build an experiment's state from the raw tables, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_x AS {_exposed_sql(plan, as_of)}")
        con.execute(f"CREATE OR REPLACE TABLE {plan.table} AS {_rows_sql(plan, '__abp_x', 'events', as_of)}")
        con.execute("DROP TABLE __abp_x")
        _build_profile(con, plan, as_of)
        _save(con, plan, file_id, as_of, counts, built=True)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _fold(con, items: list[tuple[_Plan, dict]], as_of: dt.datetime, file_id: int,
          counts: tuple[int, int]) -> None:
    """Fold the rows loaded since each state's watermark into every state, in one transaction:
    one read of the new events for all experiments, one scan of the events of rebuilt units."""
    t = timestamp_literal(as_of)
    w_min = min(reg["file_id"] for _, reg in items)
    s_min = min(reg["as_of"] for _, reg in items)
    pending = [r[0] for r in con.execute(
        "SELECT DISTINCT file_id FROM load_profile WHERE kind = 'events' AND file_id <= ? AND newest > ?",
        [w_min, s_min]).fetchall()]
    types = ", ".join(sorted({literal(a.source.event) for p, _ in items for a in p.aggs})) or "NULL"
    late = f" OR (file_id IN ({', '.join(map(str, pending))}) AND occurred_at > {timestamp_literal(s_min)})" if pending else ""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_delta AS SELECT * FROM events
                        WHERE event IN ({types}) AND occurred_at <= {t} AND (file_id > {w_min}{late})""")
        rebuilt = []
        for i, (plan, reg) in enumerate(items):
            rebuilt.append(_fold_units(con, plan, reg, as_of, i))
        units = " UNION ".join(f"SELECT unit_id FROM {r}" for r, _ in rebuilt)
        some = con.execute(f"SELECT count(*) FROM ({units})").fetchone()[0]
        # the stored events the fold needs: those of rebuilt units (all of them), and those repeating
        # a new row's (unit, event, time) — the quality profile's duplicate count needs to know them;
        # hash semi-joins against the small sets, bounded below by the oldest time either can need
        keys = any(p.profile for p, _ in items)
        lo = _oldest_needed(con, items, rebuilt, keys)
        where = f"e.event IN ({types}) AND e.occurred_at <= {t} AND e.occurred_at >= {lo}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_units AS {units}")
        parts = [f"SELECT e.* FROM events e SEMI JOIN __abp_units r ON r.unit_id = e.unit_id WHERE {where}"] if some else []
        if keys:
            # first on the time alone (one cheap key; materialized, so the optimizer cannot put the
            # three-key join over the whole table first), then exactly on the few candidates
            # static time bounds: DuckDB skips the row groups outside them (time-ordered loads)
            lo_t, hi_t = con.execute("SELECT min(occurred_at), max(occurred_at) FROM __abp_delta").fetchone()
            span = (f"e.occurred_at BETWEEN {timestamp_literal(lo_t)} AND {timestamp_literal(hi_t)}"
                    if lo_t is not None else "FALSE")
            con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_same_time AS SELECT * FROM events e
                            WHERE {span} AND e.occurred_at IN (SELECT occurred_at FROM __abp_delta)""")
            parts.append("""SELECT e.* FROM __abp_same_time e
                SEMI JOIN (SELECT DISTINCT unit_id, event, occurred_at FROM __abp_delta) k
                     ON k.unit_id = e.unit_id AND k.event = e.event AND k.occurred_at = e.occurred_at
                ANTI JOIN __abp_units r ON r.unit_id = e.unit_id""")
        con.execute("CREATE OR REPLACE TEMP TABLE __abp_old AS "
                    + (" UNION ALL ".join(parts) if parts else "SELECT * FROM events WHERE FALSE"))
        con.execute("DROP TABLE __abp_units")
        con.execute("DROP TABLE IF EXISTS __abp_same_time")
        for (plan, reg), (r, moved) in zip(items, rebuilt):
            con.execute(f"DELETE FROM {plan.table} WHERE unit_id IN (SELECT unit_id FROM {r})")
            con.execute(f"INSERT INTO {plan.table} BY NAME {_rows_sql(plan, r, '__abp_old', as_of)}")
            if plan.profile and (moved or _frontier_moved(con, plan, reg)):
                _build_profile(con, plan, as_of)
            elif plan.profile:
                _fold_profile(con, plan, reg, as_of, r)
            con.execute(f"DROP TABLE {r}")
            _save(con, plan, file_id, as_of, counts, built=False)
        con.execute("DROP TABLE __abp_delta")
        con.execute("DROP TABLE __abp_old")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _oldest_needed(con, items, rebuilt, keys: bool) -> str:
    """The oldest event time the scan of stored events can need (a static bound, so that DuckDB
    skips row groups of older events): the earliest window start of a rebuilt unit, and the
    earliest new row whose stored repeats the quality profile counts."""
    bounds = []
    for (plan, _), (r, _) in zip(items, rebuilt):
        pre = max((a.days for a in plan.aggs if a.side == "pre"), default=0.0)
        bounds.append(f"(SELECT min(exposed_at) - {interval_days(pre)} FROM {r})")
    if keys:
        bounds.append("(SELECT min(occurred_at) FROM __abp_delta)")
    lo = con.execute(f"SELECT least({', '.join(bounds)})").fetchone()[0] if bounds else None
    return timestamp_literal(lo) if lo is not None else "TIMESTAMP '0001-01-01'"


def _unfolded(reg: dict, file_id: str, ts: str) -> str:
    """Rows the state does not hold yet: from a later file, or too recent for its as_of."""
    return f"({file_id} > {int(reg['file_id'])} OR {ts} > {timestamp_literal(reg['as_of'])})"


def _fold_units(con, plan: _Plan, reg: dict, as_of: dt.datetime, i: int) -> tuple[str, int]:
    """Merge the new events of unchanged units into the state; update units whose variant or
    segments changed; return the temp table of units to rebuild (new, or first exposure moved) and
    how many of them moved."""
    t = timestamp_literal(as_of)
    touched = (f" AND unit_id IN (SELECT unit_id FROM exposures WHERE experiment = {literal(plan.key)} "
               f"AND exposed_at <= {t} AND {_unfolded(reg, 'file_id', 'exposed_at')})")
    x, r = f"__abp_x{i}", f"__abp_r{i}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {x} AS {_exposed_sql(plan, as_of, touched)}")
    if plan.aggs:
        fresh = _unfolded(reg, "e.file_id", "e.occurred_at")
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_d AS
            {_aggregates_sql(plan, plan.table, '__abp_delta', as_of, ' AND ' + fresh)}""")
        sets = ", ".join(f"{c} = {MERGE[rule].format(t=f'{plan.table}.{c}', d=f'd.{c}')}" for c, _, _, rule in plan.parts())
        con.execute(f"UPDATE {plan.table} SET {sets} FROM __abp_d d WHERE {plan.table}.unit_id = d.unit_id")
        con.execute("DROP TABLE __abp_d")
    seg = "".join(f", seg_{k} = x.seg_{k}" for k in range(len(plan.segments)))
    seg += "".join(f", cov_{v} = x.cov_{v}, cov_{v}_values = x.cov_{v}_values" for v in plan.covariates)
    con.execute(f"""UPDATE {plan.table} SET multi = x.multi, variant = x.variant{seg} FROM {x} x
                    WHERE {plan.table}.unit_id = x.unit_id AND {plan.table}.exposed_at = x.exposed_at""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {r} AS SELECT x.*, s.unit_id IS NOT NULL AS _moved FROM {x} x
                    LEFT JOIN {plan.table} s ON s.unit_id = x.unit_id
                    WHERE s.unit_id IS NULL OR s.exposed_at <> x.exposed_at""")
    moved = con.execute(f"SELECT count(*) FILTER (WHERE _moved) FROM {r}").fetchone()[0]
    con.execute(f"ALTER TABLE {r} DROP COLUMN _moved")
    con.execute(f"DROP TABLE {x}")
    return r, moved


def _window_events(plan: _Plan, units: str, events: str, as_of: dt.datetime, only: str = "") -> str:
    """The profile's events: `events` of the metric types in the post windows of `units`."""
    scope = plan.scope(as_of)
    names = ", ".join(literal(t) for t in scope.types)
    return f"""SELECT e.*, u.exposed_at AS _exposed_at FROM {units} u JOIN {events} e ON e.unit_id = u.unit_id
    WHERE e.event IN ({names}) AND e.occurred_at >= u.exposed_at
      AND e.occurred_at < u.exposed_at + {interval_days(scope.window_days)}
      AND e.occurred_at <= {timestamp_literal(as_of)}{only}"""


AGES = """SELECT CAST(occurred_at AS DATE) AS day,
           date_diff('day', CAST(_exposed_at AS DATE), CAST(occurred_at AS DATE)) AS age, event, count(*) AS n
    FROM {ev} GROUP BY ALL"""


def _build_profile(con, plan: _Plan, as_of: dt.datetime) -> None:
    """The data-quality profiles of the state's units from one join of their events: the per-day
    counts (quality.daily_profile) and the events by day x days since exposure (quality.age_profile)."""
    if not plan.profile:
        return
    from .quality import counts_sql

    con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_pev AS {_window_events(plan, plan.table, 'events', as_of)}")
    con.execute(f"""CREATE OR REPLACE TABLE {plan.profile} AS
        SELECT * FROM ({counts_sql(plan.scope(as_of), plan.late_hours, '__abp_pev')})""")
    con.execute(f"CREATE OR REPLACE TABLE {plan.ages} AS {AGES.format(ev='__abp_pev')}")
    con.execute("DROP TABLE __abp_pev")


def _fold_profile(con, plan: _Plan, reg: dict, as_of: dt.datetime, rebuilt: str) -> None:
    """Add the new rows of unchanged units (a row whose key was counted before adds a repeat) and
    every row of new units to the profile, per day."""
    from .quality import counts_sql

    scope, fresh = plan.scope(as_of), _unfolded(reg, "e.file_id", "e.occurred_at")
    delta = _window_events(plan, plan.table, "__abp_delta", as_of,
                           f" AND {fresh} AND u.unit_id NOT IN (SELECT unit_id FROM {rebuilt})")
    seen = f"(SELECT * FROM __abp_old e WHERE NOT {fresh})"
    new = _window_events(plan, rebuilt, "__abp_old", as_of)
    parts = (f"SELECT * FROM ({counts_sql(scope, plan.late_hours, 'dv', seen='seen')})",
             f"SELECT * FROM ({counts_sql(scope, plan.late_hours, 'nv')})")
    cols = [d[0] for d in con.execute(f"DESCRIBE {plan.profile}").fetchall() if d[0] != "day"]
    merged = ", ".join(f"greatest(p.{c}, d.{c}) AS {c}" if c.startswith("last") else
                       f"coalesce(p.{c}, 0) + coalesce(d.{c}, 0) AS {c}" for c in cols)
    added = ", ".join(f"max({c}) AS {c}" if c.startswith("last") else f"sum({c}) AS {c}" for c in cols)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_pd AS
        WITH dv AS ({delta}), seen AS {seen}, nv AS ({new})
        SELECT day, {added} FROM ({parts[0]} UNION ALL BY NAME {parts[1]}) GROUP BY day""")
    con.execute(f"""CREATE OR REPLACE TABLE {plan.profile} AS
        SELECT day, {merged} FROM {plan.profile} p FULL JOIN __abp_pd d USING (day)""")
    con.execute("DROP TABLE __abp_pd")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_pa AS WITH dv AS ({delta}), nv AS ({new})
        {AGES.format(ev='(SELECT * FROM dv UNION ALL SELECT * FROM nv)')}""")
    con.execute(f"""CREATE OR REPLACE TABLE {plan.ages} AS
        SELECT day, age, event, CAST(coalesce(p.n, 0) + coalesce(d.n, 0) AS BIGINT) AS n
        FROM {plan.ages} p FULL JOIN __abp_pa d USING (day, age, event)""")
    con.execute("DROP TABLE __abp_pa")


def _frontier_moved(con, plan: _Plan, reg: dict) -> bool:
    """A new file loaded no later than `late_hours` before an old one moves the old file's
    'late' frontier (its rows' lateness changes): the profile is rebuilt."""
    return bool(con.execute(f"""SELECT count(*) FROM load_profile n JOIN load_profile o ON n.event = o.event
        WHERE n.kind = 'events' AND o.kind = 'events' AND n.file_id > ? AND o.file_id <= ?
          AND n.loaded_at <= o.loaded_at - {interval_days(plan.late_hours / 24)}""",
                                [reg["file_id"], reg["file_id"]]).fetchone()[0])


def refresh(con: duckdb.DuckDBPyConnection, config: Config, keys: list[str], as_of: dt.datetime,
            full: bool = False) -> dict[str, Refresh]:
    """Bring the per-unit state of these experiments to `as_of`; say per experiment how and why."""
    refresh_load_profile(con)
    registry = _registry(con)
    file_id = con.execute("SELECT greatest((SELECT coalesce(max(file_id), 0) FROM files), "
                          "(SELECT coalesce(max(file_id), 0) FROM load_profile))").fetchone()[0]
    counts = _counts(con)
    out: dict[str, Refresh] = {}
    folds: list[tuple[_Plan, dict]] = []
    for key in keys:
        try:
            plan = _plan(config, key)
        except Exception as exc:  # a definition the SQL builder refuses: the analysis reports it
            out[key] = Refresh("full", f"no per-unit state ({exc})", None)
            continue
        reg = registry.get(key)
        if (why := _unsupported(plan)) is not None:
            out[key] = Refresh("full", why, None)
        elif reg is not None and as_of < reg["as_of"]:
            out[key] = Refresh("full", f"--as-of {as_of:%Y-%m-%d %H:%M} is before the state's time "
                                       f"({reg['as_of']:%Y-%m-%d %H:%M}): recomputed from the events, state kept", None)
        elif (why := _rebuild_reason(con, plan, reg, full, counts)) is not None:
            out[key] = _try(lambda: _build(con, plan, as_of, file_id, counts), plan, as_of, "full", why)
        else:
            folds.append((plan, reg))
    if folds:
        files = file_id - min(reg["file_id"] for _, reg in folds)
        why = f"folded in the rows of {files} new file(s)" if files else "no new files since the last pass"
        result = _try(lambda: _fold(con, folds, as_of, file_id, counts), None, as_of, "incremental", why)
        for plan, _ in folds:
            source = plan.source(as_of) if result.mode == "incremental" else None
            out[plan.key] = Refresh(result.mode, result.reason, source)
    return out


def _try(fn, plan: _Plan | None, as_of: dt.datetime, mode: str, why: str) -> Refresh:
    try:
        fn()
    except (duckdb.Error, MetricSQLError) as exc:   # a refused metric fails its own run, not the pass
        log.warning("per-unit state could not be updated (%s); reading the raw tables", exc)
        return Refresh("full", f"per-unit state unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                               "recomputed from the events", None)
    return Refresh(mode, why, plan.source(as_of) if plan else None)


def _rebuild_reason(con, plan: _Plan, reg: dict | None, full: bool, counts: tuple[int, int]) -> str | None:
    if full:
        return "--full: recomputed from the events"
    if reg is None:
        return "no per-unit state yet: built from the events"
    if reg["definition_hash"] != plan.definition_hash or reg["spec"] != plan.spec:
        return "the experiment's or a metric's definition changed: rebuilt from the events"
    new = con.execute("""SELECT coalesce(sum(rows) FILTER (WHERE kind = 'exposures'), 0),
                                coalesce(sum(rows) FILTER (WHERE kind = 'events'), 0)
                         FROM load_profile WHERE file_id > ?""", [reg["file_id"]]).fetchone()
    if (reg["exposure_rows"] + new[0], reg["event_rows"] + new[1]) != counts:
        return "rows were added or removed outside ingest: rebuilt from the events"
    return None
