"""SQL semantics of abproxy.metrics.experiment_sql on small handmade data with exact expected numbers.

Rows are inserted straight into the warehouse tables (no simulator, no ingest), then the per-unit
table (`unit_sql`) and the grouping-set sufficient statistics (`sql`) are checked value by value.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest


from abproxy.config import ConfigError, parse_config
from abproxy.metrics import MetricSQLError, experiment_sql, literal, metric_sql, quote_ident

T = dt.datetime.fromisoformat
AS_OF = T("2024-01-20 00:00:00")
EXP_CORE = ["unit_id", "experiment", "variant", "exposed_at"]
EV_CORE = ["unit_id", "event", "occurred_at", "value"]


# ----------------------------------------------------------------------------- helpers

def insert_exposures(con, rows, attrs=()):
    """rows: (unit_id, experiment, variant, exposed_at, *attribute values)."""
    for a in attrs:
        con.execute(f'ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "{a}" VARCHAR')
    df = pd.DataFrame(rows, columns=EXP_CORE + list(attrs))
    df["file_id"], df["loaded_at"] = 1, T("2024-02-01")
    con.register("_exp_df", df)
    con.execute("INSERT INTO exposures BY NAME SELECT * FROM _exp_df")
    con.unregister("_exp_df")


def insert_events(con, rows, props=()):
    """rows: (unit_id, event, occurred_at, value, *property values)."""
    for p in props:
        con.execute(f'ALTER TABLE events ADD COLUMN IF NOT EXISTS "{p}" VARCHAR')
    df = pd.DataFrame(rows, columns=EV_CORE + list(props))
    df["value"] = df["value"].astype("float64")
    df["event_id"] = [f"ev{i}" for i in range(len(df))]
    df["file_id"], df["loaded_at"] = 2, T("2024-02-01")
    con.register("_ev_df", df)
    con.execute("INSERT INTO events BY NAME SELECT * FROM _ev_df")
    con.unregister("_ev_df")


def columns(con, table):
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def build(con, config, key="exp1", as_of=AS_OF):
    return experiment_sql(config, key, as_of, columns(con, "exposures"), columns(con, "events"))


def units(con, query) -> pd.DataFrame:
    """The per-unit table, one column per metric key (y) and `<key>__x` (x), indexed by unit_id."""
    df = con.execute(query.unit_sql).df().set_index("unit_id").sort_index()
    rename = {}
    for c in query.columns:
        rename[c.y] = c.key
        if c.x:
            rename[c.x] = f"{c.key}__x"
    return df.rename(columns=rename)


def stats(con, query) -> pd.DataFrame:
    return con.execute(query.sql).df()


def experiment(**extra):
    base = {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["rev"], "decision": {"sequential": False}}
    base.update(extra)
    return base


# ----------------------------------------------------------------------------- the handmade data set
#
# exp1, control a, treatment b, every metric window 7 days (one of 1 day), CUPED pre-window 7 days,
# as_of 2024-01-20 00:00.
#   u1  a  first exposure 01-01 10:00 (US, ios), re-exposed a 01-03 (DE, web): counts from 01-01 10:00, US/ios
#   u2  b  01-02 00:00 (DE, web)
#   u3  a 01-05 and b 01-06: multiple variants -> excluded, counted in excluded_multi
#   u4  b  01-19 12:00 (US, ios): window runs past as_of
#   u5  a  01-21: exposed after as_of -> absent
#   u6  only in exp2 -> absent
#   u8  a  01-03 00:00 (DE, web): no post-exposure events, a pre-window purchase
#   u9  b  01-04 00:00 (no country, web)
#   u10 a  01-10 00:00 (US, ios), then b on 01-25 (after as_of) -> a single-variant unit at as_of
EXPOSURES = [
    ("u1", "exp1", "a", T("2024-01-01 10:00"), "US", "ios"),
    ("u1", "exp1", "a", T("2024-01-03 00:00"), "DE", "web"),
    ("u2", "exp1", "b", T("2024-01-02 00:00"), "DE", "web"),
    ("u3", "exp1", "a", T("2024-01-05 00:00"), "US", "ios"),
    ("u3", "exp1", "b", T("2024-01-06 00:00"), "US", "ios"),
    ("u4", "exp1", "b", T("2024-01-19 12:00"), "US", "ios"),
    ("u5", "exp1", "a", T("2024-01-21 00:00"), "US", "ios"),
    ("u6", "exp2", "a", T("2024-01-02 00:00"), "US", "ios"),
    ("u8", "exp1", "a", T("2024-01-03 00:00"), "DE", "web"),
    ("u9", "exp1", "b", T("2024-01-04 00:00"), None, "web"),
    ("u10", "exp1", "a", T("2024-01-10 00:00"), "US", "ios"),
    ("u10", "exp1", "b", T("2024-01-25 00:00"), "US", "ios"),
]
EVENTS = [
    # u1: a pre-window purchase, post purchases 5 (at exposure), 20, 7 (last second of the window),
    # 100 exactly at the window end (excluded); visits on 01-02 (twice), 01-04 and one before exposure.
    ("u1", "purchase", T("2023-12-31 09:00"), 10, "card"),
    ("u1", "purchase", T("2024-01-01 10:00"), 5, "card"),
    ("u1", "purchase", T("2024-01-03 12:00"), 20, "paypal"),
    ("u1", "purchase", T("2024-01-08 09:59:59"), 7, "card"),
    ("u1", "purchase", T("2024-01-08 10:00"), 100, "card"),
    ("u1", "visit", T("2024-01-01 09:00"), None, None),
    ("u1", "visit", T("2024-01-02 08:00"), None, None),
    ("u1", "visit", T("2024-01-02 20:00"), None, None),
    ("u1", "visit", T("2024-01-04 01:00"), None, None),
    # u2
    ("u2", "purchase", T("2024-01-02 05:00"), 3, "paypal"),
    ("u2", "purchase", T("2024-01-02 06:00"), 8, "card"),
    ("u2", "refund", T("2024-01-02 07:00"), 50, None),
    ("u2", "visit", T("2024-01-03 00:00"), None, None),
    # u3 (excluded)
    ("u3", "purchase", T("2024-01-06 00:00"), 50, "card"),
    # u4: 6 exactly at as_of counts, 9 one second later does not
    ("u4", "purchase", T("2024-01-19 13:00"), 4, "card"),
    ("u4", "purchase", T("2024-01-20 00:00"), 6, "paypal"),
    ("u4", "purchase", T("2024-01-20 00:00:01"), 9, "card"),
    # u5 (absent)
    ("u5", "purchase", T("2024-01-19 00:00"), 99, "card"),
    # u8: 2 inside the pre-window (from 12-27 00:00), 1000 before it
    ("u8", "purchase", T("2023-12-30 00:00"), 2, "card"),
    ("u8", "purchase", T("2023-12-20 00:00"), 1000, "card"),
    # u9: 15 exactly one day after exposure (outside the 1-day window, inside the 7-day one)
    ("u9", "purchase", T("2024-01-05 00:00"), 15, "card"),
    # u10
    ("u10", "purchase", T("2024-01-10 23:00"), 12, "paypal"),
]

METRICS = {
    "rev": {"type": "mean", "event": "purchase", "window_days": 7},
    "rev_1d": {"type": "mean", "event": "purchase", "window_days": 1},
    "n_purchases": {"type": "mean", "event": "purchase", "aggregate": "count", "window_days": 7},
    "visit_days": {"type": "mean", "event": "visit", "aggregate": "count_distinct_days", "window_days": 7},
    "max_purchase": {"type": "mean", "event": "purchase", "aggregate": "max", "window_days": 7},
    "min_purchase": {"type": "mean", "event": "purchase", "aggregate": "min", "window_days": 7},
    "avg_purchase": {"type": "mean", "event": "purchase", "aggregate": "avg", "window_days": 7},
    "has_purchase": {"type": "mean", "event": "purchase", "aggregate": "exists", "window_days": 7},
    "converted": {"type": "proportion", "event": "purchase", "window_days": 7},
    "big_buyer": {"type": "proportion", "event": "purchase", "where": "value >= 10", "window_days": 7},
    "card_rev": {"type": "mean", "event": "purchase", "where": "method = 'card'", "window_days": 7},
    "aov": {"type": "ratio", "window_days": 7, "numerator": {"event": "purchase"},
            "denominator": {"event": "purchase", "aggregate": "count"}},
    "rev_cuped": {"type": "mean", "event": "purchase", "window_days": 7, "cuped": {"pre_window_days": 7}},
    "rev_cap15": {"type": "mean", "event": "purchase", "window_days": 7, "capping": {"value": 15}},
    "rev_capq": {"type": "mean", "event": "purchase", "window_days": 7, "capping": {"quantile": 0.75}},
    "rev_capq_nz": {"type": "mean", "event": "purchase", "window_days": 7,
                    "capping": {"quantile": 0.75, "ignore_zeros": True}},
    "rev_capq_cuped": {"type": "mean", "event": "purchase", "window_days": 7,
                       "capping": {"quantile": 0.75}, "cuped": {"pre_window_days": 7}},
    "visits_raw": {"type": "mean",
                   "sql": "SELECT unit_id, count(*) AS value FROM events "
                          "WHERE event = 'visit' AND occurred_at <= {as_of} GROUP BY unit_id"},
    "exposures_raw": {"type": "mean",
                      "sql": "SELECT unit_id, count(*) AS value FROM exposures "
                             "WHERE experiment = {experiment} AND exposed_at <= {as_of} GROUP BY unit_id"},
}

INCLUDED = ["u1", "u10", "u2", "u4", "u8", "u9"]
VARIANT = {"u1": "a", "u10": "a", "u8": "a", "u2": "b", "u4": "b", "u9": "b"}
REV = {"u1": 32.0, "u10": 12.0, "u2": 11.0, "u4": 10.0, "u8": 0.0, "u9": 15.0}
EXPECTED = {
    "rev": REV,
    "rev_1d": {"u1": 5.0, "u10": 12.0, "u2": 11.0, "u4": 10.0, "u8": 0.0, "u9": 0.0},
    "n_purchases": {"u1": 3.0, "u10": 1.0, "u2": 2.0, "u4": 2.0, "u8": 0.0, "u9": 1.0},
    "visit_days": {"u1": 2.0, "u10": 0.0, "u2": 1.0, "u4": 0.0, "u8": 0.0, "u9": 0.0},
    "max_purchase": {"u1": 20.0, "u10": 12.0, "u2": 8.0, "u4": 6.0, "u8": 0.0, "u9": 15.0},
    "min_purchase": {"u1": 5.0, "u10": 12.0, "u2": 3.0, "u4": 4.0, "u8": 0.0, "u9": 15.0},
    "avg_purchase": {"u1": 32 / 3, "u10": 12.0, "u2": 5.5, "u4": 5.0, "u8": 0.0, "u9": 15.0},
    "has_purchase": {"u1": 1.0, "u10": 1.0, "u2": 1.0, "u4": 1.0, "u8": 0.0, "u9": 1.0},
    "converted": {"u1": 1.0, "u10": 1.0, "u2": 1.0, "u4": 1.0, "u8": 0.0, "u9": 1.0},
    "big_buyer": {"u1": 1.0, "u10": 1.0, "u2": 0.0, "u4": 0.0, "u8": 0.0, "u9": 1.0},
    "card_rev": {"u1": 12.0, "u10": 0.0, "u2": 8.0, "u4": 4.0, "u8": 0.0, "u9": 15.0},
    "aov": {"u1": 32.0, "u10": 12.0, "u2": 11.0, "u4": 10.0, "u8": 0.0, "u9": 15.0},
    "aov__x": {"u1": 3.0, "u10": 1.0, "u2": 2.0, "u4": 2.0, "u8": 0.0, "u9": 1.0},
    "rev_cuped": REV,
    "rev_cuped__x": {"u1": 10.0, "u10": 0.0, "u2": 0.0, "u4": 0.0, "u8": 2.0, "u9": 0.0},
    "rev_cap15": {u: min(v, 15.0) for u, v in REV.items()},
    "visits_raw": {"u1": 4.0, "u10": 0.0, "u2": 1.0, "u4": 0.0, "u8": 0.0, "u9": 0.0},
    "exposures_raw": {"u1": 2.0, "u10": 1.0, "u2": 1.0, "u4": 1.0, "u8": 1.0, "u9": 1.0},
}


def np_cap(values, q, ignore_zeros=False):
    v = np.asarray(list(values), dtype=float)
    pool = v[v != 0] if ignore_zeros else v
    return np.minimum(v, np.quantile(pool, q))  # numpy default: linear interpolation


@pytest.fixture()
def handmade(con):
    insert_exposures(con, EXPOSURES, attrs=("country", "platform"))
    insert_events(con, EVENTS, props=("method",))
    config = parse_config({"metrics": METRICS, "experiments": {"exp1": experiment(
        primary=["rev"], secondary=[k for k in METRICS if k != "rev"], segments=["country", "platform"])}})
    query = build(con, config)
    return con, config, query


# ----------------------------------------------------------------------------- per-unit values

def test_units_first_exposure_and_exclusions(handmade):
    con, _, query = handmade
    df = units(con, query)
    assert list(df.index) == sorted(INCLUDED)
    assert df["variant"].to_dict() == {u: VARIANT[u] for u in sorted(INCLUDED)}
    # first exposure decides the exposure day and the segment attributes
    assert str(df.loc["u1", "exposure_day"])[:10] == "2024-01-01"
    assert df.loc["u1", "seg_0"] == "US" and df.loc["u1", "seg_1"] == "ios"
    assert pd.isna(df.loc["u9", "seg_0"])
    overall = stats(con, query).query("dim == 'overall'")
    assert set(overall["excluded_multi"]) == {1}          # u3 only: u10's second variant is after as_of
    assert overall.set_index("variant")["n"].to_dict() == {"a": 3, "b": 3}


@pytest.mark.parametrize("metric", [k for k in EXPECTED])
def test_unit_values_exact(handmade, metric):
    con, _, query = handmade
    df = units(con, query)
    expected = pd.Series(EXPECTED[metric]).sort_index()
    np.testing.assert_allclose(df[metric].to_numpy(), expected.to_numpy(), rtol=1e-12, atol=0)


def test_as_of_moves_the_point_in_time(con):
    """An earlier as_of drops later exposures and events; u1's window is cut at as_of."""
    insert_exposures(con, EXPOSURES, attrs=("country", "platform"))
    insert_events(con, EVENTS, props=("method",))
    config = parse_config({"metrics": METRICS, "experiments": {"exp1": experiment(primary=["rev", "n_purchases"])}})
    df = units(con, build(con, config, as_of=T("2024-01-03 12:00")))
    # u3 first exposure is after 01-03 12:00; u10 too; u1 (a), u2 (b), u8 (a) remain
    assert list(df.index) == ["u1", "u2", "u8"]
    assert df["rev"].to_dict() == {"u1": 25.0, "u2": 11.0, "u8": 0.0}     # 5 + 20 (12:00 == as_of)
    assert df["n_purchases"].to_dict() == {"u1": 2.0, "u2": 2.0, "u8": 0.0}


