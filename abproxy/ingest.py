"""Inbox files → `exposures` / `events`, the file ledger, rejected rows, exactly once.

What is loaded
    Every file under `inbox/exposures/` and `inbox/events/` (recursively, in path order) whose
    name ends in `.csv`, `.parquet`, `.jsonl`, `.ndjson` or `.json`, the text formats optionally
    gzip-compressed (`.csv.gz`, `.jsonl.gz`, ...). Names starting with `.` or `_` (in-progress
    copies, Spark `_SUCCESS` markers) and names ending in `.tmp`/`.part`/`~` are ignored; any
    other file there fails with a message, and so does a data file dropped directly into `inbox/`,
    so nothing put into the inbox is silently lost. Write big files elsewhere and move them in.

How it is read
    DuckDB's own readers and set-based SQL, never a Python loop over rows. CSV is read as text
    (comma-separated, `"` quoted, a header row) so that a bad cell rejects its row, not the file;
    Parquet keeps its types; JSON Lines values are read as text. A row failing a check goes to
    `rejected_rows` with its reason, its 1-based row number in the file (CSV data row without the
    header, JSON record, Parquet row) and the row as JSON; the file's good rows still load.
    Timestamps with an offset or zone are converted to UTC, naive ones are taken as UTC.
    Further columns become columns of the table (unit attributes / event properties): the
    Parquet type, or for CSV/JSON DOUBLE when every value is a plain number, else VARCHAR; a later
    file's values are TRY_CAST to the column's type (the ledger message counts values that did
    not fit and were stored as NULL); a column missing from a later file is NULL.

Exactly once
    Each file loads in one transaction together with its `files` ledger row, so a crash leaves
    either the whole file or nothing. A file is identified by its path and its sha256:
    same path and content → skipped; same content under a new name → `duplicate` (skipped);
    new content under a name already loaded → `changed` (refused, never double-counted).
    A file that failed (`failed`) is retried only once its content changes; until then every
    run reports its old failure again (counted in `files_failed`), so a broken file stays
    visible. Errors that are not the file's fault (out of memory, disk full, a file that vanished
    or changed while being read) are not recorded in the ledger: nothing is stored and the file is
    retried on the next run. Events whose non-null `event_id` is already stored, or repeated within the file,
    are skipped and counted as `rows_duplicate` (the first occurrence in the file is kept); stored ids
    are found through the narrow `event_ids` table of their hashes, so the check costs the new file,
    not a scan of every stored event.
"""
from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import logging
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

import duckdb

from . import formats, rejects
from .config import IDENTIFIER, NULL_MARKERS
from .dialect import DUCKDB
from .errors import BadFile
from .formats import ReadOptions

log = logging.getLogger(__name__)

KINDS = ("exposures", "events")
REQUIRED = {
    "exposures": ("unit_id", "experiment", "variant", "exposed_at"),
    "events": ("unit_id", "event", "occurred_at"),
}
OPTIONAL = {"exposures": (), "events": ("value", "event_id")}
TIMESTAMP_COLUMN = {"exposures": "exposed_at", "events": "occurred_at"}
SYSTEM_COLUMNS = ("file_id", "loaded_at")
INTERNAL_PREFIX = "__abp_"
MAX_NAME = 63
BLANKS = "' ' || chr(9) || chr(10) || chr(13)"

SUFFIXES = {  # name suffix → (format, gzip-compressed)
    ".csv": ("csv", False), ".csv.gz": ("csv", True),
    ".jsonl": ("jsonl", False), ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False), ".ndjson.gz": ("jsonl", True),
    ".json": ("json", False), ".json.gz": ("json", True),
    ".parquet": ("parquet", False),
}
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", "~")
NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                 "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"}
# A text attribute becomes DOUBLE only when every non-blank value is a plain decimal number and
# none has a leading zero (zip codes, padded ids stay text).
PLAIN_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
LEADING_ZERO = r"^[+-]?0[0-9]"


@dataclass
class IngestSummary:
    files_loaded: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    failures: list[dict] = field(default_factory=list)  # {"path", "message"}
    max_rejected_fraction: float = 0.05
    rejects: list[rejects.FileRejects] = field(default_factory=list)  # files with rejected rows

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rejects"] = [r.as_dict(self.max_rejected_fraction) for r in self.rejects]
        return {**data, "ok": self.ok}

    def over_limit(self, r: rejects.FileRejects) -> bool:
        """The file's rejected share exceeds `ingest.max_rejected_fraction` (it was refused)."""
        return r.fraction > self.max_rejected_fraction

    @property
    def ok(self) -> bool:
        """True when no file failed (this run or, unchanged, an earlier one); a file whose rejected
        share exceeds `ingest.max_rejected_fraction` is refused and counts as failed."""
        return self.files_failed == 0 and not self.failures

    def problems(self) -> list[str]:
        """One message per failed file."""
        return [f["message"] for f in self.failures]

    def _fail(self, path: str, message: str) -> None:
        self.files_failed += 1
        self.failures.append({"path": path, "message": message})


@dataclass
class _Loaded:
    rows_loaded: int
    rows_rejected: int
    rows_duplicate: int
    message: str | None
    digest: str | None = None
    rejects: rejects.FileRejects | None = None


# --------------------------------------------------------------------------------------------
# entry point


