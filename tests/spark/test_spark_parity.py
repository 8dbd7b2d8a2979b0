"""Engine parity: the same simulated workspaces through DuckDB and through a real local Spark give the
same runs — every result, interval, p-value, series point, health check and verdict equal to 1e-9.

The workspace is simulated once and ingested into DuckDB; the warehouse's own `exposures` and `events`
are then written to Parquet (the "lake"), and the Spark engine reads those files through `source`, so
both engines see the very same rows. Two experiments cover every metric type and aggregate, capping
(quantile, quantile ignoring zeros, absolute), CUPED (mean and proportion), ratio (plain and capped),
raw SQL (value and ratio), a where predicate, segments with a harmed segment, three arms with
multi-exposed units, a sample-ratio mismatch, sequential and fixed-horizon decisions.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from abproxy.analysis import analyze_experiment, run_query
from abproxy.config import parse_config
from abproxy.engines import SparkEngine
from abproxy.simulate import ExperimentSpec, SegmentHarm, SimulationSpec, analysis_time, config_for
from abproxy.spark import register_source
from abproxy.warehouse import connect
from lake import simulated_lake

pytestmark = pytest.mark.spark

RTOL, ATOL = 1e-9, 1e-12
SPEC = SimulationSpec(experiments=(
    # DE is about a sixth of the units: at 6,000 units and -80% spend the harm is flagged (Holm-adjusted
    # p ≈ 0.003) while the overall lift is not significantly harmful (+15% elsewhere)
    ExperimentSpec("ranker", units=6000, variants=("control", "t1", "t2"), spend_lift=0.15, conversion_lift=0.03,
                   segment_harm=SegmentHarm("country", "DE", -0.8), multi_exposed_fraction=0.02, days=10),
    ExperimentSpec("churn", units=1600, actual_allocation=(0.57, 0.43), refund_lift=0.4, usage_lift=0.1, days=8),
), seed=11)
AS_OF = analysis_time(SPEC)
EXTRA_METRICS = {
    "big_orders": {"type": "mean", "event": "purchase", "aggregate": "count", "where": "value > 30"},
    "active_days": {"type": "mean", "event": "session_start", "aggregate": "count_distinct_days"},
    "max_item": {"type": "mean", "event": "purchase", "aggregate": "max", "capping": {"value": 150}},
    "min_item": {"type": "mean", "event": "purchase", "aggregate": "min"},
    "avg_item": {"type": "mean", "event": "purchase", "aggregate": "avg", "capping": {"quantile": 0.95,
                                                                                     "ignore_zeros": True}},
    "uses_feature": {"type": "proportion", "event": "feature_use", "aggregate": "exists", "cuped": True},
    "spend_capped_ratio": {"type": "ratio", "capping": {"quantile": 0.98},
                           "numerator": {"event": "purchase"}, "denominator": {"event": "session_start",
                                                                               "aggregate": "count"}},
    "raw_features": {"type": "mean", "sql": "SELECT unit_id, count(*) AS value FROM events "
                                            "WHERE event = 'feature_use' AND occurred_at <= {as_of} GROUP BY unit_id"},
    "raw_spend_per_order": {"type": "ratio", "sql": "SELECT unit_id, sum(value) AS value, count(*) AS denominator "
                                                    "FROM events WHERE event = 'purchase' GROUP BY unit_id"},
}


def _config(engine: str, source: dict[str, str] | None = None):
    data = config_for(SPEC)
    data["metrics"].update(EXTRA_METRICS)
    for key, exp in data["experiments"].items():
        exp["secondary"] += list(EXTRA_METRICS)
        exp["decision"].update({"min_segment_units": 100, "min_units_per_variant": 300,
                                "sequential": key == "ranker"})
    if engine == "spark":
        data.update(engine="spark", spark={"master": "local[2]"}, source=source)
    return parse_config(data)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("parity")
    con, source = simulated_lake(root, SPEC)
    config = _config("spark", source)
    engine = SparkEngine(spark, register_source(spark, config.source, root))
    ledger = connect(root / "data" / "spark-ledger.duckdb")     # the Spark runs' own (empty) local ledger
    yield {"con": con, "duck_config": _config("duckdb"), "spark_config": config, "engine": engine,
           "ledger": ledger, "spark": spark, "root": root}
    con.close()
    ledger.close()


@pytest.fixture(scope="module")
def runs(engines):
    out = {}
    for key in ("ranker", "churn"):
        duck = analyze_experiment(engines["con"], engines["duck_config"], key, AS_OF)
        spark = analyze_experiment(engines["ledger"], engines["spark_config"], key, AS_OF, engine=engines["engine"])
        assert duck.status == "ok", duck.error
        assert spark.status == "ok", spark.error
        out[key] = (duck, spark)
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _assert_same(label: str, a, b) -> None:
    assert _close(a, b), f"{label}: DuckDB {a!r} != Spark {b!r}"


@pytest.mark.parametrize("key", ["ranker", "churn"])
def test_units_srm_and_exclusions_agree(runs, key):
    duck, spark = runs[key]
    assert duck.units == spark.units and duck.excluded_multi == spark.excluded_multi
    _assert_same("srm p", duck.srm.p_value, spark.srm.p_value)
    _assert_same("days running", duck.days_running, spark.days_running)
    if key == "ranker":
        assert duck.excluded_multi > 0 and len(duck.units) == 3
    else:
        assert not duck.srm.ok          # the broken split is detected by both


@pytest.mark.parametrize("key", ["ranker", "churn"])
def test_every_result_interval_and_p_value_agrees(runs, key):
    duck, spark = runs[key]
    a = {(r.metric, r.variant, r.segment, r.segment_value): r.record() for r in duck.results}
    b = {(r.metric, r.variant, r.segment, r.segment_value): r.record() for r in spark.results}
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        for field in a[k]:
            _assert_same(f"{k} {field}", a[k][field], b[k][field])
    metrics = {r.metric for r in duck.results}
    assert set(EXTRA_METRICS) <= metrics and any(r.segment for r in duck.results)


@pytest.mark.parametrize("key", ["ranker", "churn"])
def test_every_series_point_agrees(runs, key):
    duck, spark = runs[key]
    assert len(duck.series) == len(spark.series) > 0
    for p, q in zip(sorted(duck.series, key=_point), sorted(spark.series, key=_point)):
        assert _point(p) == _point(q)
        for field in ("control_units", "variant_units", "abs_effect", "abs_se", "rel_effect", "rel_ci"):
            _assert_same(f"{_point(p)} {field}", getattr(p, field), getattr(q, field))


def _point(p):
    return (p.metric, p.variant, p.kind, p.day)


ENGINE_SPECIFIC = {"future_timestamps", "late_data"}   # load times exist only for ingested files


@pytest.mark.parametrize("key", ["ranker", "churn"])
def test_health_checks_and_verdicts_agree(runs, key):
    duck, spark = runs[key]
    a = [c for c in duck.health if c.check not in ENGINE_SPECIFIC]
    b = [c for c in spark.health if c.check not in ENGINE_SPECIFIC]
    assert [(c.check, c.metric, c.segment, c.variant) for c in a] == [(c.check, c.metric, c.segment, c.variant)
                                                                       for c in b]
    for c, d in zip(a, b):
        assert (c.status, c.detail) == (d.status, d.detail), c.check
        _assert_same(f"{c.check} value", c.value, d.value)
    assert duck.verdict.decision == spark.verdict.decision
    assert duck.verdict.ship_variant == spark.verdict.ship_variant
    assert duck.verdict.reasons == spark.verdict.reasons
    for run in (duck, spark):       # the scenarios are genuinely exercised, on both engines
        checks = {c.check: c.status for c in run.health}
        if key == "ranker":
            harmed = {(c.variant, c.segment) for c in run.health if c.check == "segment_harm" and c.status == "warn"}
            assert harmed == {("t1", "country=DE"), ("t2", "country=DE")}
        else:
            assert checks["srm"] == "fail" and run.verdict.decision == "INVALID"


def test_only_grouped_rows_come_back(engines):
    """The statistics query ships O(variants × groups) rows to the driver, not one per unit."""
    engine, config = engines["engine"], engines["spark_config"]
    before = engine.rows_returned
    table = run_query(engine, config, "ranker", AS_OF)
    shipped = engine.rows_returned - before
    groups = table.frame.groupby("dim")["dim_value"].nunique()
    assert shipped == len(table.frame) == 3 * int(groups.sum()) < 200
    assert shipped < sum(int(r["n"]) for r in table.records("overall")) / 10


def test_sums_are_bit_identical_across_partitionings(engines):
    """Decimal sums are exact, hence associative: another partitioning gives the very same bits."""
    spark, engine, config = engines["spark"], engines["engine"], engines["spark_config"]
    first = run_query(engine, config, "churn", AS_OF).frame
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        again = run_query(engine, config, "churn", AS_OF).frame
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "2")
    key = ["variant", "dim", "dim_value"]
    pd.testing.assert_frame_equal(first.sort_values(key).reset_index(drop=True),
                                  again.sort_values(key).reset_index(drop=True), check_exact=True)
