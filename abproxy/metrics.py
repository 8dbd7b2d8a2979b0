"""The metric SQL builder: metric definitions → one query per experiment, made of small pieces.

The query (`experiment_sql`) is a WITH clause of six CTEs, each written by its own function:
  1. `exposed`: first exposure per unit; units seen in more than one variant are dropped (and counted);
  2. `units`: the kept units with their variant, exposure day and segment values;
  3. `unit_events`: one scan of `events` joined to the units, each metric's post-exposure window (and
     CUPED pre-window) aggregated with FILTER clauses;
  4. `unit_values`: one row per unit, every metric's per-unit columns (0 without events), raw SQL
     metrics joined in, summed per unit;
  5. `capped`: capping at a pooled quantile or an absolute value (METHODS §6);
  6. `multi`: how many units were exposed to more than one variant;
then `stats_select`: n and the sums each metric type declares, per variant with GROUPING SETS for
overall, exposure day and segments. `unit_sql` is the same WITH clause ending in the per-unit table.

Every identifier from the configuration is validated and quoted; names never reach SQL unquoted. How to add
an engine: subclass `dialect.Dialect` (quoting, intervals, compensated sums, arg_min, quantiles, casts) and
pass it as `experiment_sql(..., dialect=...)`; the pieces here use nothing engine-specific outside it. How
to add a metric type: subclass `metric_types.MetricColumns` (its per-unit columns, its sums, how it reads
its moments back, its estimator) and register it in `metric_types.TYPES`; the pieces here ask the type,
never test `metric.type`. The incremental state reuses `stats_select` over its per-unit table.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .config import IDENTIFIER, Config, Experiment, Metric
from .dialect import DUCKDB, Dialect
from .errors import MetricSQLError
from .metric_types import MetricColumns, UnitColumn, columns_for
from .sqlguard import UnsafeSQL, check_predicate, check_query

CORE_EXPOSURE = {"unit_id", "experiment", "variant", "exposed_at", "file_id", "loaded_at"}


# --------------------------------------------------------------------------- names and literals

def quote_ident(name: str, d: Dialect = DUCKDB) -> str:
    """A configuration name as a quoted identifier, after checking it is one."""
    if not IDENTIFIER.match(name):
        raise MetricSQLError(f"'{name}' is not a valid column name (letters, digits, underscore)")
    return d.ident(name)


def literal(value: str, d: Dialect = DUCKDB) -> str:
    return d.literal(value)


def timestamp_literal(value: dt.datetime, d: Dialect = DUCKDB) -> str:
    return d.timestamp(value)


def interval_days(days: float, d: Dialect = DUCKDB) -> str:
    return d.interval_days(days)


def predicate(where: str | None, metric: str) -> str:
    """The metric's `where` as one bracketed condition, checked by DuckDB's parser (sqlguard)."""
    if not where:
        return "TRUE"
    try:
        return check_predicate(where, metric)
    except UnsafeSQL as exc:
        raise MetricSQLError(str(exc)) from None


# --------------------------------------------------------------------------- windows

def post_window(days: float, d: Dialect = DUCKDB, event: str = "e", unit: str = "u") -> str:
    """An event at or after the unit's exposure and before exposure + `days`."""
    return (f"{event}.occurred_at >= {unit}.exposed_at AND "
            f"{event}.occurred_at < {unit}.exposed_at + {d.interval_days(days)}")


def pre_window(days: float, d: Dialect = DUCKDB, event: str = "e", unit: str = "u") -> str:
    """An event in the `days` before the unit's exposure (CUPED pre-period)."""
    return (f"{event}.occurred_at < {unit}.exposed_at AND "
            f"{event}.occurred_at >= {unit}.exposed_at - {d.interval_days(days)}")


# --------------------------------------------------------------------------- the plan of one query

