"""The `files` ledger of ingested inbox files, as one run sees it."""
from __future__ import annotations

from datetime import datetime

import duckdb


class FileLedger:
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
