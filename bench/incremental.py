"""Benchmark: the targets of the incremental refresh, as ratios measured within one run.

Every figure is a median of `--repeat` (default 3) timed runs after a warm-up, set against a
baseline timed in the same process and the same minutes (the machine may be shared: ratios move
much less than wall seconds). The in-process analysis figures interleave their steps (bare, full,
without state; then incremental, full) and give the process's CPU time (user + sys of every thread)
beside the wall time: CPU ratios hardly move with the load of other processes. Nothing here is
asserted by the tests.

  full      `analyze --full` (state rebuilt from the events; statistics, every health check and the
            robustness re-derivation, verdict) vs the bare DuckDB pass (bench/analyze.py's
            hand-written query of the same per-variant sums), and today's path (no state, the raw
            tables: `analyze(use_state=False)`) vs the same bare pass;
  +1%       after 1% more events arrive as a new file, the incremental pass (`analyze`, inside the
            process) vs a full analyze; and `abproxy run` vs `abproxy analyze --full` as processes
            (wall time including start-up and the ingest of the new file), and the same pass as a
            job of the long-running service (`run_job` in a process that has imported everything,
            as `abproxy schedule` / `serve` run their jobs) vs the same `analyze --full` process;
  start-up  fresh processes, wall and CPU (user+sys): `import abproxy.cli, abproxy.jobs` plus reading
            and validating abproxy.yaml (what `abproxy analyze` does before it opens the warehouse),
            `abproxy --help`, the bare interpreter, and the lazily imported analysis stack;
  20 exps   20 experiments on the same units and events vs 1: full and incremental passes;
  ingest    +1% events (with event ids) into a warehouse of `--ingest-events` events vs the same
            file into an empty warehouse;
  RSS       peak RSS of the measuring processes; `rss`: of `abproxy analyze --full` and `abproxy run`
            (+1% events) as processes on a warehouse of --rss-units x --events-per-unit events
            (default 100M), with the default `duckdb:` settings (memory_limit 3GB).

    .venv/bin/python bench/incremental.py                          # 1M units, 30 events per unit
    .venv/bin/python bench/incremental.py --units 200000 --experiments-units 100000 --ingest-events 10000000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import analyze as base  # noqa: E402  (bench/analyze.py: generator, config, bare query)

ABPROXY = [sys.executable, "-m", "abproxy.cli"]


def _median(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process: user + sys of every thread, DuckDB's included, result)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started, cpu = time.perf_counter(), usage.ru_utime + usage.ru_stime
    out = fn()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime - cpu, out


def _medians(timed: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """`{name}_s` (wall) and `{name}_cpu_s` medians of (wall, CPU) pairs."""
    out = {}
    for name, pairs in timed.items():
        out[f"{name}_s"] = statistics.median(w for w, _ in pairs)
        out[f"{name}_cpu_s"] = statistics.median(c for _, c in pairs)
    return out


def _add_events(con, n: int, file_id: int, share: float = 0.01) -> int:
    """1% more events as a new loaded file (ledger row included), as an ingest would leave them."""
    total = con.execute("SELECT count(*) FROM events").fetchone()[0]
    extra = int(total * share)
    sql = base.events_sql(n, 10**10 + file_id * extra, 10**10 + file_id * extra + extra)
    stamp = f"TIMESTAMP '2024-02-01' + INTERVAL {file_id} HOUR"
    con.execute(sql.replace("NULL, 2, TIMESTAMP '2024-02-01'", f"NULL, {file_id}, {stamp}"))
    con.execute("INSERT INTO files (file_id, path, kind, status, rows_loaded, loaded_at) "
                f"VALUES ({file_id}, 'gen/{file_id}', 'events', 'loaded', {extra}, {stamp})")
    return extra


def _ledger_rows(con) -> None:
    """The generator writes rows of files 1 and 2 without ledger rows: add them."""
    con.execute("INSERT INTO files (file_id, path, kind, status, loaded_at) VALUES "
                "(1, 'gen/exposures', 'exposures', 'loaded', TIMESTAMP '2024-02-01'), "
                "(2, 'gen/events', 'events', 'loaded', TIMESTAMP '2024-02-01')")


def _copies(con, k: int) -> None:
    """k - 1 more experiments over the same units (own variant draw) and the same events."""
    for i in range(1, k):
        con.execute(f"""INSERT INTO exposures SELECT unit_id, '{base.KEY}{i}',
                        CASE WHEN hash(unit_id || '{i}') % 2 = 0 THEN 'control' ELSE 'treatment' END,
                        exposed_at, file_id, loaded_at, country FROM exposures WHERE experiment = '{base.KEY}'""")


def _config(threads: int, memory: str, k: int = 1):
    from abproxy.config import parse_config

    one = base.config(threads, memory).experiments[base.KEY].model_dump(mode="json")
    return parse_config({"duckdb": {"threads": threads, "memory_limit": memory}, "metrics": base.METRICS,
                         "experiments": {base.KEY + (str(i) if i else ""): one for i in range(k)}})


# ----------------------------------------------------------------------------- in-process figures

def measure_analysis(path: Path, n: int, a) -> dict:
    from abproxy.analysis import analyze
    from abproxy.warehouse import connect

    cfg = _config(a.threads, a.memory_limit)
    con = connect(path, memory_limit=a.memory_limit, threads=a.threads)
    con.execute("SET enable_progress_bar = false")
    if not con.execute("SELECT count(*) FROM files").fetchone()[0]:   # a warehouse reused from an earlier run
        _ledger_rows(con)                                              # in this --dir has them already
    keys = [base.KEY]
    steps = {"bare": lambda: con.execute(base.bare_sql(base.AS_OF)).fetchall(),
             "full": lambda: analyze(con, cfg, keys, base.AS_OF, record=False, full=True),
             "raw": lambda: analyze(con, cfg, keys, base.AS_OF, record=False, use_state=False)}
    steps["bare"](), steps["full"]()                                    # warm-up
    timed: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    last: dict[str, object] = {}
    for _ in range(a.repeat):                   # interleaved, so that each round's load hits all three
        for name, fn in steps.items():
            wall, cpu, last[name] = _timed(fn)
            timed[name].append((wall, cpu))
    out = _medians(timed)
    run = last["full"][0]
    out["verdict"] = run.verdict.decision if run.verdict else run.status
    rounds: dict[str, list[tuple[float, float]]] = {"incremental": [], "full_again": []}
    first = con.execute("SELECT max(file_id) + 1 FROM files").fetchone()[0]
    for r in range(a.repeat):                                           # +1%, then incremental vs full
        _add_events(con, n, first + r)
        con.execute("CHECKPOINT")     # as the commit of a real ingest of this file leaves it (WAL over the threshold)
        wall, cpu, runs = _timed(lambda: analyze(con, cfg, keys, base.AS_OF, record=False))
        rounds["incremental"].append((wall, cpu))
        assert runs[0].refresh["mode"] == "incremental", runs[0].refresh
        rounds["full_again"].append(_timed(steps["full"])[:2])
    out |= _medians(rounds)
    con.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure_experiments(path: Path, n: int, a) -> dict:
    """1 vs k experiments: full and incremental passes (same units and events)."""
    from abproxy.analysis import analyze
    from abproxy.warehouse import connect

    con = connect(path, memory_limit=a.memory_limit, threads=a.threads)
    con.execute("SET enable_progress_bar = false")
    _ledger_rows(con)
    _copies(con, a.experiments)
    out, file_id = {}, 3
    for k in (1, a.experiments):
        cfg = _config(a.threads, a.memory_limit, k)
        keys = list(cfg.experiments)
        timed: dict[str, list[tuple[float, float]]] = {f"full_{k}": [], f"incremental_{k}": []}
        for _ in range(a.repeat):
            timed[f"full_{k}"].append(_timed(lambda: analyze(con, cfg, keys, base.AS_OF, record=False, full=True))[:2])
        for _ in range(a.repeat):
            _add_events(con, n, file_id)
            con.execute("CHECKPOINT")     # as measure_analysis: what the commit of a real ingest leaves
            file_id += 1
            timed[f"incremental_{k}"].append(_timed(lambda: analyze(con, cfg, keys, base.AS_OF, record=False))[:2])
        out |= _medians(timed)
    con.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ----------------------------------------------------------------------------- process figures

def _process_usage(cmd: list[str], env=None, out=subprocess.DEVNULL) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds user+sys, peak RSS in MB) of one child process (its own rusage)."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):
            err.seek(0)
            raise SystemExit(f"{cmd} failed: {err.read()[-2000:].decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _startup_workspace(folder: Path, a) -> Path:
    """A workspace whose abproxy.yaml is the benchmark's configuration (6 metrics, a segment, a schedule)."""
    import yaml

    ws = folder / "startup-ws"
    ws.mkdir(parents=True, exist_ok=True)
    data = _config(a.threads, a.memory_limit).model_dump(mode="json", exclude_none=True)
    data["schedule"] = {"analyze_cron": "*/15 * * * *", "ingest_every_minutes": 5}
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(data))
    return ws


