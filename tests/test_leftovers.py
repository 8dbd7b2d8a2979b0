"""Leftovers after crashes and a report service that cleans up after itself (issue 13, items 7, 9, 10):
serve binds 127.0.0.1 and Streamlit dies with it even on kill -9; stale `.tmp` snapshot files are
pruned; job rows left `running` are closed; a full disk, a damaged warehouse, a dangling snapshot
link and a directory in the snapshot's place each give one clear message and a consistent record."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from abproxy.jobs import run_job
from abproxy.scheduler import port_in_use, streamlit_command
from abproxy.simulate import ExperimentSpec, SimulationSpec, simulate
from abproxy.warehouse import WarehouseError, connect, open_snapshot, publish_snapshot
from abproxy.workspace import Workspace
from processes import free_port

START = dt.datetime(2026, 1, 5)
AS_OF = START + dt.timedelta(days=10)


def small_ws(root: Path, **config) -> Workspace:
    simulate(root, SimulationSpec(experiments=(ExperimentSpec("exp", units=400, days=7),), start=START))
    if config:
        data = yaml.safe_load((root / "abproxy.yaml").read_text())
        data.update(config)
        (root / "abproxy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return Workspace.open(root)


def job_rows(ws: Workspace) -> list[tuple]:
    con = connect(ws.warehouse, read_only=True)
    try:
        return con.execute("SELECT kind, status, errors FROM job_runs ORDER BY started_at").fetchall()
    finally:
        con.close()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- 7 and 9: serve


def test_the_report_binds_localhost_and_hides_tracebacks(tmp_path):
    from abproxy.cli import parser

    serve = parser().parse_args(["serve"])
    assert serve.address == "127.0.0.1"
    ws = small_ws(tmp_path / "ws")
    command = streamlit_command(ws, 8501, "127.0.0.1")
    assert command[command.index("--client.showErrorDetails") + 1] == "none"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[1:3] == ["-m", "abproxy.childguard"]


@pytest.mark.slow
def test_kill_9_of_serve_takes_streamlit_with_it(tmp_path):
    ws = small_ws(tmp_path / "ws")
    port = free_port()
    env = {**os.environ, "ABPROXY_SCHEDULE_SECONDS": "3600", "ABPROXY_ANALYZE_SECONDS": "3600"}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "abproxy.cli", "serve", "--workspace", str(ws.root),
                              "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail((tmp_path / "serve.log").read_text())
        [streamlit] = children(serve.pid)
        assert os.getpgid(streamlit) == streamlit, "streamlit runs in its own process group"
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        deadline = time.monotonic() + 20
        while alive(streamlit) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(streamlit), "streamlit outlived serve"
        deadline = time.monotonic() + 10
        while port_in_use(port, "127.0.0.1") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_in_use(port, "127.0.0.1"), "the port is still taken after serve was killed"
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()


def test_the_child_guard_refuses_to_start_an_orphan():
    done = subprocess.run([sys.executable, "-m", "abproxy.childguard", "1", "/bin/echo", "started"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "started" not in done.stdout


# --------------------------------------------------------------------------- 10: leftovers


def test_stale_tmp_snapshot_files_are_pruned(tmp_path):
    ws = small_ws(tmp_path / "ws")
    assert run_job(ws, "run", as_of=AS_OF, on_runs=None).ok
    versions = ws.snapshot.with_name(f".{ws.snapshot.name}.versions")
    stale = versions / "1-deadbeef.tmp"
    stale.write_bytes(b"half a snapshot")
    (versions / "1-deadbeef.tmp.wal").write_bytes(b"x")
    assert run_job(ws, "ingest", on_runs=None).ok
    assert sorted(p.suffix for p in versions.iterdir()) == [".duckdb"] * 2


def test_a_job_left_running_by_a_kill_is_marked_interrupted(tmp_path):
    ws = small_ws(tmp_path / "ws")
    con = connect(ws.warehouse)
    con.execute("INSERT INTO job_runs (job_id, kind, started_at, status) VALUES ('killed', 'run', ?, 'running')",
                [dt.datetime(2026, 1, 1)])
    con.close()
    assert run_job(ws, "ingest", on_runs=None).ok
    rows = dict((k, (s, e)) for k, s, e in job_rows(ws) if k)
    statuses = [s for _, s, _ in job_rows(ws)]
    assert statuses == ["interrupted", "ok"]
    assert "stopped before it finished" in job_rows(ws)[0][2]
    assert rows


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "tiny"
    if os.geteuid() != 0 or not _tmpfs(mount, "300k"):
        pytest.skip("needs root to mount a tiny tmpfs (a real full disk)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_publishing_fails_the_job_with_a_clear_message(tmp_path, tiny_disk):
    ws = small_ws(tmp_path / "ws", snapshot=str(tiny_disk / "report.duckdb"))
    result = run_job(ws, "run", as_of=AS_OF, on_runs=None)
    assert result.status == "failed"
    [message] = [e for e in result.errors if "snapshot" in e]
    assert "disk is full" in message and "free space" in message and "CHECKPOINT" not in message
    kind, status, errors = job_rows(ws)[-1]
    assert status == "failed" and "disk is full" in errors
    assert not list(tiny_disk.rglob("*.tmp")), "the half-written snapshot was removed"


def test_the_cli_prints_its_summary_and_exit_code_on_a_full_disk(tmp_path, tiny_disk):
    ws = small_ws(tmp_path / "ws", snapshot=str(tiny_disk / "report.duckdb"))
    done = subprocess.run([sys.executable, "-m", "abproxy.cli", "run", "--workspace", str(ws.root),
                           "--as-of", AS_OF.isoformat()], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "CHECKPOINT" not in done.stderr + done.stdout
    assert "disk is full" in done.stdout + done.stderr
    assert "file(s)" in done.stdout or "files" in done.stdout   # the ingest summary was printed


def test_a_truncated_warehouse_says_what_to_do(tmp_path):
    ws = small_ws(tmp_path / "ws")
    assert run_job(ws, "ingest", on_runs=None).ok
    data = ws.warehouse.read_bytes()
    ws.warehouse.write_bytes(data[: len(data) // 3])
    with pytest.raises(WarehouseError) as caught:
        run_job(ws, "run", as_of=AS_OF, on_runs=None)
    text = str(caught.value)
    assert "damaged" in text and ".broken" in text and "abproxy run" in text
    done = subprocess.run([sys.executable, "-m", "abproxy.cli", "run", "--workspace", str(ws.root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "damaged" in done.stderr


def test_a_dangling_snapshot_link_and_a_directory_in_its_place(tmp_path):
    ws = small_ws(tmp_path / "ws")
    assert run_job(ws, "run", as_of=AS_OF, on_runs=None).ok
    versions = ws.snapshot.with_name(f".{ws.snapshot.name}.versions")
    for version in versions.iterdir():
        version.unlink()
    with pytest.raises(WarehouseError, match="no longer exists.*abproxy run"):
        open_snapshot(ws.snapshot)
    assert run_job(ws, "ingest", on_runs=None).ok    # publishing repairs it
    open_snapshot(ws.snapshot).close()

    ws.snapshot.unlink()
    ws.snapshot.mkdir()
    with pytest.raises(WarehouseError, match="is a directory"):
        open_snapshot(ws.snapshot)
    result = run_job(ws, "ingest", on_runs=None)
    assert result.status == "failed" and any("is a directory" in e for e in result.errors)
    assert job_rows(ws)[-1][1] == "failed"


def test_publish_refuses_a_directory_without_a_traceback(tmp_path):
    con = connect(tmp_path / "w.duckdb")
    try:
        (tmp_path / "report.duckdb").mkdir()
        with pytest.raises(WarehouseError, match="set 'snapshot'"):
            publish_snapshot(con, tmp_path / "report.duckdb")
    finally:
        con.close()


def _report_text(ws: Workspace, monkeypatch) -> str:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ABPROXY_WORKSPACE", str(ws.root))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return "\n".join(str(el.value) for kind in ("title", "error", "markdown") for el in getattr(at, kind))


def test_the_report_explains_a_dangling_link_and_a_directory(tmp_path, monkeypatch):
    ws = small_ws(tmp_path / "ws")
    assert run_job(ws, "run", as_of=AS_OF, on_runs=None).ok
    for version in ws.snapshot.with_name(f".{ws.snapshot.name}.versions").iterdir():
        version.unlink()
    text = _report_text(ws, monkeypatch)
    assert "Welcome" not in text and "cannot be read" in text and "no longer exists" in text
    ws.snapshot.unlink()
    ws.snapshot.mkdir()
    text = _report_text(ws, monkeypatch)
    assert "Welcome" not in text and "is a directory" in text


def test_a_scheduled_pass_on_a_damaged_warehouse_logs_one_line(tmp_path, caplog):
    import logging

    from apscheduler.schedulers.background import BackgroundScheduler

    from abproxy.scheduler import Service

    ws = small_ws(tmp_path / "ws")
    assert run_job(ws, "ingest", on_runs=None).ok
    data = ws.warehouse.read_bytes()
    ws.warehouse.write_bytes(data[: len(data) // 3])
    caplog.set_level(logging.INFO, logger="abproxy")
    service = Service(ws, BackgroundScheduler, on_runs=None)
    assert service.run_pass("run") is None and service.run_pass("ingest") is None
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2 and all(r.exc_info is None for r in failures)
    assert all("damaged" in r.getMessage() for r in failures)
