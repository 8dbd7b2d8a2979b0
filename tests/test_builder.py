"""The SQL builder's two extension points: the dialect interface and the metric type classes.

* every piece of SQL that differs between engines goes through a `Dialect`: the plain ANSI dialect
  (sum, avg, min_by, percentile_cont … WITHIN GROUP) writes a different query that DuckDB also runs,
  and both give the same sufficient statistics on the same seeded data;
* each metric type reads back exactly the sums it declares (the column-name contract in one place);
* each CTE is its own small function.
"""
from __future__ import annotations

import ast
import datetime as dt
import inspect
import math

import numpy as np
import pandas as pd
import pytest

from abproxy import metrics
from abproxy.config import parse_config
from abproxy.dialect import DUCKDB, Dialect
from abproxy.metric_types import TYPES, columns_for
from abproxy.stats import JointMoments, Moments

AS_OF = dt.datetime(2024, 2, 1)
METRICS = {
    "rev": {"type": "mean", "event": "purchase", "capping": {"quantile": 0.9}},
    "rev_cuped": {"type": "mean", "event": "purchase", "cuped": {"pre_window_days": 7}},
    "buyer": {"type": "proportion", "event": "purchase"},
    "per_visit": {"type": "ratio", "numerator": {"event": "purchase"},
                  "denominator": {"event": "visit", "aggregate": "count"}},
    "days": {"type": "mean", "event": "visit", "aggregate": "count_distinct_days", "capping": {"value": 3}},
    "p90": {"type": "quantile", "event": "purchase", "quantile": 0.9},
    "raw": {"type": "mean", "sql": "SELECT unit_id, value FROM events WHERE event = 'purchase' AND occurred_at <= {as_of}"},
}


def _config():
    return parse_config({"metrics": METRICS, "experiments": {"exp": {
        "control": "a", "variants": {"a": {}, "b": {}}, "primary": ["rev"], "secondary": [m for m in METRICS if m != "rev"],
        "segments": ["country"], "decision": {"sequential": False}}}})


def _load(con, seed=5, n=600):
    rng = np.random.default_rng(seed)
    con.execute('ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "country" VARCHAR')
    start = dt.datetime(2024, 1, 5)
    exp = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "experiment": "exp",
                        "variant": rng.choice(["a", "b"], n),
                        "exposed_at": [start + dt.timedelta(hours=float(h)) for h in rng.uniform(0, 240, n)],
                        "country": rng.choice(["DE", "FR", "US"], n), "file_id": 1, "loaded_at": start})
    k = 4000
    ev = pd.DataFrame({"unit_id": [f"u{i}" for i in rng.integers(0, n, k)],
                       "event": rng.choice(["purchase", "visit"], k),
                       "occurred_at": [dt.datetime(2023, 12, 28) + dt.timedelta(hours=float(h))
                                       for h in rng.uniform(0, 800, k)],
                       "value": rng.gamma(2.0, 10.0, k), "event_id": [f"e{i}" for i in range(k)],
                       "file_id": 2, "loaded_at": start})
    for name, frame in (("exposures", exp), ("events", ev)):
        con.register("_rows", frame)
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")


def _stats(con, dialect):
    query = metrics.experiment_sql(_config(), "exp", AS_OF, dialect=dialect)
    frame = con.execute(query.sql).df().sort_values(["dim", "dim_value", "variant"]).reset_index(drop=True)
    return query, frame


def test_the_ansi_dialect_writes_other_sql_with_the_same_numbers(con):
    _load(con)
    q_duck, duck = _stats(con, DUCKDB)
    q_ansi, ansi = _stats(con, Dialect())
    assert "fsum(" in q_duck.sql and "arg_min(" in q_duck.sql and "quantile_cont(" in q_duck.sql
    assert "fsum(" not in q_ansi.sql and "arg_min(" not in q_ansi.sql and "quantile_cont(" not in q_ansi.sql
    assert "min_by(" in q_ansi.sql and "WITHIN GROUP" in q_ansi.sql and " REPLACE " not in q_ansi.sql
    assert list(duck.columns) == list(ansi.columns) and len(duck) == len(ansi) > 10
    for column in duck.columns:
        if duck[column].dtype.kind == "f":
            assert np.allclose(duck[column], ansi[column], rtol=1e-9, atol=1e-9, equal_nan=True), column
        else:
            assert list(duck[column]) == list(ansi[column]), column


def test_quantile_sql_through_a_dialect(con):
    _load(con)
    query = metrics.experiment_sql(_config(), "exp", AS_OF)
    col = next(c for c in query.columns if c.key == "p90")
    rows = {r[0]: r[1:] for r in con.execute(metrics.quantile_sql(query, col, 1.96, Dialect())).fetchall()}
    values = con.execute(query.unit_sql).df()
    for variant, (n, est, lo, hi) in rows.items():
        y = np.sort(values.loc[values["variant"] == variant, col.y].to_numpy())
        assert n == len(y) and est == y[math.ceil(n * 0.9) - 1] and lo <= est <= hi


@pytest.mark.parametrize("key", list(METRICS))
def test_each_type_reads_back_the_sums_it_declares(key):
    col = columns_for(key, "m0", _config().metrics[key])
    sums = col.sums(DUCKDB)
    row = {"n": 10, **{name: float(i + 1) for i, (name, _) in enumerate(sums)}}
    m = col.moments(row)
    assert isinstance(m, JointMoments if col.x else Moments) and m.n == 10
    flat = [m.sum, m.sum_sq] if isinstance(m, Moments) else [m.sum_y, m.sum_sq_y, m.sum_x, m.sum_sq_x, m.sum_xy]
    assert flat == [float(i + 1) for i in range(len(sums))]
    assert isinstance(col.moments(row, adjusted=False), Moments)
    assert all(name.startswith("m0_") for name, _ in sums)


def test_every_type_is_registered_under_its_config_name():
    assert set(TYPES) == {"mean", "proportion", "ratio", "quantile"}
    assert all(t.type_name == name for name, t in TYPES.items())


def test_each_cte_is_a_small_function():
    tree = ast.parse(inspect.getsource(metrics))
    sizes = {f.name: f.end_lineno - f.lineno + 1 for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert {"exposed_cte", "units_cte", "unit_events_cte", "unit_values_cte", "capped_cte", "stats_select"} <= set(sizes)
    assert max(sizes.values()) <= 25, {k: v for k, v in sizes.items() if v > 25}