def measure_startup(folder: Path, a) -> dict:
    """Fresh processes, medians of --repeat (wall and CPU user+sys): `startup` is what `abproxy analyze`
    / `run` do before the job opens the warehouse (import abproxy.cli and abproxy.jobs, read and
    validate abproxy.yaml); `startup_duckdb` adds DuckDB's import (loaded when the warehouse opens);
    `help` is `abproxy --help`; `analysis_imports` adds the analysis modules (their libraries load
    where used); `pass_imports` adds the libraries a pass with segments, secondary metrics and a
    daily trend calls (pandas, scipy.stats, statsmodels' BH, Cochran's Q and WLS); `python` is the
    bare interpreter."""
    ws = _startup_workspace(folder, a)
    opened = "import sys, abproxy.cli, abproxy.jobs; from abproxy.workspace import Workspace; Workspace.open(sys.argv[1])"
    analysis = opened + "; import duckdb, abproxy.analysis, abproxy.state"
    libraries = ("pandas, scipy.special, scipy.stats, statsmodels.stats.multitest, statsmodels.stats.meta_analysis, "
                 "statsmodels.regression.linear_model")
    cmds = {"startup": [sys.executable, "-c", opened, str(ws)],
            "startup_duckdb": [sys.executable, "-c", opened + "; import duckdb", str(ws)],
            "help": ABPROXY + ["--help"],
            "analysis_imports": [sys.executable, "-c", analysis, str(ws)],
            "pass_imports": [sys.executable, "-c", f"{analysis}; import {libraries}", str(ws)],
            "python": [sys.executable, "-c", "pass"]}
    for cmd in cmds.values():
        _process_usage(cmd)                                             # warm the page cache / .pyc
    out = {}
    for name, cmd in cmds.items():
        runs = [_process_usage(cmd)[:2] for _ in range(a.repeat)]
        out[f"{name}_s"] = statistics.median(w for w, _ in runs)
        out[f"{name}_cpu_s"] = statistics.median(c for _, c in runs)
    return out


