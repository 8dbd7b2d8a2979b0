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
import logging
from dataclasses import dataclass

import duckdb

from .config import Config
from .errors import MetricSQLError
from .loads import refresh_load_profile
from .repeats import refresh_repeats
from .metrics import interval_days, literal, timestamp_literal
from .state_plan import (MAX_BITMASK_DAYS, Agg, Plan, StateSource, covariates, experiment_aggs, exposed_sql,
                         joined_aggregates_sql, joined_delta_sql, metric_aggs, plan_for, rows_sql, unfolded,
                         unsupported)
from .state_profile import build_profile, fold_profile, frontier_moved
from .warehouse import transaction

__all__ = ["MAX_BITMASK_DAYS", "Agg", "Refresh", "StateSource", "covariates", "current_sources", "experiment_aggs",
           "metric_aggs", "refresh"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- building and folding

@dataclass(frozen=True)
class Refresh:
    """How a pass brought an experiment's per-unit state up to date (`abproxy run --json`)."""

    mode: str                      # incremental | full
    reason: str
    source: StateSource | None     # None: the analysis reads the raw tables

    def record(self) -> dict[str, str]:
        return {"mode": self.mode, "reason": self.reason}



MERGE = {"sum": "coalesce({t} + {d}, {t}, {d})", "add": "{t} + {d}", "or": "{t} | coalesce({d}, 0)",
         "max": "greatest({t}, {d})", "min": "least({t}, {d})"}


def _counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    return tuple(con.execute("SELECT (SELECT count(*) FROM exposures), (SELECT count(*) FROM events)").fetchone())


def _registry(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    cur = con.execute("SELECT * FROM unit_states")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def _save(con, plan: Plan, file_id: int, as_of: dt.datetime, counts: tuple[int, int], built: bool) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    old = con.execute("SELECT built_at FROM unit_states WHERE experiment = ?", [plan.key]).fetchone()
    con.execute("DELETE FROM unit_states WHERE experiment = ?", [plan.key])
    con.execute("INSERT INTO unit_states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [plan.key, plan.table, plan.definition_hash, plan.spec, file_id, as_of,
                 now if built or old is None else old[0], now, *counts])


def _build(con, plan: Plan, as_of: dt.datetime, file_id: int, counts: tuple[int, int], repeats: bool) -> None:
    """(Re)build an experiment's state from the raw tables, in one transaction."""
    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_x AS {exposed_sql(plan, as_of)}")
        con.execute(f"CREATE OR REPLACE TABLE {plan.table} AS {rows_sql(plan, '__abp_x', 'events', as_of)}")
        con.execute("DROP TABLE __abp_x")
        build_profile(con, plan, as_of, repeats)
        _save(con, plan, file_id, as_of, counts, built=True)


def _fold(con, items: list[tuple[Plan, dict]], as_of: dt.datetime, file_id: int,
          counts: tuple[int, int], repeats: bool) -> None:
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
    with transaction(con):
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_delta AS SELECT * FROM events
                        WHERE event IN ({types}) AND occurred_at <= {t} AND (file_id > {w_min}{late})""")
        rebuilt = []
        for i, (plan, reg) in enumerate(items):
            rebuilt.append(_fold_units(con, plan, reg, as_of, i))
        _stored_needed(con, items, rebuilt, types, t, repeats)
        for i, ((plan, reg), (r, moved)) in enumerate(zip(items, rebuilt)):
            con.execute(f"DELETE FROM {plan.table} WHERE unit_id IN (SELECT unit_id FROM {r})")
            con.execute(f"INSERT INTO {plan.table} BY NAME {rows_sql(plan, r, '__abp_old', as_of)}")
            if plan.profile and (moved or frontier_moved(con, plan, reg)):
                build_profile(con, plan, as_of, repeats)
            elif plan.profile:
                fold_profile(con, plan, reg, as_of, r, repeats, joined_table(i))
            con.execute(f"DROP TABLE {r}")
            con.execute(f"DROP TABLE {joined_table(i)}")
            _save(con, plan, file_id, as_of, counts, built=False)
        con.execute("DROP TABLE __abp_delta")
        con.execute("DROP TABLE __abp_old")


def joined_table(i: int) -> str:
    """The temp table of the i-th folded state's new rows joined to their state rows
    (`state_plan.joined_delta_sql`), made by `_fold_units`, dropped by `_fold`."""
    return f"__abp_dj{i}"


def _stored_needed(con, items, rebuilt, types: str, t: str, repeats: bool) -> None:
    """`__abp_old`: the stored events the fold needs — those of rebuilt units (all of them), and
    (unless the maintained repeats count duplicates) those repeating a new row's (unit, event, time),
    which the quality profile's duplicate count needs to know; hash semi-joins against the small
    sets, bounded below by the oldest time either can need."""
    units = " UNION ".join(f"SELECT unit_id FROM {r}" for r, _ in rebuilt)
    some = con.execute(f"SELECT count(*) FROM ({units})").fetchone()[0]
    keys = any(p.profile for p, _ in items) and not repeats
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



def _fold_units(con, plan: Plan, reg: dict, as_of: dt.datetime, i: int) -> tuple[str, int]:
    """Merge the new events of unchanged units into the state; update units whose variant or
    segments changed; return the temp table of units to rebuild (new, or first exposure moved) and
    how many of them moved."""
    t = timestamp_literal(as_of)
    touched = (f" AND unit_id IN (SELECT unit_id FROM exposures WHERE experiment = {literal(plan.key)} "
               f"AND exposed_at <= {t} AND {unfolded(reg, 'file_id', 'exposed_at')})")
    x, r = f"__abp_x{i}", f"__abp_r{i}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {x} AS {exposed_sql(plan, as_of, touched)}")
    # the new rows of the state's units, joined once for the aggregates and the profile fold
    con.execute(f"CREATE OR REPLACE TEMP TABLE {joined_table(i)} AS "
                f"{joined_delta_sql(plan, '__abp_delta', unfolded(reg, 'e.file_id', 'e.occurred_at'))}")
    if plan.aggs:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_d AS "
                    f"{joined_aggregates_sql(plan, joined_table(i), as_of)} ORDER BY _row")
        sets = ", ".join(f"{c} = {MERGE[rule].format(t=f'{plan.table}.{c}', d=f'd.{c}')}" for c, _, _, rule in plan.parts())
        # by rowid, the state row each aggregate was joined to in this transaction (in row order: the
        # UPDATE then writes the table's vectors in order; cheaper than matching the unit_id strings)
        con.execute(f"UPDATE {plan.table} SET {sets} FROM __abp_d d WHERE {plan.table}.rowid = d._row")
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

def _newest_file(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT greatest((SELECT coalesce(max(file_id), 0) FROM files), "
                       "(SELECT coalesce(max(file_id), 0) FROM load_profile))").fetchone()[0]


def current_sources(con: duckdb.DuckDBPyConnection, config: Config, keys: list[str],
                    as_of: dt.datetime) -> dict[str, StateSource]:
    """The states that hold exactly `as_of`, today's definitions and every loaded row (a pass has
    just refreshed them): what later reads of the same pass can use instead of the events."""
    registry, file_id, counts = _registry(con), _newest_file(con), _counts(con)
    out = {}
    for key in keys:
        reg = registry.get(key)
        if reg is None or reg["as_of"] != as_of or reg["file_id"] != file_id:
            continue
        try:
            plan = plan_for(config, key)
        except Exception:  # a definition the builder refuses has no state
            continue
        if unsupported(plan) is None and _rebuild_reason(con, plan, reg, False, counts) is None:
            out[key] = plan.source(as_of)
    return out


def refresh(con: duckdb.DuckDBPyConnection, config: Config, keys: list[str], as_of: dt.datetime,
            full: bool = False) -> dict[str, Refresh]:
    """Bring the per-unit state of these experiments to `as_of`; say per experiment how and why."""
    refresh_load_profile(con)
    repeats = refresh_repeats(con)
    registry = _registry(con)
    file_id = _newest_file(con)
    counts = _counts(con)
    out: dict[str, Refresh] = {}
    folds: list[tuple[Plan, dict]] = []
    builds: list[tuple[Plan, str]] = []
    for key in keys:
        try:
            plan = plan_for(config, key)
        except Exception as exc:  # a definition the SQL builder refuses: the analysis reports it
            out[key] = Refresh("full", f"no per-unit state ({exc})", None)
            continue
        reg = registry.get(key)
        if (why := unsupported(plan)) is not None:
            out[key] = Refresh("full", why, None)
        elif reg is not None and as_of < reg["as_of"]:
            out[key] = Refresh("full", f"--as-of {as_of:%Y-%m-%d %H:%M} is before the state's time "
                                       f"({reg['as_of']:%Y-%m-%d %H:%M}): recomputed from the events, state kept", None)
        elif (why := _rebuild_reason(con, plan, reg, full, counts)) is not None:
            builds.append((plan, why))
        else:
            folds.append((plan, reg))
    out |= _build_all(con, builds, as_of, file_id, counts, repeats)
    if folds:
        files = file_id - min(reg["file_id"] for _, reg in folds)
        why = f"folded in the rows of {files} new file(s)" if files else "no new files since the last pass"
        result = _try(lambda: _fold(con, folds, as_of, file_id, counts, repeats), None, as_of, "incremental", why)
        for plan, _ in folds:
            source = plan.source(as_of) if result.mode == "incremental" else None
            out[plan.key] = Refresh(result.mode, result.reason, source)
    return out


def _build_all(con, builds: list[tuple[Plan, str]], as_of: dt.datetime, file_id: int,
               counts: tuple[int, int], repeats: bool) -> dict[str, Refresh]:
    """Build these states: experiments with the same aggregates together (`state_group`: one join of
    the events for all of them), one by one if that fails (a refused metric fails its own state)."""
    from .state_group import build_group, grouped

    out: dict[str, Refresh] = {}
    why = {plan.key: reason for plan, reason in builds}
    for group in grouped([plan for plan, _ in builds]):
        if len(group) > 1 and group[0].aggs:
            try:
                build_group(con, group, as_of, repeats, lambda p: _save(con, p, file_id, as_of, counts, built=True))
            except (duckdb.Error, MetricSQLError) as exc:
                log.info("shared build of %s failed (%s); building one by one", [p.key for p in group], exc)
            else:
                out |= {p.key: Refresh("full", why[p.key], p.source(as_of)) for p in group}
                continue
        for plan in group:
            out[plan.key] = _try(lambda: _build(con, plan, as_of, file_id, counts, repeats), plan, as_of, "full",
                                 why[plan.key])
    return out


def _try(fn, plan: Plan | None, as_of: dt.datetime, mode: str, why: str) -> Refresh:
    try:
        fn()
    except (duckdb.Error, MetricSQLError) as exc:   # a refused metric fails its own run, not the pass
        log.warning("per-unit state could not be updated (%s); reading the raw tables", exc)
        return Refresh("full", f"per-unit state unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                               "recomputed from the events", None)
    return Refresh(mode, why, plan.source(as_of) if plan else None)


def _rebuild_reason(con, plan: Plan, reg: dict | None, full: bool, counts: tuple[int, int]) -> str | None:
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
