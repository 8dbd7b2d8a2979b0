"""Several experiments analysed in one pass equal each experiment analysed alone.

One pass shares work between experiments: the states of experiments with the same aggregates are
built from one join of the events (`state_group`, with layers when a unit's first exposure differs
between experiments, and a copied data-quality profile when the units are the same), and the
interaction checks read the other experiments' assignments from one table per pass
(`design_checks.sharing_pass`). Each experiment's run must not see any of it: after every batch of
random files, every result, segment, series point, health check and verdict of the pass equals the
experiment analysed alone from the raw tables, and alone with its own state built from the events.
"""
from __future__ import annotations

import datetime as dt
import random

import pytest
from test_state import METRICS, START, STEP, World, assert_same, comparable, experiment

from abproxy import state_group
from abproxy.analysis import analyze, analyze_experiment
from abproxy.config import parse_config
from abproxy.ingest import ingest
from abproxy.warehouse import connect

SAME = ["one", "one_copy", "one_late"]   # the same metrics: their states are built together


def config():
    one = experiment(["revenue", "buyers"], ["revenue_cuped", "active_days", "basket"], ["refunded"])
    two = experiment(["rps"], ["biggest", "books", "revenue_cupac", "revenue_p50"], segments=("country", "platform"))
    return parse_config({"metrics": METRICS, "experiments": {
        **{k: one for k in SAME}, "two": two, "two_stopped": {**two, "status": "stopped"}}})


def derived(rows: list[str], rng: random.Random) -> list[str]:
    """Exposures of the other experiments from those of 'one' and 'two': the same units and times
    with their own variant draw ('one_copy'), partly later times and some units of their own
    ('one_late'), a stopped copy of 'two', and rows of an unknown variant and experiment."""
    out = []
    for row in rows:
        unit, exp, variant, at, *rest = row.split(",")
        if exp == "two":
            out.append(",".join([unit, "two_stopped", variant, at, *rest]))
            continue
        out.append(",".join([unit, "one_copy", rng.choice("ababababc"), at, *rest]))   # c: not configured
        if rng.random() < 0.1:
            out.append(",".join([unit, "ghost", "a", at, *rest]))                         # not configured
        late = dt.datetime.fromisoformat(at) + dt.timedelta(hours=rng.choice([0, 0, 1.5]))
        out.append(",".join([unit if rng.random() < 0.9 else unit + "x", "one_late", variant,
                             f"{late:%Y-%m-%d %H:%M:%S.%f}", *rest]))
    return out


@pytest.mark.slow
def deliver(world: World, con, now: dt.datetime) -> None:
    """One batch: the world's exposures (with the derived experiments') and events, ingested at `now`."""
    exposures = world.exposures(now, ["one", "two"])
    world.write("exposures", exposures + derived(exposures, world.rng))
    world.write("events", world.events(now))
    ingest(con, world.inbox, now=now)


def test_a_pass_of_several_experiments_equals_each_alone(tmp_path, monkeypatch):
    groups = []
    build = state_group.build_group
    monkeypatch.setattr(state_group, "build_group", lambda con, plans, *a: (groups.append([p.key for p in plans]),
                                                                          build(con, plans, *a)))
    world, cfg = World(tmp_path / "inbox", seed=5), config()
    keys = list(cfg.experiments)
    con = connect(tmp_path / "w.duckdb")
    try:
        for k in range(4):
            now = START + k * STEP
            deliver(world, con, now)
            together = analyze(con, cfg, keys, now, record=False, full=(k % 3 == 0))
            for run in together:
                assert run.status == "ok", (run.experiment, run.error)
                raw = analyze_experiment(con, cfg, run.experiment, now)
                assert_same(comparable(raw), comparable(run), f"batch {k} {run.experiment} (raw tables)")
                own = analyze(con, cfg, [run.experiment], now, record=False, full=True)[0]
                assert_same(comparable(own), comparable(run), f"batch {k} {run.experiment} (own state)")
    finally:
        con.close()
    assert SAME in groups                       # the shared build ran
    checks = [c for c in together[0].health if c.check == "interaction"]
    assert {c.segment for c in checks} == {"one_copy", "one_late", "two"}   # not the stopped one
    copy = {c.check: c for c in together[1].health}
    assert copy["unknown_variants"].status != "ok" and "ghost" in copy["unknown_experiments"].detail
