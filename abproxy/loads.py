"""The load profile: per loaded file and event type, rows, newest timestamp and the largest lead
over the load time (`load_profile`, sql/005). Small and maintained by appending the files loaded
since the last call; read by the run watermark, the late and future-timestamp checks and the fold
of the per-unit state, so none of them scans the events."""
from __future__ import annotations

import datetime as dt

import duckdb


def refresh_load_profile(con: duckdb.DuckDBPyConnection) -> None:
    """Profile the rows of every file loaded since the last call (pruned to the new files). Nothing
    is written when nothing is new (the analysis brings it up to date once per pass)."""
    for kind, event, ts in (("events", "event", "occurred_at"), ("exposures", "''", "exposed_at")):
        fresh = con.execute(f"""SELECT (SELECT coalesce(max(file_id), 0) FROM {kind})
                                       > (SELECT coalesce(max(file_id), 0) FROM load_profile WHERE kind = '{kind}')""")
        if not fresh.fetchone()[0]:
            continue
        con.execute(f"""INSERT INTO load_profile
            SELECT file_id, '{kind}', {event}, any_value(loaded_at), count(*), max({ts}),
                   max(epoch_us({ts}) - epoch_us(loaded_at))
            FROM {kind} WHERE file_id > (SELECT coalesce(max(file_id), 0) FROM load_profile WHERE kind = '{kind}')
            GROUP BY file_id, {event}""")


def event_watermark(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> tuple[int, dt.datetime | None]:
    """count(*) and max(occurred_at) of the events up to `as_of`: only files holding events after
    `as_of` (and rows without a file) are read, the rest comes from the profile."""
    refresh_load_profile(con)
    whole, newest, partial = con.execute("""
        SELECT coalesce(sum(rows) FILTER (WHERE newest <= $t), 0), max(newest) FILTER (WHERE newest <= $t),
               list(DISTINCT file_id) FILTER (WHERE newest > $t)
        FROM load_profile WHERE kind = 'events'""", {"t": as_of}).fetchone()
    only = f"file_id IN ({', '.join(str(int(f)) for f in partial)}) OR " if partial else ""
    rest = con.execute(f"SELECT count(*), max(occurred_at) FROM events WHERE ({only}file_id IS NULL) "
                       "AND occurred_at <= $t", {"t": as_of}).fetchone()
    last = max((x for x in (newest, rest[1]) if x is not None), default=None)
    return int(whole) + int(rest[0]), last
