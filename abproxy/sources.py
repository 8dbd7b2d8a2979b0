"""Where an analysis reads its per-unit values: the raw tables, or a per-unit state table.

`reading({key: source})` puts state sources (`state.StateSource`) in place for a block (a context
variable, so nested or concurrent analyses never see each other's); `metrics.experiment_sql` and
`quality.daily_profile` ask `active(key, as_of)` and read the state when one is in place for
exactly that experiment and analysis time. This module imports nothing of the project.
"""
from __future__ import annotations

import contextvars
import datetime as dt
from typing import Any

_ACTIVE: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("abproxy_sources", default={})


def active(key: str, as_of: dt.datetime) -> Any | None:
    """The state source of `key` for an analysis as of `as_of`, if `reading` put one in place."""
    source = _ACTIVE.get().get(key)
    return source if source is not None and source.as_of == as_of else None


class reading:
    """Within the block, queries of these experiments read their state tables."""

    def __init__(self, sources: dict[str, Any]):
        self.sources = sources

    def __enter__(self) -> "reading":
        self._token = _ACTIVE.set({**_ACTIVE.get(), **self.sources})
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.reset(self._token)
