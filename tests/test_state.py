"""Per-unit state: after every batch the incremental pass equals a recomputation from the raw tables.

Real files go through `ingest` into a real DuckDB warehouse; each batch brings exposures and events
in random order — late events, events before their unit's exposure, events a few minutes ahead of
the analysis time, re-sent event ids, exposures that move a unit's first exposure earlier or switch
its variant — and midway a metric definition changes, a new experiment and a new metric appear, a
file is refused (changed content under a loaded name) and re-delivered under a new name. After each
batch `analyze` (state folded in) is compared with `analyze(use_state=False)` (the raw tables, the
query the state replaces) on every result, segment, series point, health check and verdict.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abproxy.analysis import analyze
from abproxy.config import parse_config
from abproxy.ingest import ingest
from abproxy.output import run_json
from abproxy.warehouse import connect

START = dt.datetime(2026, 3, 1)
STEP = dt.timedelta(hours=7)
COUNTRIES = ["DE", "FR", "US"]

METRICS = {
    "revenue": {"type": "mean", "event": "purchase", "window_days": 3},
    "buyers": {"type": "proportion", "event": "purchase", "window_days": 3},
    "rps": {"type": "ratio", "numerator": {"event": "purchase"},
            "denominator": {"event": "session", "aggregate": "count"}, "window_days": 3},
    "revenue_cuped": {"type": "mean", "event": "purchase", "window_days": 3, "cuped": {"pre_window_days": 2}},
    "active_days": {"type": "mean", "event": "session", "aggregate": "count_distinct_days", "window_days": 4},
    "biggest": {"type": "mean", "event": "purchase", "aggregate": "max", "window_days": 3,
                "capping": {"quantile": 0.9}},
    "smallest": {"type": "mean", "event": "purchase", "aggregate": "min", "window_days": 3},
    "basket": {"type": "mean", "event": "purchase", "aggregate": "avg", "window_days": 3},
    "refunded": {"type": "proportion", "event": "refund", "aggregate": "exists", "window_days": 3,
                 "higher_is_better": False},
    "books": {"type": "mean", "event": "purchase", "where": "category = 'books'", "window_days": 2},
    "revenue_cupac": {"type": "mean", "event": "purchase", "window_days": 3, "cuped": {"covariate": "score"}},
    "revenue_p50": {"type": "quantile", "event": "purchase", "quantile": 0.5, "window_days": 3},
}
DECISION = {"min_days": 0, "min_units_per_variant": 5, "min_segment_units": 3}


def experiment(primary, secondary=(), guardrails=(), segments=("country",)):
    return {"control": "a", "variants": {"a": {}, "b": {}}, "primary": list(primary),
            "secondary": list(secondary), "guardrails": list(guardrails), "segments": list(segments),
            "decision": DECISION}


def config(stage: int):
    metrics = dict(METRICS)
    exps = {
        "one": experiment(["revenue", "buyers"], ["revenue_cuped", "active_days", "basket"], ["refunded"]),
        "two": experiment(["rps"], ["biggest", "smallest", "books", "revenue_cupac", "revenue_p50"],
                          segments=("country", "platform")),
    }
    if stage >= 1:   # a metric definition changed midway: 'one' is rebuilt
        metrics["revenue"] = {**METRICS["revenue"], "window_days": 2.5}
    if stage >= 2:   # a new experiment on the same events
        exps["three"] = experiment(["buyers"], ["revenue"], segments=())
    if stage >= 3:   # a new metric added to 'two'
        metrics["sessions"] = {"type": "mean", "event": "session", "aggregate": "count", "window_days": 3}
        exps["two"]["secondary"] = ["biggest", "smallest", "books", "revenue_cupac", "revenue_p50", "sessions"]
    return parse_config({"metrics": metrics, "experiments": exps})


class World:
    """Random exposures and events, written as inbox CSV files batch by batch."""

    def __init__(self, inbox: Path, seed: int):
        self.inbox, self.rng, self.n = inbox, random.Random(seed), 0
        self.units: dict[tuple[str, str], tuple[str, dt.datetime]] = {}   # (experiment, unit) → variant, time
        self.ids: list[str] = []
        self.idless: list[str] = []     # rows sent without an event id: a later file may repeat one
        for kind in ("exposures", "events"):
            (inbox / kind).mkdir(parents=True, exist_ok=True)

    def write(self, kind: str, rows: list[str], name: str | None = None) -> Path:
        self.n += 1
        header = ("unit_id,experiment,variant,exposed_at,country,platform,score\n" if kind == "exposures" else
                  "unit_id,event,occurred_at,value,event_id,category\n")
        path = self.inbox / kind / (name or f"{self.n:03d}.csv")
        path.write_text(header + "".join(r + "\n" for r in rows))
        return path

    def exposures(self, now: dt.datetime, experiments: list[str]) -> list[str]:
        r, rows = self.rng, []
        for _ in range(r.randint(8, 25)):
            exp = r.choice(experiments)
            unit = f"u{r.randint(0, 90)}"
            if (exp, unit) in self.units and r.random() < 0.5:
                variant, first = self.units[(exp, unit)]
                if r.random() < 0.15:
                    variant = "b" if variant == "a" else "a"              # switches variant: excluded
                at = first + dt.timedelta(hours=r.uniform(-30, 30))     # earlier: the first exposure moves
            else:
                variant, at = r.choice("ab"), now - dt.timedelta(hours=r.uniform(0, 40))
            at = min(at, now + dt.timedelta(minutes=5))                 # some just ahead of the analysis time
            first = self.units.get((exp, unit), (variant, at))[1]
            self.units[(exp, unit)] = (variant, min(first, at))
            country = COUNTRIES[hash(unit) % 3] if r.random() < 0.95 else r.choice(COUNTRIES)
            rows.append(f"{unit},{exp},{variant},{at:%Y-%m-%d %H:%M:%S.%f},{country},{r.choice(['ios', 'web'])},"
                        f"{r.uniform(0, 50):.3f}")
        return rows

    def events(self, now: dt.datetime) -> list[str]:
        r, rows = self.rng, []
        for _ in range(r.randint(20, 70)):
            unit = f"u{r.randint(0, 110)}"                               # u91..u110 never exposed (yet)
            if r.random() < 0.1:
                at = now - dt.timedelta(days=r.uniform(2, 6))            # late
            else:
                at = now - dt.timedelta(hours=r.uniform(-0.08, 30))      # up to ~5 minutes ahead
            event = r.choices(["purchase", "session", "refund", "other"], [4, 5, 1, 1])[0]
            value = "" if r.random() < 0.05 else f"{r.expovariate(0.05):.2f}"
            if r.random() < 0.1 and self.ids:
                eid = r.choice(self.ids)                                  # re-sent id: skipped at ingest
            elif r.random() < 0.2:
                eid = ""
            else:
                eid = f"e{len(self.ids)}"
                self.ids.append(eid)
            category = r.choice(["books", "toys", ""])
            rows.append(f"{unit},{event},{at:%Y-%m-%d %H:%M:%S.%f},{value},{eid},{category}")
            if r.random() < 0.03:
                rows.append(rows[-1])                                     # exact repeat row
            if not eid:
                self.idless.append(rows[-1])
        if self.idless and r.random() < 0.7:                              # repeats of rows of earlier files
            rows += r.sample(self.idless, min(len(self.idless), r.randint(1, 3)))
        r.shuffle(rows)
        return rows


def comparable(run) -> dict:
    out = run_json(run)
    for key in ("run_id", "refresh", "analyzed_at"):
        out.pop(key)
    out["series"] = [dataclasses.asdict(p) for p in run.series]
    return out


def assert_same(a, b, where="run"):
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {a!r} vs {b!r}"
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a!r} vs {b!r}"
        else:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a!r} vs {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def play(tmp_path: Path, batches: int, seed: int, stages: bool = True) -> list[str]:
    world = World(tmp_path / "inbox", seed)
    con = connect(tmp_path / "w.duckdb")
    modes = []
    refused = None
    try:
        for k in range(batches):
            now = START + k * STEP
            stage = sum(k >= s for s in (batches // 4, batches // 2, 3 * batches // 4)) if stages else 0
            cfg = config(stage)
            keys = list(cfg.experiments)
            files = [("exposures", world.exposures(now, keys)), ("events", world.events(now))]
            world.rng.shuffle(files)
            for kind, rows in files:
                world.write(kind, rows)
            if k == batches // 3:        # refused: new content under a loaded name, then re-delivered
                refused = world.events(now)
                world.write("events", refused, name="001.csv" if (world.inbox / "events" / "001.csv").exists()
                            else "002.csv")
            elif refused is not None and k == batches // 3 + 2:
                world.write("events", refused, name="redelivered.csv")
            ingest(con, world.inbox, now=now)
            as_of = now if k % 9 != 8 else now - 2 * STEP               # sometimes an --as-of in the past
            reference = analyze(con, cfg, keys, as_of, record=False, use_state=False)
            runs = analyze(con, cfg, keys, as_of, full=(k == batches - 1))
            for ref, run in zip(reference, runs):
                assert ref.status == run.status == "ok", (ref.error, run.error)
                assert_same(comparable(ref), comparable(run), f"batch {k} {run.experiment}")
                modes.append(run.refresh["mode"] + ": " + run.refresh["reason"])
                assert "unavailable" not in modes[-1], modes[-1]
    finally:
        con.close()
    return modes


def test_incremental_equals_recomputation_over_a_few_batches(tmp_path):
    modes = play(tmp_path, 4, seed=1, stages=False)
    assert any(m.startswith("incremental: folded") for m in modes)


@pytest.mark.slow
def test_incremental_equals_recomputation_over_32_random_batches(tmp_path):
    modes = play(tmp_path, 32, seed=2)
    reasons = "\n".join(modes)
    for expected in ("incremental: folded", "no per-unit state yet", "definition changed", "--as-of",
                     "--full"):
        assert expected in reasons


CHILD = textwrap.dedent("""
    import datetime as dt, json, sys, time
    from abproxy import state
    from abproxy.analysis import analyze
    from abproxy.config import parse_config
    from abproxy.warehouse import connect

    db, flag, cfg, as_of = sys.argv[1], sys.argv[2], parse_config(json.loads(sys.argv[3])), dt.datetime.fromisoformat(sys.argv[4])
    fold_units = state._fold_units

    def stuck(*args):                      # inside the fold's transaction, after the first merge
        out = fold_units(*args)
        open(flag, "w").write("merging")
        time.sleep(120)
        return out

    state._fold_units = stuck
    analyze(connect(db), cfg, list(cfg.experiments), as_of)
