"""When an experiment enrolled its units: a robust start (so one exposure dated 1970 cannot make an
experiment look years old), exposures far before the rest, and the recent enrollment rate (so a
stopped enrollment is not mistaken for a slow one).

One grouped query over the experiment's first exposures; the rules are plain Python.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .config import Config, Experiment
from .sources import first_exposures_sql

BULK_QUANTILE = 0.001       # the bulk of exposures starts at this quantile of first exposures
RECENT_DAYS = 3.0           # the enrollment rate is measured over this many days before the analysis time
STOPPED_SHARE = 0.02        # a recent rate below this share of the average rate means enrollment stopped


@dataclass(frozen=True)
class Enrollment:
    """The experiment's enrollment up to the analysis time."""

    start: dt.datetime | None            # configured start, else the first exposure of the bulk
    end: dt.datetime                     # the analysis time, or the configured end if earlier
    cutoff: dt.datetime | None           # exposures before this are far before the rest
    early: int = 0                       # units first exposed before the cutoff
    early_first: dt.datetime | None = None
    early_last: dt.datetime | None = None
    last_exposure: dt.datetime | None = None
    recent_per_variant_per_day: float | None = None   # smallest arm, over the last RECENT_DAYS
    average_per_variant_per_day: float | None = None

    @property
    def days_running(self) -> float:
        if self.start is None:
            return 0.0
        return max(0.0, (self.end - self.start).total_seconds() / 86400)

    @property
    def stopped(self) -> bool:
        """No (or almost no) new units over the last RECENT_DAYS of an experiment older than that."""
        if self.recent_per_variant_per_day is None or self.days_running < 2 * RECENT_DAYS:
            return False
        average = self.average_per_variant_per_day or 0.0
        return self.recent_per_variant_per_day <= STOPPED_SHARE * average

    @property
    def stopped_since(self) -> str | None:
        """The last enrollment day when enrollment has stopped."""
        if not self.stopped or self.last_exposure is None:
            return None
        return f"{self.last_exposure:%Y-%m-%d}"


def tolerance_days(config: Config, exp: Experiment) -> float:
    """How far before the bulk (or the configured start) an exposure may be: the longest metric window."""
    windows = [config.metrics[m].window_days for m in exp.roles() if m in config.metrics]
    return max([1.0, *windows])


def enrollment(engine, config: Config, key: str, as_of: dt.datetime) -> Enrollment:
    """Two grouped queries over the units' first exposures (on the engine that holds the data: the
    warehouse connection or an `engines.Engine`): the bulk's start, then per arm the early exposures,
    the units and the recent ones."""
    from .engines import as_engine, as_datetime

    engine = as_engine(engine)
    d = engine.dialect
    exp = config.experiments[key]
    end = min(as_of, dt.datetime.combine(exp.end, dt.time()) + dt.timedelta(days=1)) if exp.end else as_of
    configured = dt.datetime.combine(exp.start, dt.time()) if exp.start else None
    first = (f"WITH u AS (SELECT unit_id, exposed_at AS t, variant "
             f"FROM ({first_exposures_sql(key, as_of, d, variant=True)}) f)")
    head = engine.frame(f"{first} SELECT {d.quantile_disc_time('t', BULK_QUANTILE)} AS bulk, max(t) AS last "
                        "FROM u").iloc[0]
    bulk, last = as_datetime(head["bulk"]), as_datetime(head["last"])
    if bulk is None:
        return Enrollment(configured, end, None)
    cutoff = (configured or bulk) - dt.timedelta(days=tolerance_days(config, exp))
    recent_from = end - dt.timedelta(days=RECENT_DAYS)
    before, since = f"t < {d.timestamp(cutoff)}", f"t >= {d.timestamp(cutoff)}"
    frame = engine.frame(f"""{first}
        SELECT variant, count(*) FILTER (WHERE {before}) AS early, min(t) FILTER (WHERE {before}) AS early_first,
               max(t) FILTER (WHERE {before}) AS early_last, min(t) FILTER (WHERE {since}) AS bulk_first,
               count(*) FILTER (WHERE {since}) AS units,
               count(*) FILTER (WHERE {since} AND t > {d.timestamp(recent_from)}) AS recent
        FROM u GROUP BY variant""")
    rows = [(v, int(a), as_datetime(b), as_datetime(c), as_datetime(e), int(f), int(g))
            for v, a, b, c, e, f, g in frame.itertuples(index=False)]
    early = sum(r[1] for r in rows)
    firsts = [r[2] for r in rows if r[2] is not None]
    lasts = [r[3] for r in rows if r[3] is not None]
    bulk_firsts = [r[4] for r in rows if r[4] is not None]
    start = configured or (min(bulk_firsts) if bulk_firsts else None)
    info = Enrollment(start, end, cutoff, int(early), min(firsts, default=None), max(lasts, default=None), last)
    by_arm = {r[0]: (r[5], r[6]) for r in rows}
    arms = [by_arm.get(v, (0, 0)) for v in exp.variants]
    days = info.days_running
    if days <= 0 or not arms:
        return info
    return Enrollment(start, end, cutoff, int(early), info.early_first, info.early_last, last,
                      min(a[1] for a in arms) / min(RECENT_DAYS, days), min(a[0] for a in arms) / days)
