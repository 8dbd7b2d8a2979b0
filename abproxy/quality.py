"""Fragility: data-quality checks of one experiment, set-based in DuckDB (health.py calls them).

The population is the experiment's exposed units and the events of the metrics' event types in
their post-exposure window (the events the metrics aggregate), up to the analysis time. Volumes are
normalised by *unit-days in window* (how many units could produce an event that day), so the natural
ramp-up and decline of a fixed exposure cohort is not mistaken for a pipeline problem.

Thresholds: `HealthSettings` in the configuration, plus the constants below.
"""
from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pandas as pd
from scipy.stats import poisson

from .config import Config, EventSource, Metric
from .records import Check
from .metric_types import columns_for
from .dialect import Dialect
from .engines import ENGINE_ERRORS, Engine, as_engine
from .metrics import interval_days, literal, post_window, predicate, quote_ident, timestamp_literal
from .spark_dialect import DUCKDB_EXTRAS

log = logging.getLogger(__name__)

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
        return f"""units AS (
    SELECT unit_id, min(exposed_at) AS exposed_at FROM exposures
    WHERE experiment = {literal(self.key)} AND exposed_at <= {timestamp_literal(self.as_of)} GROUP BY unit_id
)"""

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


def quality_checks(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str,
                   as_of: dt.datetime) -> list[Check]:
    """Every data-quality check of one experiment, on the engine that holds the data; a check that
    cannot run says so (warn)."""
    engine = as_engine(engine)
    scope = make_scope(config, key, as_of)
    settings = config.health
    recent = config.experiments[key].drift.recent_days
    out = _guard("unknown_variants", lambda: assignment_checks(engine, config, key, as_of))
    out += _guard("future_timestamps", lambda: [future_check(engine, key, settings.max_future_minutes)])
    if not scope.types:
        return out
    try:
        daily = daily_profile(engine, scope, settings.late_hours)
    except ENGINE_ERRORS as exc:
        return out + _failed("event_profile", exc)
    out += _guard("null_values", lambda: null_checks(scope, daily, recent, settings.null_rate_increase))
    out += _guard("event_missing", lambda: missing_checks(engine, scope, daily, settings.event_missing_days))
    out += _guard("event_volume", lambda: volume_checks(scope, daily, settings.volume_trailing_days,
                                                        settings.volume_change, age_profile(engine, scope)))
    out += _guard("duplicate_events", lambda: [duplicate_check(scope, daily)])
    if engine.name == "duckdb":       # lateness needs load times: only ingested files have them
        out += _guard("late_data", lambda: [late_check(scope, daily, settings.late_hours)])
    return out


def _guard(name: str, fn: Callable[[], list[Check]]) -> list[Check]:
    try:
        return fn()
    except (*ENGINE_ERRORS, KeyError) as exc:
        return _failed(name, exc)


def _failed(name: str, exc: Exception) -> list[Check]:
    log.warning("health check %s could not run", name, exc_info=exc)
    return [Check(name, "warn", f"This check could not run ({type(exc).__name__}: {exc}); the other checks "
                                "are unaffected — fix the cause (often a metric's 'where') and rerun")]


# ------------------------------------------------------------------ assignment and timestamps