def test_capping_by_quantile_equals_numpy_linear_quantile(handmade):
    con, _, query = handmade
    df = units(con, query)
    rev = df["rev"]
    np.testing.assert_allclose(df["rev_capq"], np_cap(rev, 0.75), rtol=1e-12)
    np.testing.assert_allclose(df["rev_capq_nz"], np_cap(rev, 0.75, ignore_zeros=True), rtol=1e-12)
    # the CUPED covariate is capped with its own quantile
    np.testing.assert_allclose(df["rev_capq_cuped"], np_cap(rev, 0.75), rtol=1e-12)
    np.testing.assert_allclose(df["rev_capq_cuped__x"], np_cap(df["rev_cuped__x"], 0.75), rtol=1e-12)
    # the caps really bite here (sanity of the data set)
    assert np.quantile(rev, 0.75) < rev.max() and np.quantile(rev[rev != 0], 0.75) != np.quantile(rev, 0.75)


def test_capping_quantile_random_data(con):
    """Pooled (both arms) quantile_cont == numpy linear quantile on 2,000 units with many zeros."""
    rng = np.random.default_rng(7)
    n = 2000
    uid = [f"u{i:05d}" for i in range(n)]
    exp_at = [T("2024-01-01") + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 5 * 1440, n)]
    insert_exposures(con, [(u, "exp1", "ab"[i % 2], e) for i, (u, e) in enumerate(zip(uid, exp_at))])
    rows = []
    for u, e in zip(uid, exp_at):
        for _ in range(rng.poisson(1.0)):
            rows.append((u, "purchase", e + dt.timedelta(hours=float(rng.uniform(0, 100))), float(rng.lognormal(2, 1.2))))
    insert_events(con, rows)
    metrics = {"rev": {"type": "mean", "event": "purchase"},
               "rev_q": {"type": "mean", "event": "purchase", "capping": {"quantile": 0.95}},
               "rev_qz": {"type": "mean", "event": "purchase", "capping": {"quantile": 0.9, "ignore_zeros": True}}}
    config = parse_config({"metrics": metrics, "experiments": {"exp1": experiment(secondary=["rev_q", "rev_qz"])}})
    df = units(con, build(con, config))
    assert (df["rev"] == 0).mean() > 0.2
    np.testing.assert_allclose(df["rev_q"], np_cap(df["rev"], 0.95), rtol=1e-12)
    np.testing.assert_allclose(df["rev_qz"], np_cap(df["rev"], 0.9, ignore_zeros=True), rtol=1e-12)


