"""Where the report's snapshot is, and the cached named queries on it.

The app goes through `Snapshot.load`, which opens the snapshot per call and caches the answer for a
few seconds, keyed on the snapshot file's identity (mtime, size, inode): a newly published snapshot
is a new key. The queries themselves (`data`, `view`, the export's `review_html`) register here.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from abproxy.config import ConfigError, resolve_workspace
from abproxy.warehouse import open_snapshot
from abproxy.workspace import Workspace

DEFAULT_SNAPSHOT = "data/report.duckdb"
CACHE_SECONDS = 5


# --------------------------------------------------------------------------- where the snapshot is

@dataclass(frozen=True)
class Source:
    """The workspace folder, its snapshot path, and the configuration error if abproxy.yaml is broken."""

    root: Path
    snapshot: Path
    config_error: str | None = None


def workspace_arg(argv: list[str] | None = None) -> str | None:
    """The value of `--workspace DIR` / `--workspace=DIR` in argv (after `streamlit run app.py --`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--workspace" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--workspace="):
            return arg.split("=", 1)[1]
    return None


def workspace_root(argv: list[str] | None = None) -> Path:
    """`--workspace` from argv, else $ABPROXY_WORKSPACE, else the current folder."""
    return resolve_workspace(workspace_arg(argv))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _st_cached(max_entries: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """st.cache_data applied on first call, so that importing this module (the CLI's export does)
    needs no Streamlit runtime."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        cached: list[Callable[..., Any]] = []

        def call(*args: Any) -> Any:
            if not cached:
                import streamlit as st

                cached.append(st.cache_data(ttl=CACHE_SECONDS, show_spinner=False, max_entries=max_entries)(fn))
            return cached[0](*args)
        call.__wrapped__ = fn  # type: ignore[attr-defined]
        return call
    return wrap


@_st_cached(max_entries=16)
def _locate(root: str, config_mtime: int) -> Source:
    path = Path(root)
    try:
        return Source(path, Workspace.open(path).snapshot)
    except ConfigError as exc:
        return Source(path, path / DEFAULT_SNAPSHOT, str(exc))
    except Exception as exc:  # an unreadable file must not take the report down
        return Source(path, path / DEFAULT_SNAPSHOT, f"{type(exc).__name__}: {exc}")


def locate(root: Path | None = None) -> Source:
    root = Path(root) if root is not None else workspace_root()
    return _locate(str(root), _mtime(root / "abproxy.yaml"))


def file_version(path: Path) -> tuple[int, int, int] | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_mtime_ns, s.st_size, s.st_ino)


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot file at one version; `load` runs a named query on it (cached)."""

    path: Path
    version: tuple[int, int, int]

    @classmethod
    def at(cls, path: Path) -> "Snapshot | None":
        version = file_version(path)
        return cls(path, version) if version else None

    def load(self, query: str, *args: Any) -> Any:
        return _cached(query, str(self.path), self.version, args)


@_st_cached(max_entries=128)
def _cached(query: str, path: str, version: tuple, args: tuple) -> Any:
    con = open_snapshot(path)
    try:
        return QUERIES[query](con, *args)
    finally:
        con.close()


QUERIES: dict[str, Callable[..., Any]] = {}


def register_query(name: str, fn: Callable[..., Any]) -> None:
    """Add a named snapshot query (`data` adds the pages' queries, the HTML export `review_html`)."""
    QUERIES[name] = fn
