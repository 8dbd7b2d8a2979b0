"""Hostile inbox files (issue 13, items 1–5): glob characters in names, symbolic links and special
files, very wide files, null markers as ids, and the same rows re-delivered in another form.

Every test writes real files into a temporary inbox and loads them into a real DuckDB warehouse.
"""
from __future__ import annotations

import gzip
import os
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abproxy.config import parse_config
from abproxy.ingest import IngestSummary, Limits, ingest
from abproxy.warehouse import WarehouseError, migrations

NOW = datetime(2026, 1, 10, 12, 0, 0)
HEADER = "unit_id,event,occurred_at,value\n"


def run(con, inbox, **kw) -> IngestSummary:
    """Ingest keeping the good rows of files with many rejected rows (the refusal above
    ingest.max_rejected_fraction is tested in test_ingest_formats.py)."""
    kw.setdefault("now", NOW)
    kw["limits"] = replace(kw.get("limits", Limits()), max_rejected_fraction=1)
    return ingest(con, inbox, **kw)


def events_csv(n: int, start: int = 0) -> str:
    return HEADER + "".join(f"u{i},purchase,2026-01-05 10:00:00,{i}\n" for i in range(start, start + n))


def count(con, sql: str = "SELECT count(*) FROM events") -> int:
    return con.execute(sql).fetchone()[0]


def messages(summary: IngestSummary) -> str:
    return "\n".join(f["message"] for f in summary.failures)


# --------------------------------------------------------------------------------------------
# 1. glob characters are literal


@pytest.mark.parametrize("name", ["*.csv", "?.csv", "[ab].csv", "**.csv", "{a,b}.csv"])
def test_a_file_named_like_a_glob_loads_only_itself(con, inbox, name):
    (inbox / "events" / "a.csv").write_text(events_csv(3))
    (inbox / "events" / "b.csv").write_text(events_csv(4, start=10))
    (inbox / "events" / name).write_text(events_csv(5, start=100))
    summary = run(con, inbox)
    assert summary.ok, summary.failures
    assert summary.files_loaded == 3
    assert count(con) == 3 + 4 + 5
    assert count(con, "SELECT count(DISTINCT unit_id) FROM events") == 12


def test_glob_named_parquet_and_json_lines_load_literally(con, inbox):
    table = pa.table({"unit_id": ["p1", "p2"], "event": ["purchase"] * 2,
                      "occurred_at": pa.array([datetime(2026, 1, 5)] * 2, pa.timestamp("us"))})
    pq.write_table(table, inbox / "events" / "a.parquet")
    pq.write_table(table.slice(0, 1), inbox / "events" / "*.parquet")
    (inbox / "events" / "x.jsonl.gz").write_bytes(gzip.compress(
        b'{"unit_id": "j1", "event": "purchase", "occurred_at": "2026-01-05T10:00:00"}\n'))
    (inbox / "events" / "*.jsonl.gz").write_bytes(gzip.compress(
        b'{"unit_id": "j2", "event": "purchase", "occurred_at": "2026-01-05T11:00:00"}\n'))
    summary = run(con, inbox)
    assert summary.ok, summary.failures
    by_file = dict(con.execute("SELECT path, rows_loaded FROM files WHERE status = 'loaded'").fetchall())
    assert by_file == {"events/*.jsonl.gz": 1, "events/*.parquet": 1, "events/a.parquet": 2,
                       "events/x.jsonl.gz": 1}


# --------------------------------------------------------------------------------------------
# 2. symbolic links and special files