# ----------------------------------------------------------------------------- sufficient statistics

def _sums(frame: pd.DataFrame, key: str, x: str | None) -> dict[str, float]:
    y = frame[key]
    out = {"n": len(frame), "y_sum": y.sum(), "y_sq": (y * y).sum()}
    if x:
        out |= {"x_sum": frame[x].sum(), "x_sq": (frame[x] ** 2).sum(), "xy": (y * frame[x]).sum()}
    return out


def _row_sums(row: pd.Series, col) -> dict[str, float]:
    out = {"n": row["n"], "y_sum": row[f"{col.y}_sum"], "y_sq": row[f"{col.y}_sq"]}
    if col.x:
        out |= {"x_sum": row[f"{col.x}_sum"], "x_sq": row[f"{col.x}_sq"], "xy": row[f"{col.alias}_xy"]}
    return out


def test_sufficient_statistics_every_grouping_set(handmade):
    """overall, exposure day and both segments: n, Σy, Σy², Σx, Σx², Σxy == pandas on the unit table."""
    con, _, query = handmade
    df = units(con, query)
    df["day"] = df["exposure_day"].astype(str).str[:10]
    st = stats(con, query)
    groups = {"overall": None, "day": "day", "country": "seg_0", "platform": "seg_1"}
    checked = 0
    for dim, by in groups.items():
        rows = st[st["dim"] == dim]
        keys = ["variant"] + ([by] if by else [])
        expected = dict(list(df.groupby(keys, dropna=False)))
        assert len(rows) == len(expected), dim
        for _, row in rows.iterrows():
            value = row["dim_value"]
            k = (row["variant"],) if by is None else (row["variant"], value if isinstance(value, str) else np.nan)
            if by == "day":
                k = (row["variant"], str(value)[:10])
            frame = next(v for kk, v in expected.items() if _same_key(kk, k))
            for col in query.columns:
                x = f"{col.key}__x" if col.x else None
                got, want = _row_sums(row, col), _sums(frame, col.key, x)
                for name in want:
                    assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-12), (dim, k, col.key, name)
                checked += 1
    assert checked > 50


