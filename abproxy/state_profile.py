"""The data-quality profiles kept beside an experiment's per-unit state (`abproxy.state`).

Per day: the counts `quality.daily_profile` reads (events, nulls, duplicates, late rows); per day x
days since exposure x event type: the counts `quality.age_profile` reads. Built from one join of the
state's units to their events; folded with the rows of each pass.
"""
from __future__ import annotations

import datetime as dt

from .metrics import interval_days, literal, timestamp_literal
from .quality import counts_sql
from .repeats import scoped_sql
from .state_plan import Plan, unfolded


def window_events(plan: Plan, units: str, events: str, as_of: dt.datetime, only: str = "",
                  narrow: bool = False) -> str:
    """The profile's events: `events` of the metric types in the post windows of `units` (`narrow`:
    without the unit and event id, for counts that take duplicates from the repeats)."""
    cols = "e.* EXCLUDE (unit_id, event_id)" if narrow else "e.*"
    return _in_windows(plan, f"{cols}, u.exposed_at AS _exposed_at",
                       f"{units} u JOIN {events} e ON e.unit_id = u.unit_id", "u.exposed_at", as_of, only)


def _joined_window_events(plan: Plan, joined: str, as_of: dt.datetime, only: str, narrow: bool) -> str:
    """`window_events` of the rows already joined to their units (`joined_delta_sql`): the same rows
    and columns, in the same order."""
    drop = "_row, _exposed_at, unit_id, event_id" if narrow else "_row, _exposed_at"
    return _in_windows(plan, f"e.* EXCLUDE ({drop}), e._exposed_at", f"{joined} e", "e._exposed_at", as_of, only)


def _in_windows(plan: Plan, cols: str, source: str, exposed: str, as_of: dt.datetime, only: str) -> str:
    """`cols` of the rows of `source` (events as e) of the scope's types in the post window after
    `exposed`, up to `as_of`."""
    scope = plan.scope(as_of)
    names = ", ".join(literal(t) for t in scope.types)
    return f"""SELECT {cols} FROM {source}
    WHERE e.event IN ({names}) AND e.occurred_at >= {exposed}
      AND e.occurred_at < {exposed} + {interval_days(scope.window_days)}
      AND e.occurred_at <= {timestamp_literal(as_of)}{only}"""


def _repeats(plan: Plan, units: str, as_of: dt.datetime, only: str = "") -> str:
    """The repeats (`abproxy.repeats`) of the rows `window_events` selects."""
    scope = plan.scope(as_of)
    return scoped_sql(units, ", ".join(literal(t) for t in scope.types), interval_days(scope.window_days),
                      timestamp_literal(as_of), only)


AGES = """SELECT CAST(occurred_at AS DATE) AS day,
           date_diff('day', CAST(_exposed_at AS DATE), CAST(occurred_at AS DATE)) AS age, event, count(*) AS n
    FROM {ev} GROUP BY ALL"""


