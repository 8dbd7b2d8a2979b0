"""The scheduled service of one workspace: its APScheduler jobs and triggers, one pass at a time,
the workspace lock and the stop signals. `scheduler.schedule` and `scheduler.serve` run it (the module
docstring there describes the jobs, the one writer and how it stops)."""
from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
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

log = logging.getLogger("abproxy.scheduler")  # the service's log lines keep the scheduler's name

INGEST_ENV, ANALYZE_ENV = "ABPROXY_SCHEDULE_SECONDS", "ABPROXY_ANALYZE_SECONDS"


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
        if ws.config.engine == "duckdb":   # engine: spark reads an external source: nothing to ingest
            self.scheduler.add_job(self.run_pass, IntervalTrigger(seconds=self.ingest_every, timezone="UTC"),
                                   args=["ingest"], id="ingest", name="ingest new inbox files")
        self.scheduler.add_job(self.run_pass, self.analyze, args=["run"], id="analyze",
                               name="full pass: ingest, analyse, publish, notify",
                               next_run_time=dt.datetime.now(dt.timezone.utc))   # the start-up pass

    def describe(self) -> str:
        trigger = (f"every {_describe(self.analyze.interval.total_seconds())}"
                   if isinstance(self.analyze, IntervalTrigger) else f"cron '{self.ws.config.schedule.analyze_cron}' UTC")
        if self.ws.config.engine == "spark":
            return f"analysis on Spark (source external, no ingest), full pass {trigger}"
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


def acquire(ws: Workspace) -> WorkspaceLock | None:
    try:
        return WorkspaceLock(ws.lock_file).acquire()
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def mark_stale_jobs(ws: Workspace) -> None:
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


class Signals:
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

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def new_service(ws: Workspace, scheduler_class: type[BaseScheduler]) -> "Service | None":
    """The service with its jobs (None, after a one-line error, if the schedule is invalid); job runs
    left 'running' by a killed process are marked interrupted first."""
    try:
        service = Service(ws, scheduler_class)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    mark_stale_jobs(ws)
    return service