""")


def snapshot(con) -> tuple:
    tables = [r[0] for r in con.execute("SELECT table_name FROM unit_states ORDER BY 1").fetchall()]
    return (con.execute("SELECT * EXCLUDE (updated_at) FROM unit_states ORDER BY experiment").fetchall(),
            [con.execute(f"SELECT * FROM {t} ORDER BY unit_id").fetchall() for t in tables])


@pytest.mark.slow
def test_kill_9_during_a_merge_leaves_state_and_watermark_consistent(tmp_path):
    import json
    world = World(tmp_path / "inbox", seed=5)
    db = tmp_path / "w.duckdb"
    cfg = config(0)
    raw = {"metrics": METRICS, "experiments": {k: experiment(["revenue", "buyers"], ["active_days"], ["refunded"])
                                               for k in ("one", "two")}}
    cfg = parse_config(raw)
    keys = list(cfg.experiments)
    con = connect(db)
    for k in range(3):
        now = START + k * STEP
        world.write("exposures", world.exposures(now, keys))
        world.write("events", world.events(now))
        ingest(con, world.inbox, now=now)
        analyze(con, cfg, keys, now)
    now = START + 3 * STEP
    world.write("exposures", world.exposures(now, keys))
    world.write("events", world.events(now))
    ingest(con, world.inbox, now=now)
    before = snapshot(con)
    con.close()

    flag = tmp_path / "flag"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(flag), json.dumps(raw), now.isoformat()],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        for _ in range(1200):
            if flag.exists() or child.poll() is not None:
                break
            import time
            time.sleep(0.1)
        assert flag.exists(), f"the child never reached the merge (exit {child.poll()})"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    con = connect(db)
    try:
        assert snapshot(con) == before                       # nothing of the interrupted merge is visible
        reference = analyze(con, cfg, keys, now, record=False, use_state=False)
        runs = analyze(con, cfg, keys, now)
        assert [r.refresh["mode"] for r in runs] == ["incremental", "incremental"]
        for ref, run in zip(reference, runs):
            assert_same(comparable(ref), comparable(run), run.experiment)
        assert snapshot(con) != before
    finally:
        con.close()
