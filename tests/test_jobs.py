"""The writing job (`jobs.run_job`): one pass ingests, analyses and publishes a snapshot; a second
writer is refused; a broken experiment fails alone and is recorded."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from abproxy.jobs import LockError, WorkspaceLock, run_job
from abproxy.simulate import ExperimentSpec, SimulationSpec, simulate
from abproxy.warehouse import SNAPSHOT_TABLES, connect, open_snapshot
from abproxy.workspace import Workspace

REPORT_TABLES = set(SNAPSHOT_TABLES) | {"experiments", "variants", "metrics", "snapshot_info"}


def _start() -> dt.datetime:
    """Exposures start 30 days ago so no simulated event lies in the future."""
    today = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=30)


def make_workspace(root: Path, *experiments: ExperimentSpec, edit=None) -> Workspace:
    simulate(root, SimulationSpec(experiments=experiments, start=_start()))
    if edit is not None:
        path = root / "abproxy.yaml"
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Workspace.open(root)


def add_broken(data: dict) -> None:
    """Two experiments that must fail alone: a raw-SQL metric reading a missing column, and an
    event metric aggregating a property column that no event file has."""
    data["metrics"]["broken_sql"] = {"type": "mean", "sql": "SELECT unit_id, nonexistent FROM events"}
    data["metrics"]["missing_prop"] = {"type": "mean", "event": "purchase", "aggregate": "sum",
                                       "column": "no_such_property"}
    base = data["experiments"]["good"]
    data["experiments"]["bad-sql"] = {**base, "primary": ["broken_sql"]}
    data["experiments"]["bad-column"] = {**base, "primary": ["missing_prop"]}


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws", ExperimentSpec("good", units=3000, days=7, spend_lift=0.3),
                          ExperimentSpec("flat", units=3000, days=7))


@pytest.mark.slow
def test_run_job_ingests_analyses_and_publishes(ws: Workspace):
    result = run_job(ws, "run", on_runs=None)
    assert result.ok, result.errors
    assert result.status == "ok" and result.errors == []
    assert result.ingest.files_loaded == 2
    assert result.ingest.rows_loaded > 6000
    assert {r.experiment: r.status for r in result.runs} == {"good": "ok", "flat": "ok"}
    assert all(r.verdict is not None for r in result.runs)

    con = open_snapshot(ws.snapshot)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert REPORT_TABLES <= tables
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        job = con.execute("SELECT job_id, kind, status, files_loaded, experiments_analyzed, finished_at "
                          "FROM job_runs").fetchall()
        assert job == [(result.job_id, "run", "ok", 2, 2, job[0][5])] and job[0][5] is not None
    finally:
        con.close()
    # A second pass loads nothing new, appends two more runs, and records its own job row.
    again = run_job(ws, "run", on_runs=None)
    assert again.ok and again.ingest.files_loaded == 0
    con = connect(ws.warehouse, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
        assert con.execute("SELECT count(*) FROM job_runs WHERE status = 'ok'").fetchone()[0] == 2
    finally:
        con.close()


def test_ingest_only_job_publishes_without_runs(ws: Workspace):
    result = run_job(ws, "ingest")
    assert result.ok and result.runs == [] and result.ingest.files_loaded == 2
    con = open_snapshot(ws.snapshot)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert con.execute("SELECT kind, status FROM job_runs").fetchall() == [("ingest", "ok")]
    finally:
        con.close()


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from abproxy.jobs import WorkspaceLock
    lock = WorkspaceLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    sys.stdin.read()          # hold the lock until the test closes our stdin
    lock.release()
""")


@pytest.mark.slow
def test_second_writer_is_refused_with_a_clear_message(ws: Workspace):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ws.lock_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError) as info:
            run_job(ws, "run")
        message = str(info.value)
        assert str(holder.pid) in message and str(ws.lock_file) in message
        assert "busy" in message and "stop it first" in message
        assert not ws.warehouse.exists(), "a refused writer must not touch the warehouse"
        cli = subprocess.run([sys.executable, "-m", "abproxy.cli", "run", "--workspace", str(ws.root)],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 1
        assert cli.stderr.strip().splitlines()[-1].startswith("error: workspace is busy")
        assert str(holder.pid) in cli.stderr
    finally:
        holder.stdin.close()
        holder.wait(30)
    # Once the holder is gone, the job runs and the lock file is free again.
    assert run_job(ws, "ingest").ok
    with WorkspaceLock(ws.lock_file):
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(ws: Workspace):
    ws.lock_file.parent.mkdir(parents=True, exist_ok=True)
    ws.lock_file.write_text("999999")      # left behind by a killed process (no flock held)
    assert run_job(ws, "ingest").ok


def test_a_broken_experiment_fails_alone_and_is_recorded(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=3000, days=7, spend_lift=0.3),
                        edit=add_broken)
    result = run_job(ws, "run", on_runs=None)
    by_key = {r.experiment: r for r in result.runs}
    assert set(by_key) == {"good", "bad-sql", "bad-column"}
    assert by_key["good"].status == "ok" and by_key["good"].verdict is not None
    assert by_key["bad-sql"].status == "failed" and "nonexistent" in by_key["bad-sql"].error
    assert by_key["bad-column"].status == "failed" and "no_such_property" in by_key["bad-column"].error
    assert result.status == "failed" and not result.ok
    assert result.ingest.files_loaded == 2
    assert any(e.startswith("bad-sql: ") for e in result.errors)
    assert any(e.startswith("bad-column: ") for e in result.errors)

    con = connect(ws.warehouse, read_only=True)
    try:
        runs = dict(con.execute("SELECT experiment, status FROM runs").fetchall())
        assert runs == {"good": "ok", "bad-sql": "failed", "bad-column": "failed"}
        error = con.execute("SELECT error FROM runs WHERE experiment = 'bad-sql'").fetchone()[0]
        assert "nonexistent" in error
        assert con.execute("SELECT count(*) FROM results WHERE experiment = 'good'").fetchone()[0] > 0
        status, analysed, errors = con.execute(
            "SELECT status, experiments_analyzed, errors FROM job_runs WHERE job_id = ?", [result.job_id]).fetchone()
        assert (status, analysed) == ("failed", 1)
        errors = json.loads(errors)
        assert len(errors) == 2 and any("nonexistent" in e for e in errors)
    finally:
        con.close()
    # The snapshot is still published, with the good experiment's run and the failures.
    snap = open_snapshot(ws.snapshot)
    try:
        assert snap.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0] == 1
        assert snap.execute("SELECT status FROM job_runs").fetchone()[0] == "failed"
    finally:
        snap.close()


@pytest.mark.slow
def test_cli_run_exit_code_says_whether_anything_failed(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws", ExperimentSpec("good", units=2000, days=7), edit=add_broken)
    done = subprocess.run([sys.executable, "-m", "abproxy.cli", "run", "--json", "--workspace", str(ws.root)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    payload = json.loads(done.stdout)
    assert payload["status"] == "failed" and len(payload["errors"]) == 2
