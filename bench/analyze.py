"""Benchmark: abproxy's analysis vs the bare DuckDB query of the same sufficient statistics.

For each size N (units; about --events-per-unit events each) this script
  1. generates a warehouse directly in DuckDB with SQL (hash-based pseudo-random, vectorised:
     `FROM range(...)`, no Python loops), in a child process;
  2. in a second, fresh child process (so its peak RSS is the analysis's, not the generator's):
     times the hand-written bare query (one GROUP BY variant over a join of events to first
     exposures with conditional sums), `run_query` (abproxy's one SQL statement alone) and
     `analyze_experiment(..., robustness=False)` (SQL + statistics + health checks + verdict),
     then inserts 1% more events and times the re-analysis (and the bare query again);
  3. prints a table: units, events, bare s, SQL s, analyze s, ratio analyze/bare, re-analysis s,
     peak RSS of the analysis process.

The workload: 6 metrics on one two-arm experiment with a segment (country) — revenue (mean),
converted (proportion), revenue per session (ratio), revenue with CUPED (14-day pre-window),
pageviews (mean count) and revenue capped at the pooled 99th percentile. The bare query computes
the same per-variant n, Σy, Σy², Σx, Σx², Σxy (incl. the quantile cap) but not abproxy's extra
grouping sets (exposure day, segment), multi-exposure count or health checks.

    .venv/bin/python bench/analyze.py                    # 1M and 10M units
    .venv/bin/python bench/analyze.py --units 1000000    # quick run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY = "bench"
START = "2024-01-01 00:00:00"
AS_OF = dt.datetime(2024, 1, 29)          # every 14-day window of a unit exposed in the first 14 days is complete
DAY = 86400
U48 = "281474976710656.0"                 # 2^48: _h(...) / U48 is uniform on [0, 1)

METRICS = {
    "revenue": {"type": "mean", "event": "purchase"},
    "converted": {"type": "proportion", "event": "purchase"},
    "revenue_per_session": {"type": "ratio", "numerator": {"event": "purchase"},
                            "denominator": {"event": "session", "aggregate": "count"}},
    "revenue_cuped": {"type": "mean", "event": "purchase", "cuped": {"pre_window_days": 14}},
    "pageviews": {"type": "mean", "event": "pageview", "aggregate": "count"},
    "revenue_capped": {"type": "mean", "event": "purchase", "capping": {"quantile": 0.99}},
}


def config(threads: int, memory_limit: str):
    from abproxy.config import parse_config

    return parse_config({
        "duckdb": {"threads": threads, "memory_limit": memory_limit},
        "metrics": METRICS,
        "experiments": {KEY: {"control": "control", "variants": {"control": {}, "treatment": {}},
                              "primary": ["revenue", "converted"], "guardrails": ["revenue_per_session"],
                              "secondary": ["revenue_cuped", "pageviews", "revenue_capped"],
                              "segments": ["country"]}},
    })


# ----------------------------------------------------------------------------- data generation (SQL only)

def _h(expr: str, seed: int) -> str:
    """A pseudo-random 48-bit integer from an integer expression and a seed. DuckDB's hash() of a
    single integer mixes well; its multi-argument form does not (the low bits of hash(i, 2) and
    hash(i, 7) are dependent: every unit picked by hash(i, 7) % 200 = 0 had hash(i, 2) even), and
    the lowest bits are dropped."""
    return f"(hash(({expr}) * 1000003 + {seed * 7777777777}) >> 16)"


def _u(expr: str, seed: int) -> str:
    """A uniform [0,1) number derived from expr and seed."""
    return f"({_h(expr, seed)} / {U48})"


def _exposed_at(i: str) -> str:
    return f"(TIMESTAMP '{START}' + to_seconds(CAST({_h(i, 1)} % {14 * DAY} AS BIGINT)))"


def _variant(i: str) -> str:
    return f"(CASE WHEN {_h(i, 2)} % 2 = 0 THEN 'control' ELSE 'treatment' END)"


def events_sql(n: int, lo: int, hi: int) -> str:
    """Events j in [lo, hi): unit = hash(j) mod n (≈ Poisson counts per unit), type by a unit-level
    propensity (so the pre-period predicts the post-period, for CUPED), time uniform in
    [exposure − 14d, exposure + 14d), purchase value exponential with a 2% lift in treatment."""
    return f"""
    INSERT INTO events (unit_id, event, occurred_at, value, event_id, file_id, loaded_at)
    SELECT 'u' || i, event,
           {_exposed_at('i')} + to_seconds(CAST({_h('j', 13)} % {28 * DAY} AS BIGINT) - {14 * DAY}) AS occurred_at,
           CASE WHEN event = 'purchase' THEN round((5 + 60 * p) * -ln(1 - {_u('j', 14)})
                * CASE WHEN {_variant('i')} = 'treatment' AND {_h('j', 13)} % {28 * DAY} >= {14 * DAY}
                       THEN 1.02 ELSE 1.0 END, 2) END AS value,
           NULL, 2, TIMESTAMP '2024-02-01'
    FROM (
        SELECT j, i, p,
               CASE WHEN r < 0.05 + 0.15 * p THEN 'purchase' WHEN r < 0.55 THEN 'session' ELSE 'pageview' END AS event
        FROM (SELECT j, i, {_u('i', 3)} AS p, {_u('j', 12)} AS r
              FROM (SELECT range AS j, {_h('range', 11)} % {n} AS i FROM range({lo}, {hi})))
    )"""


def generate(path: Path, n: int, events_per_unit: float, threads: int, memory_limit: str) -> dict:
    from abproxy.warehouse import connect

    started = time.perf_counter()
    con = connect(path, memory_limit=memory_limit, threads=threads)
    con.execute('ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "country" VARCHAR')
    country = f"(CASE {_h('i', 5)} % 10 WHEN 0 THEN 'FR' WHEN 1 THEN 'FR' WHEN 2 THEN 'DE' WHEN 3 THEN 'DE' " \
              f"WHEN 4 THEN 'DE' ELSE 'US' END)"
    con.execute(f"""
    INSERT INTO exposures (unit_id, experiment, variant, exposed_at, file_id, loaded_at, country)
    SELECT 'u' || i, '{KEY}', {_variant('i')}, {_exposed_at('i')}, 1, TIMESTAMP '2024-02-01', {country}
    FROM (SELECT range AS i FROM range({n}))
    UNION ALL   -- 5% exposed again later, same variant
    SELECT 'u' || i, '{KEY}', {_variant('i')}, {_exposed_at('i')} + INTERVAL 2 DAY, 1, TIMESTAMP '2024-02-01', {country}
    FROM (SELECT range AS i FROM range({n})) WHERE {_h('i', 6)} % 20 = 0
    UNION ALL   -- 0.5% also exposed to the other arm: excluded as multi-exposed
    SELECT 'u' || i, '{KEY}', CASE WHEN {_variant('i')} = 'control' THEN 'treatment' ELSE 'control' END,
           {_exposed_at('i')} + INTERVAL 1 DAY, 1, TIMESTAMP '2024-02-01', {country}
    FROM (SELECT range AS i FROM range({n})) WHERE {_h('i', 7)} % 200 = 0
    """)
    total = int(n * events_per_unit)
    con.execute(events_sql(n, 0, total))
    con.execute("CHECKPOINT")
    exposures = con.execute("SELECT count(*) FROM exposures").fetchone()[0]
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    con.close()
    return {"generate_s": time.perf_counter() - started, "exposure_rows": exposures, "event_rows": events,
            "db_bytes": path.stat().st_size}


# ----------------------------------------------------------------------------- the bare query

def bare_sql(as_of: dt.datetime) -> str:
    """The same per-variant sufficient statistics, written by hand the straightforward way."""
    ts = f"TIMESTAMP '{as_of:%Y-%m-%d %H:%M:%S}'"
    post = "e.occurred_at >= f.exposed_at"
    pre = "e.occurred_at < f.exposed_at"
    stats = ", ".join(
        f"sum({c}) AS {c}_sum, sum({c} * {c}) AS {c}_sq"
        for c in ("rev", "conv", "sessions", "rev_pre", "pageviews", "rev_cap"))
    return f"""