def test_a_symlink_to_a_file_outside_is_refused_and_its_content_never_stored(con, inbox, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secrethash:19000:0:99999:7:::\n")
    (inbox / "events" / "s.csv").symlink_to(secret)
    outside = tmp_path / "outside.csv"
    outside.write_text(events_csv(2))
    (inbox / "events" / "o.csv").symlink_to(outside)
    summary = run(con, inbox)
    assert not summary.ok and summary.files_failed == 2
    text = messages(summary)
    assert "events/s.csv: a symbolic link; not loaded" in text and "follow_symlinks: true" in text
    assert "secrethash" not in text
    assert count(con) == 0
    assert count(con, "SELECT count(*) FROM files") == 0  # nothing of a link reaches the ledger
    again = run(con, inbox)  # refused on every run, so it stays visible
    assert again.files_failed == 2


def test_symlinks_load_when_follow_symlinks_is_set(con, inbox, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text(events_csv(2))
    (inbox / "events" / "o.csv").symlink_to(outside)
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "m.csv").write_text(events_csv(3, start=10))
    (inbox / "events" / "more").symlink_to(folder)
    (folder / "loop").symlink_to(folder)  # a link loop is walked once
    summary = run(con, inbox, limits=Limits(follow_symlinks=True))
    assert summary.ok, summary.failures
    assert count(con) == 5


def test_a_symlinked_folder_and_a_fifo_are_refused_without_hanging(con, inbox, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "e.csv").write_text(events_csv(2))
    (inbox / "events" / "linked").symlink_to(folder)
    os.mkfifo(inbox / "events" / "pipe.csv")
    (inbox / "events" / "ok.csv").write_text(events_csv(1, start=50))
    done: list[IngestSummary] = []
    worker = threading.Thread(target=lambda: done.append(run(con, inbox)), daemon=True)
    worker.start()
    worker.join(30)
    assert done, "ingest hung on a FIFO"
    text = messages(done[0])
    assert "events/linked: a symbolic link" in text
    assert "events/pipe.csv: not a regular file" in text
    assert count(con) == 1


def test_follow_symlinks_is_an_inbox_key(tmp_path):
    config = parse_config({"inbox": {"path": "drop", "follow_symlinks": True}})
    assert (config.inbox.path, config.inbox.follow_symlinks) == ("drop", True)
    assert parse_config({"inbox": "drop"}).inbox.follow_symlinks is False
    assert Limits.from_config(config).follow_symlinks is True


# --------------------------------------------------------------------------------------------
# 3. wide files


def wide_csv(path: Path, columns: int, rows: int = 3) -> Path:
    names = [f"p{i}" for i in range(columns)]
    lines = [",".join(["unit_id", "event", "occurred_at"] + names)]
    lines += [",".join([f"u{r}", "purchase", "2026-01-05 10:00:00"] + ["1"] * columns) for r in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_10000_column_file_is_refused_at_once_and_adds_no_column(con, inbox):
    wide_csv(inbox / "events" / "wide.csv", 10_000)
    before = count(con, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events'")
    started = time.perf_counter()
    summary = run(con, inbox)
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"refusing a wide file took {elapsed:.1f}s"
    assert "10000 property columns, more than ingest.max_columns (200)" in messages(summary)
    assert count(con, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events'") == before
    status = con.execute("SELECT status FROM files").fetchall()
    assert status == [("failed",)]


def test_200_columns_load_and_the_table_stays_within_the_cap(con, inbox):
    wide_csv(inbox / "events" / "a.csv", 200)
    started = time.perf_counter()
    first = run(con, inbox)
    assert first.ok, first.failures
    assert time.perf_counter() - started < 30
    other = inbox / "events" / "b.csv"
    other.write_text("unit_id,event,occurred_at,extra1\nu9,purchase,2026-01-05 10:00:00,x\n")
    second = run(con, inbox)
    assert "would add 1 new property column(s) to events, which already has 200" in messages(second)
    assert count(con) == 3


def test_max_columns_is_configurable(con, inbox):
    wide_csv(inbox / "events" / "a.csv", 5)
    config = parse_config({"ingest": {"max_columns": 4}})
    summary = run(con, inbox, limits=Limits.from_config(config))
    assert "5 property columns, more than ingest.max_columns (4)" in messages(summary)


# --------------------------------------------------------------------------------------------
# 4. null markers


def test_null_markers_as_unit_id_are_missing_not_a_unit(con, inbox):
    (inbox / "events" / "e.csv").write_text(
        HEADER + "NULL,purchase,2026-01-05 10:00:00,1\nnull,purchase,2026-01-05 10:00:00,1\n"
        " None ,purchase,2026-01-05 10:00:00,1\nN/A,purchase,2026-01-05 10:00:00,1\n"
        "nan,purchase,2026-01-05 10:00:00,1\nu1,purchase,2026-01-05 10:00:00,1\n"
        "u2,NULL,2026-01-05 10:00:00,1\nu3,purchase,null,1\n")
    (inbox / "exposures" / "x.csv").write_text(
        "unit_id,experiment,variant,exposed_at\nNULL,exp,v1,2026-01-05\nu1,exp,None,2026-01-05\n"
        "u1,exp,v1,2026-01-05\n")
    summary = run(con, inbox)
    assert (summary.rows_loaded, summary.rows_rejected) == (2, 9)
    assert con.execute("SELECT unit_id FROM events").fetchall() == [("u1",)]
    reasons = dict(con.execute("SELECT reason, count(*) FROM rejected_rows GROUP BY 1").fetchall())
    assert reasons == {"missing unit_id": 6, "missing event": 1, "missing timestamp": 1, "missing variant": 1}


def test_configured_null_markers_replace_the_defaults(con, inbox):
    (inbox / "events" / "e.csv").write_text(
        HEADER + "-,purchase,2026-01-05 10:00:00,1\nNULL,purchase,2026-01-05 10:00:00,1\n")
    config = parse_config({"ingest": {"null_markers": ["-"]}})
    summary = run(con, inbox, limits=Limits.from_config(config))
    assert (summary.rows_loaded, summary.rows_rejected) == (1, 1)
    assert con.execute("SELECT unit_id FROM events").fetchall() == [("NULL",)]


# --------------------------------------------------------------------------------------------
# 5. duplicate deliveries without event ids


def test_the_same_rows_as_gzip_reordered_or_as_parquet_are_refused_as_a_duplicate(con, inbox):
    text = events_csv(50)
    (inbox / "events" / "batch.csv").write_text(text)
    assert run(con, inbox).rows_loaded == 50
    lines = text.splitlines(keepends=True)
    (inbox / "events" / "batch.csv.gz").write_bytes(gzip.compress(text.encode()))
    (inbox / "events" / "batch-reordered.csv").write_text(lines[0] + "".join(reversed(lines[1:])))
    (inbox / "events" / "batch-cols.csv").write_text(
        "value,occurred_at,event,unit_id\n" + "".join(
            f"{i},2026-01-05 10:00:00,purchase,u{i}\n" for i in range(50)))
    summary = run(con, inbox)
    assert summary.files_loaded == 0 and summary.files_skipped == 4 and summary.ok
    assert count(con) == 50
    dup = con.execute("SELECT path, message FROM files WHERE status = 'duplicate' ORDER BY path").fetchall()
    assert [p for p, _ in dup] == ["events/batch-cols.csv", "events/batch-reordered.csv", "events/batch.csv.gz"]
    assert all("same rows as events/batch.csv" in m and "duplicate delivery" in m for _, m in dup)


def test_different_rows_and_exposure_redeliveries(con, inbox):
    (inbox / "events" / "a.csv").write_text(events_csv(5))
    (inbox / "events" / "b.csv").write_text(events_csv(5, start=1))  # overlaps, not the same rows
    exposures = "unit_id,experiment,variant,exposed_at\nu1,exp,v1,2026-01-05\nu2,exp,v2,2026-01-05\n"
    (inbox / "exposures" / "x.csv").write_text(exposures)
    (inbox / "exposures" / "x.csv.gz").write_bytes(gzip.compress(exposures.encode()))
    summary = run(con, inbox)
    assert summary.files_loaded == 3 and summary.files_skipped == 1
    assert count(con) == 10
    assert count(con, "SELECT count(*) FROM exposures") == 2


def test_migration_numbers_must_be_unique(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1")
    (tmp_path / "001_b.sql").write_text("SELECT 1")
    with pytest.raises(WarehouseError, match="share the number 001"):
        migrations(tmp_path)
