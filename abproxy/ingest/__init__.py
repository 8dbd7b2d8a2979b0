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

Modules
    `run` (the run and the per-file decision), `discover` (which inbox files, opened safely), `files`
    (the `files` ledger), `read` (DuckDB readers), `validate` (column names, per-row checks),
    `properties` (property column types), `load` (one file in one transaction), `dedup` (event ids,
    re-delivered rows), `summary` (the records), `sql` (shared names), `progress` (the terminal bar).
"""
from __future__ import annotations

from .run import ingest
from .summary import IngestSummary, Limits

__all__ = ["IngestSummary", "Limits", "ingest"]