def _same_key(a, b) -> bool:
    a = a if isinstance(a, tuple) else (a,)
    if len(a) != len(b):
        return False
    return all((pd.isna(x) and pd.isna(y)) if not isinstance(x, str) or not isinstance(y, str) else x == y
               for x, y in zip(a, b))


def test_segment_rows_by_attribute(handmade):
    con, _, query = handmade
    st = stats(con, query)
    country = st[st["dim"] == "country"]
    got = {(r.variant, r.dim_value if isinstance(r.dim_value, str) else None): r.n for r in country.itertuples()}
    # u1 counts as US (its first exposure) although it was re-exposed from DE
    assert got == {("a", "US"): 2, ("a", "DE"): 1, ("b", "US"): 1, ("b", "DE"): 1, ("b", None): 1}
    platform = st[st["dim"] == "platform"]
    assert {(r.variant, r.dim_value): r.n for r in platform.itertuples()} == {
        ("a", "ios"): 2, ("a", "web"): 1, ("b", "ios"): 1, ("b", "web"): 2}
    overall = st[st["dim"] == "overall"]
    assert set(overall["dim_value"]) == {""}


def test_segment_must_be_an_exposure_column(con):
    insert_exposures(con, EXPOSURES[:3], attrs=("country", "platform"))
    config = parse_config({"metrics": METRICS, "experiments": {"exp1": experiment(segments=["browser"])}})
    with pytest.raises(MetricSQLError, match="browser"):
        build(con, config)


