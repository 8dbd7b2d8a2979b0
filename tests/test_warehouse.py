"""Migrations (fresh and on an older warehouse) and the atomic report snapshot."""
from __future__ import annotations

import shutil

import duckdb
import pandas as pd
import pytest

from abproxy.warehouse import (SQL_DIR, WarehouseError, connect, migrate, migrations, open_snapshot,
                               publish_snapshot)


def test_fresh_warehouse_gets_every_migration(tmp_path):
    con = connect(tmp_path / "w.duckdb")
    versions = [v for v, _ in migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == versions
    tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    assert {"exposures", "events", "files", "rejected_rows", "runs", "results", "series", "health",
            "job_runs"} <= tables
    assert migrate(con) == []  # idempotent
    assert con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"


def test_an_older_warehouse_is_upgraded_and_keeps_its_data(tmp_path):
    old_sql = tmp_path / "sql"
    old_sql.mkdir()
    shutil.copy(SQL_DIR / "001_core.sql", old_sql)
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, old_sql) == [1]
    con.execute("INSERT INTO events (unit_id, event, occurred_at) VALUES ('u1', 'purchase', TIMESTAMP '2026-01-01')")
    con.close()
    con = connect(path)  # the current code upgrades it
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()] == \
        [v for v, _ in migrations()]
    assert con.execute("SELECT unit_id FROM events").fetchall() == [("u1",)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_a_failing_migration_rolls_back_and_records_nothing(tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (sql / "002_broken.sql").write_text("CREATE TABLE b (x INTEGER); CREATE TABLE a (x INTEGER);")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(duckdb.Error):
        migrate(con, sql)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 1
    assert "b" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}


def test_snapshot_is_published_by_rename_and_read_only(tmp_path):
    con = connect(tmp_path / "w.duckdb")
    snap = tmp_path / "report.duckdb"
    publish_snapshot(con, snap, {"experiments": pd.DataFrame({"experiment": ["a"]})})
    assert snap.is_symlink() and not list(tmp_path.glob(".report.duckdb.*.link"))
    assert not list(tmp_path.glob(".report.duckdb.versions/*.tmp"))
    reader = open_snapshot(snap)
    assert reader.execute("SELECT experiment FROM experiments").fetchall() == [("a",)]
    with pytest.raises(duckdb.Error):
        reader.execute("CREATE TABLE x (y INTEGER)")
    # a reader keeps its consistent view while a new snapshot replaces the file
    publish_snapshot(con, snap, {"experiments": pd.DataFrame({"experiment": ["a", "b"]})})
    assert reader.execute("SELECT count(*) FROM experiments").fetchone()[0] == 1
    assert open_snapshot(snap).execute("SELECT count(*) FROM experiments").fetchone()[0] == 2
    for _ in range(5):
        publish_snapshot(con, snap)
    assert len(list(tmp_path.glob(".report.duckdb.versions/*.duckdb"))) == 3  # older versions pruned
    assert reader.execute("SELECT count(*) FROM experiments").fetchone()[0] == 1  # open handle still valid


def test_missing_snapshot_and_locked_warehouse_say_what_to_do(tmp_path):
    with pytest.raises(WarehouseError, match="abproxy run"):
        open_snapshot(tmp_path / "none.duckdb")
    with pytest.raises(WarehouseError, match="no warehouse yet"):
        connect(tmp_path / "none.duckdb", read_only=True)
