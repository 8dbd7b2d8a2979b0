"""A simulated workspace for the report tests: one experiment per story, analysed by the real job.

* recsys-v2  — +5% spend per user, large enough to be significant → SHIP
* search-emb — +50% refunds (guardrail harmed) → ROLLBACK; afterwards its status is set to
               rolled_back in abproxy.yaml, so the snapshot keeps its last run (models page)
* churn-gbm  — actual split 55/45 vs configured 50/50 → sample-ratio mismatch → INVALID
* ranker-v3  — +8% outside Germany, -20% in country=DE (+2.4% overall) → a harmed segment

Two analysis jobs (as of a week before the windows are complete, for SHIP and HARM only, then
complete for all) give those experiments a run history; a bad CSV gives the ingest ledger a failed file and rejected rows.
Builds in well under 30 s.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import pytest
import yaml

SHIP, ROLLBACK, INVALID, HARM = "recsys-v2", "search-emb", "churn-gbm", "ranker-v3"
NAMES = {SHIP: "Recommendation model v2", ROLLBACK: "Search embeddings <b>& refunds</b>",
         INVALID: "Churn model GBM (broken split)", HARM: "Search ranker v3"}
BAD_EVENTS = ("unit_id,event,occurred_at,value\n"
              "u1,purchase,2026-11-03T10:00:00Z,12.5\n"
              "u2,purchase,not-a-time,3\n"
              ",purchase,2026-11-03T11:00:00Z,4\n")
NASTY = "Share of *buyers* :red[not] $5 `code` a|b [link](x.html) _x_ &lt; ~gone~"
MISSING_COLUMN = "unit,event,occurred_at\nu1,purchase,2026-11-03T10:00:00Z\n"


def spec(today: dt.date | None = None):
    """Exposures start 35 days before today, so every window is complete (and in the past) at
    `analysis_time(spec)`, six days ago: the ingest refuses events from the future."""
    from abproxy.simulate import ExperimentSpec, SegmentHarm, SimulationSpec

    today = today or dt.datetime.now(dt.timezone.utc).date()
    start = dt.datetime.combine(today - dt.timedelta(days=35), dt.time())
    return SimulationSpec(start=start, experiments=(
        ExperimentSpec(key=SHIP, name=NAMES[SHIP], units=120_000, spend_lift=0.05, conversion_lift=0.02,
                       model="recsys", versions=("1.4.0", "2.0.0")),
        ExperimentSpec(key=ROLLBACK, name=NAMES[ROLLBACK], units=30_000, refund_lift=0.5,
                       model="search", versions=("1.0.0", "1.1.0")),
        ExperimentSpec(key=INVALID, name=NAMES[INVALID], units=30_000, actual_allocation=(0.55, 0.45),
                       allocation=(0.5, 0.5), model="churn", versions=("5.2.0", "6.0.0")),
        ExperimentSpec(key=HARM, name=NAMES[HARM], units=40_000, spend_lift=0.08,
                       segment_harm=SegmentHarm("country", "DE", -0.20), model="ranker", versions=("2.1.0", "3.0.0")),
    ), seed=11)


def build_workspace(root: Path) -> Path:
    """Simulate, ingest, analyse twice and publish the snapshot into `root`."""
    from abproxy.jobs import run_job
    from abproxy.simulate import analysis_time, simulate
    from abproxy.workspace import Workspace

    s = spec()
    simulate(root, s)
    config_path = root / "abproxy.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["experiments"][SHIP]["hypothesis"] = "The two-tower model raises spend per user by at least 2%."
    config["experiments"][SHIP]["owner"] = "recsys-team"
    config["experiments"][SHIP]["variants"]["treatment"]["params"] = {"layers": 4}
    config["experiments"][SHIP]["variants"]["treatment"]["training_data"] = "s3://bucket/recsys/2026-10"
    config["metrics"]["spend_per_user"]["owner"] = "growth-analytics"
    config["metrics"]["buyer_rate"]["description"] = NASTY     # must show literally, nothing rendered
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "inbox" / "events" / "late-batch.csv").write_text(BAD_EVENTS)
    (root / "inbox" / "events" / "broken.csv").write_text(MISSING_COLUMN)
    final = analysis_time(s)
    run_job(Workspace.open(root), "run", as_of=final - dt.timedelta(days=7), experiments=[SHIP, HARM])
    run_job(Workspace.open(root), "run", as_of=final)
    config["experiments"][ROLLBACK]["status"] = "rolled_back"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_job(Workspace.open(root), "ingest")   # republishes the snapshot with the new status
    return root


def empty_workspace(root: Path) -> Path:
    """A workspace with a configuration but no snapshot yet."""
    from abproxy.workspace import init_workspace

    return init_workspace(root)


# --------------------------------------------------------------------------- pytest fixture


@pytest.fixture(scope="session")
def report_ws(tmp_path_factory) -> Path:
    """The simulated, analysed workspace, shared read-only by the app, export and browser tests."""
    return built_once(tmp_path_factory, "report-workspace", build_workspace)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """The workspace `name`, made by `build(root)` once per test run and shared by every pytest-xdist
    worker of the run (under a file lock; one left half-built by an interrupted run is made again)."""
    import fcntl
    import os
    import shutil

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent                      # shared by every worker of this run
    root = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".built").exists():
            if root.exists():
                shutil.rmtree(root)
            build(root)
            (root / ".built").touch()
    return root


def latest_reasons(root: Path, key: str) -> list[str]:
    """The verdict reasons of `key`'s latest run, read from the published snapshot."""
    import json

    import duckdb

    con = duckdb.connect(str(root / "data" / "report.duckdb"), read_only=True)
    try:
        text = con.execute("SELECT reasons FROM runs WHERE experiment = ? ORDER BY as_of DESC, started_at DESC LIMIT 1",
                           [key]).fetchone()[0]
    finally:
        con.close()
    return json.loads(text)
