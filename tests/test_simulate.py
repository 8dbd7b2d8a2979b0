"""The simulator writes loadable workspaces whose raw data carry the true effects it promises.

Truth is checked on the generated Parquet files with plain DuckDB SQL (independent of abproxy's
metric code) and scipy, so a wrong lift, split, window or injection makes these tests fail.
"""
from __future__ import annotations

import hashlib
import math
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from scipy import stats


from abproxy.config import load_config
from abproxy.simulate import (
    ExperimentSpec,
    Injections,
    SegmentHarm,
    SimulationSpec,
    analysis_time,
    config_for,
    data_end,
    default_spec,
    demo_spec,
    segment_shares,
    simulate,
    true_lifts,
)

MAIN = SimulationSpec(experiments=(
    ExperimentSpec(key="lift", units=200_000, spend_lift=0.03, conversion_lift=0.10, usage_lift=0.05,
                   refund_lift=0.20, multi_exposed_fraction=0.02),
    ExperimentSpec(key="srm", units=40_000, allocation=(0.5, 0.5), actual_allocation=(0.52, 0.48)),
    ExperimentSpec(key="harm", units=200_000, spend_lift=0.05, segment_harm=SegmentHarm("country", "DE", -0.15)),
    ExperimentSpec(key="fade", units=100_000, days=10, usage_lift=0.20, fading=1.0,
                   variants=("a", "b", "c"), versions=("1", "2", "3")),
), seed=11)


def _glob(root: Path, kind: str, pattern: str = "sim-*.parquet") -> str:
    return str(root / "inbox" / kind / pattern)


def _main_events(root: Path) -> str:
    return _glob(root, "events", "sim-events-[0-9]*.parquet")


