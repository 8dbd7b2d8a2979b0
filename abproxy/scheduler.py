"""The scheduled service: APScheduler jobs over the writing job, the workspace lock, signals.

`schedule(ws)` (the `abproxy schedule` command) runs in the foreground with a
`BlockingScheduler(timezone="UTC")`; `serve(ws, port, address)` runs the same jobs with a
`BackgroundScheduler` next to a `streamlit run app.py` subprocess.

Jobs
    * "ingest": every `schedule.ingest_every_minutes`, load new inbox files (`jobs.run_job` kind
      "ingest"; the report snapshot is republished).
    * "analyze": on `schedule.analyze_cron` (a 5-field crontab, UTC), a full pass (kind "run":
      ingest, analyse every running experiment, publish the snapshot, notify verdict changes).
      Its first run is at start-up.
    Job defaults: `coalesce=True` (missed runs collapse into one), `max_instances=1`,
    `misfire_grace_time=schedule.misfire_grace_seconds`. Both jobs share one worker thread, so
    two passes never write at the same time. `abproxy.yaml` is re-read before each pass (an
    invalid edit is logged and the last valid configuration kept; the timing needs a restart).
    A failing pass is logged and recorded in `job_runs`; it never stops the scheduler.

One writer
    The scheduler takes the workspace lock (`jobs.WorkspaceLock`) before it starts and holds it
    for its whole life; its passes run with `run_job(..., lock=False)`. A second `abproxy
    schedule`, `serve` or `run` on the same workspace refuses at once (exit code 1, one line
    naming the lock file and the pid holding it).

Stopping
    SIGTERM or SIGINT (Ctrl-C): no new pass starts, the running pass finishes (each inbox file
    and each analysis run is its own transaction, so even a hard kill leaves whole files and
    whole runs only), the scheduler shuts down (`shutdown(wait=True)`), the lock is released and
    the exit code is 0. A second signal while waiting exits at once (code 128 + signal number):
    the open transaction is then rolled back by DuckDB when the warehouse is next opened.

Environment variables (for tests and demos)
    ABPROXY_SCHEDULE_SECONDS   float: the ingest interval in seconds (instead of
                               `schedule.ingest_every_minutes`).
    ABPROXY_ANALYZE_SECONDS    float: run the full pass every this many seconds instead of on
                               the `schedule.analyze_cron` cron trigger.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from .service import (ANALYZE_ENV, INGEST_ENV, Service, Signals, acquire, analyze_trigger,  # noqa: F401
                      ingest_seconds, new_service)  # (the trigger names are re-exported)
from .workspace import Workspace

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "report" / "app.py"   # the Streamlit entry, inside the package
STREAMLIT_STOP_SECONDS = 10.0


def schedule(ws: Workspace) -> int:
    """Run the scheduled service in the foreground until SIGTERM/SIGINT; 0 on a clean stop,
    1 if the workspace is locked by another process (or the schedule is invalid)."""
    lock = acquire(ws)
    if lock is None:
        return 1
    stopper: list[threading.Thread] = []
    try:
        service = new_service(ws, BlockingScheduler)
        if service is None:
            return 1

        def request_stop() -> None:   # from the signal handler: do the waiting in a thread
            thread = threading.Thread(target=service.shutdown, name="abproxy-stop", daemon=True)
            stopper.append(thread)
            thread.start()

        with Signals(request_stop):
            log.info("abproxy scheduler (pid %d) on %s: %s; stop with Ctrl-C or SIGTERM",
                     os.getpid(), ws.root, service.describe())
            service.start()            # blocks until shutdown
            for thread in stopper:     # the running pass has finished once shutdown returned
                thread.join()
        log.info("scheduler stopped")
        return 0
    finally:
        lock.release()


# --------------------------------------------------------------------------- abproxy serve

def port_in_use(port: int, address: str = "0.0.0.0") -> bool:
    """True if a server could not listen on (address, port) now (someone else listens there)."""
    try:
        infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False   # let streamlit report the bad address
    for family, kind, proto, _, sockaddr in infos[:1]:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as tornado does
            try:
                sock.bind(sockaddr)
                sock.listen(1)
            except OSError:
                return True
    return False


def streamlit_command(ws: Workspace, port: int, address: str, app: Path = APP,
                      secrets: Path | None = None) -> list[str]:
    """Streamlit, started through `abproxy.childguard` so that it dies with this process (even on a
    kill -9 of serve), with error details (tracebacks) hidden from readers."""
    command = [sys.executable, "-m", "abproxy.childguard", str(os.getpid()),
               sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--client.showErrorDetails", "none",
               "--client.toolbarMode", "minimal"]
    if secrets is not None:
        command += ["--secrets.files", str(secrets)]
    return command + ["--", "--workspace", str(ws.root)]


def _stop_process(proc: subprocess.Popen) -> None:
    """Stop Streamlit and anything it started (its own process group)."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(STREAMLIT_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("streamlit did not stop within %.0fs; killing it", STREAMLIT_STOP_SECONDS)
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        proc.send_signal(sig)


