"""Loading one file inside the caller's transaction: its good rows into `exposures`/`events` (new
property columns added, existing ones cast into), duplicate event ids dropped, its bad rows into
`rejected_rows` with their reasons."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .. import formats, rejects
from ..errors import BadFile
from ..formats import ReadOptions
from .dedup import content_digest, drop_duplicate_event_ids
from .discover import file_format
from .properties import join_notes, property_targets
from .read import parquet_rows, source_columns, source_sql
from .sql import OPTIONAL, REQUIRED, TIMESTAMP_COLUMN, lit, q, ts_lit
from .summary import Limits, Loaded
from .validate import check_columns, checked_sql


def load_file(con, path: Path, data: Path, rel: str, kind: str, file_id: int, loaded_at: datetime,
              future_limit: datetime, limits: Limits = Limits(), opts: ReadOptions | None = None) -> Loaded:
    """Load the file named `path`, read through the literal path `data`."""
    fmt, gz = _readable_format(path, data, rel)
    opts = opts or ReadOptions()
    in_file = source_columns(con, data, rel, fmt, gz, opts.delimiter)
    columns = [(opts.rename(name), ctype) for name, ctype in in_file]
    extras = _property_columns(rel, kind, columns, limits.max_columns)
    cols = check_columns(rel, kind, fmt, columns, _delimiter_hint(con, data, rel, fmt, in_file, opts))
    source = source_sql(data, fmt, gz, in_file, opts)
    checked = checked_sql(kind, source, cols, future_limit, limits.null_markers, opts)
    targets, notes = property_targets(con, kind, rel, source, extras, limits.max_columns, text=fmt != "parquet")
    inserted = _insert_good_rows(con, kind, cols, checked, file_id, loaded_at, targets)
    duplicates = 0
    if kind == "events" and "event_id" in cols and inserted:
        duplicates = drop_duplicate_event_ids(con, file_id)
    rejected = _insert_rejected_rows(con, data, rel, fmt, columns, checked, file_id, inserted)
    loaded = inserted - duplicates
    digest = content_digest(con, kind, file_id, [target for target, _ in targets]) if loaded else None
    summary = None
    if rejected:
        summary = rejects.summarize(con, file_id, rel, kind, int(inserted + rejected), int(rejected),
                                    [name for name, _ in columns], TIMESTAMP_COLUMN[kind], opts)
    return Loaded(int(loaded), int(rejected), int(duplicates), join_notes(notes), digest, summary)


def _readable_format(path: Path, data: Path, rel: str) -> tuple[str, bool]:
    """(format, gzip-compressed) of a supported, non-empty file."""
    fmt = file_format(path.name)
    if fmt is None:
        raise BadFile(f"{rel}: unsupported file type; abproxy reads .csv, .parquet, .jsonl, .ndjson and "
                      ".json files (text formats optionally .gz-compressed); convert it or remove it")
    if data.stat().st_size == 0:
        raise BadFile(f"{rel}: empty file (0 bytes), nothing to load; replace it with the complete "
                      "export or remove it")
    return fmt


def _property_columns(rel: str, kind: str, columns: list[tuple[str, str]], max_columns: int) -> list[tuple[str, str]]:
    """The file's columns beyond the required and optional ones, at most `max_columns` of them."""
    extras = [(name, ctype) for name, ctype in columns
              if name.lower() not in REQUIRED[kind] + OPTIONAL[kind]]
    if len(extras) > max_columns:  # before anything reads the rows: a wide file is cheap to refuse
        raise BadFile(f"{rel}: {len(extras)} property columns, more than ingest.max_columns "
                      f"({max_columns}); drop the columns no metric or segment uses, or raise "
                      "ingest.max_columns in abproxy.yaml")
    return extras


def _delimiter_hint(con, data: Path, rel: str, fmt: str, in_file: list[tuple[str, str]],
                    opts: ReadOptions) -> str:
    """A CSV file read as a single column probably has another delimiter: say which one."""
    if fmt == "csv" and len(in_file) == 1:
        detected = formats.detect_delimiter(con, data, in_file[0][0])
        return rejects.delimiter_hint(detected, opts.delimiter, rel, opts)
    return ""


def _insert_good_rows(con, kind: str, cols: dict[str, tuple[str, str]], checked: str, file_id: int,
                      loaded_at: datetime, targets: list[tuple[str, str]]) -> int:
    """Insert the rows that passed every check; returns how many."""
    base = [(c, f"c.__abp_{c}") for c in REQUIRED[kind]]
    if kind == "events":
        base += [("value", "c.__abp_value" if "value" in cols else "NULL"),
                 ("event_id", "c.__abp_event_id" if "event_id" in cols else "NULL")]
    base += [("file_id", str(file_id)), ("loaded_at", ts_lit(loaded_at))]
    base += targets
    return con.execute(
        f"INSERT INTO {kind} ({', '.join(q(name) for name, _ in base)}) "
        f"SELECT {', '.join(expr for _, expr in base)} FROM ({checked}) c "
        f"WHERE c.__abp_reason IS NULL").fetchone()[0]


def _insert_rejected_rows(con, data: Path, rel: str, fmt: str, columns: list[tuple[str, str]], checked: str,
                          file_id: int, inserted: int) -> int:
    """Rejected rows, with their row number and the row as JSON. A Parquet file knows its row
    count, so the scan is skipped when every row was good."""
    if fmt == "parquet" and parquet_rows(con, data) <= inserted:
        return 0
    raw = "json_object(" + ", ".join(f"{lit(name)}, {q(name)}" for name, _ in columns) + ")"
    return con.execute(
        f"INSERT INTO rejected_rows (file_id, path, row_number, reason, raw) "
        f"SELECT {file_id}, {lit(rel)}, __abp_row, __abp_reason, CAST({raw} AS VARCHAR) "
        f"FROM ({checked}) WHERE __abp_reason IS NOT NULL").fetchone()[0]
