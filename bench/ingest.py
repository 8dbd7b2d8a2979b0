"""Benchmark: `ingest()` against a bare DuckDB load of the same Parquet files, in the same run.

Generates `--rows` events in `--files` Parquet files with DuckDB SQL, then times
  (a) bare:   CREATE TABLE t AS SELECT * FROM read_parquet([...]) into a fresh DuckDB file
  (b) ingest: abproxy.ingest.ingest() into a fresh warehouse (hashing, checks, event_id dedup,
              ledger, one transaction per file)
Each timing covers the work and closing the database (so both are durable on disk).
Prints rows/s of each and the ratio ingest speed / bare speed (target: >= 0.5).

    .venv/bin/python bench/ingest.py [--rows 10000000] [--files 10] [--repeat 1] [--dir PATH]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from abproxy.ingest import ingest  # noqa: E402
from abproxy.warehouse import connect  # noqa: E402

EVENTS_SQL = """
COPY (
    SELECT 'u' || ((i * 7919) % {units})                                       AS unit_id,
           ['session_start', 'purchase', 'add_to_cart', 'refund'][1 + (i * 31) % 4] AS event,
           TIMESTAMP '2026-01-01' + to_microseconds((i * 104729) % 2592000000000)   AS occurred_at,
           CASE WHEN (i * 31) % 4 IN (1, 3) THEN round(((i * 13) % 10000) / 100.0, 2) END AS value,
           'ev-' || i                                                          AS event_id,
           ['ios', 'android', 'web'][1 + i % 3]                                AS platform
    FROM range({start}, {stop}) t(i)
) TO '{path}' (FORMAT parquet)
"""


def generate(folder: Path, rows: int, files: int) -> list[Path]:
    events = folder / "inbox" / "events"
    events.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    paths = []
    bounds = [rows * k // files for k in range(files + 1)]
    for k in range(files):
        path = events / f"part-{k:03d}.parquet"
        con.execute(EVENTS_SQL.format(units=max(rows // 20, 1), start=bounds[k], stop=bounds[k + 1],
                                      path=path))
        paths.append(path)
    con.close()
    return paths


def bare(folder: Path, paths: list[Path]) -> float:
    db = folder / "bare.duckdb"
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    listed = ", ".join(f"'{p}'" for p in paths)
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet([{listed}])")
    con.close()
    elapsed = time.perf_counter() - started
    db.unlink()
    return elapsed


def abproxy_ingest(folder: Path, rows: int) -> float:
    db = folder / "warehouse.duckdb"
    con = connect(db)  # migrations are applied before the clock starts
    started = time.perf_counter()
    summary = ingest(con, folder / "inbox")
    con.close()
    elapsed = time.perf_counter() - started
    if not summary.ok or summary.rows_loaded != rows:
        raise SystemExit(f"ingest did not load everything: {summary.as_dict()}")
    db.unlink()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="alternate bare/ingest this many times")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="abproxy-bench-", dir=args.dir))
    try:
        started = time.perf_counter()
        paths = generate(folder, args.rows, args.files)
        size = sum(p.stat().st_size for p in paths)
        print(f"generated {args.rows:,} events in {args.files} Parquet files "
              f"({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")
        bare_times, ingest_times = [], []
        for _ in range(args.repeat):
            bare_times.append(bare(folder, paths))
            ingest_times.append(abproxy_ingest(folder, args.rows))
        if args.repeat > 1:
            print("runs (s): bare " + ", ".join(f"{t:.2f}" for t in bare_times)
                  + "; ingest " + ", ".join(f"{t:.2f}" for t in ingest_times) + " (medians below)")
        b, i = statistics.median(bare_times), statistics.median(ingest_times)
        print(f"bare   CREATE TABLE AS read_parquet: {b:7.2f}s  {args.rows / b:12,.0f} rows/s")
        print(f"abproxy ingest():                    {i:7.2f}s  {args.rows / i:12,.0f} rows/s")
        ratio = b / i
        print(f"ratio ingest/bare speed: {ratio:.2f} (target >= 0.5)")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