@dataclass(frozen=True)
class ExperimentQuery:
    sql: str                       # per-variant sufficient statistics (grouping sets)
    unit_sql: str                  # the per-unit values behind them (tests, distribution checks)
    columns: tuple[MetricColumns, ...]
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Everything the pieces of one experiment's query need."""

    key: str
    experiment: Experiment
    as_of: dt.datetime
    columns: tuple[MetricColumns, ...]
    segments: tuple[str, ...]
    d: Dialect = DUCKDB
    source: Any = None             # a per-unit state (`state.StateSource`) read instead of exposures/events

    @property
    def event_metrics(self) -> list[MetricColumns]:
        return [c for c in self.columns if not c.raw]

    @property
    def raw_metrics(self) -> list[MetricColumns]:
        return [c for c in self.columns if c.raw]

    @property
    def seg_cols(self) -> list[str]:
        return [f"seg_{i}" for i in range(len(self.segments))]

    @property
    def covariates(self) -> list[str]:
        """CUPAC exposure columns, each carried as cov_{name} (and cov_{name}_values: distinct values)."""
        return sorted({c.covariate for c in self.columns if c.covariate})

    @property
    def unit_attrs(self) -> list[str]:
        """What `units` carries besides unit_id, exposed_at, variant and exposure_day."""
        return self.seg_cols + [n for v in self.covariates for n in (f"cov_{v}", f"cov_{v}_values")]


def metric_columns(config: Config, experiment: Experiment) -> tuple[MetricColumns, ...]:
    return tuple(columns_for(key, f"m{i}", config.metrics[key]) for i, key in enumerate(experiment.roles()))


def experiment_sql(config: Config, key: str, as_of: dt.datetime,
                   exposure_columns: set[str] | None = None, event_columns: set[str] | None = None,
                   keys: list[str] | None = None, extra: dict[str, Metric] | None = None,
                   source: Any = None, dialect: Dialect = DUCKDB) -> ExperimentQuery:
    """Build the single query returning per-variant sufficient statistics for one experiment.

    Rows: one per grouping set — `dim` is 'overall', 'day' or a segment name, `dim_value` its value.
    Columns: variant, dim, dim_value, n, then the sums each metric type declares
    (`metric_types`), plus `excluded_multi`.
    `keys` keeps only these metrics of the experiment; `extra` adds metric definitions under their
    own keys (aliases x0, x1, …), computed in the same scan — e.g. variants of a metric with other
    settings (robustness.robustness_check). `source` (a `state.StateSource`; default: the one
    `sources.reading` put in place for this experiment and as_of, if it holds every aggregate needed)
    replaces the first steps — exposures and the events join — by a read of that state table.
    """
    exp = config.experiments[key]
    columns = metric_columns(config, exp)
    if keys is not None:
        columns = tuple(c for c in columns if c.key in keys)
    columns += tuple(columns_for(k, f"x{i}", m) for i, (k, m) in enumerate((extra or {}).items()))
    plan = Plan(key, exp, as_of, columns, tuple(exp.segments), dialect, _state_source(source, key, as_of, columns, exp))
    _check_columns(plan, exposure_columns, event_columns)
    ctes = with_clause(plan)
    return ExperimentQuery(ctes + stats_select(plan), ctes + "SELECT * FROM capped", columns, plan.segments)


def _state_source(source: Any, key: str, as_of: dt.datetime, columns: tuple[MetricColumns, ...],
                  exp: Experiment) -> Any:
    if source is None:
        from .sources import active

        source = active(key, as_of)
    return source if source is not None and source.covers(columns, tuple(exp.segments)) else None


def with_clause(plan: Plan) -> str:
    if plan.source is not None:
        parts = plan.source.unit_ctes(", ".join(plan.d.literal(v) for v in plan.experiment.variants))
    else:
        parts = [exposed_cte(plan), units_cte(plan)]
    if plan.event_metrics and plan.source is None:
        parts.append(unit_events_cte(plan))
    parts += [unit_values_cte(plan), capped_cte(plan), multi_cte()]
    return "WITH " + ",\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the CTEs

