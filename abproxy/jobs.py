"""The writing job: workspace lock, ingest → analyze → publish snapshot, recorded in `job_runs`.

Every command that writes the warehouse goes through `run_job`, so there is exactly one writer:
the workspace lock (a lock file holding the pid, guarded by flock) makes a second writer refuse.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from .errors import LockError, UnknownExperimentError
from .engines import open_engine
from .ledger import dumps, error_text, last_lineage, record_registry_writes
from .warehouse import WarehouseError, connect, damaged_message, open_snapshot, publish_snapshot, seal
from .workspace import Workspace

if TYPE_CHECKING:  # pragma: no cover - the analysis (pandas, scipy, statsmodels) is imported when a pass analyses
    from .ingest import IngestSummary
    from .records import AnalysisRun

log = logging.getLogger(__name__)
JobKind = Literal["ingest", "analyze", "run"]


class WorkspaceLock:
    """An exclusive, process-wide lock on a workspace. The file holds the owner's pid; a lock left
    by a dead process is stale and taken over (flock is released by the kernel when a process dies)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def acquire(self) -> "WorkspaceLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise LockError(f"workspace is busy: abproxy process {owner} holds {self.path} (a running "
                            "'abproxy schedule' or 'serve'?); stop it first, or use the read-only commands "
                            "(history, diff, models, report)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "WorkspaceLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@dataclass
class JobResult:
    job_id: str
    kind: str
    status: str = "ok"
    ingest: IngestSummary | None = None
    runs: list["AnalysisRun"] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    registry_writes: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def analysable(ws: Workspace, only: list[str] | None = None) -> list[str]:
    """Experiments a pass analyses: running ones, and shipped ones that keep a holdback."""
    if only:
        unknown = [k for k in only if k not in ws.config.experiments]
        if unknown:
            known = ", ".join(ws.config.experiments) or "none"
            raise UnknownExperimentError(f"unknown experiment '{unknown[0]}' (known: {known})")
        return list(only)
    return [k for k, e in ws.config.experiments.items()
            if e.status == "running" or (e.status == "shipped" and e.holdback)]


def _notify(ws: Workspace, runs: list["AnalysisRun"]) -> Any:
    """`notify.notify_changes`, imported when a pass has runs to tell about (urllib, not at start-up)."""
    from .notify import notify_changes

    return notify_changes(ws, runs)


def run_job(ws: Workspace, kind: JobKind = "run", as_of: dt.datetime | None = None,
            experiments: list[str] | None = None, lock: bool = True, progress: bool = False,
            full: bool = False, on_runs: Callable[[Workspace, list["AnalysisRun"]], Any] | None = _notify) -> JobResult:
    """One pass of the writing job, recorded in job_runs; the snapshot is republished at the end.
    `on_runs(ws, runs)` is called after the snapshot is published (default: notifications of
    verdict changes, `notify.notify_changes`; pass None for none)."""
    keys = analysable(ws, experiments) if kind != "ingest" else []
    if keys and ws.config.uses_mlflow():
        from .registry import require_client

        require_client()          # one clear line (exit 2) before anything runs
    guard = WorkspaceLock(ws.lock_file) if lock else None
    if guard:
        guard.acquire()
    try:
        return _run_locked(ws, kind, as_of, keys, progress, on_runs, full)
    finally:
        if guard:
            guard.release()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _run_locked(ws, kind, as_of, keys, progress, on_runs, full=False) -> JobResult:
    cfg = ws.config
    result = JobResult(uuid.uuid4().hex[:12], kind)
    con = connect(ws.warehouse, cfg.duckdb.memory_limit, cfg.duckdb.threads)
    import duckdb   # imported by connect (not at start-up)

    try:
        try:
            mark_interrupted(con)
            con.execute("INSERT INTO job_runs (job_id, kind, started_at, status) VALUES (?, ?, ?, 'running')",
                        [result.job_id, kind, _now()])
        except duckdb.Error as exc:   # the file opened but its tables cannot be read: damaged
            raise WarehouseError(damaged_message(ws.warehouse, exc)) from None
        try:
            if kind in ("ingest", "run") and cfg.engine == "duckdb":   # spark: the source is external
                from .ingest import Limits, ingest

                result.ingest = ingest(con, ws.inbox, progress=progress, limits=Limits.from_config(cfg),
                                       max_future=dt.timedelta(minutes=cfg.health.max_future_minutes))
                result.errors += result.ingest.problems()
            if kind in ("analyze", "run"):
                from .analysis import analyze

                resolutions, registry = _resolve_lineage(ws, con, keys)
                engine = open_engine(cfg, ws.root, con)   # spark: a session reading `source`
                seal(con)   # metric SQL runs next: no file, URL or extension access from here on
                as_of = as_of or _now()   # after the ingest; the snapshot's previews use the same time
                result.runs = analyze(con, cfg, keys, as_of, job_id=result.job_id, full=full,
                                      lineage=resolutions, engine=engine)
                result.errors += [f"{r.experiment}: {r.error}" for r in result.runs if r.status != "ok"]
                result.registry_writes = _write_back(ws, con, result.runs, registry)
            result.status = "failed" if result.errors else "ok"
        except BaseException as exc:
            result.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            result.errors.append(_explain(exc, ws))
            raise
        finally:
            _finish(con, result)
            _publish(con, ws, result, kind, as_of or _now())
        if on_runs and result.runs:
            on_runs(ws, result.runs)
        return result
    finally:
        con.close()


def _previews(ws: Workspace, con, kind: str, as_of: dt.datetime):
    """The Metrics catalog's preview panels: computed by analysing passes, carried over from the
    published snapshot by ingest-only passes (so a pass costs what it must)."""
    from .preview import previews_frame

    if kind != "ingest":
        from .sources import reading
        from .state import current_sources

        try:   # the per-unit states the pass just brought to `as_of`: no scan of the events per metric
            with reading(current_sources(con, ws.config, list(ws.config.experiments), as_of)):
                return previews_frame(con, ws.config, as_of)
        except Exception:  # a preview never breaks the pass; the page says it is missing
            log.warning("metric previews could not be computed", exc_info=True)
    try:
        old = open_snapshot(ws.snapshot)
    except Exception:
        old = None
    if old is not None:
        try:
            return old.execute("SELECT * FROM metric_previews").df()
        except Exception:
            pass
        finally:
            old.close()
    from .preview import empty_previews

    return empty_previews()


def _resolve_lineage(ws: Workspace, con, keys: list[str]):
    """Registry lineage of the experiments naming MLflow references (none: ({}, None))."""
    cfg = ws.config
    if not cfg.uses_mlflow():
        return {}, None
    from .registry import resolve

    previous = {k: last_lineage(con, k) for k in keys}
    return resolve(cfg, ws.root, keys, previous, _now())


def _write_back(ws: Workspace, con, runs: list["AnalysisRun"], registry) -> list[Any]:
    """Tag model versions with the verdicts (and promote); never fails the job."""
    cfg = ws.config
    if not cfg.uses_mlflow():
        return []
    from .notify import report_link
    from .registry import write_back

    try:
        writes = write_back(cfg, ws.root, runs, registry,
                            lambda r: report_link(cfg.notifications.link, r.experiment, r.run_id))
        record_registry_writes(con, writes)
        return writes
    except Exception as exc:  # pragma: no cover - write_back records its own failures
        log.warning("MLflow write-back failed: %s", exc)
        return []


def mark_interrupted(con) -> int:
    """Job rows left 'running' by a process that was killed: the caller holds the workspace lock, so
    nobody else is running; they are marked 'interrupted'. Returns how many."""
    stale = con.execute("SELECT count(*) FROM job_runs WHERE status = 'running'").fetchone()[0]
    if stale:
        con.execute("UPDATE job_runs SET status = 'interrupted', finished_at = coalesce(finished_at, ?), "
                    "errors = ? WHERE status = 'running'",
                    [_now(), dumps(["stopped before it finished (killed, or the machine went down); "
                                    "nothing half-done was kept, the next pass redoes the work"])])
        log.warning("marked %d job(s) left running by a stopped process as interrupted", stale)
    return stale


def _explain(exc: BaseException, ws: Workspace) -> str:
    """A job-level failure as one line with what to do (a full disk, a damaged warehouse)."""
    text = str(exc)
    if "No space left" in text or getattr(exc, "errno", None) == 28:
        return (f"the disk is full (no space left on device) while writing {ws.warehouse.parent}; "
                "free space and run again — every inbox file and analysis run is all-or-nothing, so "
                "nothing half-done was kept")
    return error_text(exc)


def _publish(con, ws: Workspace, result: JobResult, kind: str, as_of: dt.datetime) -> None:
    """Publish the report snapshot; a failure (full disk, a directory in the way) fails the job
    with a message, and the job row says so."""
    import duckdb

    from . import catalog

    try:
        tables = catalog.snapshot_tables(ws.config)
        tables["metric_previews"] = _previews(ws, con, kind, as_of)
        publish_snapshot(con, ws.snapshot, tables)
    except (OSError, WarehouseError, duckdb.Error) as exc:
        if isinstance(exc, WarehouseError):
            message = str(exc)
        elif "No space left" in str(exc) or getattr(exc, "errno", None) == 28:
            message = (f"the report snapshot could not be published: the disk is full (no space left on "
                       f"device at {ws.snapshot.parent}); free space and run again. The warehouse is "
                       "consistent and the report still shows the previous snapshot")
        else:
            message = f"the report snapshot could not be published ({error_text(exc)}); run again"
        log.error("%s", message)
        result.status = "failed" if result.status == "ok" else result.status
        result.errors.append(message)
        _finish(con, result)


def _finish(con, result: JobResult) -> None:
    summary = result.ingest
    con.execute("""UPDATE job_runs SET finished_at = ?, status = ?, files_loaded = ?, rows_loaded = ?,
                   experiments_analyzed = ?, errors = ? WHERE job_id = ?""",
                [_now(), result.status, summary.files_loaded if summary else 0,
                 summary.rows_loaded if summary else 0, sum(r.status == "ok" for r in result.runs),
                 dumps(result.errors), result.job_id])