def _auth_secrets(ws: Workspace, port: int, address: str) -> Path | None:
    """The private Streamlit secrets file for the login, or None without `auth:`; raises
    AuthSetupError if a secret is missing."""
    if ws.config.auth is None:
        if address not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the report listens on %s without a login: anyone who can reach this port can read "
                        "it; configure 'auth:' in abproxy.yaml or put it behind a proxy that logs users in",
                        address)
        return None
    from .access import write_secrets

    return write_secrets(ws.config.auth, address, port)


def serve(ws: Workspace, port: int = 8501, address: str = "127.0.0.1", app: Path | str | None = None) -> int:
    """The scheduler (in a background thread, same jobs and lock as `schedule`) and the Streamlit
    report (`streamlit run app.py` as a subprocess) together, until SIGTERM/SIGINT: 0 on a clean
    stop; 1 if the port is taken, the workspace is locked, or Streamlit exits by itself."""
    if port_in_use(port, address):
        print(f"error: port {port} is in use; pass --port N", file=sys.stderr)
        return 1
    app = Path(app) if app else APP
    if not app.exists():
        print(f"error: the report app {app} is missing; serve needs a source checkout of abproxy", file=sys.stderr)
        return 1
    from .access import AuthSetupError

    try:
        secrets = _auth_secrets(ws, port, address)
    except AuthSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lock = acquire(ws)
    if lock is None:
        _remove_secrets(secrets)
        return 1
    stop = threading.Event()
    proc: subprocess.Popen | None = None
    service: Service | None = None
    try:
        service = new_service(ws, BackgroundScheduler)
        if service is None:
            return 1
        with Signals(stop.set):
            service.start()
            log.info("abproxy scheduler (pid %d) on %s: %s", os.getpid(), ws.root, service.describe())
            env = {**os.environ, "ABPROXY_WORKSPACE": str(ws.root)}
            proc = subprocess.Popen(streamlit_command(ws, port, address, app, secrets), env=env,
                                    process_group=0)
            host = "localhost" if address in ("0.0.0.0", "::", "") else address
            print(f"abproxy report: http://{host}:{port}  (scheduler running; Ctrl-C stops both)", flush=True)
            code = 0
            while not stop.wait(0.5):
                if proc.poll() is not None:
                    if stop.wait(1.0):   # the same Ctrl-C reached streamlit first
                        break
                    print(f"error: streamlit exited with code {proc.returncode}; stopping the scheduler",
                          file=sys.stderr)
                    code = 1
                    break
            log.info("stopping: streamlit, then the scheduler after the running pass")
            _stop_process(proc)
            service.shutdown()
        log.info("stopped")
        return code
    finally:
        if proc is not None:
            _stop_process(proc)
        if service is not None and service.scheduler.running:
            service.shutdown()
        lock.release()
        _remove_secrets(secrets)


def _remove_secrets(secrets: Path | None) -> None:
    if secrets is not None:
        secrets.unlink(missing_ok=True)
        try:
            secrets.parent.rmdir()
        except OSError:
            pass
