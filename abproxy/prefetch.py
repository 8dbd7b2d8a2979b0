"""Import the libraries an analysing pass will call in a background thread, as the job starts.

pandas and statsmodels (which loads scipy.stats) take ≈2.3 s of CPU to import, and the +1% pass at 1M
units runs on about one core. Started when the job begins, the import overlaps the ingest and the state
fold, which run inside DuckDB (measured: `abproxy run` +1% at 1M units, 5 alternating rounds at load 2-3,
median wall 7.08 s with it vs 8.04 s without; the GIL makes the two slow each other down, so it saves
less than the import's 2.3 s).
Safe by construction: the thread imports only third-party packages, and none of them imports abproxy
or DuckDB, so the main thread at worst waits for a module the thread is still loading (Python's
per-module import locks). An import that fails is left to the pass, which imports the library where
it calls it and reports the error there.
"""
from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterable

from .config import Config

ALWAYS = ("pandas", "scipy.special")   # every analysis reads frames; the normal/χ²/Poisson functions
STATSMODELS = ("statsmodels.stats.multitest", "statsmodels.stats.meta_analysis",
               "statsmodels.regression.linear_model")   # BH (segments, secondary), Cochran's Q, trend WLS


def libraries(config: Config, keys: Iterable[str]) -> tuple[str, ...]:
    """What the pass over `keys` is known to call: statsmodels only when an experiment has segments or
    secondary metrics (a young experiment with primary metrics only needs neither)."""
    exps = [config.experiments[k] for k in keys if k in config.experiments]
    if any(e.segments or e.secondary for e in exps):
        return ALWAYS + STATSMODELS
    return ALWAYS if exps else ()


def start(names: Iterable[str]) -> threading.Thread | None:
    """A thread importing `names` that are not loaded yet (None when there is nothing to do). Not a daemon:
    a process that ends early waits for the import to finish rather than stopping it halfway."""
    missing = [n for n in names if n not in sys.modules]
    if not missing:
        return None
    thread = threading.Thread(target=_import_all, args=(missing,), name="abproxy-prefetch")
    thread.start()
    return thread


def _import_all(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:   # noqa: BLE001 - the pass imports it where it is used and reports the error
            return
