"""The maintained repeats (abproxy/repeats.py) against grouping the stored events by the key."""
from __future__ import annotations

import datetime as dt
import random

import pytest

from abproxy import repeats
from abproxy.ingest import ingest
from abproxy.repeats import refresh_repeats
from abproxy.warehouse import connect

KEY = "event, unit_id, occurred_at, value"
NOW = dt.datetime(2026, 3, 10, 12)


def truth(con) -> dict:
    rows = con.execute(f"SELECT {KEY}, count(*) - 1 FROM events GROUP BY ALL HAVING count(*) > 1").fetchall()
    return {r[:4]: r[4] for r in rows}


def maintained(con) -> dict:
    rows = con.execute(f"SELECT {KEY}, sum(n) FROM event_repeats GROUP BY ALL").fetchall()
    return {r[:4]: int(r[4]) for r in rows}


def write(inbox, name: str, rows: list[str]) -> None:
    (inbox / "events").mkdir(parents=True, exist_ok=True)
    (inbox / "events" / name).write_text("unit_id,event,occurred_at,value\n" + "".join(r + "\n" for r in rows))


def deliver(con, tmp_path, name: str, rows: list[str]) -> None:
    write(tmp_path / "inbox", name, rows)
    ingest(con, tmp_path / "inbox", now=NOW)


def random_rows(rng: random.Random, earlier: list[str], n: int) -> list[str]:
    rows = []
    for _ in range(n):
        if earlier and rng.random() < 0.15:
            rows.append(rng.choice(earlier))                      # repeats a row of an earlier file
        else:
            value = "" if rng.random() < 0.2 else rng.choice(["1.5", "2", "7.25"])
            rows.append(f"u{rng.randint(0, 9)},{rng.choice(['buy', 'view'])},2026-03-0{rng.randint(1, 3)} "
                        f"10:00:0{rng.randint(0, 2)},{value}")
        if rng.random() < 0.1:
            rows.append(rows[-1])                                 # repeated within the file
    return rows


@pytest.mark.parametrize("few", [repeats.FEW, 0])   # stored rows looked up time by time, or all at once
def test_repeats_equal_grouping_by_the_key_over_many_files(tmp_path, monkeypatch, few):
    monkeypatch.setattr(repeats, "FEW", few)
    con, rng, sent = connect(tmp_path / "w.duckdb"), random.Random(7), []
    for k in range(12):
        rows = random_rows(rng, sent, 25)
        sent += rows
        deliver(con, tmp_path, f"{k:02d}.csv", rows)
        if k % 3 != 1:                                            # sometimes two files in one pass
            assert refresh_repeats(con) is True
            assert maintained(con) == truth(con) != {}
    assert con.execute("SELECT count(*) FROM event_keys").fetchone()[0] == len(sent)


def test_a_matching_hash_is_confirmed_on_the_rows(tmp_path):
    """A hash hit on a file without the key (a forged collision) adds no repeat."""
    con = connect(tmp_path / "w.duckdb")
    deliver(con, tmp_path, "a.csv", ["u1,buy,2026-03-01 10:00:00,2", "u3,buy,2026-03-01 10:00:00,"])
    refresh_repeats(con)
    con.execute("""UPDATE event_keys SET h = hash('view', 'u2', TIMESTAMP '2026-03-01 10:00:00', 5.0::DOUBLE)
                   WHERE h = (SELECT hash(event, unit_id, occurred_at, value) FROM events WHERE unit_id = 'u3')""")
    deliver(con, tmp_path, "b.csv", ["u2,view,2026-03-01 10:00:00,5", "u1,buy,2026-03-01 10:00:00,2"])
    assert refresh_repeats(con) is True
    assert maintained(con) == truth(con) == {("buy", "u1", truth_time(con), 2.0): 1}


def truth_time(con):
    return con.execute("SELECT min(occurred_at) FROM events").fetchone()[0]


def test_rebuilt_after_an_upgrade_or_rows_removed_outside_ingest(tmp_path):
    con, rng, sent = connect(tmp_path / "w.duckdb"), random.Random(3), []
    for k in range(4):
        rows = random_rows(rng, sent, 30)
        sent += rows
        deliver(con, tmp_path, f"{k}.csv", rows)
        refresh_repeats(con)
    con.execute("UPDATE event_keys_meta SET duckdb_version = 'v0.0.0'")          # as after an upgrade
    con.execute("DELETE FROM event_repeats")
    assert refresh_repeats(con) is True and maintained(con) == truth(con) != {}
    con.execute("DELETE FROM events WHERE rowid IN (SELECT min(rowid) FROM events GROUP BY ALL LIMIT 5)")
    con.execute("DELETE FROM events WHERE unit_id = 'u1'")
    assert refresh_repeats(con) is True and maintained(con) == truth(con)
    con.execute("INSERT INTO events (unit_id, event, occurred_at, value) VALUES ('u1', 'buy', TIMESTAMP '2026-03-01', 1)")
    assert refresh_repeats(con) is False          # a row without a file: callers group by the key


def test_new_rows_are_probed_against_the_files_whose_time_span_overlaps(tmp_path):
    # each file's [first, last] event time is kept; a late row still finds its stored repeat
    con = connect(tmp_path / "w.duckdb")
    deliver(con, tmp_path, "a.csv", ["u1,buy,2026-03-01 10:00:00,2", "u2,buy,2026-03-02 10:00:00,"])
    deliver(con, tmp_path, "b.csv", ["u1,buy,2026-03-05 10:00:00,2", "u3,view,2026-03-06 10:00:00,1"])
    refresh_repeats(con)
    assert con.execute("SELECT file_id, lo, hi FROM event_key_spans ORDER BY 1").fetchall() == con.execute(
        "SELECT file_id, min(occurred_at), max(occurred_at) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    deliver(con, tmp_path, "c.csv", ["u1,buy,2026-03-01 10:00:00,2", "u9,buy,2026-03-01 11:00:00,1"])
    deliver(con, tmp_path, "d.csv", ["u3,view,2026-03-06 10:00:00,1", "u3,view,2026-03-06 10:00:00,1"])
    deliver(con, tmp_path, "e.csv", ["u4,view,2026-03-20 10:00:00,1"])
    assert "file_id IN (1) AND" == repeats._in_time(con, "file_id = 3")
    assert "file_id IN (2) AND" == repeats._in_time(con, "file_id = 4")
    assert "FALSE AND" == repeats._in_time(con, "file_id = 5")
    assert refresh_repeats(con) is True
    assert maintained(con) == truth(con) and sum(maintained(con).values()) == 3
