"""bench/incremental.py's figures at 100M events (issue 15): ingest of +1% events with event ids into a
big warehouse vs into an empty one, and the peak RSS of `abproxy analyze --full` / `abproxy run` as
processes; and the per-pass refresh of the maintained repeats (`--only repeats`, at --units). Run
through bench/incremental.py (`--only ingest,rss`; `--only seed-ingest,generate-rss` makes the big
warehouses ahead of the timed runs on the same `--dir`)."""
from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import incremental as inc  # noqa: E402  (bench/incremental.py: helpers; bench/ is on sys.path)

INGEST_SQL = """COPY (SELECT 'u' || (i % {u}) AS unit_id, ['session', 'purchase'][1 + i % 2] AS event,
                               TIMESTAMP '2026-01-01' + to_seconds(i % 2592000) AS occurred_at,
                               (i % 1000) / 10.0 AS value, {event_id} AS event_id
                        FROM range({lo}, {hi}) t(i)) TO '{path}' (FORMAT parquet)"""
EVENT_IDS = {   # --ingest-ids: how the ids look
    "plain": "'ev-' || i",                                  # unpadded numbers: ranges overlap in part
    "ordered": "'ev-' || lpad(i::VARCHAR, 12, '0')",        # time-ordered, fixed width (UUIDv7, ULID, sequences)
    "random": "md5(i::VARCHAR)",                            # random (UUIDv4-like): a new file overlaps every file
}
FOLDER = {"plain": "ingest", "random": "ingest", "ordered": "ingest-ordered"}   # random: new files into the plain one


def _ingest_sql(a, **fields) -> str:
    return INGEST_SQL.format(event_id=EVENT_IDS[a.ingest_ids], **fields)


def seeded(folder: Path, a):
    """The big warehouse: --ingest-events events with ids ingested from 10 Parquet files (vectorised
    SQL), made once per --dir and reused by later runs (their new files get new ids and names)."""
    import duckdb

    from abproxy.ingest import ingest
    from abproxy.warehouse import connect

    big = a.ingest_events
    path = folder / "big.duckdb"
    con = connect(path, memory_limit=a.memory_limit, threads=a.threads)
    con.execute("SET enable_progress_bar = false")
    if con.execute("SELECT count(*) FROM events").fetchone()[0] < big:
        seed = folder / "seed" / "events"
        seed.mkdir(parents=True, exist_ok=True)
        gen = duckdb.connect()
        for k in range(10):
            gen.execute(_ingest_sql(a, u=big // 30, lo=k * big // 10, hi=(k + 1) * big // 10,
                                          path=seed / f"{k}.parquet"))
        gen.close()
        started = time.perf_counter()
        s = ingest(con, seed.parent)
        log_seed = {"seed_s": time.perf_counter() - started, "seed_rows": s.rows_loaded}
        for f in seed.iterdir():
            f.unlink()                                                 # 10 GB at 100M events: keep the disk
    else:
        log_seed = {"seed_s": None, "seed_rows": 0}
    return con, log_seed


