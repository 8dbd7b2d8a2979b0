"""A one-line progress bar for `abproxy ingest` on a terminal."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .summary import IngestSummary


class Progress:
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
