"""Duplicates: events whose `event_id` is already stored or repeated in the file (found through the
narrow `event_ids` table of their hashes, in the files whose id range overlaps the new ids'), and the order-free digest of a file's rows that spots the
same rows re-delivered in another format."""
from __future__ import annotations

from ..warehouse import overlapping_files, transaction
from .sql import OPTIONAL, REQUIRED, q


def content_digest(con, kind: str, file_id: int, properties: list[str]) -> str:
    """A digest of the file's loaded rows that ignores their order and the file's format: row count,
    sum and xor of the row hashes (core columns plus property columns by name)."""
    names = list(REQUIRED[kind] + OPTIONAL[kind]) + sorted(set(properties), key=str.lower)
    row = f"hash({', '.join(q(name) for name in names)})"
    count, total, xor = con.execute(f"SELECT count(*), sum({row}::HUGEINT), bit_xor({row}) FROM {kind} "
                                    f"WHERE file_id = {int(file_id)}").fetchone()
    return f"{count}:{total}:{xor}"


def drop_duplicate_event_ids(con, file_id: int) -> int:
    """Delete this file's just-inserted (uncommitted) events whose event_id is already stored, or
    repeated in the file (the first occurrence in file order is kept: the insert preserves order),
    and add its remaining ids to `event_ids`. Stored ids are looked up by their hash in the narrow
    `event_ids` table, not in every stored event_id string; a matching hash is confirmed on the rows
    of the file that stored it, so a hash collision never drops an event. Returns the rows deleted."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_new AS SELECT rowid AS rid, event_id, hash(event_id) AS h
                    FROM events WHERE file_id = {file_id} AND event_id IS NOT NULL""")
    try:
        scope = _overlapping(con)
        hits = [] if scope is None else [r[0] for r in con.execute(
            f"SELECT DISTINCT file_id FROM event_ids WHERE {scope} h IN (SELECT h FROM __abp_new)").fetchall()]
        stored = ""
        if hits:
            where = f"file_id IN ({', '.join(str(int(f)) for f in hits)})" + (" OR file_id IS NULL" if -1 in hits else "")
            stored = f"""UNION ALL (SELECT DISTINCT event_id, true FROM events WHERE ({where})
                                    AND event_id IN (SELECT event_id FROM __abp_new))"""
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_dups AS
            SELECT event_id, bool_or(existing) AS existing FROM (
                (SELECT event_id, false AS existing FROM __abp_new GROUP BY event_id HAVING count(*) > 1)
                {stored})
            GROUP BY event_id""")
        deleted = 0
        if con.execute("SELECT count(*) FROM __abp_dups").fetchone()[0]:
            deleted = con.execute("""
                DELETE FROM events WHERE rowid IN (
                    SELECT rid FROM (
                        SELECT n.rid, d.existing, row_number() OVER (PARTITION BY n.event_id ORDER BY n.rid) AS nth
                        FROM __abp_new n JOIN __abp_dups d ON n.event_id = d.event_id)
                    WHERE existing OR nth > 1)""").fetchone()[0]
        con.execute(f"INSERT INTO event_ids SELECT hash(event_id), {file_id} FROM events "
                    f"WHERE file_id = {file_id} AND event_id IS NOT NULL")
        con.execute(f"INSERT INTO event_id_ranges SELECT {file_id}, min(event_id), max(event_id) FROM events "
                    f"WHERE file_id = {file_id} AND event_id IS NOT NULL HAVING count(*) > 0")
        return deleted
    finally:
        con.execute("DROP TABLE IF EXISTS __abp_dups")
        con.execute("DROP TABLE __abp_new")


def _overlapping(con) -> str | None:
    """The `event_ids` rows a new file's ids can repeat, as a WHERE prefix: those of the stored files
    whose [smallest, largest] event_id overlaps the new ids' (file ids between the first and last
    such file: row groups outside are skipped); None when no stored file overlaps."""
    files = overlapping_files(con, "event_id_ranges", "event_id", "__abp_new")
    if not files:
        return None
    if -1 in files:               # ids stored without a file: their rows are anywhere in the table
        return ""
    return f"file_id BETWEEN {int(min(files))} AND {int(max(files))} AND"


def event_ids_current(con) -> None:
    """`event_ids` holds DuckDB's hash() of each stored id; after a DuckDB upgrade (whose hash may
    differ) it is rebuilt from the events once, in one transaction."""
    stored = con.execute("SELECT any_value(duckdb_version) FROM event_ids_meta").fetchone()[0]
    version = con.execute("SELECT library_version FROM pragma_version()").fetchone()[0]
    if stored == version:
        return
    with transaction(con):
        con.execute("DELETE FROM event_ids")
        con.execute("INSERT INTO event_ids SELECT hash(event_id), coalesce(file_id, -1) FROM events "
                    "WHERE event_id IS NOT NULL")
        con.execute("DELETE FROM event_id_ranges")
        con.execute("INSERT INTO event_id_ranges SELECT coalesce(file_id, -1), min(event_id), max(event_id) "
                    "FROM events WHERE event_id IS NOT NULL GROUP BY ALL")
        con.execute("DELETE FROM event_ids_meta")
        con.execute("INSERT INTO event_ids_meta VALUES (?)", [version])