def test_event_column_must_exist(con):
    config = parse_config({"metrics": {"rev": {"type": "mean", "event": "purchase", "column": "amount"}},
                           "experiments": {"exp1": experiment()}})
    with pytest.raises(MetricSQLError, match="amount"):
        build(con, config)


def test_metric_on_a_numeric_property_column(con):
    insert_exposures(con, [("u1", "exp1", "a", T("2024-01-01")), ("u2", "exp1", "b", T("2024-01-01"))])
    con.execute('ALTER TABLE events ADD COLUMN IF NOT EXISTS "amount" DOUBLE')
    insert_events(con, [("u1", "purchase", T("2024-01-02"), 1.0), ("u2", "purchase", T("2024-01-02"), 1.0)])
    con.execute("UPDATE events SET amount = CASE unit_id WHEN 'u1' THEN 3.5 ELSE 7 END")
    config = parse_config({"metrics": {"rev": {"type": "mean", "event": "purchase", "column": "amount"}},
                           "experiments": {"exp1": experiment()}})
    assert units(con, build(con, config))["rev"].to_dict() == {"u1": 3.5, "u2": 7.0}


def test_empty_experiment_returns_no_rows(con):
    config = parse_config({"metrics": METRICS, "experiments": {"exp1": experiment()}})
    assert stats(con, build(con, config)).empty