def assignment_checks(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str,
                      as_of: dt.datetime) -> list[Check]:
    """Exposures naming an unknown variant of this experiment, or an unknown experiment, during
    this experiment's exposure period (all time if it has no exposure yet)."""
    exp = config.experiments[key]
    until = timestamp_literal(as_of)
    rows = as_engine(engine).frame(f"""
        WITH since AS (SELECT coalesce(min(exposed_at), TIMESTAMP '0001-01-01 00:00:00') AS t FROM exposures
                       WHERE experiment = {literal(key)} AND exposed_at <= {until})
        SELECT experiment, variant, count(*) AS n FROM exposures CROSS JOIN since
        WHERE exposed_at <= {until} AND exposed_at >= since.t GROUP BY experiment, variant""")
    own = rows[rows["experiment"] == key]
    total = int(own["n"].sum())
    unknown = own[~own["variant"].isin(list(exp.variants))].sort_values("n", ascending=False)
    bad = int(unknown["n"].sum())
    share = bad / total if total else 0.0
    if bad == 0:
        checks = [Check("unknown_variants", "ok", f"All {total:,} exposures name a configured variant "
                                                  f"({', '.join(exp.variants)})", value=0.0,
                        threshold=UNKNOWN_VARIANT_FAIL)]
    else:
        names = ", ".join(f"'{v}' ({n:,})" for v, n in zip(unknown["variant"], unknown["n"]))
        status = "fail" if share > UNKNOWN_VARIANT_FAIL else "warn"
        checks = [Check("unknown_variants", status,
                        f"{bad:,} of {total:,} exposures ({share:.2%}) name variants that are not configured: "
                        f"{names}; these units are not analysed (configured: {', '.join(exp.variants)}). "
                        "Add the variant to abproxy.yaml or fix the assignment logging",
                        variant=str(unknown["variant"].iloc[0]), value=share, threshold=UNKNOWN_VARIANT_FAIL)]
    other = rows[~rows["experiment"].isin(list(config.experiments))]
    other = other.groupby("experiment", as_index=False)["n"].sum().sort_values("n", ascending=False)
    if len(other):
        names = []
        for name, n in zip(other["experiment"], other["n"]):
            close = difflib.get_close_matches(str(name), list(config.experiments), n=1, cutoff=0.8)
            names.append(f"'{name}' ({n:,} rows{', a typo of ' + repr(close[0]) + '?' if close else ''})")
        checks.append(Check("unknown_experiments", "warn",
                            f"Exposures for experiments that abproxy.yaml does not define arrived during this "
                            f"experiment: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}; "
                            "define them under 'experiments' or fix the experiment key in the logging",
                            value=float(other["n"].sum()), threshold=0.0))
    return checks


def future_check(engine: Engine | duckdb.DuckDBPyConnection, key: str, max_future_minutes: float) -> Check:
    """Rows whose timestamp was ahead of their load time (rejected at ingest, or stored by other means)
    in the files loaded since this experiment's first exposures arrived: a clock or time-zone bug.
    Only files whose largest lead over their load time (`load_profile`) exceeds the limit are read.
    An external source (engine: spark) has no load times: there, rows ahead of the wall clock."""
    from .loads import refresh_load_profile

    engine = as_engine(engine)
    if engine.name != "duckdb":
        return _future_of_now(engine, key, max_future_minutes)
    con = engine.con

    limit = interval_days(max_future_minutes / 1440)
    refresh_load_profile(con)
    ahead = dict(con.execute(f"""SELECT kind, list(DISTINCT file_id) FROM load_profile
        WHERE max_lead_us > epoch_us(TIMESTAMP '2000-01-01' + {limit}) - epoch_us(TIMESTAMP '2000-01-01')
        GROUP BY kind""").fetchall())
    only = {k: f"file_id IN ({', '.join(str(int(f)) for f in ahead[k])})" if ahead.get(k) else "FALSE"
            for k in ("events", "exposures")}
    row = con.execute(f"""
        WITH since AS (SELECT coalesce(min(loaded_at) - INTERVAL 1 DAY, TIMESTAMP '0001-01-01') AS t
                       FROM exposures WHERE experiment = $key),
        f AS (SELECT file_id, kind, rows_loaded, rows_rejected FROM files, since
              WHERE (status = 'loaded' OR (status = 'failed' AND rows_rejected > 0))  -- refused files too
                AND loaded_at >= since.t),
        rejected AS (SELECT count(*) AS n FROM rejected_rows WHERE reason LIKE '%future%'
                     AND file_id IN (SELECT file_id FROM f)),
        stored AS (SELECT (SELECT count(*) FROM events WHERE {only['events']} AND occurred_at > loaded_at + {limit}
                           AND file_id IN (SELECT file_id FROM f))
                        + (SELECT count(*) FROM exposures WHERE {only['exposures']} AND exposed_at > loaded_at + {limit}
                           AND file_id IN (SELECT file_id FROM f)) AS n)
        SELECT rejected.n, stored.n, (SELECT coalesce(sum(rows_loaded + rows_rejected), 0) FROM f)
        FROM rejected, stored""", {"key": key}).fetchone()
    rejected, stored, total = int(row[0]), int(row[1]), int(row[2])
    bad = rejected + stored
    share = bad / total if total else 0.0
    if bad == 0:
        return Check("future_timestamps", "ok", f"No timestamps ahead of their load time in {total:,} rows",
                     value=0.0, threshold=FUTURE_FAIL)
    status = "fail" if share > FUTURE_FAIL else "warn"
    return Check("future_timestamps", status,
                 f"{bad:,} of {total:,} rows ({share:.2%}) had timestamps more than {max_future_minutes:g} minutes "
                 f"ahead of their load time ({rejected:,} rejected at ingest, {stored:,} stored); a clock or "
                 "time-zone bug in the export shifts every timestamp — fix the export to write UTC "
                 "(see 'rejected_rows')", value=share, threshold=FUTURE_FAIL)


def _future_of_now(engine: Engine, key: str, max_future_minutes: float) -> Check:
    """External source: this experiment's exposures and all events timestamped ahead of now."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(minutes=max_future_minutes)
    row = engine.frame(f"""SELECT
        (SELECT count(*) FROM exposures WHERE experiment = {literal(key)}) AS exposures,
        (SELECT count(*) FROM exposures WHERE experiment = {literal(key)} AND exposed_at > {timestamp_literal(now)}) AS bad_exposures,
        (SELECT count(*) FROM events) AS events,
        (SELECT count(*) FROM events WHERE occurred_at > {timestamp_literal(now)}) AS bad_events""").iloc[0]
    total, bad = int(row["exposures"]) + int(row["events"]), int(row["bad_exposures"]) + int(row["bad_events"])
    share = bad / total if total else 0.0
    if bad == 0:
        return Check("future_timestamps", "ok", f"No timestamps ahead of the clock in {total:,} rows of the source",
                     value=0.0, threshold=FUTURE_FAIL)
    return Check("future_timestamps", "fail" if share > FUTURE_FAIL else "warn",
                 f"{bad:,} of {total:,} rows ({share:.2%}) of the source have timestamps more than "
                 f"{max_future_minutes:g} minutes ahead of the clock; a clock or time-zone bug in the export shifts "
                 "every timestamp — fix the export to write UTC", value=share, threshold=FUTURE_FAIL)


# ------------------------------------------------------------------ the daily event profile

def daily_profile(engine: Engine | duckdb.DuckDBPyConnection, scope: Scope, late_hours: float) -> pd.DataFrame:
    """Per calendar day, from one pass over the metric events (`Scope.events_sql`): events per type
    (t{i}), newest event per type (last{i}), repeated rows per type (dup{i}: events beyond the first
    with the same unit, event, time and value), events that arrived late (late: see `late_check`),
    rows and null values of each column a metric aggregates (s{j}_n, s{j}_null), and unit-days in window.

    The events are grouped once by (event, unit, time, value) — the duplicate check's key — and every
    per-day number is summed from those groups, so the join of events to units runs once for the
    profile, the duplicate and the late check together. Unit-days: the units are grouped by the days
    their window starts and ends (a full day in between counts 1), summed in integer microseconds.
    With a per-unit state in place (`state.reading`) the counts are its maintained profile table and
    the units its rows: no event is read."""
    from .loads import refresh_load_profile
    from .sources import active

    engine = as_engine(engine)
    d = engine.dialect
    source = active(scope.key, scope.as_of) if engine.name == "duckdb" else None
    if source is not None and source.profile is not None:
        sql = f"""WITH units AS (SELECT unit_id, exposed_at FROM {source.table}),
    counts AS (SELECT * FROM {source.profile}),
    {cover_sql(scope)}
    SELECT * FROM cover FULL JOIN counts USING (day) ORDER BY day"""
    else:
        if engine.name == "duckdb":
            refresh_load_profile(engine.con)
        sql = f"""{scope.events_sql},
    counts AS ({counts_sql(scope, late_hours, "ev", d=d, load_times=engine.name == "duckdb")}),
    {cover_sql(scope, d)}
    SELECT * FROM cover FULL JOIN counts USING (day) ORDER BY day"""
    frame = engine.frame(sql)
    counts = [c for c in frame.columns if c not in ("day",) and not c.startswith("last")]
    frame[counts] = frame[counts].fillna(0)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def counts_sql(scope: Scope, late_hours: float, ev: str, seen: str | None = None, d: Dialect = DUCKDB_EXTRAS,
               load_times: bool = True) -> str:
    """The per-day counts of the metric events `ev` (already cut to the units' windows). `seen`
    (a relation of (event, unit_id, occurred_at, value) keys counted before) makes dup{i} the
    repeats these rows add to an existing profile: the first row of a key already seen repeats it.
    Without `load_times` (an external source: no file ledger) nothing counts as late."""
    names = ", ".join(literal(t) for t in scope.types)
    inner = ["count(*) AS n", "count(*) FILTER (WHERE occurred_at < _frontier) AS late"]
    outer = ["sum(late) AS late"]
    first = "1" if seen is None else "CASE WHEN bool_or(_seen) THEN 0 ELSE 1 END"
    inner.append(f"{first} AS _first")
    for i, t in enumerate(scope.types):
        is_t = f"event = {literal(t)}"
        outer += [f"sum(n) FILTER (WHERE {is_t}) AS t{i}", f"max(occurred_at) FILTER (WHERE {is_t}) AS last{i}",
                  f"sum(n - _first) FILTER (WHERE {is_t}) AS dup{i}"]
    for j, (s, users) in enumerate(scope.columns.items()):
        cond = f"event = {literal(s.event)} AND {predicate(s.where, users[0])}"
        inner += [f"count(*) FILTER (WHERE {cond}) AS s{j}_n",
                  f"count(*) FILTER (WHERE {cond} AND {d.ident(quote_ident(s.column)[1:-1])} IS NULL) AS s{j}_null"]
        outer += [f"sum(s{j}_n) AS s{j}_n", f"sum(s{j}_null) AS s{j}_null"]
    lag = interval_days(late_hours / 24)
    mark = ""
    if seen is not None:
        mark = (f", EXISTS (SELECT 1 FROM {seen} k WHERE k.event = ev.event AND k.unit_id = ev.unit_id AND "
                "k.occurred_at = ev.occurred_at AND k.value IS NOT DISTINCT FROM ev.value) AS _seen")
    if not load_times:
        return f"""WITH marked AS (SELECT ev.*, CAST(NULL AS TIMESTAMP) AS _frontier{mark} FROM {ev} ev),
    repeats AS (SELECT event, unit_id, occurred_at, value, {', '.join(inner)}
                FROM marked GROUP BY event, unit_id, occurred_at, value)
    SELECT CAST(occurred_at AS DATE) AS day, {', '.join(outer)} FROM repeats GROUP BY 1"""
    return f"""WITH files AS (SELECT event, file_id, loaded_at, newest FROM load_profile
              WHERE kind = 'events' AND event IN ({names}) AND loaded_at IS NOT NULL),
    frontier AS (SELECT event, file_id, max(newest) OVER (PARTITION BY event ORDER BY loaded_at
                 RANGE BETWEEN UNBOUNDED PRECEDING AND {lag} PRECEDING) AS frontier FROM files),
    marked AS (SELECT ev.*, fr.frontier AS _frontier{mark}
               FROM {ev} ev LEFT JOIN frontier fr ON fr.event = ev.event AND fr.file_id = ev.file_id),
    repeats AS (SELECT event, unit_id, occurred_at, value, {', '.join(inner)}
                FROM marked GROUP BY event, unit_id, occurred_at, value)
    SELECT CAST(occurred_at AS DATE) AS day, {', '.join(outer)} FROM repeats GROUP BY 1"""


def cover_sql(scope: Scope, d: Dialect = DUCKDB_EXTRAS) -> str:
    """CTEs spans, cover: unit-days in window per day, from a relation `units` (unit_id, exposed_at)."""
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    us, day = d.epoch_us, d.day_floor
    return f"""spans AS (SELECT {day('exposed_at')} AS first_day, {day('until')} AS last_day,
                     count(*) AS n, sum({us('until')} - {us('exposed_at')}) AS whole,
                     sum({us(day('exposed_at') + ' + INTERVAL 1 DAY')} - {us('exposed_at')}) AS head,
                     sum({us('until')} - {us(day('until'))}) AS tail
              FROM (SELECT exposed_at, least(exposed_at + {window}, {as_of}) AS until FROM units) w GROUP BY 1, 2),
    cover AS (SELECT CAST(day AS DATE) AS day,
                     CAST(sum(CASE WHEN first_day = last_day THEN whole WHEN day = first_day THEN head
                                   WHEN day = last_day THEN tail ELSE CAST(n AS {d.wide_integer}) * {US_PER_DAY} END) AS DOUBLE)
                     / {US_PER_DAY} AS unit_days
              FROM (SELECT *, {d.day_series('first_day', 'last_day')} AS day FROM spans) s
              GROUP BY 1)"""


def null_checks(scope: Scope, daily: pd.DataFrame, recent_days: int, increase: float) -> list[Check]:
    """Null values in a column a metric aggregates (a sum counts them as 0): recent vs history."""
    out = []
    active = daily[daily[[f"t{i}" for i in range(len(scope.types))]].sum(axis=1) > 0]
    if active.empty:
        return out
    cut = max(active["day"]) - dt.timedelta(days=recent_days)
    is_recent = daily["day"] > cut
    for j, (s, users) in enumerate(scope.columns.items()):
        n, null = daily[f"s{j}_n"], daily[f"s{j}_null"]
        n_rec, null_rec = float(n[is_recent].sum()), float(null[is_recent].sum())
        n_old, null_old = float(n[~is_recent].sum()), float(null[~is_recent].sum())
        p_rec = null_rec / n_rec if n_rec else 0.0
        p_old = null_old / n_old if n_old else 0.0
        p_all = (null_rec + null_old) / (n_rec + n_old) if n_rec + n_old else 0.0
        what = (f"'{s.column}' of '{s.event}' events{' where ' + s.where if s.where else ''} "
                f"(aggregated by {', '.join(users)})")
        effect = "missing values count as 0 in a sum" if s.aggregate == "sum" else f"{s.aggregate} ignores missing values"
        rates = f"{p_rec:.1%} null in the last {recent_days} days, {p_old:.1%} before"
        if max(p_rec if n_rec >= MIN_NULL_ROWS else 0.0, p_all) > MOSTLY_NULL:
            status, detail = "fail", (f"{what} is mostly missing ({rates}); {effect}, so the metric is "
                                      "meaningless — fix the export of this column")
        elif n_rec >= MIN_NULL_ROWS and n_old >= MIN_NULL_ROWS and p_rec - p_old > increase:
            status, detail = "warn", (f"{what}: the null rate rose ({rates}, more than +{increase:.0%}); "
                                      f"{effect} — check the producer of this column")
        elif p_all > increase:
            status, detail = "warn", (f"{what}: {p_all:.1%} of values are missing ({rates}); {effect} — "
                                      "check the producer of this column")
        else:
            status, detail = "ok", f"{what}: {rates}"
        out.append(Check("null_values", scope.status(users, status), detail, metric=users[0],
                         value=max(p_rec, p_all), threshold=increase))
    return out


def missing_checks(engine: Engine | duckdb.DuckDBPyConnection, scope: Scope, daily: pd.DataFrame,
                   missing_days: float) -> list[Check]:
    """An event type not seen for `missing_days` before the analysis time while units are still in
    their window and, at its usual rate, at least MIN_EXPECTED_MISSING events were due: vanished."""
    last = {i: daily[f"last{i}"].max() for i in range(len(scope.types))}
    seen = {i: pd.Timestamp(t).to_pydatetime() for i, t in last.items() if pd.notna(t)}
    units = float(daily["unit_days"].sum())
    out = [Check("event_missing", "warn", f"No '{t}' event (used by {', '.join(scope.users[t])}) in any unit's "
                 f"window ({units:,.0f} unit-days); check the event name in the metric definition and that the "
                 "event is exported", metric=scope.users[t][0], value=math.inf, threshold=missing_days)
           for i, t in enumerate(scope.types) if i not in seen and units > 0]
    if not seen:
        return out
    values = ", ".join(f"({i}, {timestamp_literal(t)})" for i, t in seen.items())
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    engine = as_engine(engine)
    sec = engine.dialect.epoch_seconds
    spans = engine.frame(f"""WITH {scope.units_sql}
        SELECT s.i,
               sum(greatest(0, {sec(f'least(u.exposed_at + {window}, {as_of})')} - {sec('greatest(u.exposed_at, s.t)')}))
                   / 86400 AS after,
               sum(greatest(0, {sec(f'least(u.exposed_at + {window}, s.t)')} - {sec('u.exposed_at')})) / 86400 AS before
        FROM units u CROSS JOIN (VALUES {values}) AS s(i, t) GROUP BY s.i ORDER BY s.i""").itertuples(index=False)
    newest = max(seen.values())
    stale = (scope.as_of - newest).total_seconds() / 86400 > missing_days
    for i, after, before in spans:
        i = int(i)
        t, users = scope.types[i], scope.users[scope.types[i]]
        gap = (scope.as_of - seen[i]).total_seconds() / 86400
        count = float(daily[f"t{i}"].sum())
        expected = count / before * after if before else 0.0
        if gap > missing_days and expected >= MIN_EXPECTED_MISSING:
            status = scope.status(users, "fail")
            detail = (f"'{t}' events (used by {', '.join(users)}) stopped: the last one was at {seen[i]:%Y-%m-%d %H:%M}, "
                      f"{gap:.1f} days before the analysis time, although ~{expected:,.0f} were expected since then "
                      "from units still in their window; " + (
                          "no metric event at all arrived since, so the data is stale — check that the export and "
                          "ingest are running, or analyse as of an earlier time" if stale else
                          "the event vanished while others continue — check its export and tracking"))
        else:
            status = "ok"
            detail = (f"'{t}' events arrive normally (latest {seen[i]:%Y-%m-%d %H:%M} UTC, {gap:.1f} days before "
                      "the analysis time)" if gap <= missing_days else
                      f"No '{t}' event for {gap:.1f} days, as expected: only ~{expected:,.0f} were due from the "
                      "units still in their window")
        out.append(Check("event_missing", status, detail, metric=users[0], value=gap, threshold=missing_days))
    return out


@dataclass(frozen=True)
class AgeProfile:
    """Metric events by calendar day × days since exposure (age) × event type, and units by exposure
    day: what the volume check needs to expect events from the ages of the units in window."""

    events: pd.DataFrame      # day, age, event, n
    cohorts: dict[dt.date, int]
    max_age: int

    def units(self, day: dt.date, age: int) -> int:
        return self.cohorts.get(day - dt.timedelta(days=age), 0)


def age_profile(engine: Engine | duckdb.DuckDBPyConnection, scope: Scope) -> AgeProfile:
    """With a per-unit state in place (`sources.reading`, DuckDB only), its maintained ages table and
    its units: no event is read. Otherwise one grouped query on the engine that holds the events."""
    from .sources import active

    engine = as_engine(engine)
    source = active(scope.key, scope.as_of) if engine.name == "duckdb" else None
    if source is not None and getattr(source, "ages", None) is not None:
        con = engine.con
        return _age_profile(con.execute(f"SELECT day, age, event, n FROM {source.ages} WHERE n > 0").df(),
                            con.execute(f"SELECT CAST(exposed_at AS DATE), count(*) FROM {source.table} "
                                        "GROUP BY 1").fetchall(), scope)
    names = ", ".join(literal(t) for t in scope.types)
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    events = engine.frame(f"""WITH {scope.units_sql}
        SELECT CAST(e.occurred_at AS DATE) AS day, {engine.dialect.day_diff('u.exposed_at', 'e.occurred_at')} AS age,
               e.event, count(*) AS n
        FROM units u JOIN events e ON e.unit_id = u.unit_id
        WHERE e.event IN ({names}) AND e.occurred_at >= u.exposed_at AND e.occurred_at < u.exposed_at + {window}
          AND e.occurred_at <= {as_of}
        GROUP BY 1, 2, 3""")
    cohorts = engine.frame(f"WITH {scope.units_sql} SELECT CAST(exposed_at AS DATE) AS day, count(*) AS n "
                           "FROM units GROUP BY 1")
    return _age_profile(events, list(cohorts.itertuples(index=False)), scope)


def _age_profile(events: pd.DataFrame, cohorts: list, scope: Scope) -> AgeProfile:
    if len(events):
        events["day"] = pd.to_datetime(events["day"]).dt.date
    return AgeProfile(events, {pd.Timestamp(d).date(): int(n) for d, n in cohorts}, math.ceil(scope.window_days))


def expected_events(profile: AgeProfile, event: str, day: dt.date, history: list[dt.date]) -> float:
    """Events of `event` expected on `day` from the units in window on that day, each at its age (days
    since exposure), at the per-unit rate of that age over the `history` days (all earlier days for an
    age the history lacks): users act less late in their window, so a cohort near the end of its
    window is not expected to be as active as a fresh one."""
    ev = profile.events[profile.events["event"] == event]
    counts = {(d, int(a)): float(n) for d, a, n in zip(ev["day"], ev["age"], ev["n"])}
    earlier = sorted(d for d in {d for d, _ in counts} | set(history) if d < day)
    total = 0.0
    for age in range(profile.max_age + 1):
        units = profile.units(day, age)
        if units == 0:
            continue
        for days in (history, earlier):
            exposed = sum(profile.units(d, age) for d in days)
            if exposed > 0:
                total += units * sum(counts.get((d, age), 0.0) for d in days) / exposed
                break
    return total


def volume_checks(scope: Scope, daily: pd.DataFrame, trailing: int, change: float,
                  profile: AgeProfile | None = None) -> list[Check]:
    """Each metric event type on the last complete day against what the units in window were expected
    to produce, at the per-unit event rate of each day since exposure over the trailing days
    (`expected_events`); flagged only beyond ±`change` *and* improbable under Poisson noise (p < VOLUME_P)."""
    complete = daily[(daily["unit_days"] > 0)
                     & (pd.to_datetime(daily["day"]) + pd.Timedelta(days=1) <= pd.Timestamp(scope.as_of))]
    if len(complete) <= MIN_TRAILING_DAYS:
        return []
    last = complete.iloc[-1]
    history = complete[pd.to_datetime(complete["day"]) >= pd.Timestamp(last["day"]) - pd.Timedelta(days=trailing)]
    history = history.iloc[:-1]
    out = []
    for i, t in enumerate(scope.types):
        users = scope.users[t]
        if profile is not None:
            expected = expected_events(profile, t, last["day"], list(history["day"]))
            basis = f"the trailing {len(history)} days' events per unit at each day since exposure"
        else:
            expected = float((history[f"t{i}"] / history["unit_days"]).median()) * float(last["unit_days"])
            basis = f"the trailing {len(history)}-day median per unit in window"
        observed = int(last[f"t{i}"])
        if len(history) < MIN_TRAILING_DAYS or not expected > 0:
            continue
        ratio = observed / expected
        p_low, p_high = poisson.cdf(observed, expected), poisson.sf(observed - 1, expected)
        flagged = (ratio < 1 - change and p_low < VOLUME_P) or (ratio > 1 + change and p_high < VOLUME_P)
        detail = (f"'{t}' on {last['day']}: {observed:,} events vs ~{expected:,.0f} expected from {basis} "
                  f"({ratio - 1:+.0%}, tolerance ±{change:.0%})")
        if flagged:
            detail += (f"; the event {'dropped' if ratio < 1 else 'spiked'} — check its pipeline before trusting "
                       f"{', '.join(users)}")
        out.append(Check("event_volume", "warn" if flagged else "ok", detail, metric=users[0],
                         value=ratio - 1, threshold=change))
    return out


def duplicate_check(scope: Scope, daily: pd.DataFrame) -> Check:
    """Events repeating (unit, event, occurred_at, value): a re-delivered batch without event ids."""
    rows = sorted((t, int(daily[f"t{i}"].sum()), int(daily[f"dup{i}"].sum())) for i, t in enumerate(scope.types))
    rows = [r for r in rows if r[1]]
    total = sum(n for _, n, _ in rows)
    dup = sum(d for _, _, d in rows)
    share = dup / total if total else 0.0
    parts = ", ".join(f"'{e}' {d / n:.1%}" for e, n, d in rows if d)
    if share <= DUPLICATE_WARN and all(d / n <= DUPLICATE_WARN for _, n, d in rows if n):
        return Check("duplicate_events", "ok", f"{dup:,} of {total:,} metric events ({share:.2%}) repeat the same "
                                               "unit, event, time and value", value=share, threshold=DUPLICATE_WARN)
    return Check("duplicate_events", "warn",
                 f"{dup:,} of {total:,} metric events ({share:.1%}) are exact repeats of the same unit, event, time "
                 f"and value ({parts}); a batch was probably delivered twice without event ids, inflating counts "
                 "and sums — add 'event_id' to the export or remove the repeated file",
                 value=share, threshold=DUPLICATE_WARN)


def late_check(scope: Scope, daily: pd.DataFrame, late_hours: float) -> Check:
    """Events loaded more than `late_hours` after the warehouse already held newer events of the same
    type (a clock-free notion of lateness: a one-off backfill is not late); counted by `daily_profile`."""
    late = int(daily["late"].sum())
    total = int(sum(daily[f"t{i}"].sum() for i in range(len(scope.types))))
    share = late / total if total else 0.0
    if share <= LATE_WARN:
        return Check("late_data", "ok", f"{late:,} of {total:,} metric events ({share:.2%}) arrived more than "
                                        f"{late_hours:g} h after newer data", value=share, threshold=LATE_WARN)
    return Check("late_data", "warn",
                 f"{late:,} of {total:,} metric events ({share:.1%}) arrived more than {late_hours:g} hours after newer "
                 "events of the same type had been loaded; recent days are probably still incomplete, so the "
                 "latest results may change — check the export schedule", value=share, threshold=LATE_WARN)
