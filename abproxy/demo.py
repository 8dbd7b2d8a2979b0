"""The demo workspace: seven model rollouts with known true effects, one per kind of story.

`build_demo(root)` writes a workspace whose verdicts, analysed now, are:
  recsys-v2      Recommendation model v2 raises spend per user           → SHIP
  image-tagger   image tagging model, feature usage flat                 → NO_DETECTABLE_EFFECT
  ranker-v3      search ranker raises spend but refunds go up            → ROLLBACK
  churn-gbm      churn model with a broken split                         → INVALID (sample-ratio mismatch)
  feed-v5        feed model started three days ago                       → KEEP_RUNNING
  pricing-nn     price suggestions help overall but harm Germany         → SHIP with a bias warning
  search-emb     shipped search embeddings whose lift fades              → drift warning (holdback kept)
`live(root)` keeps dropping new exposure/event files for the young experiment into the inbox.
"""
from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from .config import CONFIG_FILE, parse_config
from .simulate import ExperimentSpec, SegmentHarm, SimulationSpec, config_for, simulate

log = logging.getLogger(__name__)
UNITS = 40_000
YOUNG = "feed-v5"


def demo_spec(now: dt.datetime | None = None, units: int = UNITS) -> SimulationSpec:
    """Experiments started 30 days ago ran 14 days (windows complete); the young one started 3 days ago."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=30)
    experiments = (
        ExperimentSpec(key="recsys-v2", name="Recommendation model v2", units=units * 2, spend_lift=0.06,
                       conversion_lift=0.03, model="recsys", versions=("1.4.0", "2.0.0")),
        ExperimentSpec(key="image-tagger", name="Image tagging model v2", units=units * 2,
                       model="image-tagger", versions=("3.2.0", "4.0.0")),
        ExperimentSpec(key="ranker-v3", name="Search ranker v3", units=units * 2, spend_lift=0.06, refund_lift=0.6,
                       model="ranker", versions=("2.1.0", "3.0.0")),
        ExperimentSpec(key="churn-gbm", name="Churn model GBM", units=units, spend_lift=0.02,
                       actual_allocation=(0.53, 0.47), model="churn", versions=("5.2.0", "6.0.0")),
        ExperimentSpec(key=YOUNG, name="Feed ranking v5", units=units // 4, days=3, start_offset_days=27,
                       spend_lift=0.03, model="feed", versions=("4.1.0", "5.0.0")),
        ExperimentSpec(key="pricing-nn", name="Price suggestion network", units=units * 2, spend_lift=0.20,
                       segment_harm=SegmentHarm("country", "DE", -0.15), model="pricing",
                       versions=("0.9.0", "1.0.0")),
        ExperimentSpec(key="search-emb", name="Search embeddings", units=units * 3, spend_lift=0.20, fading=1.0,
                       status="shipped", model="search", versions=("1.0.0", "1.1.0")),
    )
    return SimulationSpec(experiments=experiments, start=start, seed=11, observed_until=now, files_per_kind=2)


def demo_config(spec: SimulationSpec) -> dict[str, Any]:
    """The simulator's config, told as the demo's stories (primary metrics, lineage, policies)."""
    config = config_for(spec)
    exps = config["experiments"]
    stories = {
        "recsys-v2": ("The two-tower recommender raises spend per user by at least 2%.", "recsys-team"),
        "image-tagger": ("Better image tags make more people use visual search.", "vision-team"),
        "ranker-v3": ("The new ranker sells more without more returns.", "search-team"),
        "churn-gbm": ("Retention offers targeted by the GBM raise spend.", "growth-team"),
        YOUNG: ("Feed v5 raises spend per user.", "feed-team"),
        "pricing-nn": ("Price suggestions raise spend per user in every market.", "pricing-team"),
        "search-emb": ("Embedding search keeps its launch lift (holdback of 10%).", "search-team"),
    }
    for key, (hypothesis, owner) in stories.items():
        exps[key].update(hypothesis=hypothesis, owner=owner)
        exps[key]["primary"] = ["spend_per_user_capped"]
        exps[key]["secondary"] = ["spend_per_user", "buyer_rate", "feature_usage", "spend_per_session"]
        exps[key]["guardrails"] = [{"metric": "refund_rate", "margin": 0.01, "relative": False}]
        exps[key]["decision"].update(sequential=True, target_mde=0.05)
        for variant in exps[key]["variants"].values():
            variant["training_data"] = f"s3://models/{variant['model']}/{variant['version']}/train.parquet"
    exps["image-tagger"]["primary"] = ["feature_usage"]
    exps["image-tagger"]["secondary"] = ["spend_per_user_capped", "buyer_rate"]
    exps[YOUNG].pop("end")  # still enrolling: `demo --live` keeps adding units
    exps["search-emb"].update(holdback=True, launched_at=(spec.start + dt.timedelta(days=15)).date())
    config["schedule"] = {"ingest_every_minutes": 1, "analyze_cron": "*/5 * * * *"}
    parse_config(config)  # the demo must always be valid
    return config


def build_demo(root: Path | str, now: dt.datetime | None = None, units: int = UNITS) -> Path:
    root = Path(root)
    spec = demo_spec(now, units)
    simulate(root, spec, write_config=False)
    header = "# abproxy demo workspace: seven model rollouts with known true effects (see abproxy/demo.py).\n"
    (root / CONFIG_FILE).write_text(header + yaml.safe_dump(demo_config(spec), sort_keys=False))
    return root


def live_batch(root: Path, tick: int, now: dt.datetime | None = None, units: int = 500) -> list[Path]:
    """Drop one new batch of exposures and events of the young experiment into the inbox."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    young = next(e for e in demo_spec(now).experiments if e.key == YOUNG)
    batch = replace(young, units=units, days=1, start_offset_days=0, first_unit=int(now.timestamp()) * 1000 + tick * units)
    spec = SimulationSpec(experiments=(batch,), start=now - dt.timedelta(days=1), seed=11 + tick, observed_until=now)
    moved = []
    with tempfile.TemporaryDirectory() as tmp:
        simulate(Path(tmp), spec, write_config=False)
        for kind in ("exposures", "events"):
            for f in sorted((Path(tmp) / "inbox" / kind).glob("*.parquet")):
                target = root / "inbox" / kind / f"live-{now:%Y%m%dT%H%M%S}-{tick:05d}-{f.name}"
                shutil.move(str(f), target)
                moved.append(target)
    return moved


def live(root: Path | str, every_seconds: float = 60.0, ticks: int | None = None) -> int:
    """Keep feeding the demo inbox so the scheduler always has new work; Ctrl-C stops."""
    root, tick = Path(root), 0
    try:
        while ticks is None or tick < ticks:
            files = live_batch(root, tick)
            log.info("demo: dropped %d new file(s) into %s", len(files), root / "inbox")
            tick += 1
            if ticks is None or tick < ticks:
                time.sleep(every_seconds)
    except KeyboardInterrupt:
        pass
    return 0
