"""Opening DuckDB, applying `sql/` migrations, publishing the read-only report snapshot; the
transaction and per-file range lookup that the writing modules share.

The job is the only writer of the warehouse. After each run it copies what the report needs
into a new versioned DuckDB file and atomically repoints the snapshot symlink at it, so a reader
sees either the previous or the next complete snapshot, never a half-written one.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

if TYPE_CHECKING:  # pragma: no cover - duckdb is imported when a database opens (not at start-up)
    import duckdb
    import pandas as pd

from .errors import WarehouseError  # noqa: F401  (re-exported: warehouse.WarehouseError)

SQL_DIR = Path(__file__).resolve().parent / "sql"          # shipped in the package (pyproject package-data)
MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
KEEP_SNAPSHOTS = 3
SNAPSHOT_TABLES = ("runs", "results", "series", "health", "files", "rejected_rows", "job_runs", "lineage",
                   "registry_writes")


def migrations(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found = sorted((int(m.group(1)), p) for p in sql_dir.iterdir() if (m := MIGRATION.match(p.name)))
    numbers = [number for number, _ in found]
    clash = sorted({n for n in numbers if numbers.count(n) > 1})
    if clash:  # two branches picked the same number: one of them would silently never run
        raise WarehouseError(f"{sql_dir}: two migrations share the number {clash[0]:03d}; renumber one")
    return found


def migrate(con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> list[int]:
    """Apply every migration newer than the recorded schema version, each in its own transaction."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    applied = []
    for version, path in migrations(sql_dir):
        if version <= current:
            continue
        with transaction(con):
            con.execute(path.read_text())
            con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, path.name])
        applied.append(version)
    return applied


def _configure(con: duckdb.DuckDBPyConnection, memory_limit: str | None, threads: int | None) -> None:
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")


def connect(path: Path | str, memory_limit: str | None = None, threads: int | None = None,
            read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and upgrade) the warehouse. Raises WarehouseError with advice if it is locked."""
    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseError(f"{path}: no warehouse yet; run 'abproxy ingest' or 'abproxy run' first")
    path.parent.mkdir(parents=True, exist_ok=True)
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseError(f"{path} is in use by another abproxy process (the scheduler?); "
                                 "stop it or use the read-only commands") from None
        raise WarehouseError(damaged_message(path, exc)) from None
    except duckdb.Error as exc:   # not a DuckDB file, or a version this DuckDB cannot read
        raise WarehouseError(damaged_message(path, exc)) from None
    try:
        _configure(con, memory_limit, threads)
        if not read_only:
            migrate(con)
    except duckdb.Error as exc:
        con.close()
        raise WarehouseError(damaged_message(path, exc)) from None
    return con


def damaged_message(path: Path, exc: BaseException) -> str:
    """The advice for a warehouse file DuckDB cannot open (truncated, overwritten, foreign)."""
    detail = " ".join(str(exc).split())[:200]
    return (f"{path}: cannot open the warehouse ({detail}). The file looks damaged (truncated or not a "
            "DuckDB database). Restore it from a backup, or move it aside "
            f"(mv {path} {path}.broken) and run 'abproxy run': the inbox files are the source of truth "
            "and are all loaded again")


SEAL = (
    "SET enable_external_access = false",       # no file, URL, ATTACH, COPY or extension install
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET lock_configuration = true",            # and none of this can be switched back
)


def seal(con: duckdb.DuckDBPyConnection) -> None:
    """After ingest, before any metric SQL: from now on this database instance reads and writes its
    own tables only. It holds for the whole process's instance of this file (every connection to
    it) until all are closed; the next pass opens a fresh, unsealed one for its ingest."""
    for statement in SEAL:
        con.execute(statement)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def overlapping_files(con: duckdb.DuckDBPyConnection, spans: str, column: str, rows: str) -> list[int]:
    """The files of `spans` (a table of per-file ranges: file_id, lo, hi) whose [lo, hi] overlaps the
    range of `column` over `rows` (a FROM clause: a table, optionally with its WHERE), ascending;
    none when `rows` is empty."""
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT s.file_id FROM {spans} s, (SELECT min({column}) AS lo, max({column}) AS hi "
        f"FROM {rows}) n WHERE s.lo <= n.hi AND s.hi >= n.lo ORDER BY s.file_id").fetchall()]


def publish_snapshot(con: duckdb.DuckDBPyConnection, snapshot: Path | str,
                     extra: Mapping[str, "pd.DataFrame"] | None = None, keep: int = KEEP_SNAPSHOTS) -> Path:
    """Copy the report's tables (and `extra` frames) to a new versioned file, then atomically repoint
    the `snapshot` symlink at it. Versioned names matter: DuckDB caches open databases by path within
    a process, so a reader reopening a path replaced in place could be handed the old database."""
    snapshot = Path(snapshot)
    if snapshot.is_dir() and not snapshot.is_symlink():
        raise WarehouseError(f"{snapshot} is a directory, so no report snapshot can be published there; "
                             "remove it or set 'snapshot' in abproxy.yaml to a file path "
                             "(e.g. data/report.duckdb)")
    versions = _versions_dir(snapshot)
    versions.mkdir(parents=True, exist_ok=True)
    _prune_leftovers(versions)
    target = versions / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.duckdb"
    tmp = target.with_suffix(".tmp")
    _copy_tables(con, tmp, extra or {})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    link = snapshot.with_name(f".{snapshot.name}.{uuid.uuid4().hex}.link")
    os.symlink(os.path.relpath(target, snapshot.parent), link)
    os.replace(link, snapshot)
    _prune(versions, target, keep)
    return snapshot


def _copy_tables(con: duckdb.DuckDBPyConnection, tmp: Path, extra: Mapping[str, pd.DataFrame]) -> None:
    """Write the report's tables into a new database file through a second DuckDB instance of its
    own (streamed as Arrow record batches), so the warehouse instance — sealed against file access
    while metric SQL runs — never needs to ATTACH or write a file outside itself."""
    import duckdb

    out = duckdb.connect(str(tmp))
    try:
        out.execute("SET TimeZone = 'UTC'")
        for table in SNAPSHOT_TABLES:
            batches = _arrow_reader(con, f"SELECT * FROM main.{table}")
            out.register("_snapshot_source", batches)
            out.execute(f"CREATE TABLE {table} AS SELECT * FROM _snapshot_source")
            out.unregister("_snapshot_source")
        for name, frame in extra.items():
            if not re.fullmatch(r"[a-z_]+", name):
                raise ValueError(f"snapshot table name {name!r}")
            out.register("_snapshot_frame", frame)
            out.execute(f"CREATE TABLE {name} AS SELECT * FROM _snapshot_frame")
            out.unregister("_snapshot_frame")
        out.execute("CREATE TABLE snapshot_info AS SELECT current_timestamp::TIMESTAMP AS published_at")
        out.execute("CHECKPOINT")
    except BaseException:
        out.close()
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    out.close()


def _arrow_reader(con: duckdb.DuckDBPyConnection, query: str):
    """The query's rows as a stream of Arrow record batches (the name changed across DuckDB 1 → 2)."""
    relation = con.sql(query)
    for name in ("to_arrow_reader", "fetch_arrow_reader", "record_batch"):
        if hasattr(relation, name):
            return getattr(relation, name)()
    return con.execute(query).fetch_record_batch()


def _prune_leftovers(versions: Path, min_age_seconds: float = 0) -> None:
    """`.tmp` files of publications that crashed midway (a kill, a full disk): nobody reads them,
    and only the one writer publishes, so every one found before a new publication is a leftover."""
    cutoff = time.time() - min_age_seconds
    for path in list(versions.glob("*.tmp")) + list(versions.glob("*.tmp.wal")):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def _versions_dir(snapshot: Path) -> Path:
    return snapshot.with_name(f".{snapshot.name}.versions")


def _prune(versions: Path, current: Path, keep: int) -> None:
    """Delete all but the newest `keep` versions; readers that resolved an older one a moment
    ago still hold an open file handle, which POSIX keeps valid."""
    old = sorted(p for p in versions.glob("*.duckdb") if p != current)
    for path in old[: max(0, len(old) - (keep - 1))]:
        path.unlink(missing_ok=True)


def open_snapshot(snapshot: Path | str) -> duckdb.DuckDBPyConnection:
    """Open the published snapshot read-only (raises WarehouseError if none was published yet)."""
    snapshot = Path(snapshot)
    if snapshot.is_symlink() and not snapshot.exists():
        raise WarehouseError(f"{snapshot} points to a snapshot version that no longer exists "
                             f"({os.readlink(snapshot)}); run 'abproxy run' to publish a fresh one")
    if snapshot.is_dir():
        raise WarehouseError(f"{snapshot} is a directory, not a report snapshot; remove it or set 'snapshot' "
                             "in abproxy.yaml to a file path, then run 'abproxy run'")
    if not snapshot.exists():
        raise WarehouseError(f"{snapshot}: no report snapshot yet; run 'abproxy run' (or 'make run') first")
    import duckdb

    con = duckdb.connect(os.path.realpath(snapshot), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con