WITH first_exposure AS (
    SELECT unit_id, min(exposed_at) AS exposed_at, arg_min(variant, exposed_at) AS variant
    FROM exposures WHERE experiment = '{KEY}' AND exposed_at <= {ts}
    GROUP BY unit_id HAVING count(DISTINCT variant) = 1
), per_unit AS (
    SELECT f.unit_id, f.variant,
           coalesce(sum(e.value) FILTER (WHERE e.event = 'purchase' AND {post}), 0) AS rev,
           CAST(count(*) FILTER (WHERE e.event = 'purchase' AND {post}) > 0 AS DOUBLE) AS conv,
           CAST(count(*) FILTER (WHERE e.event = 'session' AND {post}) AS DOUBLE) AS sessions,
           coalesce(sum(e.value) FILTER (WHERE e.event = 'purchase' AND {pre}), 0) AS rev_pre,
           CAST(count(*) FILTER (WHERE e.event = 'pageview' AND {post}) AS DOUBLE) AS pageviews
    FROM first_exposure f
    LEFT JOIN events e ON e.unit_id = f.unit_id AND e.occurred_at <= {ts}
         AND e.occurred_at >= f.exposed_at - INTERVAL 14 DAY AND e.occurred_at < f.exposed_at + INTERVAL 14 DAY
    GROUP BY f.unit_id, f.variant
), capped AS (
    SELECT *, least(rev, (SELECT quantile_cont(rev, 0.99) FROM per_unit)) AS rev_cap FROM per_unit
)
SELECT variant, count(*) AS n, {stats},
       sum(rev * sessions) AS rev_sessions_xy, sum(rev * rev_pre) AS rev_pre_xy