def test_raw_sql_metric_with_several_rows_per_unit_does_not_duplicate_units(con):
    """A raw metric returning one row per event must not multiply the unit rows (it used to: n doubled)."""
    insert_exposures(con, EXPOSURES, attrs=("country", "platform"))
    insert_events(con, EVENTS, props=("method",))
    metrics = {"rev": METRICS["rev"],
               "purchase_rows": {"type": "mean", "sql": "SELECT unit_id, value FROM events "
                                                        "WHERE event = 'purchase' AND occurred_at <= {as_of}"},
               "raw_ratio": {"type": "ratio", "sql": "SELECT unit_id, value, 1 AS denominator FROM events "
                                                     "WHERE event = 'purchase' AND occurred_at <= {as_of}"}}
    config = parse_config({"metrics": metrics,
                           "experiments": {"exp1": experiment(secondary=["purchase_rows", "raw_ratio"])}})
    query = build(con, config)
    df = units(con, query)
    assert list(df.index) == sorted(INCLUDED)
    assert df["purchase_rows"]["u1"] == 10 + 5 + 20 + 7 + 100
    assert df["raw_ratio"]["u1"] == 142 and df["raw_ratio__x"]["u1"] == 5
    assert df["raw_ratio__x"]["u8"] == 2
    overall = stats(con, query).query("dim == 'overall'")
    assert overall["n"].sum() == 6


# ----------------------------------------------------------------------------- injection and validation

def _config(metrics=None, exp=None, key="exp1"):
    return {"metrics": metrics or {"rev": {"type": "mean", "event": "purchase"}},
            "experiments": {key: exp or experiment()}}


@pytest.mark.parametrize("data", [
    _config(metrics={"rev'; DROP TABLE events; --": {"type": "mean", "event": "purchase"}}),
    _config(key="exp1'; DROP TABLE events; --"),
    _config(exp=experiment(segments=['country"; DROP TABLE events; --'])),
    _config(exp=experiment(segments=["country name"])),
    _config(metrics={"rev": {"type": "mean", "event": "a'b"}}),
    _config(metrics={"rev": {"type": "mean", "event": "purchase; DROP TABLE events"}}),
    _config(metrics={"rev": {"type": "mean", "event": "purchase", "column": 'value"; --'}}),
    _config(metrics={"rev": {"type": "ratio", "numerator": {"event": "x'y"}, "denominator": {"event": "purchase"}}}),
    _config(exp={"control": "a", "variants": {"a": {}, "b'); DROP TABLE events; --": {}}, "primary": ["rev"]}),
], ids=["metric-key", "experiment-key", "segment-quote", "segment-space", "event-quote", "event-semicolon",
        "column-quote", "ratio-event-quote", "variant-key"])
def test_config_refuses_injection(data):
    with pytest.raises(ConfigError):
        parse_config(data)


@pytest.mark.parametrize("where", ["value > 1; DROP TABLE events", "value > 1 -- comment",
                                   "value > 1 /* x */", "value > 1;"])
def test_where_with_statement_separator_or_comment_is_refused(con, where):
    config = parse_config(_config(metrics={"rev": {"type": "mean", "event": "purchase", "where": where}}))
    with pytest.raises(MetricSQLError, match="rev"):
        build(con, config)