@dataclass(frozen=True)
class Limits:
    """What a file may be: symlinks followed (`inbox.follow_symlinks`), at most `max_columns`
    property columns per file and per table (`ingest.max_columns`), which cell texts mean
    "missing" (`ingest.null_markers`, compared case-insensitively after trimming), the largest
    rejected share a file may have (`ingest.max_rejected_fraction`) and how the files of each
    folder or pattern are written (`ingest.formats`, see formats.py)."""

    follow_symlinks: bool = False
    max_columns: int = 200
    null_markers: tuple[str, ...] = NULL_MARKERS
    max_rejected_fraction: float = 0.05
    formats: dict = field(default_factory=dict)   # key → config.InboxFormat

    @classmethod
    def from_config(cls, config) -> "Limits":
        return cls(config.inbox.follow_symlinks, config.ingest.max_columns,
                   tuple(m.strip().lower() for m in config.ingest.null_markers),
                   config.ingest.max_rejected_fraction, dict(config.ingest.formats))


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
    files = _discover(inbox, summary, limits.follow_symlinks)
    _event_ids_current(con)
    ledger = _Ledger(con)
    bar = _Progress(progress, files)
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


def _discover(inbox: Path, summary: IngestSummary, follow: bool) -> list[tuple[Path, str, str]]:
    found: list[tuple[Path, str, str]] = []
    for kind in KINDS:
        root = inbox / kind
        if root.is_symlink() and not follow:
            summary._fail(kind, _link_message(kind))
        elif root.is_dir():
            _walk(root, inbox, kind, follow, summary, found, {os.path.realpath(root)})
    for path in inbox.iterdir():  # data dropped next to exposures/ and events/ by mistake
        if path.is_file() and not _ignored(path.name) and _format(path.name):
            summary._fail(path.name, f"{path.name}: not loaded because it is not inside exposures/ "
                                     "or events/; move it into the folder of its kind")
    return sorted(found, key=lambda item: item[1])


