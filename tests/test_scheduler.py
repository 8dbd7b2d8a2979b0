"""The scheduled service with the real APScheduler: passes run and are recorded, never overlap,
a failing experiment is isolated, SIGTERM mid-pass leaves a consistent warehouse, a second
scheduler is refused, readers of the published snapshot never see a partial one, and `serve`
runs the scheduler next to Streamlit. Intervals are shortened with ABPROXY_SCHEDULE_SECONDS /
ABPROXY_ANALYZE_SECONDS; every wait polls with a generous deadline."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import duckdb
import pytest
import yaml
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from abproxy.config import Schedule
from abproxy.jobs import WorkspaceLock, run_job
from abproxy.scheduler import APP, Service, analyze_trigger, ingest_seconds, port_in_use, schedule
from abproxy.simulate import ExperimentSpec, SimulationSpec, simulate
from abproxy.warehouse import SNAPSHOT_TABLES, WarehouseError, connect, open_snapshot
from abproxy.workspace import Workspace
from processes import free_port

REPORT_TABLES = set(SNAPSHOT_TABLES) | {"experiments", "variants", "metrics", "snapshot_info"}
START_TIMEOUT = 120      # an idle 2-core machine needs a few seconds; a loaded CI box much more
STOP_TIMEOUT = 120


# --------------------------------------------------------------------------- helpers

def _start() -> dt.datetime:
    today = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=30)


def make_workspace(root: Path, *experiments: ExperimentSpec, files_per_kind: int = 1, broken: bool = False) -> Workspace:
    simulate(root, SimulationSpec(experiments=experiments, start=_start(), files_per_kind=files_per_kind))
    if broken:
        path = root / "abproxy.yaml"
        data = yaml.safe_load(path.read_text())
        data["metrics"]["broken_sql"] = {"type": "mean", "sql": "SELECT unit_id, nonexistent FROM events"}
        first = next(iter(data["experiments"].values()))
        data["experiments"]["bad-sql"] = {**first, "primary": ["broken_sql"]}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Workspace.open(root)


class Scheduler:
    """`abproxy schedule` (or any command) as a subprocess, logging to a file."""

    def __init__(self, ws: Workspace, log: Path, ingest_s: float = 3600, analyze_s: float = 3600,
                 argv: list[str] | None = None):
        self.log = log
        env = {**os.environ, "ABPROXY_SCHEDULE_SECONDS": str(ingest_s), "ABPROXY_ANALYZE_SECONDS": str(analyze_s),
               "PYTHONUNBUFFERED": "1"}
        argv = argv or [sys.executable, "-m", "abproxy.cli", "schedule", "--workspace", str(ws.root)]
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.handle, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = START_TIMEOUT,
                 every: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"process exited ({self.proc.returncode}) while waiting for {what}:\n{self.text()}")
            time.sleep(every)
        pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{self.text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not stop within {timeout}s after {signal.Signals(sig).name}:\n{self.text()[-4000:]}")

    def cleanup(self) -> None:
        """After a failed test: stop it gracefully if possible (serve must stop its Streamlit child)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.handle.close()


@pytest.fixture()
def spawn(tmp_path: Path):
    started: list[Scheduler] = []

    def make(ws: Workspace, name: str = "schedule", **kw) -> Scheduler:
        s = Scheduler(ws, tmp_path / f"{name}.log", **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.cleanup()


@pytest.fixture(scope="module")
def big_template(tmp_path_factory) -> Path:
    """A workspace whose start-up pass takes a few seconds (12 files, ~0.6M events), simulated
    once per module; tests copy it."""
    root = tmp_path_factory.mktemp("big") / "ws"
    simulate(root, SimulationSpec(experiments=(ExperimentSpec("big", units=60_000, days=7),), start=_start(),
                                  files_per_kind=6))
    return root


def copy_workspace(template: Path, root: Path) -> Workspace:
    shutil.copytree(template, root)
    return Workspace.open(root)


def snapshot_jobs(ws: Workspace) -> list[tuple]:
    """(kind, status, started_at, finished_at) of job_runs in the published snapshot ([] if none yet)."""
    try:
        con = open_snapshot(ws.snapshot)
    except (WarehouseError, duckdb.Error):
        return []
    try:
        return con.execute("SELECT kind, status, started_at, finished_at FROM job_runs ORDER BY started_at").fetchall()
    finally:
        con.close()


def finished(ws: Workspace, kind: str) -> int:
    return sum(1 for k, status, _, end in snapshot_jobs(ws) if k == kind and end is not None)


def assert_no_overlap(rows: list[tuple]) -> None:
    """rows: (started_at, finished_at), any order: each pass ends before the next begins."""
    rows = sorted(rows)
    assert all(end is not None for _, end in rows), rows
    for (s1, e1), (s2, _) in zip(rows, rows[1:]):
        assert e1 <= s2, f"passes overlap: {s1}–{e1} and {s2}"


def assert_consistent(ws: Workspace, running_ok: bool = False) -> None:
    """Every loaded file has exactly its rows; no row belongs to a file that is not loaded; no job
    is left 'running' (unless `running_ok`: right after a hard kill)."""
    con = connect(ws.warehouse, read_only=True)
    try:
        for kind in ("exposures", "events"):
            bad = con.execute(f"""
                SELECT f.path, f.rows_loaded, count(t.file_id) FROM files f
                LEFT JOIN {kind} t ON t.file_id = f.file_id
                WHERE f.kind = '{kind}' AND f.status = 'loaded'
                GROUP BY f.path, f.rows_loaded HAVING count(t.file_id) <> f.rows_loaded""").fetchall()
            assert bad == [], f"{kind}: loaded files whose rows do not match: {bad}"
            orphans = con.execute(f"""SELECT count(*) FROM {kind} WHERE file_id IS NULL OR file_id NOT IN
                                      (SELECT file_id FROM files WHERE status = 'loaded')""").fetchone()[0]
            assert orphans == 0, f"{kind}: {orphans} rows of no loaded file"
        if not running_ok:
            assert con.execute("SELECT count(*) FROM job_runs WHERE status = 'running'").fetchone()[0] == 0
    finally:
        con.close()


# --------------------------------------------------------------------------- tests

def test_triggers_come_from_the_config_unless_the_environment_overrides_them(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.delenv("ABPROXY_SCHEDULE_SECONDS", raising=False)
    monkeypatch.delenv("ABPROXY_ANALYZE_SECONDS", raising=False)
    sched = Schedule(ingest_every_minutes=15, analyze_cron="30 2 * * *", misfire_grace_seconds=60)
    assert ingest_seconds(sched) == 900
    cron = analyze_trigger(sched)
    assert isinstance(cron, CronTrigger) and str(cron.timezone) == "UTC"
    first = cron.get_next_fire_time(None, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    assert (first.hour, first.minute) == (2, 30)
    monkeypatch.setenv("ABPROXY_SCHEDULE_SECONDS", "0.5")
    monkeypatch.setenv("ABPROXY_ANALYZE_SECONDS", "2")
    assert ingest_seconds(sched) == 0.5
    interval = analyze_trigger(sched)
    assert isinstance(interval, IntervalTrigger) and interval.interval.total_seconds() == 2

    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=200, days=7))
    service = Service(ws, BackgroundScheduler)
    service.scheduler.start(paused=True)        # job defaults apply once started; paused: nothing runs
    try:
        jobs = {j.id: j for j in service.scheduler.get_jobs()}
    finally:
        service.scheduler.shutdown()
    assert set(jobs) == {"ingest", "analyze"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 300)
    assert jobs["analyze"].args == ("run",) and jobs["ingest"].args == ("ingest",)
    assert jobs["analyze"].next_run_time <= dt.datetime.now(dt.timezone.utc), "a full pass at start-up"

    monkeypatch.setenv("ABPROXY_ANALYZE_SECONDS", "soon")
    assert schedule(ws) == 1
    assert "ABPROXY_ANALYZE_SECONDS='soon' is not a number" in capsys.readouterr().err
    with WorkspaceLock(ws.lock_file):     # the refused start released the lock
        pass


@pytest.mark.slow
def test_scheduled_passes_run_isolate_a_failing_experiment_and_stop_cleanly(tmp_path: Path, spawn):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=2000, days=7), broken=True)
    s = spawn(ws, ingest_s=0.5, analyze_s=2)
    s.wait_for("two full passes and two ingest passes",
               lambda: finished(ws, "run") >= 2 and finished(ws, "ingest") >= 2, every=0.25)
    assert s.stop() == 0, s.text()
    log = s.text()
    assert "SIGTERM received" in log and "scheduler stopped" in log
    assert re.search(r"run pass \w+ failed in [0-9.]+s: bad-sql: ", log), "failures are logged"
    with WorkspaceLock(ws.lock_file):      # released
        pass

    assert_consistent(ws)
    con = connect(ws.warehouse, read_only=True)
    try:
        jobs = con.execute("SELECT kind, status, started_at, finished_at, errors FROM job_runs").fetchall()
        assert_no_overlap([(start, end) for _, _, start, end, _ in jobs])
        runs = [j for j in jobs if j[0] == "run"]
        assert len(runs) >= 2 and all(j[1] == "failed" for j in runs), runs
        assert all(any(e.startswith("bad-sql: ") for e in json.loads(j[4])) for j in runs)
        assert all(j[1] == "ok" for j in jobs if j[0] == "ingest")
        by_status = dict(con.execute("SELECT experiment || ':' || status, count(*) FROM runs GROUP BY ALL").fetchall())
        assert by_status.get("good:ok", 0) >= 2 and by_status.get("bad-sql:failed", 0) >= 2
        assert "good:failed" not in by_status and "bad-sql:ok" not in by_status
        assert con.execute("SELECT count(*) FROM runs WHERE experiment = 'bad-sql' AND error NOT LIKE '%nonexistent%'"
                           ).fetchone()[0] == 0
    finally:
        con.close()


