"""Data-quality checks read from an experiment's daily and age profiles (`abproxy.quality`):
null values, vanished events, volume changes, duplicates and late rows. Thresholds: `HealthSettings`
in the configuration, plus the constants of `abproxy.quality_scope`.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from .engines import Engine, as_engine
from .metrics import interval_days, literal, timestamp_literal
from .quality_scope import (DUPLICATE_WARN, LATE_WARN, MIN_EXPECTED_MISSING, MIN_NULL_ROWS, MIN_TRAILING_DAYS,
                            MOSTLY_NULL, VOLUME_P, Scope)
from .records import Check

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where a frame is read (not when the module loads)
    import pandas as pd


def null_checks(scope: Scope, daily: pd.DataFrame, recent_days: int, increase: float) -> list[Check]:
    """Null values in a column a metric aggregates (a sum counts them as 0): recent vs history."""
    out = []
    active = daily[daily[[f"t{i}" for i in range(len(scope.types))]].sum(axis=1) > 0]
    if active.empty:
        return out
    cut = max(active["day"]) - dt.timedelta(days=recent_days)
    is_recent = daily["day"] > cut
    for j, (s, users) in enumerate(scope.columns.items()):
        n, null = daily[f"s{j}_n"], daily[f"s{j}_null"]
        n_rec, null_rec = float(n[is_recent].sum()), float(null[is_recent].sum())
        n_old, null_old = float(n[~is_recent].sum()), float(null[~is_recent].sum())
        p_rec = null_rec / n_rec if n_rec else 0.0
        p_old = null_old / n_old if n_old else 0.0
        p_all = (null_rec + null_old) / (n_rec + n_old) if n_rec + n_old else 0.0
        what = (f"'{s.column}' of '{s.event}' events{' where ' + s.where if s.where else ''} "
                f"(aggregated by {', '.join(users)})")
        effect = "missing values count as 0 in a sum" if s.aggregate == "sum" else f"{s.aggregate} ignores missing values"
        rates = f"{p_rec:.1%} null in the last {recent_days} days, {p_old:.1%} before"
        if max(p_rec if n_rec >= MIN_NULL_ROWS else 0.0, p_all) > MOSTLY_NULL:
            status, detail = "fail", (f"{what} is mostly missing ({rates}); {effect}, so the metric is "
                                      "meaningless — fix the export of this column")
        elif n_rec >= MIN_NULL_ROWS and n_old >= MIN_NULL_ROWS and p_rec - p_old > increase:
            status, detail = "warn", (f"{what}: the null rate rose ({rates}, more than +{increase:.0%}); "
                                      f"{effect} — check the producer of this column")
        elif p_all > increase:
            status, detail = "warn", (f"{what}: {p_all:.1%} of values are missing ({rates}); {effect} — "
                                      "check the producer of this column")
        else:
            status, detail = "ok", f"{what}: {rates}"
        out.append(Check("null_values", scope.status(users, status), detail, metric=users[0],
                         value=max(p_rec, p_all), threshold=increase))
    return out


def missing_checks(engine: Engine | duckdb.DuckDBPyConnection, scope: Scope, daily: pd.DataFrame,
                   missing_days: float) -> list[Check]:
    """An event type not seen for `missing_days` before the analysis time while units are still in
    their window and, at its usual rate, at least MIN_EXPECTED_MISSING events were due: vanished."""
    import pandas as pd

    last = {i: daily[f"last{i}"].max() for i in range(len(scope.types))}
    seen = {i: pd.Timestamp(t).to_pydatetime() for i, t in last.items() if pd.notna(t)}
    units = float(daily["unit_days"].sum())
    out = [Check("event_missing", "warn", f"No '{t}' event (used by {', '.join(scope.users[t])}) in any unit's "
                 f"window ({units:,.0f} unit-days); check the event name in the metric definition and that the "
                 "event is exported", metric=scope.users[t][0], value=math.inf, threshold=missing_days)
           for i, t in enumerate(scope.types) if i not in seen and units > 0]
    if not seen:
        return out
    newest = max(seen.values())
    stale = (scope.as_of - newest).total_seconds() / 86400 > missing_days
    gaps = {i: (scope.as_of - t).total_seconds() / 86400 for i, t in sorted(seen.items())}
    spans = _unit_days_around(engine, scope, {i: seen[i] for i, gap in gaps.items() if gap > missing_days})
    for i, gap in gaps.items():
        t, users = scope.types[i], scope.users[scope.types[i]]
        after, before = spans.get(i, (0.0, 0.0))
        count = float(daily[f"t{i}"].sum())
        expected = count / before * after if before else 0.0
        if gap > missing_days and expected >= MIN_EXPECTED_MISSING:
            status = scope.status(users, "fail")
            detail = (f"'{t}' events (used by {', '.join(users)}) stopped: the last one was at {seen[i]:%Y-%m-%d %H:%M}, "
                      f"{gap:.1f} days before the analysis time, although ~{expected:,.0f} were expected since then "
                      "from units still in their window; " + (
                          "no metric event at all arrived since, so the data is stale — check that the export and "
                          "ingest are running, or analyse as of an earlier time" if stale else
                          "the event vanished while others continue — check its export and tracking"))
        else:
            status = "ok"
            detail = (f"'{t}' events arrive normally (latest {seen[i]:%Y-%m-%d %H:%M} UTC, {gap:.1f} days before "
                      "the analysis time)" if gap <= missing_days else
                      f"No '{t}' event for {gap:.1f} days, as expected: only ~{expected:,.0f} were due from the "
                      "units still in their window")
        out.append(Check("event_missing", status, detail, metric=users[0], value=gap, threshold=missing_days))
    return out


def _unit_days_around(engine, scope: Scope, last: dict[int, dt.datetime]) -> dict[int, tuple[float, float]]:
    """Per event type i, the unit-days in window after and before its last event `last[i]` (an
    O(units) query; only the types whose last event is older than the threshold need them)."""
    if not last:
        return {}
    values = ", ".join(f"({i}, {timestamp_literal(t)})" for i, t in last.items())
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    engine = as_engine(engine)
    sec = engine.dialect.epoch_seconds
    rows = engine.frame(f"""WITH {scope.units_sql}
        SELECT s.i,
               sum(greatest(0, {sec(f'least(u.exposed_at + {window}, {as_of})')} - {sec('greatest(u.exposed_at, s.t)')}))
                   / 86400 AS after,
               sum(greatest(0, {sec(f'least(u.exposed_at + {window}, s.t)')} - {sec('u.exposed_at')})) / 86400 AS before
        FROM units u CROSS JOIN (VALUES {values}) AS s(i, t) GROUP BY s.i ORDER BY s.i""").itertuples(index=False)
    return {int(i): (after, before) for i, after, before in rows}


@dataclass(frozen=True)
class AgeProfile:
    """Metric events by calendar day × days since exposure (age) × event type, and units by exposure
    day: what the volume check needs to expect events from the ages of the units in window."""

    events: pd.DataFrame      # day, age, event, n
    cohorts: dict[dt.date, int]
    max_age: int

    def units(self, day: dt.date, age: int) -> int:
        return self.cohorts.get(day - dt.timedelta(days=age), 0)


def age_profile(engine: Engine | duckdb.DuckDBPyConnection, scope: Scope) -> AgeProfile:
    """With a per-unit state in place (`sources.reading`, DuckDB only), its maintained ages table and
    its units: no event is read. Otherwise one grouped query on the engine that holds the events."""
    from .sources import active

    engine = as_engine(engine)
    source = active(scope.key, scope.as_of) if engine.name == "duckdb" else None
    if source is not None and getattr(source, "ages", None) is not None:
        con = engine.con
        return _age_profile(con.execute(f"SELECT day, age, event, n FROM {source.ages} WHERE n > 0").df(),
                            con.execute(f"SELECT CAST(exposed_at AS DATE), count(*) FROM {source.table} "
                                        "GROUP BY 1").fetchall(), scope)
    names = ", ".join(literal(t) for t in scope.types)
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    events = engine.frame(f"""WITH {scope.units_sql}
        SELECT CAST(e.occurred_at AS DATE) AS day, {engine.dialect.day_diff('u.exposed_at', 'e.occurred_at')} AS age,
               e.event, count(*) AS n
        FROM units u JOIN events e ON e.unit_id = u.unit_id
        WHERE e.event IN ({names}) AND e.occurred_at >= u.exposed_at AND e.occurred_at < u.exposed_at + {window}
          AND e.occurred_at <= {as_of}
        GROUP BY 1, 2, 3""")
    cohorts = engine.frame(f"WITH {scope.units_sql} SELECT CAST(exposed_at AS DATE) AS day, count(*) AS n "
                           "FROM units GROUP BY 1")
    return _age_profile(events, list(cohorts.itertuples(index=False)), scope)


def _age_profile(events: pd.DataFrame, cohorts: list, scope: Scope) -> AgeProfile:
    import pandas as pd

    if len(events):
        events["day"] = pd.to_datetime(events["day"]).dt.date
    return AgeProfile(events, {pd.Timestamp(d).date(): int(n) for d, n in cohorts}, math.ceil(scope.window_days))


def expected_events(profile: AgeProfile, event: str, day: dt.date, history: list[dt.date]) -> float:
    """Events of `event` expected on `day` from the units in window on that day, each at its age (days
    since exposure), at the per-unit rate of that age over the `history` days (all earlier days for an
    age the history lacks): users act less late in their window, so a cohort near the end of its
    window is not expected to be as active as a fresh one."""
    ev = profile.events[profile.events["event"] == event]
    counts = {(d, int(a)): float(n) for d, a, n in zip(ev["day"], ev["age"], ev["n"])}
    earlier = sorted(d for d in {d for d, _ in counts} | set(history) if d < day)
    total = 0.0
    for age in range(profile.max_age + 1):
        units = profile.units(day, age)
        if units == 0:
            continue
        for days in (history, earlier):
            exposed = sum(profile.units(d, age) for d in days)
            if exposed > 0:
                total += units * sum(counts.get((d, age), 0.0) for d in days) / exposed
                break
    return total


def poisson_tails(observed: int, expected: float) -> tuple[float, float]:
    """(P(X <= observed), P(X >= observed)) for X ~ Poisson(expected): scipy.special's pdtr / pdtrc, which
    scipy.stats.poisson.cdf / .sf call (without importing scipy.stats); P(X >= 0) = 1, as poisson.sf gives."""
    from scipy.special import pdtr, pdtrc

    return float(pdtr(observed, expected)), float(pdtrc(observed - 1, expected)) if observed > 0 else 1.0


def volume_checks(scope: Scope, daily: pd.DataFrame, trailing: int, change: float,
                  profile: AgeProfile | None = None) -> list[Check]:
    """Each metric event type on the last complete day against what the units in window were expected
    to produce, at the per-unit event rate of each day since exposure over the trailing days
    (`expected_events`); flagged only beyond ±`change` *and* improbable under Poisson noise (p < VOLUME_P)."""
    import pandas as pd

    complete = daily[(daily["unit_days"] > 0)
                     & (pd.to_datetime(daily["day"]) + pd.Timedelta(days=1) <= pd.Timestamp(scope.as_of))]
    if len(complete) <= MIN_TRAILING_DAYS:
        return []
    last = complete.iloc[-1]
    history = complete[pd.to_datetime(complete["day"]) >= pd.Timestamp(last["day"]) - pd.Timedelta(days=trailing)]
    history = history.iloc[:-1]
    out = []
    for i, t in enumerate(scope.types):
        users = scope.users[t]
        if profile is not None:
            expected = expected_events(profile, t, last["day"], list(history["day"]))
            basis = f"the trailing {len(history)} days' events per unit at each day since exposure"
        else:
            expected = float((history[f"t{i}"] / history["unit_days"]).median()) * float(last["unit_days"])
            basis = f"the trailing {len(history)}-day median per unit in window"
        observed = int(last[f"t{i}"])
        if len(history) < MIN_TRAILING_DAYS or not expected > 0:
            continue
        ratio = observed / expected
        p_low, p_high = poisson_tails(observed, expected)
        flagged = (ratio < 1 - change and p_low < VOLUME_P) or (ratio > 1 + change and p_high < VOLUME_P)
        detail = (f"'{t}' on {last['day']}: {observed:,} events vs ~{expected:,.0f} expected from {basis} "
                  f"({ratio - 1:+.0%}, tolerance ±{change:.0%})")
        if flagged:
            detail += (f"; the event {'dropped' if ratio < 1 else 'spiked'} — check its pipeline before trusting "
                       f"{', '.join(users)}")
        out.append(Check("event_volume", "warn" if flagged else "ok", detail, metric=users[0],
                         value=ratio - 1, threshold=change))
    return out


def duplicate_check(scope: Scope, daily: pd.DataFrame) -> Check:
    """Events repeating (unit, event, occurred_at, value): a re-delivered batch without event ids."""
    rows = sorted((t, int(daily[f"t{i}"].sum()), int(daily[f"dup{i}"].sum())) for i, t in enumerate(scope.types))
    rows = [r for r in rows if r[1]]
    total = sum(n for _, n, _ in rows)
    dup = sum(d for _, _, d in rows)
    share = dup / total if total else 0.0
    parts = ", ".join(f"'{e}' {d / n:.1%}" for e, n, d in rows if d)
    if share <= DUPLICATE_WARN and all(d / n <= DUPLICATE_WARN for _, n, d in rows if n):
        return Check("duplicate_events", "ok", f"{dup:,} of {total:,} metric events ({share:.2%}) repeat the same "
                                               "unit, event, time and value", value=share, threshold=DUPLICATE_WARN)
    return Check("duplicate_events", "warn",
                 f"{dup:,} of {total:,} metric events ({share:.1%}) are exact repeats of the same unit, event, time "
                 f"and value ({parts}); a batch was probably delivered twice without event ids, inflating counts "
                 "and sums — add 'event_id' to the export or remove the repeated file",
                 value=share, threshold=DUPLICATE_WARN)


def late_check(scope: Scope, daily: pd.DataFrame, late_hours: float) -> Check:
    """Events loaded more than `late_hours` after the warehouse already held newer events of the same
    type (a clock-free notion of lateness: a one-off backfill is not late); counted by `daily_profile`."""
    late = int(daily["late"].sum())
    total = int(sum(daily[f"t{i}"].sum() for i in range(len(scope.types))))
    share = late / total if total else 0.0
    if share <= LATE_WARN:
        return Check("late_data", "ok", f"{late:,} of {total:,} metric events ({share:.2%}) arrived more than "
                                        f"{late_hours:g} h after newer data", value=share, threshold=LATE_WARN)
    return Check("late_data", "warn",
                 f"{late:,} of {total:,} metric events ({share:.1%}) arrived more than {late_hours:g} hours after newer "
                 "events of the same type had been loaded; recent days are probably still incomplete, so the "
                 "latest results may change — check the export schedule", value=share, threshold=LATE_WARN)
