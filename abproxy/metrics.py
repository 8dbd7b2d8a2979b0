"""Metric definitions → one SQL query per experiment: per-unit values, then sufficient statistics.

The query (see `experiment_sql`) has four steps, all inside DuckDB:
  1. `exposed`: first exposure per unit; units seen in more than one variant are dropped (and counted);
  2. `unit_values`: one scan of `events` joined to the units, each metric's post-exposure window
     (and CUPED pre-window) aggregated with FILTER clauses; units without events count as 0;
  3. capping at a pooled quantile or an absolute value (METHODS §6);
  4. n, Σy, Σy², Σx, Σx², Σxy per variant with GROUPING SETS for overall, exposure day and segments.
Every identifier from the configuration is validated and quoted; names never reach SQL unquoted.
This module is the one place that writes metric SQL: a second engine would be a second backend here.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from typing import Any

from .config import IDENTIFIER, Config, EventSource, Experiment, Metric
from .errors import MetricSQLError

FORBIDDEN_IN_PREDICATE = re.compile(r";|--|/\*|\*/")


def quote_ident(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise MetricSQLError(f"'{name}' is not a valid column name (letters, digits, underscore)")
    return f'"{name}"'


def literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def timestamp_literal(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def interval_days(days: float) -> str:
    return f"INTERVAL {int(round(days * 86400))} SECOND"


def predicate(where: str | None, metric: str) -> str:
    if not where:
        return "TRUE"
    if FORBIDDEN_IN_PREDICATE.search(where):
        raise MetricSQLError(f"metric '{metric}': 'where' must be one SQL condition (no ';' or comments)")
    if not _balanced(where):
        raise MetricSQLError(f"metric '{metric}': 'where' has unbalanced parentheses or quotes")
    return f"({where})"


def _balanced(sql: str) -> bool:
    """Parentheses balanced outside string literals, literals closed: `a) OR (TRUE` would otherwise
    escape the brackets around the predicate and override the event and window conditions."""
    depth = 0
    for ch in re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "", sql):
        if ch in "'\"":
            return False
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@dataclass(frozen=True)
class MetricColumns:
    """Where a metric's per-unit numbers live in the unit table: y (outcome or ratio numerator)
    and x (ratio denominator or CUPED covariate), or no x."""

    key: str
    alias: str
    metric: Metric

    @property
    def y(self) -> str:
        return f"{self.alias}_y"

    @property
    def x(self) -> str | None:
        if self.metric.type == "ratio" or self.metric.cuped_days or self.metric.cuped_covariate:
            return f"{self.alias}_x"
        return None

    @property
    def covariate(self) -> str | None:
        """CUPAC: the exposure column whose value at first exposure is x (METHODS §17)."""
        return self.metric.cuped_covariate


def _aggregate(source: EventSource, window: str, metric: str, as_bool: bool) -> str:
    column = f"e.{quote_ident(source.column)}"
    cond = f"e.event = {literal(source.event)} AND {window} AND {predicate(source.where, metric)}"
    expr = {
        "sum": f"fsum({column}) FILTER (WHERE {cond})",
        "count": f"count(*) FILTER (WHERE {cond})",
        "count_distinct_days": f"count(DISTINCT CAST(e.occurred_at AS DATE)) FILTER (WHERE {cond})",
        "max": f"max({column}) FILTER (WHERE {cond})",
        "min": f"min({column}) FILTER (WHERE {cond})",
        "avg": f"favg({column}) FILTER (WHERE {cond})",
        "exists": f"CAST(count(*) FILTER (WHERE {cond}) > 0 AS DOUBLE)",
    }[source.aggregate]
    if as_bool and source.aggregate != "exists":
        expr = f"CAST(coalesce({expr}, 0) > 0 AS DOUBLE)"
    return f"CAST({expr} AS DOUBLE)"


def _post_window(days: float) -> str:
    return f"e.occurred_at >= u.exposed_at AND e.occurred_at < u.exposed_at + {interval_days(days)}"


def _pre_window(days: float) -> str:
    return f"e.occurred_at < u.exposed_at AND e.occurred_at >= u.exposed_at - {interval_days(days)}"


def _event_columns(col: MetricColumns) -> list[tuple[str, str]]:
    """(alias, aggregate expression over the joined events) for an event-based metric."""
    m = col.metric
    if m.type == "ratio":
        return [(col.y, _aggregate(m.numerator, _post_window(m.window_days), col.key, False)),
                (col.x, _aggregate(m.denominator, _post_window(m.window_days), col.key, False))]
    source = m.source()
    out = [(col.y, _aggregate(source, _post_window(m.window_days), col.key, m.type == "proportion"))]
    if m.cuped_days:
        out.append((col.x, _aggregate(source, _pre_window(m.cuped_days), col.key, m.type == "proportion")))
    return out


def _sources(metric: Metric) -> list[EventSource]:
    if metric.sql is not None:
        return []
    return [metric.numerator, metric.denominator] if metric.type == "ratio" else [metric.source()]


def _raw_sql(col: MetricColumns, experiment: str, as_of: dt.datetime) -> str:
    sql = col.metric.sql.strip().rstrip(";")
    if ";" in sql:
        raise MetricSQLError(f"metric '{col.key}': 'sql' must be a single SELECT statement")
    sql = sql.replace("{as_of}", timestamp_literal(as_of)).replace("{experiment}", literal(experiment))
    return sql


@dataclass(frozen=True)
class ExperimentQuery:
    sql: str                       # per-variant sufficient statistics (grouping sets)
    unit_sql: str                  # the per-unit values behind them (tests, distribution checks)
    columns: tuple[MetricColumns, ...]
    segments: tuple[str, ...]


def metric_columns(config: Config, experiment: Experiment) -> tuple[MetricColumns, ...]:
    return tuple(MetricColumns(key, f"m{i}", config.metrics[key]) for i, key in enumerate(experiment.roles()))


def experiment_sql(config: Config, key: str, as_of: dt.datetime,
                   exposure_columns: set[str] | None = None, event_columns: set[str] | None = None,
                   keys: list[str] | None = None, extra: dict[str, Metric] | None = None,
                   source: Any = None) -> ExperimentQuery:
    """Build the single query returning per-variant sufficient statistics for one experiment.

    Rows: one per grouping set — `dim` is 'overall', 'day' or a segment name, `dim_value` its value.
    Columns: variant, dim, dim_value, n, then for each metric alias a: a_y_sum, a_y_sq
    (and a_x_sum, a_x_sq, a_xy for ratio/CUPED metrics); plus `excluded_multi` in the overall rows.
    `keys` keeps only these metrics of the experiment; `extra` adds metric definitions under their
    own keys (aliases x0, x1, …), computed in the same scan — e.g. variants of a metric with other
    settings (robustness.robustness_check). `source` (a `state.StateSource`; default: the one `sources.reading` put in
    place for this experiment and as_of, if it holds every aggregate needed) replaces the first
    steps — exposures and the events join — by a read of that state table.
    """
    exp = config.experiments[key]
    columns = metric_columns(config, exp)
    if keys is not None:
        columns = tuple(c for c in columns if c.key in keys)
    columns += tuple(MetricColumns(k, f"x{i}", m) for i, (k, m) in enumerate((extra or {}).items()))
    segments = tuple(exp.segments)
    _check_columns(columns, segments, exposure_columns, event_columns)
    as_of_sql = timestamp_literal(as_of)
    seg_select = "".join(f", arg_min({quote_ident(s)}, exposed_at) AS seg_{i}" for i, s in enumerate(segments))
    seg_cols = "".join(f", seg_{i}" for i in range(len(segments)))
    covariates = sorted({c.covariate for c in columns if c.covariate})
    seg_select += "".join(f", arg_min(TRY_CAST({quote_ident(v)} AS DOUBLE), exposed_at) AS cov_{v}"
                          f", count(DISTINCT {quote_ident(v)}) AS cov_{v}_values" for v in covariates)
    seg_cols += "".join(f", cov_{v}, cov_{v}_values" for v in covariates)
    variants = ", ".join(literal(v) for v in exp.variants)

    event_metrics = [c for c in columns if c.metric.sql is None]
    raw_metrics = [c for c in columns if c.metric.sql is not None]
    if source is None:
        from .sources import active

        source = active(key, as_of)
    if source is not None and not source.covers(columns, segments):
        source = None
    parts = source.unit_ctes(variants) if source is not None else [f"""exposed AS (
    SELECT unit_id, min(exposed_at) AS exposed_at, count(DISTINCT variant) AS n_variants,
           arg_min(variant, exposed_at) AS variant{seg_select}
    FROM exposures
    WHERE experiment = {literal(key)} AND exposed_at <= {as_of_sql}
    GROUP BY unit_id
)""", f"""units AS (
    SELECT unit_id, exposed_at, variant, CAST(exposed_at AS DATE) AS exposure_day{seg_cols}
    FROM exposed WHERE n_variants = 1 AND variant IN ({variants})
)"""]
    if event_metrics and source is None:
        aggs = [f"{expr} AS {alias}" for c in event_metrics for alias, expr in _event_columns(c)]
        sources = [s for c in event_metrics for s in _sources(c.metric)]
        names = ", ".join(sorted({literal(s.event) for s in sources}))
        post = max(c.metric.window_days for c in event_metrics)
        pre = max([c.metric.cuped_days or 0 for c in event_metrics])
        lower = f"u.exposed_at - {interval_days(pre)}" if pre else "u.exposed_at"
        parts.append(f"""unit_events AS (
    SELECT u.unit_id,
           {(',' + chr(10) + '           ').join(aggs)}
    FROM units u JOIN events e ON e.unit_id = u.unit_id
    WHERE e.event IN ({names}) AND e.occurred_at <= {as_of_sql}
      AND e.occurred_at >= {lower} AND e.occurred_at < u.exposed_at + {interval_days(post)}
    GROUP BY u.unit_id
)""")
    value_cols, joins = [], []
    if event_metrics and source is not None:
        value_cols += [v for c in event_metrics for v in source.value_columns(c)]
    elif event_metrics:
        joins.append("LEFT JOIN unit_events ue ON ue.unit_id = u.unit_id")
        for c in event_metrics:
            value_cols += [f"coalesce(ue.{a}, 0) AS {a}" for a, _ in _event_columns(c)]
    for c in raw_metrics:
        # one row per unit: a raw query returning several rows for a unit is summed, never joined as is
        # (a plain join would duplicate the unit in every metric of the experiment)
        sums = "fsum(CAST(value AS DOUBLE)) AS value" + (", fsum(CAST(denominator AS DOUBLE)) AS denominator" if c.x else "")
        joins.append(f"LEFT JOIN (SELECT CAST(unit_id AS VARCHAR) AS unit_id, {sums} FROM ({_raw_sql(c, key, as_of)}) raw "
                     f"GROUP BY 1) {c.alias} ON {c.alias}.unit_id = u.unit_id")
        value_cols.append(f"coalesce(CAST({c.alias}.value AS DOUBLE), 0) AS {c.y}")
        if c.x:
            value_cols.append(f"coalesce(CAST({c.alias}.denominator AS DOUBLE), 0) AS {c.x}")
    for c in columns:
        if c.covariate:
            value_cols.append(f"coalesce(u.cov_{c.covariate}, 0) AS {c.x}")
    cov_keep = "".join(f", u.cov_{v}_values" for v in covariates)
    parts.append(f"""unit_values AS (
    SELECT u.unit_id, u.variant, u.exposure_day{''.join(f', u.seg_{i}' for i in range(len(segments)))}{cov_keep},
           {', '.join(value_cols)}
    FROM units u {' '.join(joins)}
)""")
    parts.append(_capped(columns))
    parts.append("""multi AS (SELECT count(*) AS excluded_multi FROM exposed WHERE n_variants > 1)""")
    # fsum/favg (compensated) rather than sum/avg: a plain parallel DOUBLE sum depends on the thread
    # schedule, so the same data and as_of gave results differing in the last bits from run to run
    sums = []
    for c in columns:
        sums += [f"fsum({c.y}) AS {c.y}_sum", f"fsum({c.y} * {c.y}) AS {c.y}_sq"]
        if c.x:
            sums += [f"fsum({c.x}) AS {c.x}_sum", f"fsum({c.x} * {c.x}) AS {c.x}_sq", f"fsum({c.y} * {c.x}) AS {c.alias}_xy"]
    sets = ["(variant)", "(variant, exposure_day)"] + [f"(variant, seg_{i})" for i in range(len(segments))]
    dim_case = " ".join(f"WHEN GROUPING(seg_{i}) = 0 THEN {literal(s)}" for i, s in enumerate(segments))
    val_case = " ".join(f"WHEN GROUPING(seg_{i}) = 0 THEN CAST(seg_{i} AS VARCHAR)" for i in range(len(segments)))
    select = f"""SELECT variant,
       CASE WHEN GROUPING(exposure_day) = 0 THEN 'day' {dim_case} ELSE 'overall' END AS dim,
       CASE WHEN GROUPING(exposure_day) = 0 THEN CAST(exposure_day AS VARCHAR) {val_case} ELSE '' END AS dim_value,
       count(*) AS n,
       {(',' + chr(10) + '       ').join(sums)},
       any_value((SELECT excluded_multi FROM multi)) AS excluded_multi
