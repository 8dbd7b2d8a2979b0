"""Ingestion: inbox files → exposures/events, ledger, rejected rows, exactly once, atomic.

Every test writes real files (CSV, Parquet, JSON Lines, gzip) into a temporary inbox and loads
them into a real DuckDB warehouse opened with `abproxy.warehouse.connect`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abproxy.config import parse_config
from abproxy.ingest import IngestSummary, Limits, ingest
from abproxy.warehouse import connect

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 10, 12, 0, 0)
EVENTS_HEADER = "unit_id,event,occurred_at,value,event_id\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def run(con, inbox, **kw) -> IngestSummary:
    """Ingest with every file's good rows kept however many are rejected (the refusal above
    ingest.max_rejected_fraction is tested in test_ingest_formats.py)."""
    kw.setdefault("now", NOW)
    kw["limits"] = replace(kw.get("limits", Limits()), max_rejected_fraction=1)
    return ingest(con, inbox, **kw)


def rows(con, sql: str, *params) -> list[tuple]:
    return con.execute(sql, list(params)).fetchall()


def one(con, sql: str, *params):
    return con.execute(sql, list(params)).fetchone()[0]


def ledger(con) -> list[tuple]:
    return rows(con, "SELECT path, status, rows_loaded, rows_rejected, rows_duplicate FROM files ORDER BY file_id")


# --------------------------------------------------------------------------------------------
# formats


def test_loads_csv_parquet_jsonl_and_gzip(con, inbox):
    write(inbox / "exposures" / "2026-01-05.csv",
          "unit_id,experiment,variant,exposed_at\nu1,recsys-v2,v1,2026-01-05 10:00:00\n"
          "u2,recsys-v2,v2,2026-01-05 11:00:00\n")
    write(inbox / "exposures" / "more" / "2026-01-06.csv.gz",
          "unit_id,experiment,variant,exposed_at\nu3,recsys-v2,v1,2026-01-06 09:30:00\n")
    pq.write_table(pa.table({
        "unit_id": ["u1", "u2"], "event": ["purchase", "session_start"],
        "occurred_at": pa.array([datetime(2026, 1, 5, 12), datetime(2026, 1, 5, 13)], pa.timestamp("us")),
        "value": [12.5, None], "event_id": ["e1", "e2"]}), inbox / "events" / "a.parquet")
    write(inbox / "events" / "b.jsonl.gz",
          '{"unit_id": "u3", "event": "purchase", "occurred_at": "2026-01-06T10:00:00", "value": 3}\n'
          '{"unit_id": "u1", "event": "refund", "occurred_at": "2026-01-06T11:00:00", "value": "4.5"}\n')
    write(inbox / "events" / "c.ndjson",
          '{"unit_id": "u2", "event": "purchase", "occurred_at": "2026-01-07T10:00:00", "value": 1}\n')
    write(inbox / "events" / "d.json",
          '[{"unit_id": "u3", "event": "refund", "occurred_at": "2026-01-07T12:00:00"}]')
    write(inbox / "events" / "e.csv",
          EVENTS_HEADER + "u2,purchase,2026-01-08 08:00:00,7.25,e9\n")

    summary = run(con, inbox)

    assert summary.as_dict() == {"files_loaded": 7, "files_skipped": 0, "files_failed": 0, "rows_loaded": 10,
                                 "rows_rejected": 0, "rows_duplicate": 0, "failures": [], "ok": True,
                                 "max_rejected_fraction": 1.0, "rejects": []}
    assert rows(con, "SELECT unit_id, experiment, variant, exposed_at FROM exposures ORDER BY unit_id") == [
        ("u1", "recsys-v2", "v1", datetime(2026, 1, 5, 10)),
        ("u2", "recsys-v2", "v2", datetime(2026, 1, 5, 11)),
        ("u3", "recsys-v2", "v1", datetime(2026, 1, 6, 9, 30))]
    assert rows(con, "SELECT unit_id, event, occurred_at, value, event_id FROM events ORDER BY occurred_at") == [
        ("u1", "purchase", datetime(2026, 1, 5, 12), 12.5, "e1"),
        ("u2", "session_start", datetime(2026, 1, 5, 13), None, "e2"),
        ("u3", "purchase", datetime(2026, 1, 6, 10), 3.0, None),
        ("u1", "refund", datetime(2026, 1, 6, 11), 4.5, None),
        ("u2", "purchase", datetime(2026, 1, 7, 10), 1.0, None),
        ("u3", "refund", datetime(2026, 1, 7, 12), None, None),
        ("u2", "purchase", datetime(2026, 1, 8, 8), 7.25, "e9")]
    assert [(p, s, n) for p, s, n, _, _ in ledger(con)] == [
        ("events/a.parquet", "loaded", 2), ("events/b.jsonl.gz", "loaded", 2), ("events/c.ndjson", "loaded", 1),
        ("events/d.json", "loaded", 1), ("events/e.csv", "loaded", 1),
        ("exposures/2026-01-05.csv", "loaded", 2), ("exposures/more/2026-01-06.csv.gz", "loaded", 1)]
    file_ids = dict(rows(con, "SELECT path, file_id FROM files"))
    assert rows(con, "SELECT DISTINCT file_id, loaded_at FROM events WHERE event_id = 'e9'") == [
        (file_ids["events/e.csv"], NOW)]
    ledger_row = rows(con, "SELECT kind, size, sha256, loaded_at FROM files WHERE path = 'events/e.csv'")[0]
    path = inbox / "events" / "e.csv"
    assert ledger_row == ("events", path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), NOW)


def test_excel_style_csv_with_bom_crlf_and_quotes(con, inbox):
    (inbox / "events" / "excel.csv").write_bytes(
        b'\xef\xbb\xbf"unit_id","event","occurred_at","value"\r\n'
        b'u1,x,2026-01-05 10:00:00,1.5\r\nu2,"a,b",2026-01-05 11:00:00,\r\n')
    assert run(con, inbox).rows_loaded == 2
    assert rows(con, "SELECT unit_id, event, occurred_at, value FROM events ORDER BY unit_id") == [
        ("u1", "x", datetime(2026, 1, 5, 10), 1.5), ("u2", "a,b", datetime(2026, 1, 5, 11), None)]


def test_timestamps_with_offsets_are_converted_to_utc(con, inbox):
    write(inbox / "events" / "a.csv", EVENTS_HEADER +
          "u1,x,2026-01-05T10:00:00+02:00,,\n"     # 08:00 UTC
          "u2,x,2026-01-05T10:00:00Z,,\n"          # 10:00 UTC
          "u3,x,2026-01-05 10:00:00-05:00,,\n"     # 15:00 UTC
          "u4,x,2026-01-05 10:00:00,,\n"           # naive: taken as UTC
          "u5,x,2026-01-05T23:30:00.250+0530,,\n"  # 18:00:00.25 UTC
          "u6,x,2026-01-05,,\n")                   # a date: midnight UTC
    pq.write_table(pa.table({
        "unit_id": ["p1"], "event": ["x"],
        "occurred_at": pa.array([datetime(2026, 1, 5, 10, tzinfo=timezone(timedelta(hours=-8)))],
                                pa.timestamp("us", tz="America/Los_Angeles"))}), inbox / "events" / "b.parquet")
    write(inbox / "events" / "c.jsonl", '{"unit_id": "j1", "event": "x", "occurred_at": "2026-01-05T01:00:00+09:00"}\n')
    write(inbox / "exposures" / "e.csv", "unit_id,experiment,variant,exposed_at\nu1,e,a,2026-01-04T22:00:00-03:00\n")

    assert run(con, inbox).rows_loaded == 9

    assert dict(rows(con, "SELECT unit_id, occurred_at FROM events")) == {
        "u1": datetime(2026, 1, 5, 8), "u2": datetime(2026, 1, 5, 10), "u3": datetime(2026, 1, 5, 15),
        "u4": datetime(2026, 1, 5, 10), "u5": datetime(2026, 1, 5, 18, 0, 0, 250000),
        "u6": datetime(2026, 1, 5), "p1": datetime(2026, 1, 5, 18), "j1": datetime(2026, 1, 4, 16)}
    assert rows(con, "SELECT exposed_at FROM exposures") == [(datetime(2026, 1, 5, 1),)]
    assert one(con, "SELECT data_type FROM duckdb_columns() WHERE table_name = 'events' "
                    "AND column_name = 'occurred_at'") == "TIMESTAMP"


# --------------------------------------------------------------------------------------------
# exactly once


def test_rerun_loads_nothing_new(con, inbox):
    write(inbox / "events" / "a.csv", EVENTS_HEADER + "u1,purchase,2026-01-05 10:00:00,5,e1\n")
    write(inbox / "exposures" / "a.csv", "unit_id,experiment,variant,exposed_at\nu1,x,a,2026-01-05\n")
    first = run(con, inbox)
    assert (first.files_loaded, first.rows_loaded) == (2, 2)

    again = run(con, inbox, now=NOW + timedelta(hours=1))

    assert again.as_dict() == {"files_loaded": 0, "files_skipped": 2, "files_failed": 0, "rows_loaded": 0,
                               "rows_rejected": 0, "rows_duplicate": 0, "failures": [], "ok": True,
                                 "max_rejected_fraction": 1.0, "rejects": []}
    assert one(con, "SELECT count(*) FROM events") == 1
    assert one(con, "SELECT count(*) FROM exposures") == 1
    assert len(ledger(con)) == 2


def test_same_content_under_another_name_is_not_loaded_twice(con, inbox):
    original = write(inbox / "events" / "2026-01-05.csv", EVENTS_HEADER + "u1,purchase,2026-01-05 10:00:00,5,\n")
    run(con, inbox)
    shutil.copy(original, inbox / "events" / "copy-of-2026-01-05.csv")

    summary = run(con, inbox)

    assert (summary.files_loaded, summary.files_skipped, summary.files_failed, summary.ok) == (0, 2, 0, True)
    assert one(con, "SELECT count(*) FROM events") == 1
    status, message = rows(con, "SELECT status, message FROM files WHERE path = 'events/copy-of-2026-01-05.csv'")[0]
    assert status == "duplicate"
    assert "same content as events/2026-01-05.csv" in message
    assert run(con, inbox).files_skipped == 2  # and it stays skipped
    assert len(ledger(con)) == 2


def test_changed_content_under_a_loaded_name_is_refused(con, inbox):
    path = write(inbox / "events" / "daily.csv", EVENTS_HEADER + "u1,purchase,2026-01-05 10:00:00,5,\n")
    original = path.read_bytes()
    run(con, inbox)
    write(path, EVENTS_HEADER + "u1,purchase,2026-01-05 10:00:00,5,\nu2,purchase,2026-01-06 10:00:00,7,\n")

    summary = run(con, inbox)

    assert (summary.files_loaded, summary.files_failed, summary.rows_loaded, summary.ok) == (0, 1, 0, False)
    message = summary.failures[0]["message"]
    assert summary.failures[0]["path"] == "events/daily.csv"
    assert message.startswith("events/daily.csv: its content changed since it was ingested")
    assert "drop the new data under a new file name" in message
    assert one(con, "SELECT count(*) FROM events") == 1  # never double-counted
    assert ledger(con) == [("events/daily.csv", "loaded", 1, 0, 0), ("events/daily.csv", "changed", 0, 0, 0)]

    again = run(con, inbox)  # still reported, but no second ledger row
    assert (again.files_failed, again.failures[0]["message"]) == (1, message)
    assert len(ledger(con)) == 2

    path.write_bytes(original)  # restoring the original makes the inbox clean again
    restored = run(con, inbox)
    assert (restored.files_skipped, restored.files_failed, restored.ok) == (1, 0, True)


def test_duplicate_event_ids_across_files_and_within_a_file(con, inbox):
    write(inbox / "events" / "1.csv", EVENTS_HEADER +
          "u1,purchase,2026-01-05 10:00:00,1,e1\n"
          "u1,purchase,2026-01-05 11:00:00,2,e2\n")
    write(inbox / "events" / "2.csv", EVENTS_HEADER +
          "u1,purchase,2026-01-05 11:00:00,2,e2\n"   # row 1: already stored
          "u2,purchase,2026-01-06 10:00:00,3,e3\n"   # row 2: first e3, kept
          "u2,purchase,2026-01-06 10:00:00,4,e3\n"   # row 3: repeated in the file
          "u3,purchase,2026-01-06 12:00:00,5,\n"     # no event_id: never deduplicated
          "u3,purchase,2026-01-06 12:00:00,5,\n"
          "u4,purchase,not a time,6,e4\n"            # rejected: does not claim e4
          "u4,purchase,2026-01-06 13:00:00,7,e4\n")  # so this e4 loads
    summary = run(con, inbox)

    assert (summary.rows_loaded, summary.rows_rejected, summary.rows_duplicate) == (6, 1, 2)
    assert ledger(con) == [("events/1.csv", "loaded", 2, 0, 0), ("events/2.csv", "loaded", 4, 1, 2)]
    assert rows(con, "SELECT event_id, count(*), min(value) FROM events GROUP BY ALL ORDER BY 1 NULLS LAST") == [
        ("e1", 1, 1.0), ("e2", 1, 2.0), ("e3", 1, 3.0), ("e4", 1, 7.0), (None, 2, 5.0)]

    pq.write_table(pa.table({"unit_id": ["u5", "u5"], "event": ["x", "x"],
                             "occurred_at": [datetime(2026, 1, 7), datetime(2026, 1, 7)],
                             "event_id": ["e1", "e5"]}), inbox / "events" / "3.parquet")
    third = run(con, inbox)
    assert (third.rows_loaded, third.rows_duplicate) == (1, 1)
    assert one(con, "SELECT count(*) FROM events") == 7


def test_first_occurrence_of_a_repeated_event_id_is_kept_in_a_large_file(con, inbox):
    n = 400_000  # several row groups, read in parallel
    with duckdb.connect() as gen:
        gen.execute(f"""COPY (SELECT 'u' || i AS unit_id, 'x' AS event, TIMESTAMP '2026-01-01' AS occurred_at,
                              i::DOUBLE AS value,
                              CASE WHEN i % 1000 = 7 THEN 'dup-' || (i % 3) ELSE 'e' || i END AS event_id
                       FROM range({n}) t(i)) TO '{inbox / "events" / "a.parquet"}' (FORMAT parquet)""")
    summary = run(con, inbox)
    assert (summary.rows_loaded, summary.rows_duplicate) == (n - 400 + 3, 400 - 3)
    assert rows(con, "SELECT event_id, value FROM events WHERE event_id LIKE 'dup-%' ORDER BY 1") == [
        ("dup-0", 2007.0), ("dup-1", 7.0), ("dup-2", 1007.0)]


def test_event_ids_are_checked_through_their_hashes_and_rebuilt_after_a_duckdb_upgrade(con, inbox):
    # rows stored by other means (no file) before the hash table existed, a colliding hash, a
    # version change: the narrow table stays exact and in step with the events
    con.execute("INSERT INTO events (unit_id, event, occurred_at, event_id) VALUES "
                "('u0', 'x', TIMESTAMP '2026-01-01', 'legacy')")
    con.execute("UPDATE event_ids_meta SET duckdb_version = 'v0.0.0'")          # as after an upgrade
    write(inbox / "events" / "1.csv", EVENTS_HEADER + "u1,x,2026-01-05 10:00:00,1,legacy\n"
                                                      "u1,x,2026-01-05 10:00:00,1,e1\n")
    assert run(con, inbox).rows_duplicate == 1
    assert one(con, "SELECT count(*) FROM event_ids") == one(con, "SELECT count(event_id) FROM events") == 2
    # a stored hash that collides with a new id does not drop the new event: confirmed on the rows
    con.execute("INSERT INTO event_ids SELECT hash('e2'), 1")
    write(inbox / "events" / "2.csv", EVENTS_HEADER + "u2,x,2026-01-05 11:00:00,2,e2\n")
    assert (run(con, inbox).rows_loaded, one(con, "SELECT count(*) FROM events WHERE event_id = 'e2'")) == (1, 1)


def test_new_ids_are_probed_only_in_files_whose_id_range_overlaps(con, inbox):
    # time-ordered ids: each file's [smallest, largest] id is kept; a later file is checked against the
    # files its range overlaps (a re-delivered old id widens its range: still found)
    for n, prefix in enumerate("abc"):
        write(inbox / "events" / f"{n}.csv", EVENTS_HEADER + "".join(
            f"u{i},x,2026-01-05 10:00:00,{i},{prefix}{i:03d}\n" for i in range(50)))
    assert run(con, inbox).rows_duplicate == 0
    write(inbox / "events" / "3.csv", EVENTS_HEADER + "u9,x,2026-01-06 10:00:00,1,d001\n"
                                                      "u9,x,2026-01-06 10:00:00,1,a007\n")  # an old id again
    write(inbox / "events" / "4.csv", EVENTS_HEADER + "u9,x,2026-01-06 10:00:00,1,e001\n")  # overlaps nothing
    summary = run(con, inbox)
    assert (summary.rows_loaded, summary.rows_duplicate) == (2, 1)
    assert rows(con, "SELECT file_id, lo, hi FROM event_id_ranges ORDER BY 1") == rows(
        con, "SELECT file_id, min(event_id), max(event_id) FROM events GROUP BY 1 ORDER BY 1")
    assert rows(con, "SELECT event_id FROM events WHERE file_id = 4") == [("d001",)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"])), max_size=6),
                min_size=1, max_size=3))
def test_each_event_id_is_stored_once_whatever_the_files(batches):
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        for n, batch in enumerate(batches):
            write(inbox / "events" / f"{n}.csv", EVENTS_HEADER + "".join(
                f"u{n}-{i},x,2026-01-05 10:00:00,{i},{eid or ''}\n" for i, eid in enumerate(batch)))
        con = connect(Path(tmp) / "w.duckdb")
        summary = run(con, inbox)
        ids = [eid for batch in batches for eid in batch]
        stored = rows(con, "SELECT event_id, count(*) FROM events GROUP BY ALL")
        con.close()
    expected = {eid: 1 for eid in ids if eid is not None}
    if None in ids:
        expected[None] = ids.count(None)
    assert dict(stored) == expected
    assert summary.rows_duplicate == len(ids) - sum(expected.values())
    assert summary.rows_loaded == sum(expected.values())


# --------------------------------------------------------------------------------------------
# bad rows


def rejected(con) -> list[tuple]:
    return rows(con, "SELECT path, row_number, reason FROM rejected_rows ORDER BY path, row_number")


def test_bad_event_rows_are_rejected_with_reason_and_row_number(con, inbox):
    write(inbox / "events" / "a.csv", EVENTS_HEADER +
          "u1,purchase,2026-01-05 10:00:00,5,e1\n"          # 1 good
          ",purchase,2026-01-05 10:00:00,5,e2\n"            # 2 missing unit_id
          "u3,,2026-01-05 10:00:00,5,e3\n"                  # 3 missing event
          "u4,purchase,,5,e4\n"                             # 4 missing timestamp
          "u5,purchase,05/01/2026 at noon,5,e5\n"           # 5 unparseable
          "u6,purchase,2026-01-05 10:00:00,12 EUR,e6\n"     # 6 non-numeric value
          "u7,purchase,2026-01-10 12:11:00,5,e7\n"          # 7 11 min after now
          "u8,\"multi\nline\",2026-01-10 12:09:00,,e8\n"    # 8 good (9 min after now, empty value)
          "   ,purchase,2026-01-05 10:00:00,5,e9\n"         # 9 blank unit_id
          "u10,purchase,2026-01-05 10:00:00,nan,e10\n")     # 10 not a finite number
    summary = run(con, inbox)

    assert (summary.rows_loaded, summary.rows_rejected, summary.files_loaded, summary.ok) == (2, 8, 1, True)
    assert rejected(con) == [
        ("events/a.csv", 2, "missing unit_id"), ("events/a.csv", 3, "missing event"),
        ("events/a.csv", 4, "missing timestamp"), ("events/a.csv", 5, "unparseable timestamp in occurred_at"),
        ("events/a.csv", 6, "non-numeric value"), ("events/a.csv", 7, "timestamp in the future"),
        ("events/a.csv", 9, "missing unit_id"), ("events/a.csv", 10, "non-numeric value")]
    assert json.loads(one(con, "SELECT raw FROM rejected_rows WHERE row_number = 5")) == {
        "unit_id": "u5", "event": "purchase", "occurred_at": "05/01/2026 at noon", "value": "5", "event_id": "e5"}
    assert one(con, "SELECT file_id FROM rejected_rows LIMIT 1") == one(con, "SELECT file_id FROM files")
    assert rows(con, "SELECT unit_id, event, value FROM events ORDER BY unit_id") == [
        ("u1", "purchase", 5.0), ("u8", "multi\nline", None)]
    assert ledger(con) == [("events/a.csv", "loaded", 2, 8, 0)]


def test_values_that_would_overflow_a_sum_of_squares_are_rejected(con, inbox):
    """1e200 used to load, and every later analysis of the experiment failed (issue 11, item 2)."""
    write(inbox / "events" / "big.csv", EVENTS_HEADER +
          "u1,purchase,2026-01-05 10:00:00,1e200,e1\n"
          "u2,purchase,2026-01-05 10:00:00,-2e160,e2\n"
          "u3,purchase,2026-01-05 10:00:00,1e150,e3\n")
    summary = run(con, inbox)
    assert (summary.rows_loaded, summary.rows_rejected) == (1, 2)
    reasons = [r[2] for r in rejected(con)]
    assert len(reasons) == 2 and all(r.startswith("value too large") and "1e+154" in r for r in reasons)
    assert rows(con, "SELECT unit_id FROM events") == [("u3",)]


def test_bad_exposure_rows_are_rejected_and_unknown_experiments_stored(con, inbox):
    config = parse_config({"metrics": {"m": {"type": "mean", "event": "purchase"}},
                           "experiments": {"recsys-v2": {"control": "v1", "variants": {"v1": {}, "v2": {}},
                                                         "primary": ["m"]}}})
    write(inbox / "exposures" / "x.csv", "unit_id,experiment,variant,exposed_at\n"
          "u1,recsys-v2,v1,2026-01-05 10:00:00\n"
          "u2,,v1,2026-01-05 10:00:00\n"
          "u3,recsys-v2,,2026-01-05 10:00:00\n"
          "u4,recsys-v2,v2,yesterday\n"
          "u5,search-v9,treatment,2026-01-05 10:00:00\n"    # not in the config: stored
          "u6,recsys-v2,v3,2026-01-05 10:00:00\n")          # unknown variant: stored
    summary = run(con, inbox)

    assert (summary.rows_loaded, summary.rows_rejected) == (3, 3)
    assert rejected(con) == [("exposures/x.csv", 2, "missing experiment"), ("exposures/x.csv", 3, "missing variant"),
                             ("exposures/x.csv", 4, "unparseable timestamp in exposed_at")]
    stored = rows(con, "SELECT unit_id, experiment, variant FROM exposures ORDER BY unit_id")
    assert stored == [("u1", "recsys-v2", "v1"), ("u5", "search-v9", "treatment"), ("u6", "recsys-v2", "v3")]
    assert "search-v9" not in config.experiments and "v3" not in config.experiments["recsys-v2"].variants


def test_row_numbers_in_parquet_and_json_lines(con, inbox):
    n = 300_000  # several Parquet row groups
    bad = {5: "unit_id", 150_001: "event", n: "occurred_at"}
    unit = [None if i == 5 else f"u{i}" for i in range(1, n + 1)]
    event = [None if i == 150_001 else "x" for i in range(1, n + 1)]
    ts = [datetime(2027, 1, 1) if i == n else datetime(2026, 1, 1) for i in range(1, n + 1)]
    pq.write_table(pa.table({"unit_id": unit, "event": event, "occurred_at": ts}), inbox / "events" / "a.parquet",
                   row_group_size=50_000)
    write(inbox / "events" / "b.jsonl",
          '{"unit_id": "j1", "event": "x", "occurred_at": "2026-01-01"}\n'
          '{"unit_id": "j2", "event": "x", "occurred_at": "2026-01-01", "value": "lots"}\n'
          '{"unit_id": null, "event": "x", "occurred_at": "2026-01-01"}\n')
    write(inbox / "exposures" / "c.csv.gz", "unit_id,experiment,variant,exposed_at\nu1,e,a,2026-01-01\nu2,e,a,\n")
    summary = run(con, inbox)

    assert (summary.rows_loaded, summary.rows_rejected) == (n - 3 + 1 + 1, 3 + 2 + 1)
    assert rejected(con) == [
        ("events/a.parquet", 5, "missing unit_id"), ("events/a.parquet", 150_001, "missing event"),
        ("events/a.parquet", n, "timestamp in the future"),
        ("events/b.jsonl", 2, "non-numeric value"), ("events/b.jsonl", 3, "missing unit_id"),
        ("exposures/c.csv.gz", 2, "missing timestamp")]
    assert json.loads(one(con, "SELECT raw FROM rejected_rows WHERE path = 'events/a.parquet' AND row_number = 5")) \
        == {"unit_id": None, "event": "x", "occurred_at": "2026-01-01 00:00:00"}


def test_max_future_and_now_are_respected(con, inbox):
    write(inbox / "events" / "a.csv", EVENTS_HEADER + "u1,x,2026-01-10 13:00:00,,\nu2,x,2026-01-10 14:30:00,,\n")
    summary = run(con, inbox, now=datetime(2026, 1, 10, 13, 0, tzinfo=timezone(timedelta(hours=1))),
                  max_future=timedelta(hours=2))  # now = 12:00 UTC, limit 14:00 UTC
    assert (summary.rows_loaded, summary.rows_rejected) == (1, 1)
    assert rejected(con) == [("events/a.csv", 2, "timestamp in the future")]
    assert one(con, "SELECT loaded_at FROM events") == datetime(2026, 1, 10, 12)


# --------------------------------------------------------------------------------------------
# bad files


def _good_exposures(inbox: Path) -> None:
    write(inbox / "exposures" / "good.csv", "unit_id,experiment,variant,exposed_at\nu1,e,a,2026-01-05\n")


def _truncated_parquet(path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"unit_id": ["u"] * 1000, "event": ["x"] * 1000,
                             "occurred_at": [datetime(2026, 1, 1)] * 1000}), buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


BAD_FILES = {
    "truncated parquet": ("events/t.parquet", _truncated_parquet, "not a readable Parquet file"),
    "junk parquet": ("events/j.parquet", lambda p: p.write_bytes(os.urandom(4096)), "not a readable Parquet file"),
    "junk csv": ("events/j.csv", lambda p: p.write_bytes(b"\x00\xff\xfe" + os.urandom(4096)), "not a UTF-8 text CSV"),
    "junk jsonl": ("events/j.jsonl", lambda p: p.write_bytes(b"\x89PNG\x00" + os.urandom(4096)),
                   "not valid JSON Lines"),
    "junk gzip": ("events/j.csv.gz", lambda p: p.write_bytes(os.urandom(4096)), "not a readable gzip file"),
    "empty file": ("events/empty.csv", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "empty parquet name": ("exposures/empty.parquet", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "missing columns": ("exposures/m.csv", lambda p: write(p, "unit_id,variant,exposed_at\nu1,a,2026-01-01\n"),
                        "missing required columns experiment (found: 'unit_id', 'variant', 'exposed_at')"),
    "semicolon delimiter": ("events/s.csv", lambda p: write(p, "unit_id;event;occurred_at\nu1;x;2026-01-01\n"),
                            "missing required columns unit_id, event, occurred_at (found: "
                            "'unit_id;event;occurred_at'); is the delimiter ','?"),
    "ragged csv": ("events/r.csv", lambda p: write(p, EVENTS_HEADER + "u1,x,2026-01-01,1,e1\nu2,x\n"),
                   "CSV Error on Line: 3"),
    "malformed json": ("events/m.jsonl", lambda p: write(p, '{"unit_id": "u1", "event": "x", "occurred_at": "2026"}\n'
                                                           '{"unit_id": "u2", "event": \n'), "not valid JSON Lines"),
    "bad column name": ("exposures/n.csv", lambda p: write(p, "unit_id,experiment,variant,exposed_at,home country\n"
                                                            "u1,e,a,2026-01-01,FR\n"),
                        "column 'home country' is not a valid attribute name"),
    "reserved column": ("events/f.csv", lambda p: write(p, "unit_id,event,occurred_at,file_id\nu1,x,2026-01-01,3\n"),
                        "column 'file_id' is reserved"),
    "unsupported type": ("events/e.xlsx", lambda p: p.write_bytes(b"PK\x03\x04 not really"), "unsupported file type"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_fails_alone_with_a_message_naming_it(con, inbox, case):
    rel, make, expected = BAD_FILES[case]
    make(inbox / rel)
    _good_exposures(inbox)

    summary = run(con, inbox)

    assert (summary.files_failed, summary.files_loaded, summary.rows_loaded, summary.ok) == (1, 1, 1, False)
    failure = summary.failures[0]
    assert failure["path"] == rel
    assert failure["message"].startswith(f"{rel}: ")
    assert expected in failure["message"]
    assert ledger(con) == [(rel, "failed", 0, 0, 0), ("exposures/good.csv", "loaded", 1, 0, 0)] \
        if rel < "exposures/good.csv" else [("exposures/good.csv", "loaded", 1, 0, 0), (rel, "failed", 0, 0, 0)]
    assert one(con, "SELECT message FROM files WHERE status = 'failed'") == failure["message"]
    assert one(con, "SELECT count(*) FROM events") == 0
    assert one(con, "SELECT count(*) FROM rejected_rows") == 0


def test_failed_file_is_reported_again_and_retried_only_when_it_changes(con, inbox):
    path = write(inbox / "events" / "s.csv", "unit_id;event;occurred_at\nu1;x;2026-01-01\n")
    first = run(con, inbox)
    assert first.files_failed == 1

    again = run(con, inbox)
    assert (again.files_failed, again.files_loaded, again.ok) == (1, 0, False)
    assert again.failures[0]["message"].startswith(first.failures[0]["message"] + " (unchanged since it failed at")
    assert len(ledger(con)) == 1  # not retried, not recorded again

    write(path, "unit_id,event,occurred_at\nu1,x,2026-01-01\n")  # fixed in place
    fixed = run(con, inbox)
    assert (fixed.files_loaded, fixed.rows_loaded, fixed.files_failed, fixed.ok) == (1, 1, 0, True)
    assert ledger(con) == [("events/s.csv", "failed", 0, 0, 0), ("events/s.csv", "loaded", 1, 0, 0)]


def test_a_file_failing_mid_load_leaves_nothing_behind(con, inbox):
    # The new column is added and rows are read before the ragged last line is met.
    write(inbox / "events" / "a.csv", "unit_id,event,occurred_at,platform\n" +
          "u1,x,2026-01-05 10:00:00,ios\n" * 5000 + ",x,bad,ios\n" + "u2,x\n")
    summary = run(con, inbox)

    assert (summary.files_failed, summary.rows_loaded) == (1, 0)
    assert "CSV Error on Line: 5003" in summary.failures[0]["message"]
    assert one(con, "SELECT count(*) FROM events") == 0
    assert one(con, "SELECT count(*) FROM rejected_rows") == 0
    assert "platform" not in [r[0] for r in rows(con, "DESCRIBE events")]
    assert ledger(con) == [("events/a.csv", "failed", 0, 0, 0)]


def test_file_written_while_being_read_is_retried_next_run(con, inbox, monkeypatch):
    import abproxy.ingest.run as module  # the run calls load_file from there

    path = write(inbox / "events" / "growing.csv", EVENTS_HEADER + "u1,x,2026-01-05,1,e1\n")
    real_load = module.load_file

    def load_then_append(*args, **kwargs):
        result = real_load(*args, **kwargs)
        with open(path, "a") as handle:  # the writer was not done yet
            handle.write("u2,x,2026-01-05,2,e2\n")
        return result

    monkeypatch.setattr(module, "load_file", load_then_append)
    summary = run(con, inbox)
    assert (summary.files_failed, summary.rows_loaded) == (1, 0)
    assert "changed while it was being read" in summary.failures[0]["message"]
    assert (one(con, "SELECT count(*) FROM events"), ledger(con)) == (0, [])

    monkeypatch.setattr(module, "load_file", real_load)
    assert run(con, inbox).rows_loaded == 2
    assert ledger(con) == [("events/growing.csv", "loaded", 2, 0, 0)]


def test_errors_that_are_not_the_files_fault_are_retried(con, inbox, monkeypatch):
    import abproxy.ingest.run as module  # the run calls load_file from there

    write(inbox / "events" / "a.csv", EVENTS_HEADER + "u1,x,2026-01-05,1,e1\n")
    real_load = module.load_file

    def out_of_memory(con, *args, **kwargs):
        real_load(con, *args, **kwargs)
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")

    monkeypatch.setattr(module, "load_file", out_of_memory)
    summary = run(con, inbox)
    assert (summary.files_failed, summary.ok) == (1, False)
    assert summary.failures[0]["message"].startswith("events/a.csv: could not be loaded this time (Out of Memory")
    assert (one(con, "SELECT count(*) FROM events"), ledger(con)) == (0, [])  # nothing kept, not ledgered

    monkeypatch.setattr(module, "load_file", real_load)
    assert run(con, inbox).rows_loaded == 1


def test_ignored_and_misplaced_files(con, inbox):
    write(inbox / "events" / ".partial-upload.csv", "junk")
    write(inbox / "events" / "_SUCCESS", "")
    write(inbox / "events" / "a.csv.tmp", "junk")
    write(inbox / "events" / ".hidden" / "b.csv", "junk")
    write(inbox / "stray.csv", EVENTS_HEADER)
    write(inbox / "README.txt", "notes")

    summary = run(con, inbox)

    assert summary.failures == [{"path": "stray.csv", "message": "stray.csv: not loaded because it is not inside "
                                 "exposures/ or events/; move it into the folder of its kind"}]
    assert (summary.files_failed, summary.files_loaded, ledger(con)) == (1, 0, [])


def test_missing_inbox_is_reported(con, tmp_path):
    summary = ingest(con, tmp_path / "nowhere")
    assert not summary.ok and summary.files_failed == 0
    assert "inbox folder not found" in summary.failures[0]["message"]


# --------------------------------------------------------------------------------------------
# extra columns


def test_extra_columns_become_attributes(con, inbox):
    write(inbox / "exposures" / "1.csv", "unit_id,experiment,variant,exposed_at,country,age,zip,Platform\n"
          "u1,e,a,2026-01-05,FR,31,01234,ios\n"
          "u2,e,b,2026-01-05,DE,,75001,web\n")
    write(inbox / "exposures" / "2.csv", "unit_id,experiment,variant,exposed_at,age\n"
          "u3,e,a,2026-01-06,40.5\n"
          "u4,e,b,2026-01-06,unknown\n")
    pq.write_table(pa.table({"unit_id": ["u5"], "experiment": ["e"], "variant": ["a"],
                             "exposed_at": [datetime(2026, 1, 7)], "visits": pa.array([3], pa.int64()),
                             "platform": ["android"]}), inbox / "exposures" / "3.parquet")
    write(inbox / "events" / "e.jsonl",
          '{"unit_id": "u1", "event": "purchase", "occurred_at": "2026-01-05", "sku": "A1", "qty": 2, '
          '"meta": {"coupon": true}}\n')

    summary = run(con, inbox)

    assert (summary.rows_loaded, summary.ok) == (6, True)
    types = dict(rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'exposures'"))
    assert {k: types[k] for k in ("country", "age", "zip", "Platform", "visits")} == {
        "country": "VARCHAR", "age": "VARCHAR", "zip": "VARCHAR", "Platform": "VARCHAR", "visits": "BIGINT"}
    # age was numeric in 1.csv and is text ('unknown') in 2.csv: the column widens, nothing becomes NULL
    assert rows(con, "SELECT unit_id, country, age, zip, platform, visits FROM exposures ORDER BY unit_id") == [
        ("u1", "FR", "31.0", "01234", "ios", None), ("u2", "DE", None, "75001", "web", None),
        ("u3", None, "40.5", None, None, None), ("u4", None, "unknown", None, None, None),
        ("u5", None, None, None, "android", 3)]
    notes = dict(rows(con, "SELECT path, message FROM files"))
    assert "column age widened from DOUBLE to VARCHAR" in notes["exposures/2.csv"]
    assert rows(con, "SELECT sku, qty, meta FROM events") == [("A1", 2.0, '{"coupon":true}')]


# --------------------------------------------------------------------------------------------
# summary and progress


def test_summary_as_dict_and_ok():
    summary = IngestSummary(files_loaded=2, rows_loaded=10)
    assert summary.ok and summary.as_dict()["ok"] is True
    summary.failures.append({"path": "events/x.csv", "message": "events/x.csv: broken"})
    summary.files_failed = 1
    assert not summary.ok
    assert summary.as_dict() == {"files_loaded": 2, "files_skipped": 0, "files_failed": 1, "rows_loaded": 10,
                                 "rows_rejected": 0, "rows_duplicate": 0, "ok": False,
                                 "failures": [{"path": "events/x.csv", "message": "events/x.csv: broken"}],
                                 "max_rejected_fraction": 0.05, "rejects": []}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(con, inbox, monkeypatch, capsys):
    write(inbox / "events" / "a.csv", EVENTS_HEADER + "u1,x,2026-01-05,,\n")
    write(inbox / "events" / "b.csv", "unit_id;event\n")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    duckdb_bar = one(con, "SELECT current_setting('enable_progress_bar')")
    run(con, inbox, progress=True)
    out = terminal.getvalue()
    assert "ingest [" in out and "events/a.csv" in out and "events/b.csv: failed" in out
    assert out.endswith("ingest: 1 file(s) loaded, 1 rows in " + out.rsplit(" in ", 1)[1])
    assert one(con, "SELECT current_setting('enable_progress_bar')") == duckdb_bar  # DuckDB's own bar restored

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: silent
    write(inbox / "events" / "c.csv", EVENTS_HEADER + "u1,x,2026-01-05,,\n")
    run(con, inbox, progress=True)
    assert sys.stderr.getvalue() == ""


# --------------------------------------------------------------------------------------------
# atomicity under kill -9

CHILD = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from abproxy.warehouse import connect
from abproxy.ingest import ingest
con = connect(sys.argv[1])
summary = ingest(con, Path(sys.argv[2]))
con.close()
print("done", summary.rows_loaded, flush=True)
"""
BIG = 3_000_000


