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
from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb

from . import shared
from .config import Config
from .dialect import Dialect
from .engines import ENGINE_ERRORS, Engine, as_engine
from .metrics import interval_days, literal, predicate, quote_ident, timestamp_literal
from .profile_checks import (AgeProfile, age_profile, duplicate_check, expected_events, late_check, missing_checks,
                             null_checks, volume_checks)
from .quality_scope import FUTURE_FAIL, UNKNOWN_VARIANT_FAIL, US_PER_DAY, Scope, make_scope
from .records import Check
from .spark_dialect import DUCKDB_EXTRAS

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where a frame is read (not when the module loads)
    import pandas as pd

__all__ = ["AgeProfile", "Scope", "age_profile", "assignment_checks", "counts_sql", "daily_profile",
           "duplicate_check", "expected_events", "future_check", "late_check", "make_scope", "missing_checks",
           "null_checks", "quality_checks", "volume_checks"]

log = logging.getLogger(__name__)


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
    pass_ = shared.current()
    rows = pass_.exposure_counts(engine, key, as_of) if pass_ is not None else None
    rows = rows if rows is not None else as_engine(engine).frame(f"""
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
    import pandas as pd

    frame = engine.frame(sql)
    counts = [c for c in frame.columns if c not in ("day",) and not c.startswith("last")]
    frame[counts] = frame[counts].fillna(0)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def counts_sql(scope: Scope, late_hours: float, ev: str, seen: str | None = None, d: Dialect = DUCKDB_EXTRAS,
               load_times: bool = True, repeats: str | None = None) -> str:
    """The per-day counts of the metric events `ev` (already cut to the units' windows). `seen`
    (a relation of (event, unit_id, occurred_at, value) keys counted before) makes dup{i} the
    repeats these rows add to an existing profile: the first row of a key already seen repeats it.
    `repeats` (a relation of (event, occurred_at, n): the rows' repeats, `abproxy.repeats`) gives
    dup{i} without grouping the rows by the key. Without `load_times` (an external source: no file
    ledger) nothing counts as late."""
    if repeats is not None:
        return _counts_with_repeats(scope, late_hours, ev, repeats)
    types, columns = _filters(scope, d)
    inner = ["count(*) AS n", "count(*) FILTER (WHERE occurred_at < _frontier) AS late"]
    outer = ["sum(late) AS late"]
    first = "1" if seen is None else "CASE WHEN bool_or(_seen) THEN 0 ELSE 1 END"
    inner.append(f"{first} AS _first")
    for i, is_t in types:
        outer += [f"sum(n) FILTER (WHERE {is_t}) AS t{i}", f"max(occurred_at) FILTER (WHERE {is_t}) AS last{i}",
                  f"sum(n - _first) FILTER (WHERE {is_t}) AS dup{i}"]
    for j, cond, null in columns:
        inner += [f"count(*) FILTER (WHERE {cond}) AS s{j}_n", f"count(*) FILTER (WHERE {null}) AS s{j}_null"]
        outer += [f"sum(s{j}_n) AS s{j}_n", f"sum(s{j}_null) AS s{j}_null"]
    mark = ""
    if seen is not None:
        mark = (f", EXISTS (SELECT 1 FROM {seen} k WHERE k.event = ev.event AND k.unit_id = ev.unit_id AND "
                "k.occurred_at = ev.occurred_at AND k.value IS NOT DISTINCT FROM ev.value) AS _seen")
    return f"""{_marked(scope, late_hours, ev, mark, load_times)},
    repeats AS (SELECT event, unit_id, occurred_at, value, {', '.join(inner)}
                FROM marked GROUP BY event, unit_id, occurred_at, value)
    SELECT CAST(occurred_at AS DATE) AS day, {', '.join(outer)} FROM repeats GROUP BY 1"""


def _marked(scope: Scope, late_hours: float, ev: str, mark: str = "", load_times: bool = True) -> str:
    """WITH ... marked: the rows of `ev` with the 'late' frontier of their file (NULL: never late)."""
    if not load_times:
        return f"WITH marked AS (SELECT ev.*, CAST(NULL AS TIMESTAMP) AS _frontier{mark} FROM {ev} ev)"
    names = ", ".join(literal(t) for t in scope.types)
    return f"""WITH files AS (SELECT event, file_id, loaded_at, newest FROM load_profile
              WHERE kind = 'events' AND event IN ({names}) AND loaded_at IS NOT NULL),
    frontier AS (SELECT event, file_id, max(newest) OVER (PARTITION BY event ORDER BY loaded_at
                 RANGE BETWEEN UNBOUNDED PRECEDING AND {interval_days(late_hours / 24)} PRECEDING) AS frontier FROM files),
    marked AS (SELECT ev.*, fr.frontier AS _frontier{mark}
               FROM {ev} ev LEFT JOIN frontier fr ON fr.event = ev.event AND fr.file_id = ev.file_id)"""


def _filters(scope: Scope, d: Dialect) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """What the per-day counts count: (i, is type i) per event type; (j, a row of source j, and its
    column null) per aggregated column."""
    types = [(i, f"event = {literal(t)}") for i, t in enumerate(scope.types)]
    columns = []
    for j, (s, users) in enumerate(scope.columns.items()):
        cond = f"event = {literal(s.event)} AND {predicate(s.where, users[0])}"
        columns.append((j, cond, f"{cond} AND {d.ident(quote_ident(s.column)[1:-1])} IS NULL"))
    return types, columns


def _counts_with_repeats(scope: Scope, late_hours: float, ev: str, repeats: str) -> str:
    """`counts_sql` grouped by day alone, dup{i} from the repeats (same columns and types)."""
    types, columns = _filters(scope, DUCKDB_EXTRAS)
    wide = ["CAST(count(*) FILTER (WHERE occurred_at < _frontier) AS HUGEINT) AS late"]
    for i, is_t in types:
        wide += [f"CAST(count(*) FILTER (WHERE {is_t}) AS HUGEINT) AS t{i}",
                 f"max(occurred_at) FILTER (WHERE {is_t}) AS last{i}"]
    for j, cond, null in columns:
        wide += [f"CAST(count(*) FILTER (WHERE {cond}) AS HUGEINT) AS s{j}_n",
                 f"CAST(count(*) FILTER (WHERE {null}) AS HUGEINT) AS s{j}_null"]
    dups = ", ".join(f"CAST(coalesce(sum(n) FILTER (WHERE {is_t}), 0) AS HUGEINT) AS dup{i}" for i, is_t in types)
    return f"""{_marked(scope, late_hours, ev)},
    days AS (SELECT CAST(occurred_at AS DATE) AS day, {', '.join(wide)} FROM marked GROUP BY 1),
    dups AS (SELECT CAST(occurred_at AS DATE) AS day, {dups} FROM ({repeats}) GROUP BY 1)
    SELECT days.*, {', '.join(f'coalesce(dup{i}, 0) AS dup{i}' for i, _ in types)} FROM days LEFT JOIN dups USING (day)"""


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