def exposed_cte(plan: Plan) -> str:
    d = plan.d
    segs = "".join(f", {d.arg_min(quote_ident(s, d), 'exposed_at')} AS seg_{i}" for i, s in enumerate(plan.segments))
    segs += "".join(f", {d.arg_min(d.try_double(quote_ident(v, d)), 'exposed_at')} AS cov_{v}"
                    f", count(DISTINCT {quote_ident(v, d)}) AS cov_{v}_values" for v in plan.covariates)
    return f"""exposed AS (
    SELECT unit_id, min(exposed_at) AS exposed_at, count(DISTINCT variant) AS n_variants,
           {d.arg_min('variant', 'exposed_at')} AS variant{segs}
    FROM exposures
    WHERE experiment = {d.literal(plan.key)} AND exposed_at <= {d.timestamp(plan.as_of)}
    GROUP BY unit_id
)"""


def units_cte(plan: Plan) -> str:
    d = plan.d
    variants = ", ".join(d.literal(v) for v in plan.experiment.variants)
    segs = "".join(f", {s}" for s in plan.unit_attrs)
    return f"""units AS (
    SELECT unit_id, exposed_at, variant, {d.day('exposed_at')} AS exposure_day{segs}
    FROM exposed WHERE n_variants = 1 AND variant IN ({variants})
)"""


def aggregate(col: UnitColumn, metric: str, d: Dialect = DUCKDB) -> str:
    """The SQL of one per-unit column over the joined events `e` of unit `u`."""
    source = col.source
    window = (post_window if col.window == "post" else pre_window)(col.days, d)
    column = f"e.{quote_ident(source.column, d)}"
    cond = f"FILTER (WHERE e.event = {d.literal(source.event)} AND {window} AND {predicate(source.where, metric)})"
    expr = {
        "sum": f"{d.sum(column)} {cond}",
        "count": f"count(*) {cond}",
        "count_distinct_days": f"count(DISTINCT {d.day('e.occurred_at')}) {cond}",
        "max": f"max({column}) {cond}",
        "min": f"min({column}) {cond}",
        "avg": f"{d.avg(column)} {cond}",
        "exists": d.double(f"count(*) {cond} > 0"),
    }[source.aggregate]
    if col.as_bool and source.aggregate != "exists":
        expr = d.double(f"coalesce({expr}, 0) > 0")
    return d.double(expr)


def unit_events_cte(plan: Plan) -> str:
    d, metrics = plan.d, plan.event_metrics
    aggs = [f"{aggregate(u, c.key, d)} AS {u.name}" for c in metrics for u in c.unit_columns()]
    names = ", ".join(sorted({d.literal(s.event) for c in metrics for s in c.sources()}))
    post = max(c.metric.window_days for c in metrics)
    pre = max([c.metric.cuped_days or 0 for c in metrics])
    lower = f"u.exposed_at - {d.interval_days(pre)}" if pre else "u.exposed_at"
    sep = ",\n           "
    return f"""unit_events AS (
    SELECT u.unit_id,
           {sep.join(aggs)}
    FROM units u JOIN events e ON e.unit_id = u.unit_id
    WHERE e.event IN ({names}) AND e.occurred_at <= {d.timestamp(plan.as_of)}
      AND e.occurred_at >= {lower} AND e.occurred_at < u.exposed_at + {d.interval_days(post)}
    GROUP BY u.unit_id
)"""


def _raw_sql(col: MetricColumns, experiment: str, as_of: dt.datetime, d: Dialect = DUCKDB) -> str:
    """A raw SQL metric's query with {as_of} and {experiment} filled in (also `datacheck`'s)."""
    sql = col.metric.sql.strip().rstrip(";")
    if ";" in sql:
        raise MetricSQLError(f"metric '{col.key}': 'sql' must be a single SELECT statement")
    return sql.replace("{as_of}", d.timestamp(as_of)).replace("{experiment}", d.literal(experiment))


def _checked_raw(col: MetricColumns, plan: Plan) -> str:
    """The raw query bracketed for FROM (…), checked by DuckDB's parser (sqlguard)."""
    try:
        return check_query(_raw_sql(col, plan.key, plan.as_of, plan.d), col.key)
    except UnsafeSQL as exc:
        raise MetricSQLError(str(exc)) from None