@pytest.mark.slow
def test_a_second_scheduler_is_refused(tmp_path: Path, spawn):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=1000, days=7))
    first = spawn(ws)
    first.wait_for("the lock", lambda: ws.lock_file.exists() and ws.lock_file.read_text().strip() == str(first.proc.pid))
    second = subprocess.run([sys.executable, "-m", "abproxy.cli", "schedule", "--workspace", str(ws.root)],
                            capture_output=True, text=True, timeout=START_TIMEOUT)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "abproxy.lock" in lines[0] and str(first.proc.pid) in lines[0] and "busy" in lines[0]
    first.wait_for("the start-up pass", lambda: finished(ws, "run") >= 1)
    assert first.stop(signal.SIGINT) == 0, first.text()
    # Free again: a one-off pass works.
    assert run_job(ws, "ingest", on_runs=None).ok


@pytest.mark.slow
def test_passes_never_overlap_even_when_slower_than_their_interval(tmp_path: Path, monkeypatch, caplog):
    """In-process: every pass sleeps longer than both intervals; max_instances=1 and the single
    worker keep them strictly one at a time (skipped runs are logged by APScheduler)."""
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=1000, days=7))
    monkeypatch.setenv("ABPROXY_SCHEDULE_SECONDS", "0.2")
    monkeypatch.setenv("ABPROXY_ANALYZE_SECONDS", "0.5")
    state = {"active": 0, "max": 0, "passes": []}
    guard = threading.Lock()

    class Slow(Service):
        def run_pass(self, kind: str):
            with guard:
                state["active"] += 1
                state["max"] = max(state["max"], state["active"])
            try:
                time.sleep(0.6)
                result = super().run_pass(kind)
                if result is not None:
                    state["passes"].append(kind)
                return result
            finally:
                with guard:
                    state["active"] -= 1

    caplog.set_level(logging.WARNING, logger="apscheduler")
    with WorkspaceLock(ws.lock_file):
        service = Slow(ws, BackgroundScheduler, on_runs=None)
        service.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not (state["passes"].count("ingest") >= 2 and "run" in state["passes"]):
            time.sleep(0.1)
        service.shutdown()
    assert not service.scheduler.running
    assert state["max"] == 1
    assert state["passes"][0] == "run", "the start-up pass is a full pass"
    assert state["passes"].count("ingest") >= 2
    assert "maximum number of running instances reached" in caplog.text
    con = connect(ws.warehouse, read_only=True)
    try:
        rows = con.execute("SELECT started_at, finished_at FROM job_runs").fetchall()
    finally:
        con.close()
    assert len(rows) == len(state["passes"])
    assert_no_overlap(rows)