FROM capped
GROUP BY GROUPING SETS ({', '.join(sets)})"""
    ctes = "WITH " + ",\n".join(parts) + "\n"
    return ExperimentQuery(ctes + select, ctes + "SELECT * FROM capped", columns, segments)


def _capped(columns: tuple[MetricColumns, ...]) -> str:
    """Winsorize capped metrics: min(x, c), c a pooled quantile of the unit values (METHODS §6)."""
    caps, replace = [], []
    for c in columns:
        cap = c.metric.capping
        if cap is None:
            continue
        targets = [c.y] + ([c.x] if c.metric.cuped_days else [])
        for col in targets:
            if cap.value is not None:
                bound = repr(float(cap.value))
            else:
                nonzero = f" FILTER (WHERE {col} <> 0)" if cap.ignore_zeros else ""
                caps.append(f"quantile_cont({col}, {cap.quantile!r}){nonzero} AS cap_{col}")
                bound = f"coalesce(cap_{col}, {col})"
            replace.append(f"least({col}, {bound}) AS {col}")
    if not replace:
        return "capped AS (SELECT * FROM unit_values)"
    cap_from = f", (SELECT {', '.join(caps)} FROM unit_values) caps" if caps else ""
    return f"capped AS (SELECT unit_values.* REPLACE ({', '.join(replace)}) FROM unit_values{cap_from})"


def _check_columns(columns, segments, exposure_columns, event_columns) -> None:
    for s in segments:
        quote_ident(s)
        if exposure_columns is not None and s not in exposure_columns:
            raise MetricSQLError(f"segment '{s}' is not a column of the exposures (known attributes: "
                                 f"{', '.join(sorted(exposure_columns - CORE_EXPOSURE)) or 'none'})")
    for c in columns:
        if c.covariate:
            quote_ident(c.covariate)
            if exposure_columns is not None and c.covariate not in exposure_columns:
                raise MetricSQLError(f"metric '{c.key}': cuped covariate '{c.covariate}' is not a column of the "
                                     f"exposures (known attributes: "
                                     f"{', '.join(sorted(exposure_columns - CORE_EXPOSURE)) or 'none'})")
        for source in _sources(c.metric):
            quote_ident(source.column)
            if event_columns is not None and source.column not in event_columns:
                raise MetricSQLError(f"metric '{c.key}': column '{source.column}' is not in the events table")


CORE_EXPOSURE = {"unit_id", "experiment", "variant", "exposed_at", "file_id", "loaded_at"}


def quantile_sql(query: ExperimentQuery, col: MetricColumns, z: float) -> str:
    """Per variant: n, the sample q-quantile x_(k) and the order statistics x_(l), x_(u) of a quantile
    metric's per-unit values, ranked inside the engine (METHODS §14; ranks as `stats.quantile_ranks`:
    k = ⌈nq⌉, l = ⌊nq − z√(nq(1−q))⌋, u = ⌈nq + z√(nq(1−q))⌉, clipped to 1..n)."""
    q = float(col.metric.quantile)
    dq, dz, d1q = (f"CAST({v!r} AS DOUBLE)" for v in (q, float(z), 1 - q))  # DOUBLE, never DECIMAL
    half = f"{dz} * sqrt(n * {dq} * {d1q})"
    rank = {"est": f"least(n, greatest(1, CAST(ceil(n * {dq}) AS BIGINT)))",
            "lo": f"greatest(1, CAST(floor(n * {dq} - {half}) AS BIGINT))",
            "hi": f"least(n, CAST(ceil(n * {dq} + {half}) AS BIGINT))"}
    picks = ",\n       ".join(f"max(y) FILTER (WHERE r = {expr}) AS {name}" for name, expr in rank.items())
    return f"""SELECT variant, any_value(n) AS n,
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