FROM capped GROUP BY variant ORDER BY variant"""


# ----------------------------------------------------------------------------- timing (child process)

def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)      # all threads of this process (DuckDB's included)
    return r.ru_utime + r.ru_stime


def _timed(fn):
    """(wall seconds, result); the CPU seconds of the call are appended to _timed.cpu."""
    started, cpu = time.perf_counter(), _cpu()
    out = fn()
    _timed.cpu.append(_cpu() - cpu)
    return time.perf_counter() - started, out


_timed.cpu = []


def measure(path: Path, n: int, events_per_unit: float, threads: int, memory_limit: str, repeat: int,
            sql_only: bool = False, robustness: bool = False) -> dict:
    from abproxy import analysis
    from abproxy.analysis import analyze_experiment, run_query
    from abproxy.warehouse import connect

    cfg = config(threads, memory_limit)
    con = connect(path, memory_limit=memory_limit, threads=threads)
    steps = {"bare": lambda: con.execute(bare_sql(AS_OF)).df(),
             "sql": lambda: run_query(con, cfg, KEY, AS_OF),
             "analyze": lambda: analyze_experiment(con, cfg, KEY, AS_OF, robustness=False)}
    if robustness:        # + robustness.decision_robustness: the verdict under the alternative settings (one query)
        steps["robust"] = lambda: analyze_experiment(con, cfg, KEY, AS_OF, robustness=True)
    if sql_only:
        del steps["analyze"]
        steps.pop("robust", None)
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    last: dict = {}
    for _ in range(repeat):          # interleaved, best of `repeat`
        for name, fn in steps.items():
            t, last[name] = _timed(fn)
            wall[name].append(t)
            cpu[name].append(_timed.cpu[-1])
    if "analyze" in last and last["analyze"].status != "ok":
        raise SystemExit(f"analysis failed: {last['analyze'].error}")
    out: dict = {}
    for name in steps:
        out |= {f"{name}_s": min(wall[name]), f"{name}_runs": wall[name], f"{name}_cpu_s": min(cpu[name])}
    out["check_max_rel_diff"] = _compare(last["bare"], last["sql"])
    if not sql_only:
        run = last["analyze"]
        out |= {"units_analysed": sum(run.units.values()), "excluded_multi": run.excluded_multi,
                "srm_p": run.srm.p_value, "verdict": run.verdict.decision if run.verdict else None}
        # the same analysis without the health/data-quality checks (their own queries), to split the cost
        checks = analysis.health_checks.experiment_checks
        analysis.health_checks.experiment_checks = lambda *a, **k: []
        try:
            runs = [_timed(steps["analyze"])[0] for _ in range(repeat)]
        finally:
            analysis.health_checks.experiment_checks = checks
        out |= {"analyze_no_health_s": min(runs), "analyze_no_health_cpu_s": min(_timed.cpu[-repeat:])}

        # 1% more events, then analyse again (no incremental state: a full recomputation)
        total = int(n * events_per_unit)
        t_insert, _ = _timed(lambda: con.execute(events_sql(n, total, total + total // 100)))
        t_re, rerun = _timed(steps["analyze"])
        out["reanalyze_cpu_s"] = _timed.cpu[-1]
        if rerun.status != "ok":
            raise SystemExit(f"re-analysis failed: {rerun.error}")
        t_bare_re, _ = _timed(steps["bare"])
        out |= {"insert_1pct_s": t_insert, "reanalyze_s": t_re, "bare_after_insert_s": t_bare_re}
    con.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _compare(bare, table) -> float:
    """Max relative difference between the bare query's and abproxy's overall sums (a sanity check
    that both compute the same statistics)."""
    rows = table.rows("overall").set_index("variant")
    alias = {c.key: c for c in table.query.columns}
    pairs = {"rev_sum": f"{alias['revenue'].y}_sum", "rev_sq": f"{alias['revenue'].y}_sq",
             "conv_sum": f"{alias['converted'].y}_sum", "sessions_sum": f"{alias['revenue_per_session'].x}_sum",
             "sessions_sq": f"{alias['revenue_per_session'].x}_sq", "rev_sessions_xy": f"{alias['revenue_per_session'].alias}_xy",
             "rev_pre_sum": f"{alias['revenue_cuped'].x}_sum", "rev_pre_xy": f"{alias['revenue_cuped'].alias}_xy",
             "pageviews_sum": f"{alias['pageviews'].y}_sum", "rev_cap_sum": f"{alias['revenue_capped'].y}_sum",
             "rev_cap_sq": f"{alias['revenue_capped'].y}_sq", "n": "n"}
    worst = 0.0
    for _, b in bare.iterrows():
        a = rows.loc[b["variant"]]
        for mine, theirs in pairs.items():
            x, y = float(b[mine]), float(a[theirs])
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
    return worst


# ----------------------------------------------------------------------------- driver

def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[:2]} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(xs: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in xs)


def _cell(r: dict, key: str) -> str:
    return f"{r[key]:.2f}" if key in r else "-"


def _ratio(r: dict, a: str, b: str) -> str:
    return f"{r[a] / r[b]:.2f}x" if a in r and b in r else "-"


def _progress(m: dict) -> str:
    walls = ", ".join(f"{k} {_fmt(m[f'{k}_runs'])}" for k in ("bare", "sql", "analyze", "robust") if f"{k}_runs" in m)
    cpus = ", ".join(f"{k.removesuffix('_cpu_s').replace('_', '-')} {v:.1f}" for k, v in m.items() if k.endswith("_cpu_s"))
    text = f"wall s: {walls}; CPU s (best): {cpus}"
    if "insert_1pct_s" in m:
        text += f"; insert 1% {m['insert_1pct_s']:.1f}s, bare after it {m['bare_after_insert_s']:.2f}s"
    if "verdict" in m:
        text += (f"; {m['units_analysed']:,} units analysed, {m['excluded_multi']:,} multi-exposed excluded, "
                 f"SRM p = {m['srm_p']:.2g}, verdict {m['verdict']}")
    return text + f"; bare vs abproxy sums max rel diff {m['check_max_rel_diff']:.1e}"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", default="1000000,10000000", help="comma-separated unit counts (default: 1M and 10M)")
    p.add_argument("--events-per-unit", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-limit", default="3GB")
    p.add_argument("--repeat", type=int, default=2, help="timed runs of each query; the best is reported")
    p.add_argument("--dir", help="where the warehouses go (default: a temporary directory, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the generated warehouses")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--sql-only", action="store_true",
                   help="time only the bare query and abproxy's SQL (no full analysis, no re-analysis)")
    p.add_argument("--robustness", action="store_true",
                   help="also time analyze_experiment(robustness=True) (+ the decision-robustness query)")
    p.add_argument("--worker", choices=["generate", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        n = int(a.units)
        fn = generate if a.worker == "generate" else measure
        extra = () if a.worker == "generate" else (a.repeat, a.sql_only, a.robustness)
        result = fn(Path(a.path), n, a.events_per_unit, a.threads, a.memory_limit, *extra)
        print(json.dumps(result))
        return 0

    sizes = [int(float(s)) for s in a.units.split(",") if s.strip()]
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="abproxy-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    common = ["--events-per-unit", str(a.events_per_unit), "--threads", str(a.threads),
              "--memory-limit", a.memory_limit, "--repeat", str(a.repeat)] + (["--sql-only"] if a.sql_only else []) \
        + (["--robustness"] if a.robustness else [])
    print(f"DuckDB threads={a.threads} memory_limit={a.memory_limit}; {len(METRICS)} metrics "
          f"(mean, proportion, ratio, CUPED, count, capped); best of {a.repeat}; warehouses in {base}", flush=True)
    rows = []
    try:
        for n in sizes:
            path = base / f"bench_{n}.duckdb"
            for f in (path, path.with_suffix(".duckdb.wal")):
                f.unlink(missing_ok=True)
            g = _child(["--worker", "generate", "--units", str(n), "--path", str(path), *common])
            print(f"  {n:,} units: generated {g['event_rows']:,} events, {g['exposure_rows']:,} exposure rows "
                  f"in {g['generate_s']:.1f}s ({g['db_bytes'] / 2**30:.2f} GiB on disk)", flush=True)
            m = _child(["--worker", "measure", "--units", str(n), "--path", str(path), *common])
            print(f"  {n:,} units: " + _progress(m), flush=True)
            rows.append({"units": n, **g, **m})
            if not a.keep:
                for f in (path, path.with_suffix(".duckdb.wal")):
                    f.unlink(missing_ok=True)
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(base, ignore_errors=True)

    head = ("units", "events", "bare s", "SQL s", "analyze s", "no-health s", "re-analyze s (+1%)",
            "analyze/bare", "CPU: analyze/bare", "CPU: SQL/bare", "CPU: no-health/bare", "peak RSS")
    robust = any("robust_s" in r for r in rows)
    if robust:
        head = head[:-1] + ("+robustness s", "CPU: +robustness/bare", "peak RSS")
    table = [head]
    for r in rows:
        table.append((f"{r['units']:,}", f"{r['event_rows']:,}", _cell(r, "bare_s"), _cell(r, "sql_s"),
                      _cell(r, "analyze_s"), _cell(r, "analyze_no_health_s"), _cell(r, "reanalyze_s"),
                      _ratio(r, "analyze_s", "bare_s"), _ratio(r, "analyze_cpu_s", "bare_cpu_s"),
                      _ratio(r, "sql_cpu_s", "bare_cpu_s"), _ratio(r, "analyze_no_health_cpu_s", "bare_cpu_s"))
                     + ((_cell(r, "robust_s"), _ratio(r, "robust_cpu_s", "bare_cpu_s")) if robust else ())
                     + (_gb(r["peak_rss_mb"]),))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    print()
    for k, row in enumerate(table):
        print("| " + " | ".join(str(c).rjust(w) for c, w in zip(row, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\nbare = hand-written GROUP BY variant query; SQL = abproxy's one query alone (run_query); "
          "analyze = analyze_experiment(robustness=False): SQL + statistics + health/data-quality checks + verdict; "
          "no-health = the same with the health checks stubbed out; re-analyze = analyze after inserting 1% more "
          "events. Wall seconds are the best of --repeat; CPU ratios use process CPU seconds (all DuckDB threads), "
          "robust to other load on the machine. Targets: analyze/bare <= 1.5x, peak RSS < 4 GB at 10M.")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