@pytest.mark.slow
def test_sigterm_mid_pass_leaves_the_warehouse_consistent(tmp_path: Path, spawn, big_template):
    ws = copy_workspace(big_template, tmp_path / "ws")
    s = spawn(ws)
    s.wait_for("the start-up pass to start", lambda: "run pass starting" in s.text(), every=0.05)
    assert s.stop(signal.SIGTERM) == 0, s.text()
    log = s.text()
    done = re.search(r"run pass \w+ ok in", log)
    assert done, log
    assert log.index("run pass starting") < log.index("SIGTERM received") < done.start(), "the signal arrived mid-pass"
    assert "scheduler stopped" in log
    assert_consistent(ws)
    con = connect(ws.warehouse, read_only=True)
    try:
        assert con.execute("SELECT kind, status FROM job_runs").fetchall() == [("run", "ok")]
        loaded = con.execute("SELECT count(*) FROM files WHERE status = 'loaded'").fetchone()[0]
    finally:
        con.close()
    assert loaded == 12, "the pass finished before the scheduler stopped"
    again = run_job(ws, "run", on_runs=None)                 # the next pass completes
    assert again.ok, again.errors
    assert again.ingest.files_loaded == 0 and again.runs[0].status == "ok"


@pytest.mark.slow
def test_killed_mid_pass_the_next_scheduler_recovers(tmp_path: Path, spawn, big_template):
    """A hard kill (no chance to finish) mid-ingest: each file is its own transaction, so the
    warehouse holds whole files only; the next scheduler marks the dead pass interrupted and
    loads the rest."""
    ws = copy_workspace(big_template, tmp_path / "ws")
    s = spawn(ws, name="killed")
    s.wait_for("the second file to be loading", lambda: s.text().count("loading") >= 2, every=0.05)
    assert s.stop(signal.SIGKILL) == -signal.SIGKILL
    assert_consistent(ws, running_ok=True)
    con = connect(ws.warehouse, read_only=True)
    try:
        assert con.execute("SELECT status FROM job_runs").fetchall() == [("running",)]
        partial = con.execute("SELECT count(*) FROM files WHERE status = 'loaded'").fetchone()[0]
    finally:
        con.close()
    assert partial < 12
    again = spawn(ws, name="again")
    again.wait_for("the start-up pass", lambda: finished(ws, "run") >= 1, every=0.25)
    assert again.stop() == 0, again.text()
    assert "marked 1 job(s) left running" in again.text()
    assert_consistent(ws)
    con = connect(ws.warehouse, read_only=True)
    try:
        assert sorted(con.execute("SELECT status FROM job_runs").fetchall()) == [("interrupted",), ("ok",)]
        assert con.execute("SELECT count(*) FROM files WHERE status = 'loaded'").fetchone()[0] == 12
    finally:
        con.close()


def _drop_events(ws: Workspace, i: int) -> str:
    """Write a small events CSV into the inbox atomically (a .tmp name is ignored until renamed)."""
    when = _start() + dt.timedelta(days=2, minutes=i)
    rows = ["unit_id,event,occurred_at,value,event_id"]
    rows += [f"good-{u},purchase,{when:%Y-%m-%d %H:%M:%S},{10 + u},drop{i}-{u}" for u in range(50)]
    final = ws.inbox / "events" / f"drop-{i:03d}.csv"
    tmp = final.with_name(final.name + ".tmp")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.rename(final)
    return f"events/{final.name}"