def measure_ingest(folder: Path, a) -> dict:
    """+1% events with event ids into a warehouse of --ingest-events events vs into an empty one."""
    import duckdb

    from abproxy.ingest import ingest
    from abproxy.warehouse import connect

    con, out = seeded(folder, a)
    stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
    extra, stamp = a.ingest_events // 100, time.strftime("%H%M%S")
    gen = duckdb.connect()
    files = []
    for r in range(a.repeat):   # distinct names (the ledger keys files by path) and ids never stored before
        p = folder / f"new{stamp}-{r}" / "events" / f"part{stamp}-{r}.parquet"
        p.parent.mkdir(parents=True)
        gen.execute(_ingest_sql(a, u=a.ingest_events // 30, lo=stored + r * extra, hi=stored + (r + 1) * extra, path=p))
        files.append(p.parent.parent)
    gen.close()
    con.close()
    times_big, times_empty = [], []
    for r, inbox in enumerate(files):   # a fresh connection each time, as an `abproxy ingest` process opens it
        con = connect(folder / "big.duckdb", memory_limit=a.memory_limit, threads=a.threads)
        started = time.perf_counter()
        s = ingest(con, inbox)
        times_big.append(time.perf_counter() - started)
        con.close()
        assert s.rows_loaded == extra, s.as_dict()
        empty_path = folder / f"empty{r}.duckdb"
        for leftover in (empty_path, empty_path.with_suffix(".duckdb.wal")):
            leftover.unlink(missing_ok=True)
        empty = connect(empty_path, memory_limit=a.memory_limit, threads=a.threads)
        started = time.perf_counter()
        ingest(empty, inbox)
        times_empty.append(time.perf_counter() - started)
        empty.close()
    return out | {"ingest_big_s": statistics.median(times_big), "ingest_empty_s": statistics.median(times_empty),
                  "ingest_rows": stored, "big_runs": times_big, "empty_runs": times_empty,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_rss(path: Path, n: int, a) -> dict:
    """Peak RSS of `abproxy analyze --full` and of `abproxy run` after +1% events, as processes, on a
    workspace with the default `duckdb:` settings a user gets (memory_limit 3GB, DuckDB's thread count)."""
    import yaml

    from abproxy.warehouse import connect

    con = connect(path)
    if not con.execute("SELECT count(*) FROM files").fetchone()[0]:    # a later run on the same --dir: done
        inc._ledger_rows(con)
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.close()
    ws = path.parent / "ws-rss"
    (ws / "inbox" / "events").mkdir(parents=True, exist_ok=True)
    (ws / "inbox" / "exposures").mkdir(parents=True, exist_ok=True)
    data = inc._config(a.threads, a.memory_limit).model_dump(mode="json", exclude_none=True, exclude={"duckdb"})
    data |= {"warehouse": str(path), "inbox": str(ws / "inbox"), "snapshot": str(ws / "report.duckdb")}
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(data))
    common = ["--workspace", str(ws), "--as-of", inc.base.AS_OF.isoformat(), "--json"]
    full = inc._process_usage(inc.ABPROXY + ["analyze", "--full", *common])
    inc._new_events_file(ws / "inbox" / "events" / "new.parquet", n, 3 * 10**10, 3 * 10**10 + events // 100)
    run = inc._process_usage(inc.ABPROXY + ["run", *common])
    return {"events": events, "full_s": full[0], "full_cpu_s": full[1], "full_rss_mb": full[2],
            "run_s": run[0], "run_cpu_s": run[1], "run_rss_mb": run[2]}


def measure_repeats(folder: Path, a) -> dict:
    """The maintained repeats (abproxy/repeats.py, refreshed by each pass) after +1% events, medians of
    --repeat passes, vs rebuilding them from every event, on a --units x --events-per-unit warehouse
    (bench/analyze.py's generator; made once per --dir)."""
    from abproxy.repeats import refresh_repeats
    from abproxy.warehouse import connect

    db = folder / "repeats" / "repeats.duckdb"
    db.parent.mkdir(exist_ok=True)
    if not db.exists():
        inc.base.generate(db, a.units, a.events_per_unit, a.threads, a.memory_limit)
        con = connect(db, memory_limit=a.memory_limit, threads=a.threads)
        inc._ledger_rows(con)
        con.close()
    con = connect(db, memory_limit=a.memory_limit, threads=a.threads)
    con.execute("SET enable_progress_bar = false")
    refresh_repeats(con)
    times = []
    for _ in range(a.repeat):
        inc._add_events(con, a.units, con.execute("SELECT max(file_id) + 1 FROM files").fetchone()[0])
        started = time.perf_counter()
        refresh_repeats(con)
        times.append(time.perf_counter() - started)
    con.execute("UPDATE event_keys_meta SET duckdb_version = 'rebuild'")       # from every event, as after an upgrade
    started = time.perf_counter()
    refresh_repeats(con)
    full = time.perf_counter() - started
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.close()
    return {"repeats_s": statistics.median(times), "repeats_runs": times, "repeats_full_s": full, "events": events}


def run_parts(folder: Path, only: set[str], common: list[str], a) -> dict:
    """The ingest and RSS figures (and their data, made once per --dir), printed as they come."""
    r: dict = {}
    if "ingest" in only:
        sub = folder / FOLDER[a.ingest_ids]
        sub.mkdir(exist_ok=True)
        m = inc._child(["--worker", "ingest", "--path", str(sub), *common])
        r |= {f"i_{x}": v for x, v in m.items()}
        if m["seed_s"]:
            print(f"seeded {m['seed_rows']:,} events with ids through ingest() in {m['seed_s']:.0f}s", flush=True)
        print(f"ingest +1% ({a.ingest_ids} ids) into {m['ingest_rows']:,} events {m['ingest_big_s']:.2f}s vs into an empty warehouse "
              f"{m['ingest_empty_s']:.2f}s ({m['ingest_big_s'] / m['ingest_empty_s']:.2f}x); peak RSS "
              f"{m['peak_rss_mb'] / 1024:.2f} GB  [{inc._load()}]", flush=True)
    if "seed-ingest" in only:   # the big ingest warehouse alone, ahead of a timed `--only ingest` on the same --dir
        sub = folder / FOLDER[a.ingest_ids]
        sub.mkdir(exist_ok=True)
        print(f"seeded: {inc._child(['--worker', 'seed', '--path', str(sub), *common])}", flush=True)
    if "generate-rss" in only and not (folder / "rss" / "rss.duckdb").exists():
        (folder / "rss").mkdir(exist_ok=True)
        print(f"generated: {inc._child(['--worker', 'generate', '--units', str(a.rss_units), '--path', str(folder / 'rss' / 'rss.duckdb'), *common])}", flush=True)
    if "repeats" in only:
        m = measure_repeats(folder, a)
        r |= {f"p_{x}": v for x, v in m.items()}
        print(f"repeats after +1% at {m['events']:,} events {m['repeats_s']:.2f}s (runs "
              f"{' / '.join(f'{t:.2f}' for t in m['repeats_runs'])}) vs rebuilt from every event "
              f"{m['repeats_full_s']:.2f}s ({m['repeats_s'] / m['repeats_full_s']:.3f}x)  [{inc._load()}]", flush=True)
    if "rss" in only:
        db = folder / "rss" / "rss.duckdb"
        db.parent.mkdir(exist_ok=True)
        if not db.exists():     # made once per --dir (`--only generate-rss` makes it ahead of the timed run)
            g = inc._child(["--worker", "generate", "--units", str(a.rss_units), "--path", str(db), *common])
            print(f"generated {g['event_rows']:,} events for {a.rss_units:,} units in {g['generate_s']:.0f}s  "
                  f"[{inc._load()}]", flush=True)
        m = measure_rss(db, a.rss_units, a)
        r |= {f"r_{x}": v for x, v in m.items()}
        print(f"peak RSS at {m['events']:,} events (default duckdb settings): analyze --full "
              f"{m['full_rss_mb'] / 1024:.2f} GB ({m['full_s']:.0f}s, CPU {m['full_cpu_s']:.0f}s); run after +1% "
              f"{m['run_rss_mb'] / 1024:.2f} GB ({m['run_s']:.0f}s, CPU {m['run_cpu_s']:.0f}s)  [{inc._load()}]", flush=True)
    return r
