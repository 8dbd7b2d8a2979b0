"""Health checks on simulated workspaces: every problem injected is flagged, a clean experiment is not.

Workspaces (module fixtures, ingested once with `now` = the analysis time so nothing is 'future'):
  main    clean / srm / multi / harm / fade / whale experiments, no workspace-level injection;
  broken  mostly-null values, a vanished guardrail event, a re-delivered batch without event ids,
          2% unknown-variant exposures, a typo'd experiment key, future rows and a late batch;
  mild    the warn-level versions: 20% null values, a vanished secondary-only event, 0.5% unknown
          variants, a few future rows — every flag is a warning, the verdict stays valid;
  hold    shipped experiments with a holdback: a fading one and a steady one, launch run in the ledger.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from dataclasses import replace
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml


from abproxy import robustness
from abproxy.analysis import analyze_experiment
from abproxy.ingest import Limits, ingest
from abproxy.records import Check
from abproxy.ledger import record_run
from abproxy.simulate import (
    ExperimentSpec,
    Injections,
    SegmentHarm,
    SimulationSpec,
    analysis_time,
    data_end,
    simulate,
)
from abproxy.warehouse import connect
from abproxy.workspace import Workspace

START = dt.datetime(2026, 11, 1)


# ------------------------------------------------------------------ helpers

def _copy(root: Path, kind: str, name: str, select: str) -> None:
    """Write an extra inbox file from a SELECT over the simulated files (`exposures`, `events` views)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW exposures AS SELECT * FROM read_parquet('{root}/inbox/exposures/sim-*.parquet')")
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{root}/inbox/events/sim-events-0*.parquet')")
    con.execute(f"COPY ({select}) TO '{root}/inbox/{kind}/{name}' (FORMAT parquet)")
    con.close()


def _edit_config(root: Path, **per_experiment) -> None:
    path = root / "abproxy.yaml"
    data = yaml.safe_load(path.read_text())
    for key, changes in per_experiment.items():
        data["experiments"][key].update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _workspace(root: Path, spec: SimulationSpec, prepare=None, **config_edits):
    simulate(root, spec)
    if config_edits:
        _edit_config(root, **config_edits)
    if prepare:
        prepare(root)
    ws = Workspace.open(root)
    con = connect(ws.warehouse)
    # keep the good rows of files with many rejected rows (a whole file of future rows is one case)
    summary = ingest(con, ws.inbox, now=analysis_time(spec), limits=Limits(max_rejected_fraction=1))
    assert summary.ok, summary.failures
    return ws, con


def checks(run, name: str | None = None, status: str | None = None) -> list[Check]:
    return [c for c in run.health if (name is None or c.check == name) and (status is None or c.status == status)]