def _walk(folder: Path, inbox: Path, kind: str, follow: bool, summary: IngestSummary,
          found: list, seen: set[str]) -> None:
    """Regular files under `folder`; symbolic links are refused unless `follow`, and anything that
    is neither a file nor a folder (FIFO, socket, device) is refused: inbox files are data only."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _ignored(entry.name):
            continue
        path = Path(entry.path)
        rel = path.relative_to(inbox).as_posix()
        if entry.is_symlink() and not follow:
            summary._fail(rel, _link_message(rel))
        elif entry.is_dir():
            real = os.path.realpath(path)
            if real not in seen:  # a link loop is walked once
                _walk(path, inbox, kind, follow, summary, found, seen | {real})
        elif entry.is_file():
            found.append((path, rel, kind))
        else:
            summary._fail(rel, f"{rel}: not a regular file (a FIFO, socket, device or dangling link); "
                               "abproxy only reads regular files from the inbox, remove it")


def _link_message(rel: str) -> str:
    return (f"{rel}: a symbolic link; not loaded, because abproxy does not follow links in the inbox "
            "(they could point anywhere on the machine). Copy or move the data into the inbox, or set "
            "'inbox: {follow_symlinks: true}' in abproxy.yaml if links are how your files arrive")


def _ignored(name: str) -> bool:
    return name.startswith((".", "_")) or name.lower().endswith(IGNORED_SUFFIXES)


def _format(name: str) -> tuple[str, bool] | None:
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIXES[suffix]
    return None


# --------------------------------------------------------------------------------------------
# the ledger and the per-file decision


class _Ledger:
    """The `files` table as seen by this run (one writer: it is kept in memory and appended to)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.accepted: dict[str, dict] = {}          # path → its loaded/duplicate row
        self.problems: dict[tuple[str, str], dict] = {}  # (path, sha) → its failed/changed row
        self.by_sha: dict[str, dict] = {}            # sha → the loaded row with that content
        self.by_digest: dict[tuple[str, str], dict] = {}  # (kind, digest of its rows) → loaded row
        rows = con.execute("SELECT file_id, path, kind, sha256, status, rows_loaded, loaded_at, message, "
                           "content_digest FROM files ORDER BY file_id").fetchall()
        for values in rows:
            self._remember(dict(zip(("file_id", "path", "kind", "sha256", "status", "rows_loaded",
                                     "loaded_at", "message", "digest"), values)))

    def _remember(self, row: dict) -> None:
        if row["status"] in ("loaded", "duplicate"):
            self.accepted[row["path"]] = row
            if row["status"] == "loaded":
                self.by_sha.setdefault(row["sha256"], row)
                if row.get("digest"):
                    self.by_digest.setdefault((row["kind"], row["digest"]), row)
        else:
            self.problems[(row["path"], row["sha256"])] = row

    def next_id(self) -> int:
        return self.con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM files").fetchone()[0]

    def record(self, **fields) -> dict:
        """Insert a ledger row (in its own transaction) and remember it."""
        row = self.insert(**fields)
        self._remember(row)
        return row

    def insert(self, *, path: str, kind: str, size: int, sha: str, status: str, loaded_at: datetime,
               message: str | None = None, rows: tuple[int, int, int] = (0, 0, 0),
               file_id: int | None = None, digest: str | None = None) -> dict:
        """Insert a ledger row in the current transaction; `_remember` it once committed."""
        file_id = file_id if file_id is not None else self.next_id()
        self.con.execute(
            "INSERT INTO files (file_id, path, kind, size, sha256, status, rows_loaded, rows_rejected, "
            "rows_duplicate, loaded_at, message, content_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [file_id, path, kind, size, sha, status, *rows, loaded_at, message, digest])
        return {"file_id": file_id, "path": path, "kind": kind, "sha256": sha, "status": status,
                "rows_loaded": rows[0], "loaded_at": loaded_at, "message": message, "digest": digest}


class _Opened:
    """An inbox file opened once (never through a link unless allowed, never a FIFO or device).
    DuckDB reads it through `source`, the process's own handle on it: a literal path that no
    reader can take for a glob pattern, and that cannot be swapped for another file meanwhile."""

    def __init__(self, path: Path, rel: str, follow: bool):
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow:
                raise BadFile(_link_message(rel)) from None
            raise
        self.handle = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            self.handle.close()
            raise BadFile(f"{rel}: not a regular file (a FIFO, socket or device); abproxy only reads "
                          "regular files from the inbox, remove it")
        base = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        self.source = Path(f"{base}/{fd}")

    def stat(self) -> os.stat_result:
        return os.fstat(self.handle.fileno())

    def sha256(self) -> str:
        self.handle.seek(0)
        return hashlib.file_digest(self.handle, "sha256").hexdigest()

    def close(self) -> None:
        self.handle.close()


def _ingest_file(con, ledger: _Ledger, summary: IngestSummary, path: Path, rel: str, kind: str,
                 now: datetime | None, max_future: timedelta, limits: Limits,
                 opts: ReadOptions | None = None) -> str:
    try:
        opened = _Opened(path, rel, limits.follow_symlinks)
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


def _ingest_opened(con, ledger: _Ledger, summary: IngestSummary, opened: _Opened, path: Path, rel: str,
                   kind: str, now: datetime | None, max_future: timedelta, limits: Limits,
                   opts: ReadOptions) -> str:
    try:
        before = opened.stat()
        size = before.st_size
        sha = opened.sha256()
    except OSError as exc:
        summary._fail(rel, f"{rel}: cannot read the file ({exc.strerror or exc}); nothing was stored, "
                           "it is retried on the next run")
        return "unreadable"
    stamp = _utc_naive(now) if now is not None else datetime.now(timezone.utc).replace(tzinfo=None)

    accepted = ledger.accepted.get(rel)
    if accepted is not None:
        if accepted["sha256"] == sha:
            summary.files_skipped += 1
            return "already loaded"
        known = ledger.problems.get((rel, sha))
        if known is None:
            message = (
                f"{rel}: its content changed since it was ingested at {accepted['loaded_at']:%Y-%m-%d %H:%M:%S} "
                f"UTC (file {accepted['file_id']}); the new content was "
                "NOT loaded, so nothing is counted twice. To add data, drop the new data under a new file "
                "name; then restore the original file or remove it from the inbox.")
            known = ledger.record(path=rel, kind=kind, size=size, sha=sha, status="changed",
                                  loaded_at=stamp, message=message)
        summary._fail(rel, known["message"])
        return "changed"

    failed_key = sha + opts.fingerprint  # a failed file is retried when its content or its reader options change
    known = ledger.problems.get((rel, failed_key))
    if known is not None:
        summary._fail(rel, f"{known['message']} (unchanged since it failed at "
                           f"{known['loaded_at']:%Y-%m-%d %H:%M:%S} UTC; fix or replace the file, or its "
                           "ingest.formats options in abproxy.yaml: it is retried when either changes)")
        return "still failing"

    original = ledger.by_sha.get(sha)
    if original is not None:
        ledger.record(path=rel, kind=kind, size=size, sha=sha, status="duplicate", loaded_at=stamp,
                      message=f"same content as {original['path']} (file {original['file_id']}, loaded "
                              f"{original['loaded_at']:%Y-%m-%d %H:%M:%S} UTC); not loaded again")
        summary.files_skipped += 1
        return f"duplicate of {original['path']}"

    log.info("%s: loading (%d bytes)", rel, size)
    file_id = ledger.next_id()
    con.execute("BEGIN TRANSACTION")
    try:
        result = _load(con, path, opened.source, rel, kind, file_id, stamp, stamp + max_future, limits, opts)
        if _changed_since(opened, before):
            _rollback(con)
            summary._fail(rel, f"{rel}: the file changed while it was being read (is it still being "
                               "written?); nothing was stored, it is retried on the next run. Write files "
                               "elsewhere and move them into the inbox when complete.")
            return "changed while reading"
        twin = ledger.by_digest.get((kind, result.digest)) if result.digest else None
        if twin is not None:  # the same rows re-delivered in another format or order
            _rollback(con)
            message = (f"same rows as {twin['path']} (file {twin['file_id']}, loaded "
                       f"{twin['loaded_at']:%Y-%m-%d %H:%M:%S} UTC) in another format or order: a duplicate "
                       "delivery, not loaded again; remove it from the inbox")
            ledger.record(path=rel, kind=kind, size=size, sha=sha, status="duplicate", loaded_at=stamp,
                          message=message)
            log.warning("%s: %s", rel, message)
            summary.files_skipped += 1
            return f"duplicate delivery of {twin['path']}"
        if result.rejects is not None and summary.over_limit(result.rejects):
            return _refuse(con, ledger, summary, result, rel, kind, size, failed_key, stamp, file_id)
        row = ledger.insert(path=rel, kind=kind, size=size, sha=sha, status="loaded", loaded_at=stamp,
                            message=result.message, file_id=file_id, digest=result.digest,
                            rows=(result.rows_loaded, result.rows_rejected, result.rows_duplicate))
        con.execute("COMMIT")
    except (BadFile, duckdb.Error) as exc:
        _rollback(con)
        if not _is_file_problem(exc, opened.source):
            summary._fail(rel, f"{rel}: could not be loaded this time ({_short(exc, opened.source)}); "
                               "nothing was stored, it is retried on the next run")
            return "error (will retry)"
        message = str(exc) if isinstance(exc, BadFile) else f"{rel}: {_describe(exc, path, opened.source)}"
        ledger.record(path=rel, kind=kind, size=size, sha=failed_key, status="failed", loaded_at=stamp,
                      message=message)
        summary._fail(rel, message)
        return "failed"
    except BaseException:
        _rollback(con)
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


def _refuse(con, ledger: _Ledger, summary: IngestSummary, result: _Loaded, rel: str, kind: str, size: int,
            failed_key: str, stamp: datetime, file_id: int) -> str:
    """Too many rejected rows: none of the file's rows are kept (its rejected rows are, with the
    reasons), the file is recorded as failed and retried once it or its reader options change."""
    con.execute(f"DELETE FROM {kind} WHERE file_id = ?", [file_id])
    message = result.rejects.over_limit_message(summary.max_rejected_fraction)
    row = ledger.insert(path=rel, kind=kind, size=size, sha=failed_key, status="failed", loaded_at=stamp,
                        message=message, file_id=file_id, rows=(0, result.rows_rejected, 0))
    con.execute("COMMIT")
    ledger._remember(row)
    summary.rows_rejected += result.rows_rejected
    summary.rejects.append(result.rejects)
    summary._fail(rel, message)
    return "failed"


def _changed_since(opened: _Opened, before) -> bool:
    try:
        after = opened.stat()
    except OSError:
        return True
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def _rollback(con) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:  # a failed COMMIT has already ended the transaction
        pass


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


def _short(exc: BaseException, source: Path | None = None) -> str:
    """DuckDB's message without its fix-it hints and the echo of our SQL."""
    text = str(exc).strip()
    if source is not None:
        text = text.replace(str(source), "the file")
    for marker in ("\nPossible fixes", "\nPossible Solution", "\nLINE "):
        text = text.split(marker, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)[:500]


def _describe(exc: BaseException, path: Path, source: Path) -> str:
    text = _short(exc, source)
    fmt, gz = _format(path.name) or ("", False)
    if gz and "gzip" in text.lower():
        return f"not a readable gzip file (truncated or not compressed?): {text}"
    what = {"parquet": "not a readable Parquet file (truncated or corrupt?)",
            "csv": "not a valid comma-separated UTF-8 CSV file with a header row",
            "jsonl": "not valid JSON Lines (one JSON object per line)",
            "json": "not valid JSON (objects, one per line or in an array)"}.get(fmt, "cannot be read")
    return f"{what}: {text}"


def _utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


# --------------------------------------------------------------------------------------------
# loading one file (inside the caller's transaction)


def _q(name: str) -> str:
    return DUCKDB.ident(name)


def _lit(text: str) -> str:
    return DUCKDB.literal(text)


def _ts_lit(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ')}'"


def _load(con, path: Path, data: Path, rel: str, kind: str, file_id: int, loaded_at: datetime,
          future_limit: datetime, limits: Limits = Limits(), opts: ReadOptions | None = None) -> _Loaded:
    """Load the file named `path`, read through the literal path `data`."""
    fmt = _format(path.name)
    if fmt is None:
        raise BadFile(f"{rel}: unsupported file type; abproxy reads .csv, .parquet, .jsonl, .ndjson and "
                      ".json files (text formats optionally .gz-compressed); convert it or remove it")
    fmt, gz = fmt
    if data.stat().st_size == 0:
        raise BadFile(f"{rel}: empty file (0 bytes), nothing to load; replace it with the complete "
                      "export or remove it")
    opts = opts or ReadOptions()
    in_file = _source_columns(con, data, rel, fmt, gz, opts.delimiter)
    columns = [(opts.rename(name), ctype) for name, ctype in in_file]
    extras = [(name, ctype) for name, ctype in columns
              if name.lower() not in REQUIRED[kind] + OPTIONAL[kind]]
    if len(extras) > limits.max_columns:  # before anything reads the rows: a wide file is cheap to refuse
        raise BadFile(f"{rel}: {len(extras)} property columns, more than ingest.max_columns "
                      f"({limits.max_columns}); drop the columns no metric or segment uses, or raise "
                      "ingest.max_columns in abproxy.yaml")
    hint = ""
    if fmt == "csv" and len(columns) == 1:
        detected = formats.detect_delimiter(con, data, in_file[0][0])
        hint = rejects.delimiter_hint(detected, opts.delimiter, rel, opts)
    cols = _check_columns(rel, kind, fmt, columns, hint)
    source = _source_sql(data, fmt, gz, in_file, opts)
    checked = _checked_sql(kind, source, cols, future_limit, limits.null_markers, opts)

    # Extra columns: add new ones to the table, cast into existing ones.
    table_columns = {name.lower(): (name, ctype) for name, ctype in con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' "
        "AND table_name = ?", [kind]).fetchall()}
    _check_table_width(rel, kind, extras, table_columns, limits.max_columns)
    new_types = _infer_new_types(con, source, extras, table_columns, text=fmt != "parquet")
    targets, notes, casts = [], [], []  # targets: (table column, expression on alias c)
    for name, ctype in extras:
        if name.lower() in table_columns:
            target_name, target_type = table_columns[name.lower()]
        else:
            target_name, target_type = name, new_types[name]
            con.execute(f"ALTER TABLE {kind} ADD COLUMN {_q(name)} {target_type}")
            notes.append(f"new column {name} {target_type}")
        if ctype != target_type and name.lower() in table_columns:
            wider = _widened(con, source, name, ctype, target_type)
            if wider != target_type:
                con.execute(f"ALTER TABLE {kind} ALTER COLUMN {_q(target_name)} SET DATA TYPE {wider}")
                notes.append(f"column {target_name} widened from {target_type} to {wider}: this file's values "
                             f"({ctype}) do not all fit {target_type}; stored values were converted")
                target_type = wider
        if ctype == target_type:
            targets.append((target_name, f"c.{_q(name)}"))
        else:
            targets.append((target_name, f"TRY_CAST(c.{_q(name)} AS {target_type})"))
            if name.lower() in table_columns:  # a new column's type fits its values by construction
                casts.append((name, ctype, target_type))
    notes += _cast_losses(con, source, casts)

    base = [(c, f"c.__abp_{c}") for c in REQUIRED[kind]]
    if kind == "events":
        base += [("value", "c.__abp_value" if "value" in cols else "NULL"),
                 ("event_id", "c.__abp_event_id" if "event_id" in cols else "NULL")]
    base += [("file_id", str(file_id)), ("loaded_at", _ts_lit(loaded_at))]
    base += targets
    inserted = con.execute(
        f"INSERT INTO {kind} ({', '.join(_q(name) for name, _ in base)}) "
        f"SELECT {', '.join(expr for _, expr in base)} FROM ({checked}) c "
        f"WHERE c.__abp_reason IS NULL").fetchone()[0]
    duplicates = 0
    if kind == "events" and "event_id" in cols and inserted:
        duplicates = _drop_duplicate_event_ids(con, file_id)

    # Rejected rows, with their row number and the row as JSON. A Parquet file knows its row
    # count, so the scan is skipped when every row was good.
    rejected = 0
    if fmt != "parquet" or _parquet_rows(con, data) > inserted:
        raw = "json_object(" + ", ".join(f"{_lit(name)}, {_q(name)}" for name, _ in columns) + ")"
        rejected = con.execute(
            f"INSERT INTO rejected_rows (file_id, path, row_number, reason, raw) "
            f"SELECT {file_id}, {_lit(rel)}, __abp_row, __abp_reason, CAST({raw} AS VARCHAR) "
            f"FROM ({checked}) WHERE __abp_reason IS NOT NULL").fetchone()[0]
    loaded = inserted - duplicates
    digest = _content_digest(con, kind, file_id, [target for target, _ in targets]) if loaded else None
    summary = None
    if rejected:
        summary = rejects.summarize(con, file_id, rel, kind, int(inserted + rejected), int(rejected),
                                    [name for name, _ in columns], TIMESTAMP_COLUMN[kind], opts)
    return _Loaded(int(loaded), int(rejected), int(duplicates), _join_notes(notes), digest, summary)


def _join_notes(notes: list[str], keep: int = 8) -> str | None:
    """The ledger message: the first notes, then how many more (a wide file stays one line)."""
    shown = notes[:keep] + ([f"and {len(notes) - keep} more"] if len(notes) > keep else [])
    return "; ".join(shown) or None


def _check_table_width(rel: str, kind: str, extras: list[tuple[str, str]],
                       table_columns: dict[str, tuple[str, str]], limit: int) -> None:
    """Columns are added to the table for good: the table's property columns stay within the cap."""
    core = set(REQUIRED[kind] + OPTIONAL[kind] + SYSTEM_COLUMNS)
    present = [name for name in table_columns if name not in core]
    new = [name for name, _ in extras if name.lower() not in table_columns]
    if new and len(present) + len(new) > limit:
        raise BadFile(f"{rel}: would add {len(new)} new property column(s) to {kind}, which already has "
                      f"{len(present)} (ingest.max_columns is {limit}); drop the columns no metric or "
                      "segment uses, or raise ingest.max_columns in abproxy.yaml")


def _content_digest(con, kind: str, file_id: int, properties: list[str]) -> str:
    """A digest of the file's loaded rows that ignores their order and the file's format: row count,
    sum and xor of the row hashes (core columns plus property columns by name)."""
    names = list(REQUIRED[kind] + OPTIONAL[kind]) + sorted(set(properties), key=str.lower)
    row = f"hash({', '.join(_q(name) for name in names)})"
    count, total, xor = con.execute(f"SELECT count(*), sum({row}::HUGEINT), bit_xor({row}) FROM {kind} "
                                    f"WHERE file_id = {int(file_id)}").fetchone()
    return f"{count}:{total}:{xor}"


def _drop_duplicate_event_ids(con, file_id: int) -> int:
    """Delete this file's just-inserted (uncommitted) events whose event_id is already stored, or
    repeated in the file (the first occurrence in file order is kept: the insert preserves order),
    and add its remaining ids to `event_ids`. Stored ids are looked up by their hash in the narrow
    `event_ids` table, not in every stored event_id string; a matching hash is confirmed on the rows
    of the file that stored it, so a hash collision never drops an event. Returns the rows deleted."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_new AS SELECT rowid AS rid, event_id, hash(event_id) AS h
                    FROM events WHERE file_id = {file_id} AND event_id IS NOT NULL""")
    try:
        hits = [r[0] for r in con.execute(
            "SELECT DISTINCT file_id FROM event_ids WHERE h IN (SELECT h FROM __abp_new)").fetchall()]
        stored = ""
        if hits:
            where = f"file_id IN ({', '.join(str(int(f)) for f in hits)})" + (" OR file_id IS NULL" if -1 in hits else "")
            stored = f"""UNION ALL (SELECT DISTINCT event_id, true FROM events WHERE ({where})
                                    AND event_id IN (SELECT event_id FROM __abp_new))"""
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __abp_dups AS
            SELECT event_id, bool_or(existing) AS existing FROM (
                (SELECT event_id, false AS existing FROM __abp_new GROUP BY event_id HAVING count(*) > 1)
                {stored})
            GROUP BY event_id""")
        deleted = 0
        if con.execute("SELECT count(*) FROM __abp_dups").fetchone()[0]:
            deleted = con.execute("""
                DELETE FROM events WHERE rowid IN (
                    SELECT rid FROM (
                        SELECT n.rid, d.existing, row_number() OVER (PARTITION BY n.event_id ORDER BY n.rid) AS nth
                        FROM __abp_new n JOIN __abp_dups d ON n.event_id = d.event_id)
                    WHERE existing OR nth > 1)""").fetchone()[0]
        con.execute(f"INSERT INTO event_ids SELECT hash(event_id), {file_id} FROM events "
                    f"WHERE file_id = {file_id} AND event_id IS NOT NULL")
        return deleted
    finally:
        con.execute("DROP TABLE IF EXISTS __abp_dups")
        con.execute("DROP TABLE __abp_new")


def _event_ids_current(con) -> None:
    """`event_ids` holds DuckDB's hash() of each stored id; after a DuckDB upgrade (whose hash may
    differ) it is rebuilt from the events once, in one transaction."""
    stored = con.execute("SELECT any_value(duckdb_version) FROM event_ids_meta").fetchone()[0]
    version = con.execute("SELECT library_version FROM pragma_version()").fetchone()[0]
    if stored == version:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM event_ids")
        con.execute("INSERT INTO event_ids SELECT hash(event_id), coalesce(file_id, -1) FROM events "
                    "WHERE event_id IS NOT NULL")
        con.execute("DELETE FROM event_ids_meta")
        con.execute("INSERT INTO event_ids_meta VALUES (?)", [version])
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _parquet_rows(con, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(path))})").fetchone()[0]


def _source_columns(con, path: Path, rel: str, fmt: str, gz: bool, delimiter: str = ",") -> list[tuple[str, str]]:
    """The file's columns (name, DuckDB type) in file order; text formats are all VARCHAR."""
    if fmt == "csv":
        return [(name, "VARCHAR") for name in _csv_header(path, rel, gz, delimiter)]
    if fmt == "parquet":
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(str(path))})").fetchall()
        return [(row[0], row[1]) for row in rows]
    json_format = "newline_delimited" if fmt == "jsonl" else "auto"
    rows = con.execute(f"DESCRIBE SELECT * FROM read_json({_lit(str(path))}, format='{json_format}', "
                       f"records=true, sample_size=-1, {_compression(gz)})").fetchall()
    return [(row[0], "VARCHAR") for row in rows]


