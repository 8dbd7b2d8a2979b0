"""The ingest run: every inbox file in path order, each decided against the `files` ledger and, when
new, loaded in one transaction together with its ledger row (a crash leaves the whole file or nothing)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from .. import formats
from ..errors import BadFile
from ..formats import ReadOptions
from .dedup import event_ids_current
from .discover import Opened, discover
from .files import FileLedger
from .load import load_file
from .progress import Progress
from .read import describe, short
from .sql import rollback
from .summary import IngestSummary, Limits, Loaded

log = logging.getLogger("abproxy.ingest")


def ingest(con: duckdb.DuckDBPyConnection, inbox: Path, *, progress: bool = False,
           now: datetime | None = None, max_future: timedelta = timedelta(minutes=10),
           limits: Limits = Limits()) -> IngestSummary:
    """Load every new inbox file into the warehouse, each file in its own transaction.

    `now` (default: the wall clock, per file) is both the `loaded_at` stamp and the reference for
    rejecting timestamps more than `max_future` ahead; a naive `now` is taken as UTC.
    """
    inbox = Path(inbox)
    summary = IngestSummary(max_rejected_fraction=limits.max_rejected_fraction)
    if not inbox.is_dir():
        summary.failures.append({"path": str(inbox), "message": (
            f"{inbox}: inbox folder not found; create {inbox}/exposures and {inbox}/events "
            "or fix 'inbox' in abproxy.yaml")})
        return summary
    con.execute("SET TimeZone = 'UTC'")
    files = discover(inbox, summary, limits.follow_symlinks)
    event_ids_current(con)
    ledger = FileLedger(con)
    bar = Progress(progress, files)
    duckdb_bar = None
    if bar.enabled:  # one progress bar at a time: silence DuckDB's own during the run
        duckdb_bar = con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0]
        con.execute("SET enable_progress_bar = false")
    try:
        for path, rel, kind in files:
            bar.start(rel)
            started = time.perf_counter()
            opts = formats.options_for(limits.formats, rel)
            outcome = _ingest_file(con, ledger, summary, path, rel, kind, now, max_future, limits, opts)
            log.info("%s: %s (%.2fs)", rel, outcome, time.perf_counter() - started)
            bar.finish(rel, outcome)
    finally:
        if duckdb_bar is not None:
            con.execute(f"SET enable_progress_bar = {'true' if duckdb_bar else 'false'}")
    bar.close(summary)
    return summary


@dataclass(frozen=True)
class _File:
    """One opened inbox file: where it is, its size and content hash as first read, its stamp."""

    path: Path
    rel: str
    kind: str
    opened: Opened
    before: os.stat_result
    sha: str
    failed_key: str  # sha + reader options: a failed file is retried when its content or options change
    stamp: datetime

    @property
    def size(self) -> int:
        return self.before.st_size


def _ingest_file(con, ledger: FileLedger, summary: IngestSummary, path: Path, rel: str, kind: str,
                 now: datetime | None, max_future: timedelta, limits: Limits,
                 opts: ReadOptions | None = None) -> str:
    try:
        opened = Opened(path, rel, limits.follow_symlinks)
    except BadFile as exc:
        summary._fail(rel, str(exc))
        return "refused"
    except OSError as exc:
        summary._fail(rel, f"{rel}: cannot read the file ({exc.strerror or exc}); nothing was stored, "
                           "it is retried on the next run")
        return "unreadable"
    try:
        return _ingest_opened(con, ledger, summary, opened, path, rel, kind, now, max_future, limits,
                              opts or ReadOptions())
    finally:
        opened.close()


def _ingest_opened(con, ledger: FileLedger, summary: IngestSummary, opened: Opened, path: Path, rel: str,
                   kind: str, now: datetime | None, max_future: timedelta, limits: Limits,
                   opts: ReadOptions) -> str:
    try:
        before = opened.stat()
        sha = opened.sha256()
    except OSError as exc:
        summary._fail(rel, f"{rel}: cannot read the file ({exc.strerror or exc}); nothing was stored, "
                           "it is retried on the next run")
        return "unreadable"
    stamp = _utc_naive(now) if now is not None else datetime.now(timezone.utc).replace(tzinfo=None)
    file = _File(path, rel, kind, opened, before, sha, sha + opts.fingerprint, stamp)
    known = _known_outcome(ledger, summary, file)
    if known is not None:
        return known
    return _load_new(con, ledger, summary, file, max_future, limits, opts)


# --------------------------------------------------------------------------------------------
# what the ledger already says about the file


def _known_outcome(ledger: FileLedger, summary: IngestSummary, file: _File) -> str | None:
    """The outcome when the ledger already knows this path or content (loaded, changed, failed
    before, a duplicate); None for a file to load."""
    accepted = ledger.accepted.get(file.rel)
    if accepted is not None:
        return _accepted_before(ledger, summary, file, accepted)
    known = ledger.problems.get((file.rel, file.failed_key))
    if known is not None:
        summary._fail(file.rel, f"{known['message']} (unchanged since it failed at "
                                f"{known['loaded_at']:%Y-%m-%d %H:%M:%S} UTC; fix or replace the file, or its "
                                "ingest.formats options in abproxy.yaml: it is retried when either changes)")
        return "still failing"
    original = ledger.by_sha.get(file.sha)
    if original is not None:
        ledger.record(path=file.rel, kind=file.kind, size=file.size, sha=file.sha, status="duplicate",
                      loaded_at=file.stamp,
                      message=f"same content as {original['path']} (file {original['file_id']}, loaded "
                              f"{original['loaded_at']:%Y-%m-%d %H:%M:%S} UTC); not loaded again")
        summary.files_skipped += 1
        return f"duplicate of {original['path']}"
    return None


def _accepted_before(ledger: FileLedger, summary: IngestSummary, file: _File, accepted: dict) -> str:
    """A path already loaded: skipped when its content is the same, refused (`changed`) otherwise."""
    if accepted["sha256"] == file.sha:
        summary.files_skipped += 1
        return "already loaded"
    known = ledger.problems.get((file.rel, file.sha))
    if known is None:
        message = (
            f"{file.rel}: its content changed since it was ingested at {accepted['loaded_at']:%Y-%m-%d %H:%M:%S} "
            f"UTC (file {accepted['file_id']}); the new content was "
            "NOT loaded, so nothing is counted twice. To add data, drop the new data under a new file "
            "name; then restore the original file or remove it from the inbox.")
        known = ledger.record(path=file.rel, kind=file.kind, size=file.size, sha=file.sha, status="changed",
                              loaded_at=file.stamp, message=message)
    summary._fail(file.rel, known["message"])
    return "changed"


# --------------------------------------------------------------------------------------------
# loading a new file in one transaction with its ledger row


def _load_new(con, ledger: FileLedger, summary: IngestSummary, file: _File, max_future: timedelta,
              limits: Limits, opts: ReadOptions) -> str:
    log.info("%s: loading (%d bytes)", file.rel, file.size)
    file_id = ledger.next_id()
    con.execute("BEGIN TRANSACTION")
    try:
        result = load_file(con, file.path, file.opened.source, file.rel, file.kind, file_id, file.stamp,
                           file.stamp + max_future, limits, opts)
        not_kept = _not_kept(con, ledger, summary, file, result, file_id)
        if not_kept is not None:
            return not_kept
        row = ledger.insert(path=file.rel, kind=file.kind, size=file.size, sha=file.sha, status="loaded",
                            loaded_at=file.stamp, message=result.message, file_id=file_id, digest=result.digest,
                            rows=(result.rows_loaded, result.rows_rejected, result.rows_duplicate))
        con.execute("COMMIT")
    except (BadFile, duckdb.Error) as exc:
        rollback(con)
        return _failed(ledger, summary, file, exc)
    except BaseException:
        rollback(con)
        raise
    ledger._remember(row)
    summary.files_loaded += 1
    summary.rows_loaded += result.rows_loaded
    summary.rows_rejected += result.rows_rejected
    summary.rows_duplicate += result.rows_duplicate
    if result.rejects is not None:
        summary.rejects.append(result.rejects)
    return (f"loaded {result.rows_loaded} rows, rejected {result.rows_rejected}, "
            f"duplicate {result.rows_duplicate}")


def _not_kept(con, ledger: FileLedger, summary: IngestSummary, file: _File, result: Loaded,
              file_id: int) -> str | None:
    """The outcome when the loaded rows must not be kept (the file changed while being read, the same
    rows were delivered before, too many rows were rejected); None to commit them."""
    if _changed_since(file.opened, file.before):
        rollback(con)
        summary._fail(file.rel, f"{file.rel}: the file changed while it was being read (is it still being "
                                "written?); nothing was stored, it is retried on the next run. Write files "
                                "elsewhere and move them into the inbox when complete.")
        return "changed while reading"
    twin = ledger.by_digest.get((file.kind, result.digest)) if result.digest else None
    if twin is not None:  # the same rows re-delivered in another format or order
        rollback(con)
        message = (f"same rows as {twin['path']} (file {twin['file_id']}, loaded "
                   f"{twin['loaded_at']:%Y-%m-%d %H:%M:%S} UTC) in another format or order: a duplicate "
                   "delivery, not loaded again; remove it from the inbox")
        ledger.record(path=file.rel, kind=file.kind, size=file.size, sha=file.sha, status="duplicate",
                      loaded_at=file.stamp, message=message)
        log.warning("%s: %s", file.rel, message)
        summary.files_skipped += 1
        return f"duplicate delivery of {twin['path']}"
    if result.rejects is not None and summary.over_limit(result.rejects):
        return _refuse(con, ledger, summary, file, result, file_id)
    return None


def _refuse(con, ledger: FileLedger, summary: IngestSummary, file: _File, result: Loaded, file_id: int) -> str:
    """Too many rejected rows: none of the file's rows are kept (its rejected rows are, with the
    reasons), the file is recorded as failed and retried once it or its reader options change."""
    con.execute(f"DELETE FROM {file.kind} WHERE file_id = ?", [file_id])
    message = result.rejects.over_limit_message(summary.max_rejected_fraction)
    row = ledger.insert(path=file.rel, kind=file.kind, size=file.size, sha=file.failed_key, status="failed",
                        loaded_at=file.stamp, message=message, file_id=file_id, rows=(0, result.rows_rejected, 0))
    con.execute("COMMIT")
    ledger._remember(row)
    summary.rows_rejected += result.rows_rejected
    summary.rejects.append(result.rejects)
    summary._fail(file.rel, message)
    return "failed"


def _failed(ledger: FileLedger, summary: IngestSummary, file: _File, exc: BaseException) -> str:
    """After a rolled-back load: a bad file is recorded as failed; anything else is retried next run."""
    source = file.opened.source
    if not _is_file_problem(exc, source):
        summary._fail(file.rel, f"{file.rel}: could not be loaded this time ({short(exc, source)}); "
                                "nothing was stored, it is retried on the next run")
        return "error (will retry)"
    message = str(exc) if isinstance(exc, BadFile) else f"{file.rel}: {describe(exc, file.path, source)}"
    ledger.record(path=file.rel, kind=file.kind, size=file.size, sha=file.failed_key, status="failed",
                  loaded_at=file.stamp, message=message)
    summary._fail(file.rel, message)
    return "failed"


def _changed_since(opened: Opened, before) -> bool:
    try:
        after = opened.stat()
    except OSError:
        return True
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def _is_file_problem(exc: BaseException, source: Path) -> bool:
    """A bad file is recorded as failed; anything else (memory, disk, interruption) is retried."""
    if isinstance(exc, BadFile):
        return True
    if isinstance(exc, (duckdb.OutOfMemoryException, duckdb.InterruptException, duckdb.FatalException,
                        duckdb.InternalException, duckdb.TransactionException,
                        duckdb.PermissionException)):
        return False
    if isinstance(exc, duckdb.IOException):
        text = str(exc)
        return str(source) in text and "space left" not in text.lower()
    return True


def _utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment
