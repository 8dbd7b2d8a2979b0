"""Metric SQL cannot write or reach outside the warehouse (issue 13, item 6).

The predicate and raw-SQL checks use DuckDB's own parser (a single SELECT, no table function but
range/generate_series/unnest); the analysis runs on a sealed connection (no file, URL or extension
access, configuration locked). Every attack
below is the one that worked before, run through the real job (`jobs.run_job`) on a real warehouse.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import yaml

from abproxy.jobs import run_job
from abproxy.metrics import MetricSQLError, predicate
from abproxy.sqlguard import UnsafeSQL, check_predicate, check_query
from abproxy.warehouse import connect, open_snapshot, seal
from abproxy.workspace import Workspace

AS_OF = dt.datetime(2026, 1, 20)


def workspace(tmp_path: Path, metrics: dict) -> Workspace:
    root = tmp_path / "ws"
    for sub in ("inbox/exposures", "inbox/events", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    exposures = ["unit_id,experiment,variant,exposed_at"]
    events = ["unit_id,event,occurred_at,value,category"]
    for i in range(200):
        exposures.append(f"u{i},exp,{'v1' if i % 2 else 'v2'},2026-01-02 10:00:00")
        events.append(f"u{i},purchase,2026-01-03 10:00:00,{i % 7 + 1},{'books' if i % 3 else 'toys'}")
    (root / "inbox/exposures/x.csv").write_text("\n".join(exposures) + "\n")
    (root / "inbox/events/e.csv").write_text("\n".join(events) + "\n")
    config = {"metrics": {"spend": {"type": "mean", "event": "purchase"}, **metrics},
              "experiments": {"exp": {"control": "v1", "variants": {"v1": {}, "v2": {}},
                                      "primary": ["spend"], "secondary": [m for m in metrics],
                                      "decision": {"min_days": 0, "min_units_per_variant": 10}}}}
    (root / "abproxy.yaml").write_text(yaml.safe_dump(config))
    return Workspace.open(root)


def ledger(ws: Workspace) -> list[tuple]:
    con = open_snapshot(ws.snapshot)
    try:
        return con.execute("SELECT status, error FROM runs").fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------- the parser checks

@pytest.mark.parametrize("where", [
    "category = 'books'", "value > 2 AND category IN ('books', 'toys')", "category LIKE '%(%'",
    "$$)$$ <> category", "coalesce(value, 0) BETWEEN 1 AND 5", "NOT (category = 'a' OR category = 'b')",
])
def test_plain_predicates_pass(where):
    assert check_predicate(where, "m") == f"({where}\n)"


@pytest.mark.parametrize("where", [
    "$$($$ = '' AND FALSE) OR (TRUE OR $$)$$ = ''",   # escaped the event and window filter
    "a) OR (TRUE", "TRUE -- ", "TRUE /* ", "TRUE; DROP TABLE runs", "TRUE GROUP BY 1",
    "TRUE UNION SELECT 1 FROM exposures", "value IN (SELECT value FROM runs)",
    "EXISTS (SELECT * FROM read_text('/etc/shadow'))", "", "TRUE ORDER BY 1", "TRUE) t, (SELECT 1",
])
def test_predicates_that_escape_or_reach_out_are_refused(where):
    with pytest.raises(UnsafeSQL, match="metric 'm'"):
        check_predicate(where, "m")


def test_the_builder_uses_the_parser_check():
    with pytest.raises(MetricSQLError, match="one SQL condition"):
        predicate("$$($$ = '' AND FALSE) OR (TRUE OR $$)$$ = ''", "m")


@pytest.mark.parametrize("sql", [
    "SELECT unit_id, sum(value) AS value FROM events GROUP BY 1",
    "WITH t AS (SELECT unit_id, value FROM events) SELECT * FROM t",
    "SELECT unit_id, 1 AS value FROM exposures UNION ALL SELECT unit_id, 2 FROM events",
    "SELECT 'u' || i AS unit_id, i AS value FROM range(3) r(i)",
])
def test_raw_queries_over_warehouse_tables_pass(sql):
    assert check_query(sql, "m") == f"({sql}\n)"


@pytest.mark.parametrize("sql, message", [
    ("SELECT * FROM read_csv('x.csv', store_rejects=true, rejects_table='runs')", "read_csv"),
    ("SELECT content AS unit_id, 1 AS value FROM read_text('/etc/shadow')", "read_text"),
    ("SELECT * FROM query('SELECT 1')", "query"),
    ("SELECT * FROM 'https://example.com/x.csv'", "files and URLs"),
    ("SELECT * FROM '/etc/passwd'", "files and URLs"),
    ("SELECT 1; DROP TABLE runs", "single SELECT"),
    ("DROP TABLE runs", "single SELECT"),
    ("SELECT 1) x, (SELECT 2", "single SELECT"),
])
def test_raw_queries_that_reach_out_are_refused(sql, message):
    with pytest.raises(UnsafeSQL, match=message):
        check_query(sql, "m")


# --------------------------------------------------------------------------- the sealed connection

def test_a_sealed_connection_reads_tables_but_no_file_url_extension_or_setting(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    con = connect(tmp_path / "w.duckdb")
    try:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        seal(con)
        assert con.execute("SELECT a FROM t").fetchall() == [(1,)]
        for sql in (f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM '{secret}'",
                    "SELECT * FROM read_csv('https://example.com/x.csv')", "INSTALL httpfs",
                    f"ATTACH '{tmp_path / 'other.duckdb'}' AS o", f"COPY t TO '{tmp_path / 'out.csv'}'"):
            with pytest.raises((duckdb.PermissionException, duckdb.CatalogException)):  # a path is no table
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


@pytest.mark.parametrize("attack", [
    "SELECT unit_id, 1 AS value FROM read_csv('{inbox}/events/e.csv', store_rejects=true, rejects_table='runs')",
    "SELECT content AS unit_id, 1 AS value FROM read_text('{secret}')",
    "SELECT unit_id, 1 AS value FROM '{secret}'",
    "SELECT unit_id, 1 AS value FROM read_csv('https://example.com/x.csv')",
])
def test_attacks_through_a_raw_metric_fail_alone_and_the_run_is_recorded(tmp_path, attack):
    secret = tmp_path / "shadow"
    secret.write_text("root:TOPSECRETHASH:19000\n")
    ws = workspace(tmp_path, {})
    sql = attack.format(inbox=ws.inbox, secret=secret)
    ws = workspace(tmp_path, {"evil": {"type": "mean", "sql": sql}})
    result = run_job(ws, "run", as_of=AS_OF, on_runs=None)
    assert result.ingest.files_loaded == 2
    [(status, error)] = ledger(ws)
    assert status == "failed" and "metric 'evil'" in error and "TOPSECRET" not in error
    assert len(error) <= 500
    con = open_snapshot(ws.snapshot)   # the ledger was not shadowed and the snapshot was republished
    try:
        assert con.execute("SELECT count(*) FROM job_runs WHERE status <> 'running'").fetchone()[0] == 1
    finally:
        con.close()


def test_a_hostile_predicate_fails_alone_and_a_good_one_computes(tmp_path):
    ws = workspace(tmp_path, {
        "books": {"type": "proportion", "event": "purchase", "where": "category = 'books'"},
        "evil": {"type": "proportion", "event": "purchase", "where": "$$($$ = '' AND FALSE) OR (TRUE OR $$)$$ = ''"},
    })
    result = run_job(ws, "run", as_of=AS_OF, on_runs=None)
    [(status, error)] = ledger(ws)
    assert status == "failed" and "metric 'evil'" in error
    ws = workspace(tmp_path, {"books": {"type": "proportion", "event": "purchase", "where": "category = 'books'"}})
    result = run_job(ws, "analyze", as_of=AS_OF, on_runs=None)
    assert result.ok, result.errors
    books = [r for r in result.runs[0].results if r.metric == "books" and r.segment == ""][0]
    assert 0.5 < books.effect.control_mean < 0.8   # two thirds of the units bought books


def test_raw_metrics_that_would_write_are_refused_before_they_run(tmp_path):
    for sql in ("CREATE TABLE runs AS SELECT 1", "SELECT 1 AS unit_id, 1 AS value; DELETE FROM runs",
                "INSERT INTO runs SELECT * FROM runs", "SELECT * FROM query('DROP TABLE runs')"):
        with pytest.raises(UnsafeSQL):
            check_query(sql, "evil")