def build_profile(con, plan: Plan, as_of: dt.datetime, repeats: bool = False) -> None:
    """The data-quality profiles of the state's units from one join of their events: the per-day
    counts (quality.daily_profile) and the events by day x days since exposure (quality.age_profile).
    With `repeats` (they cover every stored event) duplicates are counted from them, not by key."""
    if not plan.profile:
        return
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_pev AS
                    {window_events(plan, plan.table, 'events', as_of, narrow=repeats)}""")
    reps = _repeats(plan, plan.table, as_of) if repeats else None
    con.execute(f"""CREATE OR REPLACE TABLE {plan.profile} AS
        SELECT * FROM ({counts_sql(plan.scope(as_of), plan.late_hours, '__abp_pev', repeats=reps)})""")
    con.execute(f"CREATE OR REPLACE TABLE {plan.ages} AS {AGES.format(ev='__abp_pev')}")
    con.execute("DROP TABLE __abp_pev")


def fold_profile(con, plan: Plan, reg: dict, as_of: dt.datetime, rebuilt: str, repeats: bool, joined: str) -> None:
    """Add the new rows of unchanged units (a row whose key was counted before adds a repeat) and
    every row of new units to the profile, per day; with `repeats`, their repeats are the dups.
    `joined`: the new rows joined to their state rows (`state_plan.joined_delta_sql`)."""
    delta, seen, new, parts = _fold_parts(plan, reg, as_of, rebuilt, repeats, joined)
    cols = [d[0] for d in con.execute(f"DESCRIBE {plan.profile}").fetchall() if d[0] != "day"]
    merged = ", ".join(f"greatest(p.{c}, d.{c}) AS {c}" if c.startswith("last") else
                       f"coalesce(p.{c}, 0) + coalesce(d.{c}, 0) AS {c}" for c in cols)
    added = ", ".join(f"max({c}) AS {c}" if c.startswith("last") else f"sum({c}) AS {c}" for c in cols)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_dv AS {delta}")   # joined once for both profiles
    con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_nv AS {new}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_pd AS
        WITH dv AS (SELECT * FROM __abp_dv), seen AS {seen}, nv AS (SELECT * FROM __abp_nv)
        SELECT day, {added} FROM ({parts[0]} UNION ALL BY NAME {parts[1]}) GROUP BY day""")
    con.execute(f"""CREATE OR REPLACE TABLE {plan.profile} AS
        SELECT day, {merged} FROM {plan.profile} p FULL JOIN __abp_pd d USING (day)""")
    con.execute("DROP TABLE __abp_pd")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_pa AS
        {AGES.format(ev='(SELECT * FROM __abp_dv UNION ALL SELECT * FROM __abp_nv)')}""")
    con.execute(f"""CREATE OR REPLACE TABLE {plan.ages} AS
        SELECT day, age, event, CAST(coalesce(p.n, 0) + coalesce(d.n, 0) AS BIGINT) AS n
        FROM {plan.ages} p FULL JOIN __abp_pa d USING (day, age, event)""")
    for table in ("__abp_pa", "__abp_dv", "__abp_nv"):
        con.execute(f"DROP TABLE {table}")


def _fold_parts(plan: Plan, reg: dict, as_of: dt.datetime, rebuilt: str, repeats: bool, joined: str):
    """The fold's relations: new rows of unchanged units, the stored rows counted before, every row
    of the rebuilt units, and the per-day counts of the first and the last."""
    scope, fresh = plan.scope(as_of), unfolded(reg, "e.file_id", "e.occurred_at")
    kept = _not_rebuilt("u", rebuilt)
    # `joined` holds the new rows (`fresh`) of the units in the state before this fold; those of
    # the rebuilt units are left out here (their exposure moved or they are new: all their rows are in `new`)
    delta = _joined_window_events(plan, joined, as_of, _not_rebuilt("e", rebuilt), narrow=repeats)
    seen = f"(SELECT * FROM __abp_old e WHERE NOT {fresh})"
    new = window_events(plan, rebuilt, "__abp_old", as_of, narrow=repeats)
    if repeats:
        only = f" AND {unfolded(reg, 'r.file_id', 'r.occurred_at')}{kept}"
        parts = (counts_sql(scope, plan.late_hours, "dv", repeats=_repeats(plan, plan.table, as_of, only)),
                 counts_sql(scope, plan.late_hours, "nv", repeats=_repeats(plan, rebuilt, as_of)))
    else:
        parts = (counts_sql(scope, plan.late_hours, "dv", seen="seen"), counts_sql(scope, plan.late_hours, "nv"))
    return delta, seen, new, tuple(f"SELECT * FROM ({q})" for q in parts)


def _not_rebuilt(alias: str, rebuilt: str) -> str:
    """The filter keeping the rows of `alias` whose unit is not in the table `rebuilt`."""
    return f" AND {alias}.unit_id NOT IN (SELECT unit_id FROM {rebuilt})"


def frontier_moved(con, plan: Plan, reg: dict) -> bool:
    """A new file loaded no later than `late_hours` before an old one moves the old file's
    'late' frontier (its rows' lateness changes): the profile is rebuilt."""
    return bool(con.execute(f"""SELECT count(*) FROM load_profile n JOIN load_profile o ON n.event = o.event
        WHERE n.kind = 'events' AND o.kind = 'events' AND n.file_id > ? AND o.file_id <= ?
          AND n.loaded_at <= o.loaded_at - {interval_days(plan.late_hours / 24)}""",
                                [reg["file_id"], reg["file_id"]]).fetchone()[0])
