"""Finding the inbox files and opening each one safely: which names are data (and in which
format), which are ignored, and which are refused (links, FIFOs, data outside exposures/ and events/)."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from ..errors import BadFile
from .sql import KINDS
from .summary import IngestSummary

SUFFIXES = {  # name suffix → (format, gzip-compressed)
    ".csv": ("csv", False), ".csv.gz": ("csv", True),
    ".jsonl": ("jsonl", False), ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False), ".ndjson.gz": ("jsonl", True),
    ".json": ("json", False), ".json.gz": ("json", True),
    ".parquet": ("parquet", False),
}
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".partial", "~")


def discover(inbox: Path, summary: IngestSummary, follow: bool) -> list[tuple[Path, str, str]]:
    found: list[tuple[Path, str, str]] = []
    for kind in KINDS:
        root = inbox / kind
        if root.is_symlink() and not follow:
            summary._fail(kind, link_message(kind))
        elif root.is_dir():
            _walk(root, inbox, kind, follow, summary, found, {os.path.realpath(root)})
    for path in inbox.iterdir():  # data dropped next to exposures/ and events/ by mistake
        if path.is_file() and not _ignored(path.name) and file_format(path.name):
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
            summary._fail(rel, link_message(rel))
        elif entry.is_dir():
            real = os.path.realpath(path)
            if real not in seen:  # a link loop is walked once
                _walk(path, inbox, kind, follow, summary, found, seen | {real})
        elif entry.is_file():
            found.append((path, rel, kind))
        else:
            summary._fail(rel, f"{rel}: not a regular file (a FIFO, socket, device or dangling link); "
                               "abproxy only reads regular files from the inbox, remove it")


def link_message(rel: str) -> str:
    return (f"{rel}: a symbolic link; not loaded, because abproxy does not follow links in the inbox "
            "(they could point anywhere on the machine). Copy or move the data into the inbox, or set "
            "'inbox: {follow_symlinks: true}' in abproxy.yaml if links are how your files arrive")


def _ignored(name: str) -> bool:
    return name.startswith((".", "_")) or name.lower().endswith(IGNORED_SUFFIXES)


def file_format(name: str) -> tuple[str, bool] | None:
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIXES[suffix]
    return None


class Opened:
    """An inbox file opened once (never through a link unless allowed, never a FIFO or device).
    DuckDB reads it through `source`, the process's own handle on it: a literal path that no
    reader can take for a glob pattern, and that cannot be swapped for another file meanwhile."""

    def __init__(self, path: Path, rel: str, follow: bool):
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow:
                raise BadFile(link_message(rel)) from None
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