def per_unit(root: Path, spec: SimulationSpec) -> duckdb.DuckDBPyConnection:
    """A connection with a table `u`: one row per unit exposed to exactly one variant, with its
    metric values computed from the raw files."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    start = spec.start.strftime("%Y-%m-%d %H:%M:%S")
    con.execute(f"""
    CREATE TABLE u AS
    WITH x AS (
        SELECT unit_id, any_value(experiment) AS experiment, min(exposed_at) AS exposed_at,
               count(DISTINCT variant) AS n_variants, any_value(variant) AS variant,
               any_value(country) AS country, any_value(platform) AS platform
        FROM read_parquet('{_glob(root, "exposures")}') GROUP BY unit_id
    ), e AS (SELECT * FROM read_parquet('{_main_events(root)}'))
    SELECT x.unit_id, x.experiment, x.variant, x.country, x.platform, x.exposed_at,
        date_diff('day', TIMESTAMP '{start}', x.exposed_at) AS day,
        coalesce(sum(e.value) FILTER (WHERE e.event = 'purchase' AND e.occurred_at >= x.exposed_at
                 AND e.occurred_at < x.exposed_at + INTERVAL 14 DAY), 0) AS spend,
        coalesce(sum(e.value) FILTER (WHERE e.event = 'purchase' AND e.occurred_at < x.exposed_at
                 AND e.occurred_at >= x.exposed_at - INTERVAL 14 DAY), 0) AS pre_spend,
        (count(*) FILTER (WHERE e.event = 'purchase' AND e.occurred_at >= x.exposed_at) > 0)::INT AS buyer,
        count(*) FILTER (WHERE e.event = 'feature_use') AS usage,
        (count(*) FILTER (WHERE e.event = 'refund') > 0)::INT AS refund,
        count(*) FILTER (WHERE e.event = 'session_start') AS sessions
    FROM x LEFT JOIN e ON e.unit_id = x.unit_id
    WHERE x.n_variants = 1
    GROUP BY ALL
    """)
    return con


def relative_lift(con, metric: str, where: str, control: str, treatment: str) -> tuple[float, float]:
    """(treatment mean / control mean - 1, its delta-method standard error)."""
    rows = dict((v, (n, m, var)) for v, n, m, var in con.execute(f"""
        SELECT variant, count(*), avg({metric}), var_samp({metric}) FROM u WHERE {where} GROUP BY variant
    """).fetchall())
    (nc, mc, vc), (nt, mt, vt) = rows[control], rows[treatment]
    se = math.sqrt(vt / nt / mc ** 2 + mt ** 2 * vc / nc / mc ** 4)
    return mt / mc - 1, se


def checksum(root: Path) -> tuple:
    con = duckdb.connect()
    ex = con.execute(f"""SELECT count(*), sum(hash(unit_id, experiment, variant, exposed_at, country, platform))
                         FROM read_parquet('{_glob(root, "exposures")}')""").fetchone()
    ev = con.execute(f"""SELECT count(*), sum(hash(unit_id, event, occurred_at, value, event_id, category))
                         FROM read_parquet('{_glob(root, "events")}')""").fetchone()
    return ex + ev


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    root = simulate(tmp_path_factory.mktemp("sim") / "ws", MAIN)
    return root, per_unit(root, MAIN)


# --------------------------------------------------------------------------- files and config

def test_workspace_files_and_config_load(main):
    root, _ = main
    config = load_config(root)
    assert list(config.experiments) == ["lift", "srm", "harm", "fade"]
    assert (root / "data").is_dir()
    fade = config.experiments["fade"]
    assert fade.control == "a" and fade.treatments == ["b", "c"]
    assert {v: x.version for v, x in fade.variants.items()} == {"a": "1", "b": "2", "c": "3"}
    assert config.experiments["srm"].weights == {"control": 0.5, "treatment": 0.5}   # configured, not actual
    lift = config.experiments["lift"]
    assert lift.primary == ["spend_per_user"] and lift.start == MAIN.start.date()
    assert [g.metric for g in lift.guardrail_specs] == ["refund_rate"]
    assert lift.decision.sequential is False
    assert config.metrics["spend_per_user"].capping is None and config.metrics["spend_per_user"].cuped is None
    assert config.metrics["spend_per_user_capped"].cuped_days == 14
    assert config.metrics["refund_rate"].higher_is_better is False
    assert config_for(MAIN)["experiments"]["lift"]["allocation"] == {"control": 0.5, "treatment": 0.5}
    assert (root / "abproxy.yaml").read_text().startswith("#")

    con = duckdb.connect()
    ex = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_glob(root, 'exposures')}')").fetchall()
    assert [(r[0], r[1]) for r in ex] == [("unit_id", "VARCHAR"), ("experiment", "VARCHAR"), ("variant", "VARCHAR"),
                                         ("exposed_at", "TIMESTAMP"), ("country", "VARCHAR"), ("platform", "VARCHAR")]
    ev = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_glob(root, 'events')}')").fetchall()
    assert [(r[0], r[1]) for r in ev] == [("unit_id", "VARCHAR"), ("event", "VARCHAR"), ("occurred_at", "TIMESTAMP"),
                                         ("value", "DOUBLE"), ("event_id", "VARCHAR"), ("category", "VARCHAR")]
    n_units, n_ids = con.execute(f"SELECT count(DISTINCT unit_id), count(*) FROM read_parquet('{_glob(root, 'exposures')}')"
                                 ).fetchone()
    assert n_units == sum(e.units for e in MAIN.experiments) and n_ids > n_units   # multi-exposed rows
    dup_ids, value_outside_purchase, category_outside = con.execute(f"""
        SELECT count(*) - count(DISTINCT event_id),
               count(*) FILTER (WHERE event <> 'purchase' AND value IS NOT NULL),
               count(*) FILTER (WHERE (event = 'purchase') <> (category IS NOT NULL))
        FROM read_parquet('{_glob(root, 'events')}')""").fetchone()
    assert dup_ids == 0 and value_outside_purchase == 0 and category_outside == 0


def test_times_respect_windows(main):
    root, _ = main
    con = duckdb.connect()
    start = MAIN.start
    bad_exposure = con.execute(f"""
        SELECT count(*) FROM read_parquet('{_glob(root, "exposures")}') x
        WHERE variant IS NOT NULL AND (exposed_at < TIMESTAMP '{start}'
              OR exposed_at >= TIMESTAMP '{start}' + INTERVAL 17 DAY)""").fetchone()[0]
    assert bad_exposure == 0
    row = con.execute(f"""
        WITH x AS (SELECT unit_id, min(exposed_at) AS t FROM read_parquet('{_glob(root, "exposures")}') GROUP BY 1)
        SELECT count(*) FILTER (WHERE e.occurred_at >= x.t + INTERVAL 14 DAY),
               count(*) FILTER (WHERE e.occurred_at < x.t - INTERVAL 14 DAY),
               count(*) FILTER (WHERE e.occurred_at < x.t AND e.event <> 'purchase'),
               count(*) FILTER (WHERE e.occurred_at < x.t),
               max(e.occurred_at)
        FROM read_parquet('{_main_events(root)}') e JOIN x USING (unit_id)""").fetchone()
    after_window, before_pre, pre_non_purchase, pre_total, last = row
    assert after_window == 0 and before_pre == 0 and pre_non_purchase == 0 and pre_total > 0
    assert last < data_end(MAIN) < analysis_time(MAIN)
    assert analysis_time(MAIN) == start + timedelta(days=14 + 15)
    # units are spread uniformly over the exposure days
    days = con.execute(f"""SELECT count(DISTINCT CAST(exposed_at AS DATE)) FROM read_parquet('{_glob(root, "exposures")}')
                           WHERE experiment = 'fade'""").fetchone()[0]
    assert days in (10, 11)   # multi-exposure rows may spill into day 11


def test_event_volumes_per_unit(main):
    _, con = main
    buyers, sessions, usage, refund, spend = con.execute("""
        SELECT avg(buyer), avg(sessions), avg(usage), avg(refund), avg(spend) / avg(buyer)
        FROM u WHERE variant = 'control' AND experiment IN ('lift', 'harm', 'srm')""").fetchone()
    assert abs(buyers - 0.25) < 0.005 and abs(sessions - 4.5) < 0.03 and abs(usage - 3.0) < 0.04
    assert abs(refund - 0.05) < 0.003 and 37 < spend < 43


# --------------------------------------------------------------------------- known truth

@pytest.mark.parametrize("metric, lift", [("spend", 0.03), ("buyer", 0.10), ("usage", 0.05), ("refund", 0.20)])
def test_true_lifts_recovered(main, metric, lift):
    _, con = main
    observed, se = relative_lift(con, metric, "experiment = 'lift'", "control", "treatment")
    assert abs(observed - lift) < 4 * se, (observed, lift, se)
    truth = true_lifts(MAIN, "lift")
    key = {"spend": "spend_per_user", "buyer": "buyer_rate", "usage": "feature_usage", "refund": "refund_rate"}[metric]
    assert truth[key] == pytest.approx(lift)


def test_spend_lift_is_detectable_and_zero_when_absent(main):
    _, con = main
    observed, se = relative_lift(con, "spend", "experiment = 'lift'", "control", "treatment")
    assert observed / se > 1.5                       # +3% at 200k units is visible
    null, se0 = relative_lift(con, "spend", "experiment = 'srm'", "control", "treatment")
    assert abs(null) < 4 * se0                       # no effect where none was put


def test_pre_period_spend_predicts_post_spend(main):
    """CUPED needs a real covariate: rho^2 between pre and post spend around 0.3."""
    _, con = main
    rho2 = con.execute("SELECT corr(spend, pre_spend) ^ 2 FROM u WHERE experiment = 'lift' AND variant = 'control'"
                       ).fetchone()[0]
    assert 0.25 < rho2 < 0.38, rho2


def test_independent_outcomes_are_uncorrelated(main):
    """Each outcome draws its own hash-based uniforms: no spurious correlation between them."""
    _, con = main
    n, *corrs = con.execute("""
        SELECT count(*), corr(sessions, usage), corr(sessions, buyer), corr(usage, refund), corr(buyer, refund),
               corr(usage, buyer), corr(sessions, refund)
        FROM u WHERE experiment = 'lift' AND variant = 'control'""").fetchone()
    assert all(abs(c) < 4 / math.sqrt(n) for c in corrs), corrs


def test_sample_ratio_mismatch_visible(main):
    _, con = main
    counts = dict(con.execute("SELECT variant, count(*) FROM u WHERE experiment = 'srm' GROUP BY 1").fetchall())
    observed = [counts["control"], counts["treatment"]]
    total = sum(observed)
    assert stats.chisquare(observed, [total / 2, total / 2]).pvalue < 1e-6          # vs configured 50/50
    assert stats.chisquare(observed, [total * 0.52, total * 0.48]).pvalue > 1e-3    # matches the actual split
    balanced = dict(con.execute("SELECT variant, count(*) FROM u WHERE experiment = 'lift' GROUP BY 1").fetchall())
    b = [balanced["control"], balanced["treatment"]]
    assert stats.chisquare(b).pvalue > 1e-3


def test_multi_exposed_fraction(main):
    root, _ = main
    con = duckdb.connect()
    share, different = con.execute(f"""
        WITH x AS (SELECT unit_id, count(*) AS n, count(DISTINCT variant) AS nv
                   FROM read_parquet('{_glob(root, "exposures")}') WHERE experiment = 'lift' GROUP BY 1)
        SELECT avg((n > 1)::INT), bool_and(nv = n) FROM x""").fetchone()
    assert abs(share - 0.02) < 0.002 and different


def test_segment_harm_visible_and_overall_is_the_mixture(main):
    _, con = main
    de, se_de = relative_lift(con, "spend", "experiment = 'harm' AND country = 'DE'", "control", "treatment")
    rest, se_rest = relative_lift(con, "spend", "experiment = 'harm' AND country <> 'DE'", "control", "treatment")
    overall, se = relative_lift(con, "spend", "experiment = 'harm'", "control", "treatment")
    assert de < 0 and abs(de + 0.15) < 4 * se_de and de / se_de < -3
    assert abs(rest - 0.05) < 4 * se_rest
    truth = true_lifts(MAIN, "harm")["spend_per_user"]
    assert truth == pytest.approx(0.2 * -0.15 + 0.8 * 0.05)
    assert abs(overall - truth) < 4 * se
    share = con.execute("SELECT avg((country = 'DE')::INT) FROM u WHERE experiment = 'harm'").fetchone()[0]
    assert abs(share - segment_shares(MAIN, "country")["DE"]) < 0.005


def test_fading_effect_decays_over_exposure_days(main):
    _, con = main
    early, se_e = relative_lift(con, "usage", "experiment = 'fade' AND day < 2", "a", "b")
    late, se_l = relative_lift(con, "usage", "experiment = 'fade' AND day >= 8", "a", "b")
    # day 0..1 lift 0.2 * (1 - d/9): mean 0.189; day 8..9: mean 0.011
    assert abs(early - 0.2 * (1 - 0.5 / 9)) < 4 * se_e
    assert abs(late - 0.2 * (1 - 8.5 / 9)) < 4 * se_l
    assert early - late > 0.1
    both, se_c = relative_lift(con, "usage", "experiment = 'fade'", "a", "c")   # every treatment arm
    assert abs(both - true_lifts(MAIN, "fade")["feature_usage"]) < 4 * se_c
    assert true_lifts(MAIN, "fade")["feature_usage"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- determinism, splitting

SMALL = SimulationSpec(experiments=(ExperimentSpec(key="small", units=20_000, spend_lift=0.05,
                                                   multi_exposed_fraction=0.01),), seed=3)


def _digest(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "inbox").rglob("*.parquet"))}


def test_same_seed_same_files_other_seed_different(tmp_path):
    a = simulate(tmp_path / "a", SMALL)
    b = simulate(tmp_path / "b", SMALL)
    assert _digest(a) == _digest(b)                     # byte-identical, whatever the thread schedule
    assert checksum(a) == checksum(b)
    c = simulate(tmp_path / "c", SimulationSpec(experiments=SMALL.experiments, seed=4))
    assert checksum(c) != checksum(a)


def test_files_per_kind_splits_by_unit_without_changing_content(tmp_path):
    one = simulate(tmp_path / "one", SMALL)
    three = simulate(tmp_path / "three", SimulationSpec(experiments=SMALL.experiments, seed=3, files_per_kind=3))
    names = sorted(p.name for p in (three / "inbox").rglob("*.parquet"))
    assert names == [f"sim-events-00{i}.parquet" for i in range(3)] + [f"sim-exposures-00{i}.parquet" for i in range(3)]
    assert checksum(one) == checksum(three)
    con = duckdb.connect()
    misplaced = con.execute(f"""
        WITH x AS (SELECT DISTINCT unit_id, filename AS fx FROM read_parquet('{_glob(three, "exposures")}', filename=true)),
             e AS (SELECT DISTINCT unit_id, filename AS fe FROM read_parquet('{_glob(three, "events")}', filename=true))
        SELECT count(*) FROM x JOIN e USING (unit_id)
        WHERE replace(replace(fx, 'exposures', ''), 'sim--', '') <> replace(replace(fe, 'events', ''), 'sim--', '')
    """).fetchone()[0]
    assert misplaced == 0
    # regenerating into the same folder replaces earlier sim files
    simulate(three, SMALL)
    assert _digest(three) == _digest(one)


# --------------------------------------------------------------------------- injections

def test_injections(tmp_path):
    inj = Injections(null_value_fraction=0.10, drop_event="refund", drop_last_days=3, duplicate_batch=True)
    clean = simulate(tmp_path / "clean", SMALL)
    dirty = simulate(tmp_path / "dirty", SimulationSpec(experiments=SMALL.experiments, seed=3, injections=inj))
    con = duckdb.connect()
    main_clean, main_dirty = _main_events(clean), _main_events(dirty)

    nulls, purchases = con.execute(f"""SELECT count(*) FILTER (WHERE value IS NULL), count(*)
                                       FROM read_parquet('{main_dirty}') WHERE event = 'purchase'""").fetchone()
    assert abs(nulls / purchases - 0.10) < 4 * math.sqrt(0.09 / purchases)
    assert con.execute(f"SELECT count(*) FROM read_parquet('{main_clean}') WHERE value IS NULL AND event = 'purchase'"
                       ).fetchone()[0] == 0

    cutoff = data_end(SMALL) - timedelta(days=3)
    per_event = dict((r[0], r[1:]) for r in con.execute(f"""
        SELECT event, count(*) FILTER (WHERE occurred_at >= TIMESTAMP '{cutoff}'),
               count(*) FILTER (WHERE occurred_at < TIMESTAMP '{cutoff}')
        FROM read_parquet('{main_dirty}') GROUP BY 1""").fetchall())
    assert per_event["refund"][0] == 0 and per_event["refund"][1] > 500
    assert per_event["session_start"][0] > 100 and per_event["purchase"][0] > 10
    clean_refunds = con.execute(f"""SELECT count(*) FROM read_parquet('{main_clean}')
                                    WHERE event = 'refund' AND occurred_at >= TIMESTAMP '{cutoff}'""").fetchone()[0]
    assert clean_refunds > 0
    # everything not injected is identical to the clean data
    differ = con.execute(f"""
        SELECT count(*) FROM (
            SELECT unit_id, event, occurred_at, event_id FROM read_parquet('{main_clean}')
            WHERE NOT (event = 'refund' AND occurred_at >= TIMESTAMP '{cutoff}')
            EXCEPT ALL SELECT unit_id, event, occurred_at, event_id FROM read_parquet('{main_dirty}'))""").fetchone()[0]
    assert differ == 0

    redelivery = dirty / "inbox" / "events" / "sim-events-redelivery.parquet"
    assert redelivery.exists() and not (clean / "inbox" / "events" / "sim-events-redelivery.parquet").exists()
    n_dup, n_main, not_in_main = con.execute(f"""
        SELECT (SELECT count(*) FROM read_parquet('{redelivery}')),
               (SELECT count(*) FROM read_parquet('{main_dirty}')),
               (SELECT count(*) FROM (SELECT * FROM read_parquet('{redelivery}') EXCEPT ALL
                                      SELECT * FROM read_parquet('{main_dirty}')))""").fetchone()
    assert abs(n_dup / n_main - 0.05) < 0.005 and not_in_main == 0
    repeated = con.execute(f"""SELECT count(*) FROM (SELECT event_id FROM read_parquet('{_glob(dirty, "events")}')
                               GROUP BY 1 HAVING count(*) > 1)""").fetchone()[0]
    assert repeated == n_dup


def test_invalid_specs_are_rejected(tmp_path):
    bad = [
        ExperimentSpec(key="x", allocation=(0.5, 0.3)),
        ExperimentSpec(key="x", actual_allocation=(0.2, 0.3, 0.5)),
        ExperimentSpec(key="x", variants=("only",)),
        ExperimentSpec(key="x y"),
        ExperimentSpec(key="x", segment_harm=SegmentHarm("city", "Paris")),
        ExperimentSpec(key="x", segment_harm=SegmentHarm("country", "JP")),
        ExperimentSpec(key="x", conversion_lift=4.0),
        ExperimentSpec(key="x", fading=1.5),
    ]
    for exp in bad:
        with pytest.raises(ValueError):
            simulate(tmp_path / "bad", SimulationSpec(experiments=(exp,)))
    with pytest.raises(ValueError):
        simulate(tmp_path / "bad", SimulationSpec(experiments=(ExperimentSpec(key="x"), ExperimentSpec(key="x"))))


def test_default_and_demo_specs_load(tmp_path):
    spec = default_spec(units=5_000)
    assert [e.key for e in spec.experiments] == ["recsys-v2"] and spec.experiments[0].spend_lift == 0.03
    root = simulate(tmp_path / "default", spec)
    assert list(load_config(root).experiments) == ["recsys-v2"]
    root = simulate(tmp_path / "demo", demo_spec(units=2_000))
    assert len(load_config(root).experiments) == len(demo_spec().experiments)
    bare = simulate(tmp_path / "bare", spec, write_config=False)
    assert not (bare / "abproxy.yaml").exists() and (bare / "data").is_dir()


@pytest.mark.slow
def test_one_million_units_is_fast(tmp_path):
    spec = default_spec(units=1_000_000)
    started = time.perf_counter()
    root = simulate(tmp_path / "big", spec)
    seconds = time.perf_counter() - started
    events = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{_glob(root, 'events')}')").fetchone()[0]
    print(f"\nsimulate: 1,000,000 units, {events:,} events ({events / 1e6:.2f} per unit) in {seconds:.1f} s")
    assert events > 8_000_000
    assert seconds < 120