def one(run, name: str, **match) -> Check:
    found = [c for c in checks(run, name) if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, (name, match, [c.record() for c in checks(run, name)])
    return found[0]


# ------------------------------------------------------------------ workspaces

MAIN = SimulationSpec(experiments=(
    ExperimentSpec(key="clean", units=40_000, spend_lift=0.08),
    ExperimentSpec(key="srm", units=20_000, actual_allocation=(0.53, 0.47)),
    ExperimentSpec(key="multi", units=20_000, multi_exposed_fraction=0.03),
    ExperimentSpec(key="harm", units=60_000, spend_lift=0.15, segment_harm=SegmentHarm("country", "DE", -0.25)),
    ExperimentSpec(key="fade", units=40_000, spend_lift=0.30, fading=1.0),
    ExperimentSpec(key="whale", units=20_000),
), start=START, seed=5)
AS_OF = analysis_time(MAIN)


def _whales(root: Path) -> None:
    """40 treatment units of 'whale' each buy for 5,000 an hour after exposure: a fragile uncapped win."""
    _copy(root, "events", "whales.parquet", """
        SELECT unit_id, 'purchase' AS event, exposed_at + INTERVAL 1 HOUR AS occurred_at, 5000.0 AS value
        FROM exposures WHERE experiment = 'whale' AND variant = 'treatment' ORDER BY hash(unit_id) LIMIT 40""")


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    ws, con = _workspace(tmp_path_factory.mktemp("main"), MAIN, _whales)
    runs = {key: analyze_experiment(con, ws.config, key, AS_OF, robustness=key in ("clean", "whale"))
            for key in ws.config.experiments}
    for run in runs.values():
        assert run.status == "ok", run.error
    yield ws, con, runs
    con.close()


BROKEN = SimulationSpec(
    experiments=(ExperimentSpec(key="fragile", units=15_000, spend_lift=0.05),), start=START, seed=6,
    injections=Injections(null_value_fraction=0.8, drop_event="refund", drop_last_days=3, duplicate_batch=True))
MILD = SimulationSpec(
    experiments=(ExperimentSpec(key="fragile", units=15_000, spend_lift=0.05),), start=START, seed=8,
    injections=Injections(null_value_fraction=0.2, drop_event="feature_use", drop_last_days=3))


def _unknown_variants(root: Path, n: int) -> None:
    _copy(root, "exposures", "v3.parquet", f"""
        SELECT 'fragile-v3-' || i AS unit_id, 'fragile' AS experiment, 'v3' AS variant,
               TIMESTAMP '{START}' + i * INTERVAL 3 MINUTE AS exposed_at, 'US' AS country, 'web' AS platform
        FROM range({n}) t(i)""")


def _future_rows(root: Path, spec: SimulationSpec, n: int) -> None:
    _copy(root, "events", "future.parquet", f"""
        SELECT unit_id, 'session_start' AS event, TIMESTAMP '{analysis_time(spec)}' + INTERVAL 2 DAY AS occurred_at
        FROM exposures ORDER BY hash(unit_id) LIMIT {n}""")


def _prepare_broken(root: Path) -> None:
    redelivery = root / "inbox" / "events" / "sim-events-redelivery.parquet"
    _copy(root, "events", "redelivery-no-ids.parquet",
          f"SELECT * EXCLUDE (event_id) FROM read_parquet('{redelivery}')")
    redelivery.unlink()
    _unknown_variants(root, 400)            # 400 / 15,400 exposures = 2.6% > 1% → fail
    _copy(root, "exposures", "typo.parquet", f"""
        SELECT 'typo-' || i AS unit_id, 'fragile_v2' AS experiment, 'control' AS variant,
               TIMESTAMP '{START}' + i * INTERVAL 1 HOUR AS exposed_at FROM range(50) t(i)""")
    _future_rows(root, BROKEN, 3000)        # ~2% of the rows loaded → fail


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    ws, con = _workspace(root, BROKEN, _prepare_broken)
    # a late batch: purchases from 5 days before the data end, delivered 3 days after everything else
    moment = data_end(BROKEN) - dt.timedelta(days=5)
    _copy(root, "events", "late.parquet", f"""
        SELECT unit_id, 'purchase' AS event, TIMESTAMP '{moment}' + (hash(unit_id) % 86400) * INTERVAL 1 SECOND
               AS occurred_at, 25.0 AS value, 'late-' || unit_id AS event_id
        FROM exposures WHERE exposed_at BETWEEN TIMESTAMP '{moment}' - INTERVAL 12 DAY AND TIMESTAMP '{moment}'
        ORDER BY hash(unit_id) LIMIT 3000""")
    assert ingest(con, ws.inbox, now=analysis_time(BROKEN) + dt.timedelta(days=3)).files_loaded == 1
    run = analyze_experiment(con, ws.config, "fragile", analysis_time(BROKEN))
    assert run.status == "ok", run.error
    yield run
    con.close()


@pytest.fixture(scope="module")
def mild(tmp_path_factory):
    def prepare(root):
        _unknown_variants(root, 75)         # 75 / 15,075 = 0.5% → warn
        _future_rows(root, MILD, 50)        # 50 of ~165k rows → warn
    ws, con = _workspace(tmp_path_factory.mktemp("mild"), MILD, prepare)
    run = analyze_experiment(con, ws.config, "fragile", analysis_time(MILD))
    assert run.status == "ok", run.error
    yield run
    con.close()


HOLD = SimulationSpec(experiments=(
    ExperimentSpec(key="hold", units=40_000, days=24, spend_lift=0.5, conversion_lift=0.5, fading=1.0,
                   status="shipped"),
    ExperimentSpec(key="steady", units=40_000, days=24, spend_lift=0.10, status="shipped"),
), start=START, seed=9)
LAUNCH = START + dt.timedelta(days=8)


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    edit = {"holdback": True, "launched_at": LAUNCH.date().isoformat()}
    ws, con = _workspace(tmp_path_factory.mktemp("hold"), HOLD, hold=edit, steady=edit)
    launch = [analyze_experiment(con, ws.config, k, LAUNCH, robustness=False) for k in ("hold", "steady")]
    for run in launch:
        record_run(con, run)                                               # the launch estimate
    runs = {k: analyze_experiment(con, ws.config, k, analysis_time(HOLD), robustness=False)
            for k in ("hold", "steady")}
    yield launch, runs
    con.close()


# ------------------------------------------------------------------ clean: no false alarms

def test_clean_experiment_has_no_failure_and_no_warning(main):
    run = main[2]["clean"]
    assert not checks(run, status="fail")
    assert not checks(run, status="warn"), [c.record() for c in checks(run, status="warn")]
    assert run.verdict.decision == "SHIP"
    names = {c.check for c in run.health}
    assert {"srm", "multiple_exposures", "unknown_variants", "future_timestamps", "null_values", "event_missing",
            "event_volume", "duplicate_events", "late_data", "segment_harm", "segment_heterogeneity", "novelty",
            "decision_robustness", "verdict_stability"} <= names
    assert "with capping at p99" in one(run, "decision_robustness").detail
    # volume is judged on the cohort's tail day, where raw counts have fallen ~14x: per unit in window it is flat
    assert all("on 2026-11-28:" in c.detail for c in checks(run, "event_volume"))


@pytest.mark.parametrize("key", ["srm", "multi", "harm", "fade", "whale"])
def test_injections_do_not_leak_into_unrelated_data_checks(main, key):
    """Experiment-level injections trip their own check only, never the data-quality checks."""
    quality = {"unknown_variants", "unknown_experiments", "future_timestamps", "null_values", "event_missing",
               "event_volume", "duplicate_events", "late_data"}
    assert not [c.record() for c in main[2][key].health if c.check in quality and c.status != "ok"]


def test_every_check_reaches_the_ledger_and_the_json(main, tmp_path):
    ws = main[0]
    from abproxy.cli import main as cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(["analyze", "--workspace", str(ws.root), "-e", "clean", "--as-of", AS_OF.isoformat(), "--json"])
    assert code == 0
    health_json = json.loads(out.getvalue())["experiments"][0]["health"]
    assert {"check", "status", "metric", "segment", "variant", "value", "threshold", "detail"} <= set(health_json[0])
    stored = main[1].execute("SELECT count(*) FROM health h JOIN runs r USING (run_id) "
                             "WHERE r.experiment = 'clean'").fetchone()[0]
    assert stored == len(health_json)


# ------------------------------------------------------------------ assignment

def test_sample_ratio_mismatch_makes_the_verdict_invalid(main):
    run = main[2]["srm"]
    assert one(run, "srm").status == "fail"
    assert run.verdict.decision == "INVALID"
    assert "Sample-ratio mismatch" in run.verdict.reasons[0]


def test_multiple_exposures_warn(main):
    run = main[2]["multi"]
    c = one(run, "multiple_exposures")
    assert c.status == "warn" and 0.02 < c.value < 0.04
    assert run.verdict.decision != "INVALID"


def test_unknown_variant_and_experiment(broken, mild):
    c = one(broken, "unknown_variants")
    assert c.status == "fail" and c.variant == "v3" and 0.02 < c.value < 0.03
    c = one(mild, "unknown_variants")
    assert c.status == "warn" and "'v3' (75)" in c.detail
    c = one(broken, "unknown_experiments")
    assert c.status == "warn" and "'fragile_v2'" in c.detail and "typo of 'fragile'" in c.detail


def test_future_timestamps(broken, mild):
    assert one(broken, "future_timestamps").status == "fail"
    c = one(mild, "future_timestamps")
    assert c.status == "warn" and c.detail.startswith("50 of")


# ------------------------------------------------------------------ data quality

def test_null_values(broken, mild):
    c = one(broken, "null_values")
    assert c.status == "fail" and "mostly missing" in c.detail and c.metric == "spend_per_user"
    c = one(mild, "null_values")
    assert c.status == "warn" and 0.18 < c.value < 0.22


def test_vanished_event(broken, mild):
    c = one(broken, "event_missing", metric="refund_rate")        # a guardrail: fail
    assert c.status == "fail" and c.value > 3
    c = one(mild, "event_missing", metric="feature_usage")        # secondary only: warn
    assert c.status == "warn" and "stopped" in c.detail
    assert one(mild, "event_missing", metric="spend_per_user").status == "ok"


def _profile(days: int, n: list[int], null: list[int] | None = None, units: float = 1000.0):
    import pandas as pd
    return pd.DataFrame({"day": [START.date() + dt.timedelta(days=i) for i in range(days)], "unit_days": units,
                         "t0": n, "last0": None, "s0_n": n, "s0_null": null or [0] * days})


def _scope(role: str = "primary"):
    from abproxy.config import EventSource
    from abproxy.quality import Scope
    return Scope("x", START + dt.timedelta(days=20), 14, ("purchase",), {"purchase": ("spend",)},
                 {EventSource(event="purchase"): ("spend",)}, frozenset({"spend"} if role == "secondary" else ()))


def test_null_rate_rising_against_its_own_history():
    from abproxy.quality import null_checks
    daily = _profile(20, [500] * 20, [0] * 13 + [50] * 7)             # 0% before, 10% in the last 7 days
    c = null_checks(_scope(), daily, 7, 0.05)[0]
    assert c.status == "warn" and "null rate rose" in c.detail and "10.0% null in the last 7 days, 0.0% before" in c.detail
    assert null_checks(_scope(), _profile(20, [500] * 20, [5] * 20), 7, 0.05)[0].status == "ok"   # steady 1%
    mostly = _profile(20, [500] * 20, [0] * 13 + [400] * 7)
    assert null_checks(_scope(), mostly, 7, 0.05)[0].status == "fail"
    assert null_checks(_scope("secondary"), mostly, 7, 0.05)[0].status == "warn"   # secondary only: no INVALID


def test_volume_needs_both_size_and_significance():
    from abproxy.quality import volume_checks
    rare = _profile(20, [3] * 19 + [0])                                  # 3 a day, none on the last: noise
    assert volume_checks(_scope(), rare, 14, 0.5)[0].status == "ok"
    busy = _profile(20, [300] * 19 + [100])
    c = volume_checks(_scope(), busy, 14, 0.5)[0]
    assert c.status == "warn" and round(c.value, 2) == -0.67
    assert volume_checks(_scope(), _profile(20, [300] * 19 + [420]), 14, 0.5)[0].status == "ok"   # +40%



def test_missing_event_unit_days_are_queried_only_for_overdue_types():
    """The O(units) unit-days query runs only for the event types whose last event is older than the
    threshold (the others are ok whatever it says); `expected` checked against a Python sum."""
    from abproxy.config import EventSource
    from abproxy.engines import DuckDBEngine
    from abproxy.quality import Scope, missing_checks

    as_of = START + dt.timedelta(days=20)
    scope = Scope("x", as_of, 14, ("purchase", "view"), {"purchase": ("spend",), "view": ("views",)},
                  {EventSource(event="purchase"): ("spend",), EventSource(event="view"): ("views",)}, frozenset())
    con = duckdb.connect()
    exposed = [START + dt.timedelta(hours=7 * i) for i in range(60)]
    con.execute("CREATE TABLE exposures (unit_id VARCHAR, experiment VARCHAR, exposed_at TIMESTAMP)")
    con.executemany("INSERT INTO exposures VALUES (?, 'x', ?)", [[f"u{i}", t] for i, t in enumerate(exposed)])
    sql = []

    class Recording(DuckDBEngine):
        def frame(self, q):
            sql.append(q)
            return super().frame(q)

    def daily(last_purchase, last_view):
        return pd.DataFrame({"day": [START.date()], "unit_days": [500.0], "t0": [4000], "t1": [900],
                             "last0": [last_purchase], "last1": [last_view]})

    recent = as_of - dt.timedelta(hours=6)
    assert [c.status for c in missing_checks(Recording(con), scope, daily(recent, recent), 3)] == ["ok", "ok"]
    assert sql == []
    old = as_of - dt.timedelta(days=5)
    buy, view = missing_checks(Recording(con), scope, daily(old, recent), 3)
    assert len(sql) == 1 and sql[0].count("TIMESTAMP '" + f"{old:%Y-%m-%d %H:%M:%S}") == 1
    window = dt.timedelta(days=14)
    after = sum(max(0.0, (min(t + window, as_of) - max(t, old)).total_seconds()) for t in exposed) / 86400
    before = sum(max(0.0, (min(t + window, old) - t).total_seconds()) for t in exposed) / 86400
    assert buy.status == "fail" and f"~{4000 / before * after:,.0f} were expected" in buy.detail
    assert view.status == "ok" and view.value == pytest.approx(0.25)

def test_event_volume_drop(mild):
    c = one(mild, "event_volume", metric="feature_usage")
    assert c.status == "warn" and c.value == -1.0 and "dropped" in c.detail
    assert all(c.status == "ok" for c in checks(mild, "event_volume") if c.metric != "feature_usage")


def test_duplicate_batch_without_event_ids(broken, mild):
    c = one(broken, "duplicate_events")
    assert c.status == "warn" and 0.04 < c.value < 0.06
    assert one(mild, "duplicate_events").status == "ok"


def test_late_batch(broken, mild):
    c = one(broken, "late_data")
    assert c.status == "warn" and c.value > 0.01
    assert one(mild, "late_data").status == "ok"


def test_verdicts_follow_the_data_checks(broken, mild):
    assert broken.verdict.decision == "INVALID"
    assert mild.verdict.decision != "INVALID"
    assert not checks(mild, status="fail"), [c.record() for c in checks(mild, status="fail")]
    shown = [r for r in mild.verdict.reasons if r.startswith("Warning:")]
    assert any("values are missing" in r for r in shown) and any("not configured" in r for r in shown)


# ------------------------------------------------------------------ bias: segments

def test_harmed_segment_is_named(main):
    run = main[2]["harm"]
    c = one(run, "segment_harm", segment="country=DE")
    assert c.status == "warn" and c.variant == "treatment" and c.metric == "spend_per_user" and c.value < -0.1
    assert [x.segment for x in checks(run, "segment_harm", "warn")] == ["country=DE"]
    assert one(run, "segment_heterogeneity", segment="country", metric="spend_per_user").status == "warn"
    assert one(run, "segment_heterogeneity", segment="platform", metric="spend_per_user").status == "ok"


def test_segment_harm_policy_blocks_ship(main):
    ws, con, runs = main
    assert runs["harm"].verdict.decision == "SHIP"                          # policy 'warn': shown, not blocking
    assert any("country=DE" in r for r in runs["harm"].verdict.reasons)
    exp = ws.config.experiments["harm"]
    blocking = exp.model_copy(update={"decision": exp.decision.model_copy(update={"segment_harm": "block"})})
    config = ws.config.model_copy(update={"experiments": {**ws.config.experiments, "harm": blocking}})
    run = analyze_experiment(con, config, "harm", AS_OF, robustness=False)
    assert run.verdict.decision == "ROLLBACK"
    assert "segment" in run.verdict.reasons[0]


# ------------------------------------------------------------------ drift

def test_fading_effect(main):
    c = one(main[2]["fade"], "novelty")
    assert c.status == "warn" and "the lift is fading" in c.detail and c.value < 0
    assert one(main[2]["clean"], "novelty").status == "ok"
    assert one(main[2]["harm"], "novelty").status == "ok"


def test_holdback_decay_and_distribution_drift(hold):
    launch, runs = hold
    assert launch[0].status == "ok"
    c = one(runs["hold"], "launch_decay")
    assert c.status == "warn" and "decayed" in c.detail and c.value < c.threshold
    drift = checks(runs["hold"], "distribution_drift")
    assert {d.variant: d.status for d in drift} == {"control": "ok", "treatment": "warn"}
    steady = runs["steady"]
    assert one(steady, "launch_decay").status == "ok"
    assert [d.status for d in checks(steady, "distribution_drift")] == ["ok", "ok"]
    assert one(steady, "novelty").status == "ok"
    assert not checks(steady, status="fail")


# ------------------------------------------------------------------ fragility of the decision

def test_decision_that_only_holds_without_capping(main):
    run = main[2]["whale"]
    c = one(run, "decision_robustness")
    assert c.status == "warn"
    assert c.detail.startswith("SHIP treatment only holds without capping; with capping at p99:")
    assert run.verdict.decision == "SHIP" and any("only holds without capping" in r for r in run.verdict.reasons)


def test_verdict_stability_flags_flip_flops(main):
    con, runs = main[1], main[2]
    run = replace(runs["clean"], definition_hash="stability-test", run_id="current")
    try:
        for i, decision in enumerate(["SHIP", "SHIP", "KEEP_RUNNING", "SHIP"]):
            con.execute("INSERT INTO runs (run_id, experiment, started_at, as_of, status, decision, definition_hash) "
                        "VALUES (?, 'clean', ?, ?, 'ok', ?, 'stability-test')",
                        [f"past{i}", AS_OF, AS_OF - dt.timedelta(days=4 - i), decision])
        c = robustness.verdict_stability(con, "clean", run)
        assert c.status == "warn" and c.value == 2
        assert "SHIP → SHIP → KEEP_RUNNING → SHIP → SHIP" in c.detail   # the current run is the last
        steady = replace(run, definition_hash="other")
        assert robustness.verdict_stability(con, "clean", steady).status == "ok"
    finally:
        con.execute("DELETE FROM runs WHERE definition_hash = 'stability-test'")