def measure_processes(path: Path, n: int, a) -> dict:
    """`abproxy analyze --full` vs `abproxy run` after 1% more events in a new inbox file."""
    import yaml

    from abproxy.warehouse import connect

    con = connect(path)              # the generated rows' files 1 and 2 get their ledger rows, so the
    if not con.execute("SELECT count(*) FROM files").fetchone()[0]:   # inbox files get ids after them
        _ledger_rows(con)
    con.close()
    ws = path.parent / "ws"
    (ws / "inbox" / "events").mkdir(parents=True, exist_ok=True)
    (ws / "inbox" / "exposures").mkdir(parents=True, exist_ok=True)
    data = _config(a.threads, a.memory_limit).model_dump(mode="json", exclude_none=True)
    data |= {"warehouse": str(path), "inbox": str(ws / "inbox"), "snapshot": str(ws / "report.duckdb")}
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(data))
    as_of = base.AS_OF.isoformat()
    common = ["--workspace", str(ws), "--as-of", as_of, "--json"]
    full, run = [], []
    _process_usage(ABPROXY + ["analyze", "--full", *common])             # warm-up, builds the state
    for r in range(a.repeat):
        _next_events_file(ws / "inbox" / "events", "new", n, 2 * 10**10, int(n * a.events_per_unit) // 100)
        run.append(_checked_run(ABPROXY + ["run", *common]))
        full.append(_process_usage(ABPROXY + ["analyze", "--full", *common]))
        print(f"  +1% #{r + 1}: abproxy run {run[-1][0]:.2f}s ({run[-1][1]:.2f}s CPU), analyze --full "
              f"{full[-1][0]:.2f}s ({full[-1][1]:.2f}s CPU)  [{_load()}]", flush=True)
    service = _child(["--worker", "service", "--path", str(ws), "--units", str(n),
                      "--events-per-unit", str(a.events_per_unit), "--repeat", str(a.repeat)])
    return {"process_full_s": statistics.median(w for w, _, _ in full),
            "process_run_s": statistics.median(w for w, _, _ in run),
            "process_full_cpu_s": statistics.median(c for _, c, _ in full),
            "process_run_cpu_s": statistics.median(c for _, c, _ in run)} | service


def _next_events_file(folder: Path, prefix: str, n: int, first: int, extra: int) -> None:
    """The next +1% inbox file: `{prefix}{k}.parquet` with events [first + k·extra, first + (k+1)·extra), k the
    number of such files already there, so a rerun in the same --dir brings new rows (a file with the name and
    content of a loaded one would be skipped)."""
    k = len(list(folder.glob(f"{prefix}*.parquet")))
    _new_events_file(folder / f"{prefix}{k}.parquet", n, first + k * extra, first + (k + 1) * extra)


def _checked_run(cmd: list[str]) -> tuple[float, float, float]:
    """`abproxy run --json` as a timed process; it must have loaded one new file and folded it incrementally."""
    with tempfile.TemporaryFile() as out:
        usage = _process_usage(cmd, out=out)
        out.seek(0)
        result = json.loads(out.read())
    modes = [e["refresh"]["mode"] for e in result["experiments"]]
    assert result["files_loaded"] == 1 and modes == ["incremental"], (result["files_loaded"], modes)
    return usage


def measure_service(ws_path: Path, n: int, a) -> dict:
    """The same pass as a job of the long-running service (`abproxy schedule` / `serve` run their
    jobs in-process): `run_job` after 1% more events, with the libraries already imported."""
    from abproxy.jobs import run_job
    from abproxy.workspace import Workspace

    ws = Workspace.open(ws_path)
    run_job(ws, "run", base.AS_OF, on_runs=None)                       # warm-up: imports, nothing new
    times = []
    for r in range(a.repeat):
        _next_events_file(ws.inbox / "events", "service", n, 3 * 10**10, int(n * a.events_per_unit) // 100)
        started = time.perf_counter()
        result = run_job(ws, "run", base.AS_OF, on_runs=None)
        times.append(time.perf_counter() - started)
        assert result.ok and all(run.refresh["mode"] == "incremental" for run in result.runs), result.errors
    return {"service_run_s": statistics.median(times)}


def _new_events_file(target: Path, n: int, lo: int, hi: int) -> None:
    """Events [lo, hi) of bench/analyze.py's generator as a Parquet inbox file (no event ids)."""
    import duckdb

    gen = duckdb.connect()
    gen.execute("CREATE TABLE events (unit_id VARCHAR, event VARCHAR, occurred_at TIMESTAMP, value DOUBLE, "
                "event_id VARCHAR, file_id BIGINT, loaded_at TIMESTAMP)")
    gen.execute(base.events_sql(n, lo, hi))
    gen.execute(f"COPY (SELECT unit_id, event, occurred_at, value FROM events) TO '{target}' (FORMAT parquet)")
    gen.close()


# ----------------------------------------------------------------------------- driver

def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {args[:2]} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pair(m: dict, name: str) -> str:
    return f"{m[f'{name}_s']:.2f}s ({m[f'{name}_cpu_s']:.2f}s)"


def _ratios(m: dict, num: str, den: str, digits: int = 2) -> str:
    return (f"{m[f'{num}_s'] / m[f'{den}_s']:.{digits}f}x "
            f"({m[f'{num}_cpu_s'] / m[f'{den}_cpu_s']:.{digits}f}x)")


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _parts(folder: Path, only: set[str], common: list[str], a) -> dict:
    """The analysis, processes and experiments figures, printed as they come."""
    r: dict = {}
    if only & {"analysis", "processes"}:
        db = folder / "main.duckdb"
        if db.exists():   # made by an earlier run in this --dir (generating again would add a second copy)
            print(f"reusing {db} (delete it to generate a new one)", flush=True)
        else:
            g = _child(["--worker", "generate", "--units", str(a.units), "--path", str(db), *common])
            print(f"generated {g['event_rows']:,} events for {a.units:,} units in {g['generate_s']:.0f}s", flush=True)
        if "analysis" in only:
            m = _child(["--worker", "analysis", "--units", str(a.units), "--path", str(db), *common])
            r |= {f"a_{k}": v for k, v in m.items()}
            print(f"wall (CPU): bare {_pair(m, 'bare')}; analyze --full {_pair(m, 'full')}, "
                  f"{_ratios(m, 'full', 'bare')} bare; without state (today) {_pair(m, 'raw')}, {_ratios(m, 'raw', 'bare')}; "
                  f"+1% incremental {_pair(m, 'incremental')} vs full {_pair(m, 'full_again')}, "
                  f"{_ratios(m, 'incremental', 'full_again', 3)}; peak RSS {m['peak_rss_mb'] / 1024:.2f} GB; "
                  f"verdict {m['verdict']}  [{_load()}]", flush=True)
        if "processes" in only:
            m = measure_processes(db, a.units, a)
            r |= m
            print(f"processes: abproxy run after +1% {m['process_run_s']:.2f}s vs analyze --full "
                  f"{m['process_full_s']:.2f}s ({m['process_run_s'] / m['process_full_s']:.3f}x; CPU {m['process_run_cpu_s']:.2f}s vs "
                  f"{m['process_full_cpu_s']:.2f}s, {m['process_run_cpu_s'] / m['process_full_cpu_s']:.3f}x); the same pass as a job "
                  f"of the running service (imports warm) {m['service_run_s']:.2f}s "
                  f"({m['service_run_s'] / m['process_full_s']:.3f}x)  [{_load()}]", flush=True)
    if "experiments" in only:
        db = folder / "exps.duckdb"
        _child(["--worker", "generate", "--units", str(a.experiments_units), "--path", str(db), *common])
        m = _child(["--worker", "experiments", "--path", str(db), *common])
        k = a.experiments
        r |= {f"e_{x}": v for x, v in m.items()}
        print(f"{k} experiments vs 1 ({a.experiments_units:,} units), wall (CPU): full {_pair(m, f'full_{k}')} vs "
              f"{_pair(m, 'full_1')}, {_ratios(m, f'full_{k}', 'full_1', 2)}; incremental "
              f"{_pair(m, f'incremental_{k}')} vs {_pair(m, 'incremental_1')}, "
              f"{_ratios(m, f'incremental_{k}', 'incremental_1', 2)}  [{_load()}]", flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", type=int, default=1_000_000)
    p.add_argument("--events-per-unit", type=float, default=30.0)
    p.add_argument("--experiments", type=int, default=20)
    p.add_argument("--experiments-units", type=int, default=200_000, help="units of the k-experiment figure")
    p.add_argument("--ingest-events", type=int, default=100_000_000)
    p.add_argument("--ingest-ids", choices=["ordered", "random", "plain"], default="ordered",
                   help="event ids of the ingest figure: time-ordered fixed-width (default), random (md5; the new "
                        "files go into the plain warehouse) or unpadded numbers")
    p.add_argument("--rss-units", type=int, default=3_333_334, help="units of the peak-RSS figure (x events per unit)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-limit", default="3GB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="startup,analysis,processes,experiments,ingest,rss")
    p.add_argument("--dir")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        path = Path(a.path)
        fn = {"analysis": lambda: measure_analysis(path, a.units, a),
              "experiments": lambda: measure_experiments(path, a.experiments_units, a),
              "service": lambda: measure_service(path, a.units, a),
              "ingest": lambda: __import__("incremental_big").measure_ingest(path, a),
              "seed": lambda: __import__("incremental_big").seeded(path, a)[1],
              "generate": lambda: base.generate(path, a.units, a.events_per_unit, a.threads, a.memory_limit)}
        print(json.dumps(fn[a.worker]()))
        return 0
    folder = Path(a.dir or tempfile.mkdtemp(prefix="abproxy-incr-"))
    folder.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(","))
    common = ["--events-per-unit", str(a.events_per_unit), "--threads", str(a.threads), "--memory-limit",
              a.memory_limit, "--repeat", str(a.repeat), "--experiments", str(a.experiments),
              "--experiments-units", str(a.experiments_units), "--ingest-events", str(a.ingest_events),
              "--ingest-ids", a.ingest_ids]
    r: dict = {}
    print(f"{_load()}; threads={a.threads} memory_limit={a.memory_limit}; medians of {a.repeat}", flush=True)
    if "startup" in only:
        r |= measure_startup(folder, a)
        print("start-up (wall / CPU user+sys): " + "; ".join(
            f"{name} {r[f'{name}_s']:.3f}s / {r[f'{name}_cpu_s']:.3f}s"
            for name in ("startup", "startup_duckdb", "help", "python", "analysis_imports", "pass_imports"))
            + f"  [{_load()}]", flush=True)
    r |= _parts(folder, only, common, a)
    if only & {"ingest", "seed-ingest", "rss", "generate-rss", "repeats"}:
        import incremental_big

        r |= incremental_big.run_parts(folder, only, common, a)
    (folder / "results.json").write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
