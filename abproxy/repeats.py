"""Repeated rows: the events repeating an earlier stored row's (event, unit, time, value), the
duplicate check's key, kept per key and file in `event_repeats` (sql/007).

With them the data-quality profile of a per-unit state counts duplicates as the repeats in its
scope instead of grouping every event by the key: a key's rows share event, unit and time, so they
are in or out of an experiment's windows together, and `rows - distinct keys` is the sum of n.
Maintained like the load profile: each pass adds the files loaded since the last one, probing the
narrow `event_keys` (the 64-bit hash of each stored row's key); a matching hash is confirmed on the
rows of the file holding it, so a hash collision never counts a repeat.
"""
from __future__ import annotations

import duckdb

from .warehouse import overlapping_files, transaction

KEY = "event, unit_id, occurred_at, value"
FEW = 16    # candidate times up to which stored rows are looked up one time at a time
SAME_KEY = ("{a}.event = {b}.event AND {a}.unit_id = {b}.unit_id AND {a}.occurred_at = {b}.occurred_at "
            "AND {a}.value IS NOT DISTINCT FROM {b}.value")


def refresh_repeats(con: duckdb.DuckDBPyConnection) -> bool:
    """Bring `event_keys` and `event_repeats` up to the newest loaded file, in one transaction (from
    scratch after a DuckDB upgrade, whose hash() may differ, or when rows changed outside ingest).
    Returns whether they cover every stored event; when not (rows without a file), callers count
    duplicates by grouping the events."""
    version = con.execute("SELECT library_version FROM pragma_version()").fetchone()[0]
    meta = con.execute("SELECT file_id, duckdb_version FROM event_keys_meta").fetchone()
    newest = con.execute("SELECT coalesce(max(file_id), 0) FROM events").fetchone()[0]
    stale = meta is None or meta[1] != version or not _consistent(con, meta[0])
    if not stale and newest <= meta[0]:
        return _covered(con)
    with transaction(con):
        if stale:
            for table in ("event_keys", "event_repeats", "event_key_spans"):
                con.execute(f"DELETE FROM {table}")
        _add_files(con, 0 if stale else meta[0], newest)
        con.execute("DELETE FROM event_keys_meta")
        con.execute("INSERT INTO event_keys_meta VALUES (?, ?)", [newest, version])
    return _covered(con)


def _consistent(con, upto: int) -> bool:
    """The keys hold exactly the stored rows of files up to `upto` (rows deleted or added to those
    files outside ingest: rebuilt)."""
    keys, rows = con.execute(f"""SELECT (SELECT count(*) FROM event_keys),
                                        (SELECT count(*) FROM events WHERE file_id <= {int(upto)})""").fetchone()
    return keys == rows


def _covered(con) -> bool:
    return con.execute("SELECT count(*) = 0 FROM events WHERE file_id IS NULL").fetchone()[0]


def _add_files(con, after: int, upto: int) -> None:
    """Add the rows of files (after, upto]: their repeats of stored keys and of each other (the first
    row of a key in the earliest file is the original), then their key hashes. Only rows whose hash
    repeats, among them or in `event_keys`, are read again and compared on the key itself."""
    rows = f"file_id > {int(after)} AND file_id <= {int(upto)}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE __abp_nk AS SELECT hash({KEY}) AS h, file_id FROM events WHERE {rows}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_sk AS SELECT h, file_id FROM event_keys
                    WHERE {_in_time(con, rows)} h IN (SELECT h FROM __abp_nk)""")
    con.execute("""CREATE OR REPLACE TEMP TABLE __abp_nh AS
                   SELECT h FROM __abp_nk GROUP BY h HAVING count(*) > 1 UNION SELECT h FROM __abp_sk""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_nr AS SELECT {KEY}, file_id FROM events
                    WHERE {rows} AND hash({KEY}) IN (SELECT h FROM __abp_nh)""")
    con.execute(f"""INSERT INTO event_repeats
        WITH g AS (SELECT {KEY}, file_id, count(*) AS c FROM __abp_nr GROUP BY ALL),
        p AS ({_prior_sql(con)}),
        marked AS (SELECT g.*, min(g.file_id) OVER (PARTITION BY g.event, g.unit_id, g.occurred_at, g.value)
                              AS first_file,
                          EXISTS (SELECT 1 FROM p WHERE {SAME_KEY.format(a='p', b='g')}) AS seen
                   FROM g)
        SELECT {KEY}, file_id, n FROM (
            SELECT *, CASE WHEN seen OR file_id > first_file THEN c ELSE c - 1 END AS n FROM marked)
        WHERE n > 0""")
    con.execute("INSERT INTO event_keys SELECT h, file_id FROM __abp_nk")
    con.execute(f"INSERT INTO event_key_spans SELECT file_id, min(occurred_at), max(occurred_at) FROM events "
                f"WHERE {rows} GROUP BY file_id")
    for table in ("__abp_nr", "__abp_nh", "__abp_sk", "__abp_nk"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _prior_sql(con) -> str:
    """The stored rows that may hold the key of a new row whose hash matched a stored one
    (`__abp_nr`), from the files holding the match (the caller compares them on the key). For a few
    such keys, one scan per time (`occurred_at = t` is pushed into the scan, which then reads the
    other columns of those rows alone) instead of reading every row of those files."""
    hits = [r[0] for r in con.execute("SELECT DISTINCT file_id FROM __abp_sk").fetchall()]
    if not hits:
        return f"SELECT {KEY} FROM events WHERE FALSE"
    files = f"file_id IN ({', '.join(str(int(f)) for f in hits)})"
    times = [r[0] for r in con.execute(f"SELECT DISTINCT occurred_at FROM __abp_nr LIMIT {FEW + 1}").fetchall()]
    if len(times) > FEW:
        return f"SELECT DISTINCT {KEY} FROM events WHERE {files} AND ({KEY}) IN (SELECT ({KEY}) FROM __abp_nr)"
    return " UNION ".join(f"(SELECT {KEY} FROM events WHERE {files} AND occurred_at = TIMESTAMP "
                          f"'{t.isoformat(sep=' ')}')" for t in times)


def _in_time(con, rows: str) -> str:
    """The `event_keys` rows a new row can repeat, as a WHERE prefix: those of the stored files whose
    time span overlaps the new rows' (a key holds its time; keys are appended file by file, so the
    other files' row groups are skipped)."""
    files = overlapping_files(con, "event_key_spans", "occurred_at", f"events WHERE {rows}")
    if not files:
        return "FALSE AND"
    return f"file_id IN ({', '.join(str(int(f)) for f in files)}) AND"


def scoped_sql(units: str, types: str, window: str, as_of: str, only: str = "") -> str:
    """The repeats (event, occurred_at, n) of `units`' (alias u) rows in their post windows."""
    return f"""SELECT r.event, r.occurred_at, r.n FROM event_repeats r JOIN {units} u ON u.unit_id = r.unit_id
    WHERE r.event IN ({types}) AND r.occurred_at >= u.exposed_at AND r.occurred_at < u.exposed_at + {window}
      AND r.occurred_at <= {as_of}{only}"""