def raw_join(col: MetricColumns, plan: Plan) -> tuple[str, list[str]]:
    """(LEFT JOIN of a raw SQL metric, its value columns). A raw query returning several rows for a
    unit is summed, never joined as is (a plain join would duplicate the unit in every metric)."""
    d, a = plan.d, col.alias
    sums = f"{d.sum(d.double('value'))} AS value"
    values = [f"coalesce({d.double(f'{a}.value')}, 0) AS {col.y}"]
    if col.x:
        sums += f", {d.sum(d.double('denominator'))} AS denominator"
        values.append(f"coalesce({d.double(f'{a}.denominator')}, 0) AS {col.x}")
    join = (f"LEFT JOIN (SELECT {d.text('unit_id')} AS unit_id, {sums} FROM {_checked_raw(col, plan)} raw "
            f"GROUP BY 1) {a} ON {a}.unit_id = u.unit_id")
    return join, values


def unit_values_cte(plan: Plan) -> str:
    value_cols, joins = [], []
    if plan.event_metrics and plan.source is not None:
        value_cols += [v for c in plan.event_metrics for v in plan.source.value_columns(c)]
    elif plan.event_metrics:
        joins.append("LEFT JOIN unit_events ue ON ue.unit_id = u.unit_id")
        value_cols += [f"coalesce(ue.{u.name}, 0) AS {u.name}" for c in plan.event_metrics for u in c.unit_columns()]
    for c in plan.raw_metrics:
        join, values = raw_join(c, plan)
        joins.append(join)
        value_cols += values
    value_cols += [f"coalesce(u.cov_{c.covariate}, 0) AS {c.x}" for c in plan.columns if c.covariate]
    segs = "".join(f", u.{s}" for s in plan.seg_cols + [f"cov_{v}_values" for v in plan.covariates])
    return f"""unit_values AS (
    SELECT u.unit_id, u.variant, u.exposure_day{segs},
           {', '.join(value_cols)}
    FROM units u {' '.join(joins)}
)"""


def _unit_value_names(plan: Plan) -> list[str]:
    """The columns of `unit_values`, in order."""
    names = ["unit_id", "variant", "exposure_day", *plan.seg_cols, *(f"cov_{v}_values" for v in plan.covariates)]
    names += [u.name for c in plan.event_metrics for u in c.unit_columns()]
    names += [n for c in plan.raw_metrics for n in c.unit_names()]
    return names + [c.x for c in plan.columns if c.covariate]


def capped_cte(plan: Plan) -> str:
    """Winsorize capped metrics: min(x, c), c a pooled quantile of the unit values (METHODS §6)."""
    d, caps, bounds = plan.d, [], {}
    for c in plan.columns:
        for col in (c.capped_names() if c.metric.capping is not None else []):
            if c.metric.capping.value is not None:       # an absolute cap: a constant
                bounds[col] = c.cap_sql(col, d)
            else:                                        # a pooled quantile: an aggregate of the unit rows
                caps.append(f"{c.cap_sql(col, d)} AS cap_{col}")
                bounds[col] = f"coalesce(cap_{col}, {col})"
    if not bounds:
        return "capped AS (SELECT * FROM unit_values)"
    select = ", ".join(f"least(unit_values.{n}, {bounds[n]}) AS {n}" if n in bounds else f"unit_values.{n}"
                       for n in _unit_value_names(plan))
    cap_from = f", (SELECT {', '.join(caps)} FROM unit_values) caps" if caps else ""
    return f"capped AS (SELECT {select} FROM unit_values{cap_from})"


def multi_cte() -> str:
    return "multi AS (SELECT count(*) AS excluded_multi FROM exposed WHERE n_variants > 1)"


# --------------------------------------------------------------------------- sufficient statistics

def _dimensions(plan: Plan) -> tuple[str, str, str]:
    """(grouping sets, CASE naming the dimension, CASE giving its value) for overall, day and segments."""
    d = plan.d
    sets = ["(variant)", "(variant, exposure_day)"] + [f"(variant, {s})" for s in plan.seg_cols]
    dim = " ".join(f"WHEN GROUPING({c}) = 0 THEN {d.literal(s)}" for c, s in zip(plan.seg_cols, plan.segments))
    val = " ".join(f"WHEN GROUPING({c}) = 0 THEN {d.text(c)}" for c in plan.seg_cols)
    return (", ".join(sets),
            f"CASE WHEN GROUPING(exposure_day) = 0 THEN 'day' {dim} ELSE 'overall' END",
            f"CASE WHEN GROUPING(exposure_day) = 0 THEN {d.text('exposure_day')} {val} ELSE '' END")


