"""Where an analysis reads its per-unit values: the raw tables, or a per-unit state table.

`reading({key: source})` puts state sources (`state.StateSource`) in place for a block (a context
variable, so nested or concurrent analyses never see each other's); `metrics.experiment_sql` and
`quality.daily_profile` ask `active(key, as_of)` and read the state when one is in place for
exactly that experiment and analysis time; `first_exposures_sql` reads the units' first exposures
from either. This module imports nothing of the project.
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


def first_exposures_sql(key: str, as_of: dt.datetime, d: Any, variant: bool = False) -> str:
    """Each unit's first exposure to `key` up to `as_of` (unit_id, exposed_at, with `variant` the
    variant of that exposure), in dialect `d`: the per-unit state's rows when one is in place (the
    same units, times and variants, O(units) to read), else grouped from the exposures."""
    if (source := active(key, as_of)) is not None:
        return f"SELECT unit_id, exposed_at{', variant' if variant else ''} FROM {source.table}"
    first = f", {d.arg_min('variant', 'exposed_at')} AS variant" if variant else ""
    return (f"SELECT unit_id, min(exposed_at) AS exposed_at{first} FROM exposures "
            f"WHERE experiment = {d.literal(key)} AND exposed_at <= {d.timestamp(as_of)} GROUP BY unit_id")


class reading:
    """Within the block, queries of these experiments read their state tables."""

    def __init__(self, sources: dict[str, Any]):
        self.sources = sources

    def __enter__(self) -> "reading":
        self._token = _ACTIVE.set({**_ACTIVE.get(), **self.sources})
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.reset(self._token)
