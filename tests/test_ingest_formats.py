"""Real-world file formats (ingest.formats) and reject reasons a data scientist can act on.

Each case writes real files into a workspace made by `abproxy init` and runs the real command
(`abproxy.cli.main`) or `ingest` on a real DuckDB warehouse; the messages are asserted: the
file, the key to set, the fix.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abproxy.cli import main
from abproxy.config import ConfigError, InboxFormat, parse_config
from abproxy.formats import ReadOptions, options_for
from abproxy.ingest import Limits, ingest
from abproxy.warehouse import connect
from abproxy.workspace import init_workspace

NOW = datetime(2026, 11, 20, 12, 0)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws")


def configure(ws: Path, text: str) -> None:
    path = ws / "abproxy.yaml"
    path.write_text(path.read_text() + "\n" + text)


def day_first_exposures(ws: Path, n: int = 3000) -> Path:
    lines = ["unit_id,experiment,variant,exposed_at"]
    lines += [f"u{i},recsys-v2,{'v1' if i % 2 else 'v2'},16/11/2026 17:{i % 60:02d}" for i in range(n)]
    path = ws / "inbox" / "exposures" / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--log-level", "ERROR"])
    out = capsys.readouterr()
    return code, out.out + out.err


def table(ws: Path, sql: str) -> list[tuple]:
    con = connect(ws / "data" / "warehouse.duckdb")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_day_first_timestamps_are_refused_with_the_format_to_configure_then_load(ws, capsys):
    day_first_exposures(ws)
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 1
    assert "exposures/export.csv: not loaded: 3,000 of 3,000 rows (100.0%) were rejected, more than " \
           "ingest.max_rejected_fraction = 0.05" in out
    assert "unparseable timestamp in exposed_at (3,000 rows, e.g. row 1: exposed_at = '16/11/2026 17:00')" in out
    assert "expected ISO 8601 such as 2026-11-16 17:11:00, or epoch seconds/milliseconds" in out
    assert "set timestamp_format: '%d/%m/%Y %H:%M' under ingest.formats.'exposures' in abproxy.yaml" in out
    assert table(ws, "SELECT count(*) FROM exposures") == [(0,)]
    assert table(ws, "SELECT count(*) FROM rejected_rows") == [(3000,)]

    code, out = cli(capsys, "ingest", "-w", str(ws))  # unchanged: the same failure, still exit 1
    assert code == 1 and "retried when either changes" in out

    configure(ws, "ingest:\n  formats:\n    exposures: {timestamp_format: ['%Y-%m-%dT%H:%M', '%d/%m/%Y %H:%M'], "
                  "timezone: Europe/Berlin}\n")
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 0, out
    assert "1 file(s) loaded" in out and "3,000 rows loaded, 0 rejected" in out
    # 17:00 in Berlin (CET, UTC+1) is 16:00 UTC
    assert table(ws, "SELECT min(exposed_at) FROM exposures") == [(datetime(2026, 11, 16, 16, 0),)]


def test_rejected_share_below_the_limit_loads_and_reports_the_reasons(ws, capsys):
    lines = ["unit_id,event,occurred_at,value"] + [f"u{i},purchase,2026-11-17 10:00,{i}" for i in range(98)]
    lines += ["u98,purchase,yesterday,1", "u99,purchase,2026-11-17 10:00,12,5"]
    (ws / "inbox" / "events" / "e.csv").write_text("\n".join(lines[:-1]) + "\nu99,purchase,2026-11-17 10:00,n/a\n")
    code, out = cli(capsys, "ingest", "-w", str(ws), "--json")
    data = json.loads(out[out.index("{"):])
    assert code == 0 and data["ok"] is True and data["max_rejected_fraction"] == 0.05
    [rej] = data["rejects"]
    assert (rej["path"], rej["rows"], rej["rows_rejected"], rej["over_limit"]) == ("events/e.csv", 100, 2, False)
    assert {(r["reason"], r["example"]) for r in rej["reasons"]} == {
        ("unparseable timestamp in occurred_at", "yesterday"), ("non-numeric value", "n/a")}

    (ws / "inbox" / "events" / "f.csv").write_text("unit_id,event,occurred_at,value\nu1,purchase,soon,1\n"
                                                   + "u2,purchase,2026-11-17 10:00,1\n" * 20)
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 0
    assert "REJECTED events/f.csv: 1 of 21 rows (4.8%) rejected" in out
    assert "1 × unparseable timestamp in occurred_at (e.g. row 1: occurred_at = 'soon')" in out


def test_the_limit_is_configurable_and_validated(ws, capsys):
    day_first_exposures(ws, 10)
    configure(ws, "ingest: {max_rejected_fraction: 1}\n")
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 0 and "REJECTED exposures/export.csv: 10 of 10 rows (100.0%) rejected" in out
    with pytest.raises(ConfigError, match=r"ingest.max_rejected_fraction: Input should be less than or equal to 1"):
        parse_config({"ingest": {"max_rejected_fraction": 2}})


def test_a_semicolon_csv_names_the_detected_delimiter_and_loads_once_configured(ws, capsys):
    (ws / "inbox" / "events" / "shop.csv").write_text(
        "user;event;occurred_at;value\nu1;purchase;2026-11-17 10:00;3,5\nu2;purchase;2026-11-17 11:00;NA\n")
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 1
    assert ("events/shop.csv: missing required columns unit_id, event, occurred_at (found: "
            "'user;event;occurred_at;value'); is the delimiter ','? The file looks ';'-separated: set "
            "delimiter: ';' under ingest.formats.'events' in abproxy.yaml") in out

    configure(ws, "ingest:\n  formats:\n    events: {delimiter: ';', null_values: [NA], columns: {user: unit_id}}\n"
                  "    events/*.csv: {null_values: [NA, '3,5']}\n")
    code, out = cli(capsys, "ingest", "-w", str(ws))
    assert code == 0, out
    assert table(ws, "SELECT unit_id, value FROM events ORDER BY unit_id") == [("u1", None), ("u2", None)]


def test_epoch_seconds_and_milliseconds_and_typed_columns(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "events").mkdir(parents=True)
    (inbox / "events" / "a.csv").write_text(
        "unit_id,event,occurred_at\nu1,e,1763312000\nu2,e,1763312000250\nu3,e,1763312000.5\n")
    pq.write_table(pa.table({"unit_id": ["u4", "u5"], "event": ["e", "e"],
                             "occurred_at": pa.array([1763312000, 1763312001000], pa.int64())}),
                   inbox / "events" / "b.parquet")
    con = connect(tmp_path / "w.duckdb")
    summary = ingest(con, inbox, now=NOW)
    assert summary.ok and summary.rows_rejected == 0
    got = dict(con.execute("SELECT unit_id, occurred_at FROM events").fetchall())
    base = datetime(2025, 11, 16, 16, 53, 20)
    assert got == {"u1": base, "u2": base.replace(microsecond=250000), "u3": base.replace(microsecond=500000),
                   "u4": base, "u5": base.replace(second=21)}


def test_timezone_applies_to_naive_text_and_naive_parquet_but_not_to_offsets(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "exposures" / "paris").mkdir(parents=True)
    (inbox / "exposures" / "paris" / "a.csv").write_text(
        "unit_id,experiment,variant,exposed_at\nu1,x,a,2026-07-01 12:00\nu2,x,a,2026-07-01T12:00:00+00:00\n"
        "u3,x,a,2026-07-01 12:00:00Z\n")
    pq.write_table(pa.table({"unit_id": ["u4"], "experiment": ["x"], "variant": ["a"],
                             "exposed_at": pa.array([datetime(2026, 7, 1, 12)], pa.timestamp("us"))}),
                   inbox / "exposures" / "paris" / "b.parquet")
    limits = Limits(formats={"exposures/paris": InboxFormat(timezone="Europe/Paris")})
    con = connect(tmp_path / "w.duckdb")
    assert ingest(con, inbox, now=NOW, limits=limits).ok
    got = dict(con.execute("SELECT unit_id, exposed_at FROM exposures").fetchall())
    assert got == {"u1": datetime(2026, 7, 1, 10), "u2": datetime(2026, 7, 1, 12), "u3": datetime(2026, 7, 1, 12),
                   "u4": datetime(2026, 7, 1, 10)}


def test_jsonl_null_values_and_renames(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "events").mkdir(parents=True)
    (inbox / "events" / "a.jsonl").write_text(
        '{"uid": "u1", "event": "p", "ts": "2026-11-17 10:00", "value": "-"}\n'
        '{"uid": "u2", "event": "p", "ts": "2026-11-17 10:00", "value": "2"}\n')
    limits = Limits(formats={"events/*.jsonl": InboxFormat(
        null_values=["-"], columns={"uid": "unit_id", "ts": "occurred_at"})})
    con = connect(tmp_path / "w.duckdb")
    assert ingest(con, inbox, now=NOW, limits=limits).ok
    assert con.execute("SELECT unit_id, value FROM events ORDER BY 1").fetchall() == [("u1", None), ("u2", 2.0)]


def test_options_merge_from_folder_to_pattern():
    formats = {"events": InboxFormat(delimiter=";", timezone="UTC"),
               "events/eu": InboxFormat(timezone="Europe/Berlin"),
               "events/eu/*.tsv": InboxFormat(delimiter="\t")}
    assert options_for(formats, "events/eu/a.tsv") == ReadOptions(
        delimiter="\t", timezone="Europe/Berlin", keys=("events", "events/eu", "events/eu/*.tsv"))
    assert options_for(formats, "events/us/a.csv").delimiter == ";"
    assert options_for(formats, "exposures/a.csv") == ReadOptions()
    assert options_for(formats, "events/eu/a.tsv").where("events/eu/a.tsv") == "events/eu/*.tsv"


@pytest.mark.parametrize("formats, where, message", [
    ({"inbox/x": {}}, "ingest.formats", "starting with exposures/ or events/"),
    ({"events": {"timezone": "Mars/Olympus"}}, "ingest.formats.events.timezone", "unknown time zone 'Mars/Olympus'"),
    ({"events": {"timestamp_format": "dd/mm/yyyy"}}, "ingest.formats.events.timestamp_format",
     "'dd/mm/yyyy' is not a strptime format; write e.g. '%d/%m/%Y %H:%M'"),
    ({"events": {"delimiter": ";;"}}, "ingest.formats.events.delimiter", "expected one character"),
    ({"events": {"columns": {"user": "unit id"}}}, "ingest.formats.events.columns", "must be a column name"),
    ({"events": {"delimter": ";"}}, "ingest.formats.events.delimter", "unknown key (a typo?)"),
])
def test_bad_format_options_name_their_key(formats, where, message):
    with pytest.raises(ConfigError) as exc:
        parse_config({"ingest": {"formats": formats}})
    assert any(w == where and message in m for w, m in exc.value.problems), exc.value.problems


def test_attribute_type_drift_widens_the_column_instead_of_storing_null(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "exposures").mkdir(parents=True)
    head = "unit_id,experiment,variant,exposed_at,store\n"
    (inbox / "exposures" / "a.csv").write_text(head + "u1,x,a,2026-11-01 10:00,12\nu2,x,a,2026-11-01 10:00,7\n")
    con = connect(tmp_path / "w.duckdb")
    assert ingest(con, inbox, now=NOW).ok
    assert con.execute("SELECT data_type FROM duckdb_columns() WHERE column_name = 'store'").fetchone() == ("DOUBLE",)

    (inbox / "exposures" / "b.csv").write_text(head + "u3,x,a,2026-11-02 10:00,berlin-3\n")
    pq.write_table(pa.table({"unit_id": ["u4"], "experiment": ["x"], "variant": ["a"],
                             "exposed_at": pa.array([datetime(2026, 11, 3)], pa.timestamp("us")),
                             "score": pa.array([3], pa.int32())}), inbox / "exposures" / "c.parquet")
    pq.write_table(pa.table({"unit_id": ["u5"], "experiment": ["x"], "variant": ["a"],
                             "exposed_at": pa.array([datetime(2026, 11, 3)], pa.timestamp("us")),
                             "score": pa.array([2.5], pa.float64())}), inbox / "exposures" / "d.parquet")
    summary = ingest(con, inbox, now=NOW)
    assert summary.ok
    assert dict(con.execute("SELECT unit_id, store FROM exposures WHERE unit_id IN ('u1', 'u3')").fetchall()) == {
        "u1": "12.0", "u3": "berlin-3"}
    assert dict(con.execute("SELECT unit_id, score FROM exposures WHERE score IS NOT NULL").fetchall()) == {
        "u4": 3.0, "u5": 2.5}
    messages = dict(con.execute("SELECT path, message FROM files").fetchall())
    assert messages["exposures/b.csv"] == ("column store widened from DOUBLE to VARCHAR: this file's values (VARCHAR) "
                                           "do not all fit DOUBLE; stored values were converted")
    assert "column score widened from INTEGER to DOUBLE" in messages["exposures/d.parquet"]