def _csv_header(path: Path, rel: str, gz: bool, delimiter: str = ",") -> list[str]:
    try:
        raw: IO[bytes] = gzip.open(path, "rb") if gz else open(path, "rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            header = next(csv.reader(text, delimiter=delimiter, quotechar='"'), None)
    except UnicodeDecodeError:
        raise BadFile(f"{rel}: not a UTF-8 text CSV file (binary data or another encoding?); "
                      "export it as UTF-8 CSV") from None
    except (OSError, EOFError) as exc:
        if gz:
            raise BadFile(f"{rel}: not a readable gzip file (truncated or not compressed?): {exc}") from None
        raise
    except csv.Error as exc:
        raise BadFile(f"{rel}: the header row is not valid CSV ({exc})") from None
    if not header or all(not name.strip() for name in header):
        raise BadFile(f"{rel}: no header row; the first line must name the columns "
                      "(e.g. unit_id,event,occurred_at)")
    return header


def _check_columns(rel: str, kind: str, fmt: str, columns: list[tuple[str, str]],
                   delimiter_hint: str = "") -> dict[str, tuple[str, str]]:
    """Validate the file's column names; return required/optional column → (name in file, type)."""
    names = [name for name, _ in columns]
    lowered: dict[str, tuple[str, str]] = {}
    for name, ctype in columns:
        if name.lower() in lowered:
            raise BadFile(f"{rel}: column name '{name}' appears twice (names are case-insensitive); "
                          "rename one of them")
        lowered[name.lower()] = (name, ctype)
    missing = [c for c in REQUIRED[kind] if c not in lowered]
    if missing:
        found = ", ".join(f"'{name}'" for name in names)
        message = f"{rel}: missing required columns {', '.join(missing)} (found: {found})"
        if fmt == "csv" and len(names) == 1:
            message += delimiter_hint or "; is the delimiter ','?"
        raise BadFile(message)
    known = REQUIRED[kind] + OPTIONAL[kind]
    for position, name in enumerate(names, start=1):
        low = name.lower()
        if low in known:
            continue
        if not name.strip():
            raise BadFile(f"{rel}: column {position} has no name in the header; name it or remove it")
        if low in SYSTEM_COLUMNS or low.startswith(INTERNAL_PREFIX):
            raise BadFile(f"{rel}: column '{name}' is reserved by abproxy; rename it")
        if not IDENTIFIER.fullmatch(name) or len(name) > MAX_NAME:
            raise BadFile(f"{rel}: column '{name}' is not a valid attribute name (letters, digits and _, "
                          f"not starting with a digit, at most {MAX_NAME} characters); rename it")
    return {c: lowered[c] for c in known if c in lowered}


def _compression(gz: bool) -> str:
    return "compression='gzip'" if gz else "compression='none'"


def _source_sql(path: Path, fmt: str, gz: bool, columns: list[tuple[str, str]],
                opts: ReadOptions | None = None) -> str:
    """SELECT of the file's columns (renamed as `opts` says) plus `__abp_row`, its 1-based row
    number in the file; the configured null markers are NULL."""
    opts = opts or ReadOptions()

    def out(name: str, ctype: str) -> str:
        value = formats.null_sql(_q(name), opts) if fmt != "csv" and ctype == "VARCHAR" else _q(name)
        return f"{value} AS {_q(opts.rename(name))}"

    listed = ", ".join(out(name, ctype) for name, ctype in columns)
    lit = _lit(str(path))
    if fmt == "parquet":
        if any(name.lower() == "file_row_number" for name, _ in columns):
            return f"SELECT row_number() OVER () AS __abp_row, {listed} FROM read_parquet({lit})"
        return (f"SELECT file_row_number + 1 AS __abp_row, {listed} "
                f"FROM read_parquet({lit}, file_row_number=true)")
    spec = "{" + ", ".join(f"{_lit(name)}: 'VARCHAR'" for name, _ in columns) + "}"
    if fmt == "csv":
        reader = (f"read_csv({lit}, header=true, auto_detect=false, {formats.csv_options(opts)}, "
                  "quote='\"', escape='\"', "
                  f"comment='', skip=0, strict_mode=true, null_padding=false, columns={spec}, "
                  f"{_compression(gz)})")
    else:
        json_format = "newline_delimited" if fmt == "jsonl" else "auto"
        reader = f"read_json({lit}, format='{json_format}', records=true, columns={spec}, {_compression(gz)})"
    # Text readers scan in file order (insertion order is preserved), so row_number() is the row.
    return f"SELECT row_number() OVER () AS __abp_row, {listed} FROM {reader}"


def _base_type(ctype: str) -> str:
    return ctype.upper().split("(", 1)[0].strip()


def _text(name: str, ctype: str) -> str:
    return _q(name) if ctype == "VARCHAR" else f"CAST({_q(name)} AS VARCHAR)"


def _blank(name: str, ctype: str, markers: tuple[str, ...] = ()) -> str:
    """NULL, '' or only white space, or (text) one of the null `markers` (cheap tests first)."""
    if ctype != "VARCHAR":
        return f"({_q(name)} IS NULL)"
    blank = f"{_q(name)} IS NULL OR ({_q(name)} < '!' AND trim({_q(name)}, {BLANKS}) = '')"
    if markers:
        longest = max(len(m) for m in markers) + 2
        listed = ", ".join(_lit(m) for m in markers)
        blank += f" OR (length({_q(name)}) <= {longest} AND lower(trim({_q(name)}, {BLANKS})) IN ({listed}))"
    return f"({blank})"


def _timestamp(name: str, ctype: str, opts: ReadOptions) -> str:
    """UTC TIMESTAMP (session is UTC): typed timestamps as they are, text in the configured
    formats / zone, epoch seconds or milliseconds (formats.timestamp_sql)."""
    base = ctype.upper().strip() if ctype.upper().startswith("TIMESTAMP WITH") else _base_type(ctype)
    return formats.timestamp_sql(_q(name), base, opts)


def _number(name: str, ctype: str) -> str:
    base = _base_type(ctype)
    if base in NUMERIC_TYPES or base == "DECIMAL":
        return f"CAST({_q(name)} AS DOUBLE)"
    return f"TRY_CAST({_text(name, ctype)} AS DOUBLE)"


# |value| above this overflows a double once squared (1e154² ≈ 1e308): every later sum of squares
# of the experiment would be infinite, so such rows are rejected with a reason instead
MAX_VALUE = 1e154


def _checked_sql(kind: str, source: str, cols: dict[str, tuple[str, str]], future_limit: datetime,
                 markers: tuple[str, ...] = NULL_MARKERS, opts: ReadOptions | None = None) -> str:
    """The file's rows with normalised `__abp_<column>` values and `__abp_reason` (NULL = good).
    A cell of an identifier, timestamp or event_id column holding a null marker ('NULL', 'None', …)
    counts as missing; `value` keeps its own rule (blank is NULL, any other non-number is rejected)."""
    ts_col = TIMESTAMP_COLUMN[kind]
    opts = opts or ReadOptions()
    norm = []
    for col in REQUIRED[kind]:
        name, ctype = cols[col]
        norm.append(f"{_timestamp(name, ctype, opts) if col == ts_col else _text(name, ctype)} AS __abp_{col}")
    if "value" in cols:
        norm.append(f"{_number(*cols['value'])} AS __abp_value")
    if "event_id" in cols:
        name, ctype = cols["event_id"]
        norm.append(f"CASE WHEN {_blank(name, ctype, markers)} THEN NULL ELSE {_text(name, ctype)} END "
                    "AS __abp_event_id")

    checks = [(_blank(*cols[col], markers), f"missing {col}") for col in REQUIRED[kind] if col != ts_col]
    checks.append((_blank(*cols[ts_col], markers), "missing timestamp"))
    checks.append((f"(__abp_{ts_col} IS NULL OR NOT isfinite(__abp_{ts_col}))",
                   f"unparseable timestamp in {ts_col}"))
    checks.append((f"__abp_{ts_col} > {_ts_lit(future_limit)}", "timestamp in the future"))
    if "value" in cols:
        checks.append((f"(NOT {_blank(*cols['value'])} AND (__abp_value IS NULL OR NOT isfinite(__abp_value)))",
                       "non-numeric value"))
        checks.append((f"abs(__abp_value) > {MAX_VALUE:.0e}",
                       f"value too large (beyond ±{MAX_VALUE:.0e}: its square would overflow a sum of squares)"))
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {_lit(text)}" for cond, text in checks) + " END"
    return (f"SELECT *, {reason} AS __abp_reason FROM "
            f"(SELECT *, {', '.join(norm)} FROM ({source}))")


def _infer_new_types(con, source: str, extras: list[tuple[str, str]],
                     table_columns: dict[str, tuple[str, str]], text: bool) -> dict[str, str]:
    """Type of each new column: the Parquet type; for CSV/JSON, DOUBLE if every non-blank value is
    a plain number (without a leading zero: zip codes, padded ids stay text), else VARCHAR."""
    new = [(name, ctype) for name, ctype in extras if name.lower() not in table_columns]
    types = {name: ctype for name, ctype in new}
    text = [name for name, ctype in new if ctype == "VARCHAR"] if text else []
    if not text:
        return types
    # One grouped pass over the unpivoted cells: a few hundred per-column aggregates with regular
    # expressions cost seconds to plan, a single one costs nothing (a wide file stays cheap).
    listed = ", ".join(_q(name) for name in text)
    counts = dict.fromkeys(text, (0, 0))
    counts.update({name: (nonblank, numeric) for name, nonblank, numeric in con.execute(f"""
        SELECT __abp_name, count_if(v <> ''),
               count_if(regexp_full_match(v, '{PLAIN_NUMBER}') AND NOT regexp_matches(v, '{LEADING_ZERO}'))
        FROM (SELECT __abp_name, trim(__abp_cell) AS v
              FROM (UNPIVOT (SELECT {listed} FROM ({source})) ON COLUMNS(*)
                    INTO NAME __abp_name VALUE __abp_cell))
        GROUP BY __abp_name""").fetchall()})
    for name in text:
        nonblank, numeric = counts[name]
        types[name] = "DOUBLE" if nonblank and nonblank == numeric else "VARCHAR"
    return types


def _widened(con, source: str, name: str, ctype: str, target: str) -> str:
    """The column type that holds both the table's values (`target`) and this file's (`ctype`):
    numbers widen to DOUBLE (integers to BIGINT), anything else that does not cast without loss to
    VARCHAR. Values are never turned into NULL for not fitting."""
    source_base, target_base = _base_type(ctype), _base_type(target)
    if target_base == "VARCHAR":
        return target
    fractional = {"FLOAT", "DOUBLE", "DECIMAL"}
    if source_base in NUMERIC_TYPES | fractional and target_base in NUMERIC_TYPES | fractional:
        if target_base == "DOUBLE":
            return target
        if source_base in fractional or target_base in fractional:
            return "DOUBLE"
        return target if target_base in ("BIGINT", "HUGEINT") else "BIGINT"
    if source_base == "VARCHAR":
        lost = con.execute(f"SELECT count(*) FROM ({source}) WHERE NOT {_blank(name, ctype)} "
                           f"AND TRY_CAST({_q(name)} AS {target}) IS NULL").fetchone()[0]
        return target if lost == 0 else "VARCHAR"
    return "VARCHAR"


def _cast_losses(con, source: str, casts: list[tuple[str, str, str]]) -> list[str]:
    """Count values that do not fit an existing column's type (they are stored as NULL). Text cells
    are counted in one grouped pass per target type (cheap for a wide file), typed ones per column."""
    groups: dict[tuple[bool, str], list[str]] = {}
    for name, ctype, target in casts:
        groups.setdefault((ctype == "VARCHAR", target), []).append(name)
    lost: dict[str, int] = {}
    for (is_text, target), names in groups.items():
        if is_text:
            lost.update(con.execute(f"""
                SELECT __abp_name, count_if(trim(__abp_cell, {BLANKS}) <> ''
                                            AND TRY_CAST(__abp_cell AS {target}) IS NULL)
                FROM (UNPIVOT (SELECT {', '.join(_q(n) for n in names)} FROM ({source})) ON COLUMNS(*)
                      INTO NAME __abp_name VALUE __abp_cell)
                GROUP BY __abp_name""").fetchall())
        else:
            parts = [f"count_if({_q(n)} IS NOT NULL AND TRY_CAST({_q(n)} AS {target}) IS NULL)" for n in names]
            lost.update(zip(names, con.execute(f"SELECT {', '.join(parts)} FROM ({source})").fetchone()))
    return [f"{lost[name]} value(s) of column {name} are not {target} (the column's type) and were stored as NULL"
            for name, _, target in casts if lost.get(name)]


# --------------------------------------------------------------------------------------------
# progress


class _Progress:
    """A one-line progress bar on a terminal (per file, weighted by size); silent otherwise."""

    def __init__(self, enabled: bool, files: list[tuple[Path, str, str]], stream=None):
        self.stream = stream or sys.stderr
        self.enabled = bool(enabled and files and getattr(self.stream, "isatty", lambda: False)())
        self.sizes = {}
        for path, rel, _ in files:
            try:
                self.sizes[rel] = path.stat().st_size
            except OSError:
                self.sizes[rel] = 0
        self.total = max(sum(self.sizes.values()), 1)
        self.done_bytes, self.count, self.n = 0, 0, len(files)
        self.started = time.perf_counter()

    def _draw(self, label: str) -> None:
        share = self.done_bytes / self.total
        filled = int(share * 24)
        self.stream.write(f"\r\x1b[Kingest [{'#' * filled}{'.' * (24 - filled)}] {share:4.0%} "
                          f"{self.count}/{self.n} files  {label}")
        self.stream.flush()

    def start(self, rel: str) -> None:
        if self.enabled:
            self._draw(rel)

    def finish(self, rel: str, outcome: str) -> None:
        if not self.enabled:
            return
        self.done_bytes += self.sizes.get(rel, 0)
        self.count += 1
        if outcome in ("failed", "changed", "still failing", "unreadable", "error (will retry)",
                       "changed while reading"):
            self.stream.write(f"\r\x1b[K{rel}: {outcome}\n")
        self._draw(rel)

    def close(self, summary: IngestSummary) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[Kingest: {summary.files_loaded} file(s) loaded, "
                              f"{summary.rows_loaded} rows in {time.perf_counter() - self.started:.1f}s\n")
            self.stream.flush()
