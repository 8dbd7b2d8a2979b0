"""The folded health checks equal the separate queries they replace.

- `quality.daily_profile` computes the daily profile, the duplicate and the late check in one pass
  (grouped by the duplicate key) and the unit-days from per-(first day, last day) groups: compared
  with the straightforward queries (one per check, unit-days by expanding every unit's window);
- `robustness.alternative_results` computes every robustness alternative in one query (the changed
  metrics as extra columns, `experiment_sql(extra=...)`): compared with one query per alternative.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest


from abproxy import quality, robustness
from abproxy.analysis import StatsTable, overall_results
from abproxy.config import Cuped, parse_config
from abproxy.metrics import experiment_sql, interval_days, literal, predicate, quote_ident, timestamp_literal
from abproxy.warehouse import connect

START = dt.datetime(2024, 3, 1)
AS_OF = dt.datetime(2024, 3, 15, 13, 30)
METRICS = {
    "spend": {"type": "mean", "event": "purchase", "window_days": 7},
    "big": {"type": "proportion", "event": "purchase", "where": "value >= 20", "window_days": 7},
    "spend_per_visit": {"type": "ratio", "window_days": 5, "numerator": {"event": "purchase"},
                        "denominator": {"event": "visit", "aggregate": "count"}},
    "refunds": {"type": "mean", "event": "refund", "aggregate": "sum", "window_days": 7},
    "visits": {"type": "mean", "event": "visit", "aggregate": "count", "window_days": 7,
               "capping": {"quantile": 0.9}},
}


def _config(**experiment):
    exp = {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["spend", "big"],
           "guardrails": ["spend_per_visit"], "secondary": ["refunds", "visits"], "decision": {"sequential": False}}
    exp.update(experiment)
    return parse_config({"metrics": METRICS, "experiments": {"x": exp}})


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    """400 units exposed over 12 days at microsecond times, ~6,000 events in three files, a
    re-delivered slice without event ids (duplicates), null values and a late file."""
    rng = np.random.default_rng(3)
    c = connect(tmp_path_factory.mktemp("folded") / "w.duckdb")
    n = 400
    exposed = [START + dt.timedelta(seconds=float(s)) for s in rng.uniform(0, 12 * 86400, n)]
    exposed = [t.replace(microsecond=int(rng.integers(0, 10 ** 6))) for t in exposed]
    rows = [(f"u{i}", "x", "ab"[i % 2], t) for i, t in enumerate(exposed)]
    rows += [(f"u{i}", "x", "ab"[i % 2], exposed[i] + dt.timedelta(days=1)) for i in range(0, n, 17)]
    exp = pd.DataFrame(rows, columns=["unit_id", "experiment", "variant", "exposed_at"])
    exp["file_id"], exp["loaded_at"] = 1, AS_OF
    m = 6000
    unit = rng.integers(0, n, m)
    ev = pd.DataFrame({
        "unit_id": [f"u{i}" for i in unit],
        "event": rng.choice(["purchase", "visit", "refund", "other"], m, p=[0.3, 0.5, 0.05, 0.15]),
        "occurred_at": [exposed[i] + dt.timedelta(seconds=float(s))
                        for i, s in zip(unit, rng.uniform(-3 * 86400, 9 * 86400, m))],
        "value": np.round(rng.exponential(20, m), 2)})
    ev.loc[rng.uniform(size=m) < 0.1, "value"] = np.nan
    ev["event_id"] = [f"e{i}" for i in range(m)]
    ev["file_id"] = np.where(ev["occurred_at"] < START + dt.timedelta(days=8), 2, 3)
    ev["loaded_at"] = np.where(ev["file_id"] == 2, START + dt.timedelta(days=8, hours=1), AS_OF)
    again = ev.sample(150, random_state=1).assign(event_id=None, file_id=4, loaded_at=AS_OF)   # duplicates
    late = ev[ev["file_id"] == 2].sample(200, random_state=2).assign(
        event_id=None, file_id=5, loaded_at=AS_OF + dt.timedelta(hours=1),
        occurred_at=lambda d: d["occurred_at"] + dt.timedelta(seconds=1))                  # a late file
    for frame, table in ((exp, "exposures"), (pd.concat([ev, again, late]), "events")):
        c.register("_df", frame)
        c.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _df")
        c.unregister("_df")
    yield c
    c.close()


# ----------------------------------------------------------------------------- the data-quality pass

def _reference_profile(con, scope, late_hours):
    """The straightforward queries: daily counts, unit-days by expanding each unit's window into
    days, duplicates by grouping the events, late events by joining the per-file frontier."""
    aggs = []
    for i, t in enumerate(scope.types):
        aggs += [f"count(*) FILTER (WHERE event = {literal(t)}) AS t{i}",
                 f"max(occurred_at) FILTER (WHERE event = {literal(t)}) AS last{i}"]
    for j, (s, users) in enumerate(scope.columns.items()):
        cond = f"event = {literal(s.event)} AND {predicate(s.where, users[0])}"
        aggs += [f"count(*) FILTER (WHERE {cond}) AS s{j}_n",
                 f"count(*) FILTER (WHERE {cond} AND {quote_ident(s.column)} IS NULL) AS s{j}_null"]
    as_of, window = timestamp_literal(scope.as_of), interval_days(scope.window_days)
    daily = con.execute(f"""{scope.events_sql},
    counts AS (SELECT CAST(occurred_at AS DATE) AS day, {', '.join(aggs)} FROM ev GROUP BY 1),
    spans AS (SELECT exposed_at, least(exposed_at + {window}, {as_of}) AS until,
                     unnest(generate_series(date_trunc('day', exposed_at), least(exposed_at + {window}, {as_of}),
                                            INTERVAL 1 DAY)) AS day
              FROM units),
    cover AS (SELECT CAST(day AS DATE) AS day,
                     sum(greatest(0, epoch(least(day + INTERVAL 1 DAY, until)) - epoch(greatest(day, exposed_at))))
                     / 86400 AS unit_days
              FROM spans GROUP BY 1)
    SELECT * FROM cover FULL JOIN counts USING (day) ORDER BY day""").df()
    dup = con.execute(f"""{scope.events_sql}
        SELECT event, sum(n) AS total, sum(n - 1) AS dup FROM (
            SELECT event, unit_id, occurred_at, value, count(*) AS n FROM ev GROUP BY ALL) GROUP BY event
        ORDER BY event""").fetchall()
    names = ", ".join(literal(t) for t in scope.types)
    late = con.execute(f"""{scope.events_sql},
        f AS (SELECT event, file_id, any_value(loaded_at) AS loaded_at, max(occurred_at) AS newest FROM events
              WHERE event IN ({names}) AND loaded_at IS NOT NULL GROUP BY event, file_id),
        frontier AS (SELECT event, file_id, max(newest) OVER (PARTITION BY event ORDER BY loaded_at
                     RANGE BETWEEN UNBOUNDED PRECEDING AND {interval_days(late_hours / 24)} PRECEDING) AS frontier
                     FROM f)
        SELECT count(*) FILTER (WHERE ev.occurred_at < fr.frontier), count(*)
        FROM ev LEFT JOIN frontier fr ON fr.event = ev.event AND fr.file_id = ev.file_id""").fetchone()
    return daily, dup, late


@pytest.mark.parametrize("as_of", [AS_OF, dt.datetime(2024, 3, 20), dt.datetime(2024, 3, 6, 7, 5, 3)])
@pytest.mark.parametrize("late_hours", [0.5, 48])
def test_one_pass_profile_equals_the_separate_queries(con, as_of, late_hours):
    config = _config()
    scope = quality.make_scope(config, "x", as_of)
    daily = quality.daily_profile(con, scope, late_hours)
    ref, dup, (late, total) = _reference_profile(con, scope, late_hours)
    assert list(daily["day"]) == list(pd.to_datetime(ref["day"]).dt.date)
    np.testing.assert_allclose(daily["unit_days"], ref["unit_days"].fillna(0), rtol=1e-12)
    for c in ref.columns:
        if c.startswith("last"):
            assert list(daily[c].fillna(pd.Timestamp(0))) == list(ref[c].fillna(pd.Timestamp(0))), c
        elif c not in ("day", "unit_days"):
            assert list(daily[c]) == list(ref[c].fillna(0)), c
    by_type = {t: (int(daily[f"t{i}"].sum()), int(daily[f"dup{i}"].sum())) for i, t in enumerate(scope.types)}
    assert {e: (int(n), int(d)) for e, n, d in dup} == {t: v for t, v in by_type.items() if v[0]}
    assert sum(d for _, d in by_type.values()) > 0                        # the re-delivered slice is seen
    assert (int(daily["late"].sum()), int(sum(n for n, _ in by_type.values()))) == (late, total)
    if late_hours < 1 and as_of >= AS_OF:
        assert late > 0                                                     # the late file is seen
    # the checks built on the profile report the same numbers as the separate queries
    total_dup = sum(int(d) for _, _, d in dup)
    assert quality.duplicate_check(scope, daily).detail.startswith(f"{total_dup:,} of {total:,} metric events")
    assert quality.late_check(scope, daily, late_hours).detail.startswith(f"{late:,} of {total:,} metric events")


# ----------------------------------------------------------------------------- robustness alternatives

@pytest.mark.parametrize("cuped", [False, True])
def test_one_query_for_all_alternatives_equals_one_query_each(con, cuped):
    config = _config()
    if cuped:       # CUPED configured: the alternative drops it (else it adds a 14-day pre-period)
        spend = config.metrics["spend"].model_copy(update={"cuped": Cuped(pre_window_days=3)})
        config = config.model_copy(update={"metrics": {**config.metrics, "spend": spend}})
    exp = config.experiments["x"]
    alternatives = robustness._alternatives(config, exp)
    assert len(alternatives) == 4
    folded = robustness.alternative_results(con, config, "x", AS_OF, alternatives)
    lean = exp.model_copy(update={"segments": []})
    decisive = [m for m, r in exp.roles().items() if r != "secondary"]
    for (_, _, changed), (alt_cfg, results) in zip(alternatives, folded):
        cfg = config.model_copy(update={"metrics": {**config.metrics, **changed},
                                        "experiments": {**config.experiments, "x": lean}})
        query = experiment_sql(cfg, "x", AS_OF, keys=decisive)
        expected = overall_results(StatsTable(con.execute(query.sql).df(), query), cfg, lean)
        assert alt_cfg.metrics == cfg.metrics
        assert [r.record() for r in results] == [r.record() for r in expected]


def test_extra_metrics_are_computed_beside_the_experiments_own(con):
    config = _config()
    halved = config.metrics["spend"].model_copy(update={"window_days": 3.5})
    query = experiment_sql(config, "x", AS_OF, extra={"spend@half": halved})
    assert [c.key for c in query.columns][-1] == "spend@half" and query.columns[-1].alias == "x0"
    alone = experiment_sql(config.model_copy(update={"metrics": {**config.metrics, "spend": halved}}), "x", AS_OF,
                           keys=["spend"])
    both, one = con.execute(query.sql).df(), con.execute(alone.sql).df()
    key = ["variant", "dim", "dim_value"]
    both, one = both.sort_values(key).reset_index(drop=True), one.sort_values(key).reset_index(drop=True)
    y = alone.columns[0].y
    assert list(both["x0_y_sum"]) == list(one[f"{y}_sum"]) and list(both["x0_y_sq"]) == list(one[f"{y}_sq"])