def stats_select(plan: Plan, source: str = "capped") -> str:
    """n and every metric's declared sums per variant and dimension, over the per-unit table `source`
    (columns: variant, exposure_day, seg_i and the metrics' per-unit columns)."""
    d = plan.d
    sets, dim, value = _dimensions(plan)
    sums = [f"{expr} AS {name}" for c in plan.columns for name, expr in c.sums(d)]
    sep = ",\n       "
    return f"""SELECT variant,
       {dim} AS dim,
       {value} AS dim_value,
       count(*) AS n,
       {sep.join(sums)},
       {d.any_value('(SELECT excluded_multi FROM multi)')} AS excluded_multi
FROM {source}
GROUP BY GROUPING SETS ({sets})"""


# --------------------------------------------------------------------------- checks and the catalog

def _check_columns(plan: Plan, exposure_columns: set[str] | None, event_columns: set[str] | None) -> None:
    for s in plan.segments:
        quote_ident(s)
        if exposure_columns is not None and s not in exposure_columns:
            raise MetricSQLError(f"segment '{s}' is not a column of the exposures (known attributes: "
                                 f"{', '.join(sorted(exposure_columns - CORE_EXPOSURE)) or 'none'})")
    for c in plan.columns:
        if c.covariate:
            quote_ident(c.covariate)
            if exposure_columns is not None and c.covariate not in exposure_columns:
                raise MetricSQLError(f"metric '{c.key}': cuped covariate '{c.covariate}' is not a column of the "
                                     f"exposures (known attributes: "
                                     f"{', '.join(sorted(exposure_columns - CORE_EXPOSURE)) or 'none'})")
        for source in c.sources():
            quote_ident(source.column)
            if event_columns is not None and source.column not in event_columns:
                raise MetricSQLError(f"metric '{c.key}': column '{source.column}' is not in the events table")


def quantile_sql(query: ExperimentQuery, col: MetricColumns, z: float, d: Dialect = DUCKDB) -> str:
    """Per variant: n, the sample q-quantile x_(k) and the order statistics x_(l), x_(u) of a quantile
    metric's per-unit values, ranked inside the engine (METHODS §14; ranks as `stats.quantile_ranks`:
    k = ⌈nq⌉, l = ⌊nq − z√(nq(1−q))⌋, u = ⌈nq + z√(nq(1−q))⌉, clipped to 1..n)."""
    q = float(col.metric.quantile)
    dq, dz, d1q = (d.double(repr(v)) for v in (q, float(z), 1 - q))  # DOUBLE, never DECIMAL
    half = f"{dz} * sqrt(n * {dq} * {d1q})"
    rank = {"est": f"least(n, greatest(1, CAST(ceil(n * {dq}) AS BIGINT)))",
            "lo": f"greatest(1, CAST(floor(n * {dq} - {half}) AS BIGINT))",
            "hi": f"least(n, CAST(ceil(n * {dq} + {half}) AS BIGINT))"}
    picks = ",\n       ".join(f"max(y) FILTER (WHERE r = {expr}) AS {name}" for name, expr in rank.items())
    return f"""SELECT variant, {d.any_value('n')} AS n,
       {picks}
FROM (SELECT variant, {col.y} AS y, row_number() OVER (PARTITION BY variant ORDER BY {col.y}) AS r,
             count(*) OVER (PARTITION BY variant) AS n
      FROM ({query.unit_sql}) unit_rows) ranked
GROUP BY variant"""


def metric_sql(config: Config, metric: str, experiment: str | None = None) -> str:
    """The generated query for one metric (for the metrics catalog), on an experiment using it."""
    users = [k for k, e in config.experiments.items() if metric in e.roles()]
    key = experiment or (users[0] if users else None)
    if key is None:
        return "-- not used by any experiment yet"
    return experiment_sql(config, key, dt.datetime(2000, 1, 1), keys=[metric]).sql.replace(
        "TIMESTAMP '2000-01-01 00:00:00.000000'", "{as_of}")