def _start_child(db: Path, inbox: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(inbox)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _kill_while_loading(db: Path, inbox: Path, target: str, delay: float) -> bool:
    """Start ingest in a child, SIGKILL it `delay` s after it starts loading `target`.
    Returns True if the child was killed (False if it finished first)."""
    child = _start_child(db, inbox)
    try:
        for line in child.stderr:
            if line.startswith(f"{target}: loading"):
                break
        else:
            raise AssertionError(f"the child never started loading {target}: rc={child.wait()}")
        time.sleep(delay)
        if child.poll() is not None:
            return False
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        return child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.slow
def test_kill_9_mid_load_leaves_no_partial_file_and_the_next_run_loads_it(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "events" / "a-small.csv", EVENTS_HEADER + "u1,x,2026-01-05,1,s1\nu2,x,2026-01-05,2,s2\n")
    big = inbox / "events" / "b-big.parquet"
    with duckdb.connect() as gen:
        gen.execute(f"""COPY (SELECT 'u' || (i % 50000) AS unit_id, ['purchase', 'session_start'][1 + i % 2] AS event,
                              TIMESTAMP '2026-01-01' + to_seconds(i % 700000) AS occurred_at, (i % 100) / 4 AS value,
                              'ev-' || i AS event_id, ['ios', 'web'][1 + i % 2] AS platform
                        FROM range({BIG}) t(i)) TO '{big}' (FORMAT parquet)""")
    db = tmp_path / "warehouse.duckdb"

    killed_mid_load = False
    for delay in (0.6, 0.3, 0.15, 0.05, 0.0):
        killed = _kill_while_loading(db, inbox, "events/b-big.parquet", delay)
        con = connect(db)
        try:
            statuses = dict(rows(con, "SELECT path, status FROM files"))
            counts = dict(rows(con, "SELECT file_id, count(*) FROM events GROUP BY ALL"))
            ledgered = dict(rows(con, "SELECT file_id, rows_loaded FROM files WHERE status = 'loaded'"))
            assert statuses.get("events/a-small.csv") == "loaded"
            # no partial file: every stored row belongs to a fully ledgered file, with its exact count
            assert counts == ledgered
            assert one(con, "SELECT count(*) FROM rejected_rows WHERE file_id NOT IN (SELECT file_id FROM files)") == 0
            if killed and "events/b-big.parquet" not in statuses:
                killed_mid_load = True
                assert one(con, "SELECT count(*) FROM events") == 2
                assert "platform" not in [r[0] for r in rows(con, "DESCRIBE events")]
                summary = ingest(con, inbox, now=NOW)  # the next run loads the file completely
                assert (summary.files_loaded, summary.files_skipped, summary.rows_loaded) == (1, 1, BIG)
                assert one(con, "SELECT count(*) FROM events") == BIG + 2
                assert one(con, "SELECT count(DISTINCT event_id) FROM events") == BIG + 2
                assert rows(con, "SELECT path, status, rows_loaded FROM files ORDER BY file_id") == [
                    ("events/a-small.csv", "loaded", 2), ("events/b-big.parquet", "loaded", BIG)]
                break
        finally:
            con.close()
        db.unlink()  # the kill came too late: start over with a shorter delay
        Path(f"{db}.wal").unlink(missing_ok=True)
    assert killed_mid_load, "could not kill the ingest while it was loading the big file"