@pytest.mark.slow
def test_snapshot_readers_never_see_a_partial_snapshot(tmp_path: Path, spawn):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=2000, days=7),
                        ExperimentSpec("other", units=2000, days=7, spend_lift=0.2))
    s = spawn(ws, ingest_s=0.3, analyze_s=1.0)
    s.wait_for("the first snapshot", lambda: finished(ws, "run") >= 1, every=0.2)

    # Read in a tight loop for at least 3 s, 100 opens and 3 snapshots published meanwhile
    # (a DuckDB connect costs 20-60 ms here, depending on the machine's load), dropping new files.
    opens, failures, published, counts, dropped = 0, [], set(), [], []
    started = time.monotonic()
    next_drop = started
    while True:
        elapsed = time.monotonic() - started
        if (elapsed >= 3 and opens >= 100 and len(published) >= 3) or elapsed > 60:
            break
        if time.monotonic() >= next_drop and len(dropped) < 6:
            dropped.append(_drop_events(ws, len(dropped)))
            next_drop += 0.5
        try:
            con = open_snapshot(ws.snapshot)
            try:
                tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
                missing = REPORT_TABLES - tables
                if missing:
                    failures.append(f"missing tables {sorted(missing)}")
                counts.append(con.execute("SELECT count(*) FROM runs").fetchone()[0])
                published.add(con.execute("SELECT published_at FROM snapshot_info").fetchone()[0])
            finally:
                con.close()
            opens += 1
        except Exception as exc:     # the point of the test: this never happens
            failures.append(f"{type(exc).__name__}: {exc}")
    assert failures == [], failures[:5]
    assert opens >= 100 and len(published) >= 3, (opens, len(published))
    assert counts == sorted(counts), "the ledger only grows from one snapshot to the next"

    def all_loaded() -> bool:
        try:
            con = open_snapshot(ws.snapshot)
        except (WarehouseError, duckdb.Error):
            return False
        try:
            got = {r[0] for r in con.execute("SELECT path FROM files WHERE status = 'loaded'").fetchall()}
        finally:
            con.close()
        return set(dropped) <= got

    s.wait_for("the dropped files to be loaded", all_loaded, every=0.2)
    assert s.stop() == 0, s.text()
    assert_consistent(ws)


STUB_APP = 'import streamlit as st\nst.write("abproxy test stub")\n'
SERVE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from abproxy.logs import setup_logging
    from abproxy.scheduler import serve
    from abproxy.workspace import Workspace
    setup_logging()
    sys.exit(serve(Workspace.open(sys.argv[1]), int(sys.argv[2]), "127.0.0.1", app=Path(sys.argv[3])))
""")


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


@pytest.mark.slow
def test_serve_refuses_a_port_in_use(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=500, days=7))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert port_in_use(port, "127.0.0.1")
        done = subprocess.run([sys.executable, "-m", "abproxy.cli", "serve", "--workspace", str(ws.root),
                               "--port", str(port), "--address", "127.0.0.1"],
                              capture_output=True, text=True, timeout=START_TIMEOUT)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: port {port} is in use; pass --port N"
    assert not ws.lock_file.exists() or ws.lock_file.read_text() == "", "refused before taking the lock"
    assert not port_in_use(port, "127.0.0.1")


@pytest.mark.slow
def test_serve_runs_scheduler_and_streamlit_and_stops_both(tmp_path: Path, spawn):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=1000, days=7))
    app = APP
    if not app.exists():                      # app.py is written elsewhere; a stub serves the same check
        app = tmp_path / "stub_app.py"
        app.write_text(STUB_APP)
    port = free_port()
    s = spawn(ws, name="serve", ingest_s=1, analyze_s=3600,
              argv=[sys.executable, "-c", SERVE, str(ws.root), str(port), str(app)])
    s.wait_for("streamlit's health endpoint", lambda: _health(port) == "ok", every=0.5)
    s.wait_for("the scheduler's passes", lambda: finished(ws, "run") >= 1 and finished(ws, "ingest") >= 1, every=0.25)
    assert f"abproxy report: http://127.0.0.1:{port}" in s.text()
    assert ws.lock_file.read_text().strip() == str(s.proc.pid), "serve holds the workspace lock"
    assert s.stop() == 0, s.text()
    assert _health(port) is None and not port_in_use(port, "127.0.0.1"), "streamlit stopped too"
    with WorkspaceLock(ws.lock_file):
        pass
    assert_consistent(ws)
