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

import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import ConfigError, Schedule
from .jobs import JobResult, LockError, WorkspaceLock, mark_interrupted, run_job
from .notify import notify_changes
from .warehouse import WarehouseError
from .workspace import Workspace

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "report" / "app.py"   # the Streamlit entry, inside the package
INGEST_ENV, ANALYZE_ENV = "ABPROXY_SCHEDULE_SECONDS", "ABPROXY_ANALYZE_SECONDS"
STREAMLIT_STOP_SECONDS = 10.0


# --------------------------------------------------------------------------- triggers

def _env_seconds(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={text!r} must be a positive number of seconds")
    return value


def ingest_seconds(schedule: Schedule) -> float:
    """The ingest interval: $ABPROXY_SCHEDULE_SECONDS, else schedule.ingest_every_minutes."""
    return _env_seconds(INGEST_ENV) or schedule.ingest_every_minutes * 60


def analyze_trigger(schedule: Schedule) -> IntervalTrigger | CronTrigger:
    """An interval of $ABPROXY_ANALYZE_SECONDS if set, else the cron trigger of analyze_cron (UTC)."""
    seconds = _env_seconds(ANALYZE_ENV)
    if seconds:
        return IntervalTrigger(seconds=seconds, timezone="UTC")
    return CronTrigger.from_crontab(schedule.analyze_cron, timezone="UTC")


def _describe(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# --------------------------------------------------------------------------- the service

class Service:
    """The jobs of one workspace on one APScheduler scheduler. The caller holds the workspace lock."""

    def __init__(self, ws: Workspace, scheduler_class: type[BaseScheduler] = BlockingScheduler,
                 on_runs: Callable[..., Any] | None = notify_changes):
        self.ws = ws
        self.on_runs = on_runs
        self.stopping = threading.Event()
        self._done = threading.Event()
        sched = ws.config.schedule
        self.scheduler = scheduler_class(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(max_workers=1)},   # passes never overlap
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": sched.misfire_grace_seconds})
        self.ingest_every = ingest_seconds(sched)
        self.analyze = analyze_trigger(sched)
        self.scheduler.add_job(self.run_pass, IntervalTrigger(seconds=self.ingest_every, timezone="UTC"),
                               args=["ingest"], id="ingest", name="ingest new inbox files")
        self.scheduler.add_job(self.run_pass, self.analyze, args=["run"], id="analyze",
                               name="full pass: ingest, analyse, publish, notify",
                               next_run_time=dt.datetime.now(dt.timezone.utc))   # the start-up pass

    def describe(self) -> str:
        trigger = (f"every {_describe(self.analyze.interval.total_seconds())}"
                   if isinstance(self.analyze, IntervalTrigger) else f"cron '{self.ws.config.schedule.analyze_cron}' UTC")
        return f"ingest every {_describe(self.ingest_every)}, full pass {trigger}"

    def _reload(self) -> None:
        try:
            fresh = Workspace.open(self.ws.root)
        except ConfigError as exc:
            log.error("abproxy.yaml is invalid; keeping the last valid configuration:\n%s", exc)
            return
        except OSError as exc:
            log.error("cannot re-read abproxy.yaml (%s); keeping the last valid configuration", exc)
            return
        self.ws = fresh

    def run_pass(self, kind: str) -> JobResult | None:
        """One scheduled pass (None if skipped or crashed). Never raises: a failure is logged (and
        recorded in job_runs by run_job)."""
        if self.stopping.is_set():
            log.info("%s pass skipped: the scheduler is stopping", kind)
            return None
        self._reload()
        log.info("%s pass starting", kind)
        started = time.perf_counter()
        try:
            result = run_job(self.ws, kind, lock=False, on_runs=self.on_runs)
        except WarehouseError as exc:   # says what to do: one line per pass, no traceback
            log.error("%s pass failed: %s", kind, exc)
            return None
        except Exception:
            log.exception("%s pass failed", kind)
            return None
        took = time.perf_counter() - started
        if result.ok:
            log.info("%s pass %s ok in %.1fs", kind, result.job_id, took)
        else:
            log.warning("%s pass %s %s in %.1fs: %s", kind, result.job_id, result.status, took,
                        "; ".join(result.errors))
        return result

    def shutdown(self) -> None:
        """Stop starting passes, wait for the running one, shut the scheduler down. Idempotent;
        safe to call from another thread, even before `start` (it then waits for the start)."""
        self.stopping.set()
        while not self._done.is_set():
            try:
                self.scheduler.shutdown(wait=True)
            except SchedulerNotRunningError:
                time.sleep(0.05)
                continue
            self._done.set()

    def start(self) -> None:
        """Start the scheduler (a BlockingScheduler blocks here until shut down)."""
        if self.stopping.is_set():
            self._done.set()
            return
        self.scheduler.start()
        if not isinstance(self.scheduler, BackgroundScheduler):   # (a subclass of BlockingScheduler)
            self._done.set()


def _acquire(ws: Workspace) -> WorkspaceLock | None:
    try:
        return WorkspaceLock(ws.lock_file).acquire()
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _mark_interrupted(ws: Workspace) -> None:
    """job_runs rows left 'running' by a process that died (we hold the lock: nobody runs)."""
    if not ws.warehouse.exists():
        return
    from .warehouse import connect

    try:
        con = connect(ws.warehouse, ws.config.duckdb.memory_limit, ws.config.duckdb.threads)
        try:
            mark_interrupted(con)
        finally:
            con.close()
    except WarehouseError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("could not check job_runs for interrupted jobs")


class _Signals:
    """SIGTERM/SIGINT handlers for the life of a with-block (main thread only). The first signal
    calls `on_stop` (which must not block); a second one exits at once."""

    def __init__(self, on_stop: Callable[[], None]):
        self.on_stop = on_stop
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            log.warning("second %s: exiting now; the open transaction is rolled back", signal.Signals(signum).name)
            os._exit(128 + signum)
        self.received = signum
        log.info("%s received: stopping after the running pass (signal again to abort)",
                 signal.Signals(signum).name)
        self.on_stop()

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- abproxy schedule

def _new_service(ws: Workspace, scheduler_class: type[BaseScheduler]) -> "Service | None":
    """The service with its jobs (None, after a one-line error, if the schedule is invalid); job runs
    left 'running' by a killed process are marked interrupted first."""
    try:
        service = Service(ws, scheduler_class)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    _mark_interrupted(ws)
    return service


def schedule(ws: Workspace) -> int:
    """Run the scheduled service in the foreground until SIGTERM/SIGINT; 0 on a clean stop,
    1 if the workspace is locked by another process (or the schedule is invalid)."""
    lock = _acquire(ws)
    if lock is None:
        return 1
    stopper: list[threading.Thread] = []
    try:
        service = _new_service(ws, BlockingScheduler)
        if service is None:
            return 1

        def request_stop() -> None:   # from the signal handler: do the waiting in a thread
            thread = threading.Thread(target=service.shutdown, name="abproxy-stop", daemon=True)
            stopper.append(thread)
            thread.start()

        with _Signals(request_stop):
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
    lock = _acquire(ws)
    if lock is None:
        _remove_secrets(secrets)
        return 1
    stop = threading.Event()
    proc: subprocess.Popen | None = None
    service: Service | None = None
    try:
        service = _new_service(ws, BackgroundScheduler)
        if service is None:
            return 1
        with _Signals(stop.set):
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