@pytest.mark.parametrize("where", ["value > 5) OR (TRUE", "value > 5) OR TRUE OR (FALSE", "(value > 5",
                                   "method = 'card", "value IN (1, 2))"])
def test_where_cannot_escape_its_parentheses(con, where):
    """`a) OR (TRUE` would close the brackets around the predicate and override the event/window filter."""
    config = parse_config(_config(metrics={"rev": {"type": "mean", "event": "purchase", "where": where}}))
    with pytest.raises(MetricSQLError, match="one SQL condition"):
        build(con, config)


def test_where_with_brackets_inside_a_literal_is_fine(con):
    insert_exposures(con, EXPOSURES, attrs=("country", "platform"))
    insert_events(con, EVENTS, props=("method",))
    metrics = {"rev": {"type": "mean", "event": "purchase", "window_days": 7,
                       "where": "(method = 'card' OR method = ')(') AND e.value >= 7"}}
    df = units(con, build(con, parse_config(_config(metrics=metrics))))
    assert df["rev"].to_dict() == {"u1": 7.0, "u10": 0.0, "u2": 8.0, "u4": 0.0, "u8": 0.0, "u9": 15.0}


def test_raw_sql_with_two_statements_is_refused(con):
    config = parse_config(_config(metrics={"rev": {"type": "mean", "event": "purchase"},
                                           "bad": {"type": "mean", "sql": "SELECT 1 AS unit_id, 1 AS value; DROP TABLE events"}},
                                  exp=experiment(secondary=["bad"])))
    with pytest.raises(MetricSQLError, match="bad"):
        build(con, config)


@pytest.mark.parametrize("name", ["a'b", 'a"b', "a;b", "a b", "1abc", "", "a-b", "x\"; DROP TABLE t; --"])
def test_quote_ident_rejects_non_identifiers(name):
    with pytest.raises(MetricSQLError):
        quote_ident(name)


def test_quote_ident_and_literal():
    assert quote_ident("country_2") == '"country_2"'
    assert literal("a'b") == "'a''b'"


def test_config_text_only_reaches_sql_quoted(con):
    """Every name from the configuration appears in the SQL only as a quoted identifier or string literal."""
    insert_exposures(con, EXPOSURES, attrs=("country", "platform"))
    insert_events(con, EVENTS, props=("method",))
    config = parse_config({"metrics": METRICS, "experiments": {"exp-1.v2": experiment(
        variants={"ctl-1": {}, "treat.2": {}}, control="ctl-1", primary=["rev"],
        secondary=[k for k in METRICS if k != "rev"], segments=["country", "platform"])}})
    con.execute("UPDATE exposures SET experiment = 'exp-1.v2', "
                "variant = CASE variant WHEN 'a' THEN 'ctl-1' ELSE 'treat.2' END WHERE experiment = 'exp1'")
    query = build(con, config, key="exp-1.v2")
    sql = query.sql
    for text in ("exp-1.v2", "ctl-1", "treat.2", "purchase", "visit"):
        stripped = sql.replace(f"'{text}'", "")
        assert text not in stripped, text
    for ident in ("country", "platform", "value"):
        assert ident in sql and f'"{ident}"' in sql
    # metric keys never reach the SQL at all: columns are positional aliases m0, m1, ...
    assert "rev_cuped" not in sql and "n_purchases" not in sql
    # and the query runs, with the odd keys, to the same numbers
    st = stats(con, query).query("dim == 'overall'").set_index("variant")
    assert st.loc["ctl-1", "n"] == 3 and st.loc["treat.2", "n"] == 3
    assert st.loc["ctl-1", "m0_y_sum"] == 32 + 12 + 0


def test_metric_sql_for_the_catalog_has_placeholder():
    config = parse_config({"metrics": METRICS, "experiments": {"exp1": experiment(secondary=["aov"])}})
    text = metric_sql(config, "aov")
    assert "{as_of}" in text and "m1_y" in text and "m0_y" not in text and "2000-01-01" not in text
    assert metric_sql(config, "rev_1d").startswith("--")


def test_capping_a_proportion_is_refused():
    with pytest.raises(ConfigError, match="capping"):
        parse_config(_config(metrics={"rev": {"type": "proportion", "event": "purchase", "capping": {"value": 1}}}))
