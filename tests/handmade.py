"""A hand-made workspace, as a new user writes one: `abproxy init`, an edited abproxy.yaml and two CSV
files written by hand (here by a small deterministic script). It holds what the simulator does not:
a negative-valued guardrail (net margin per user), a proportion guardrail with an absolute margin,
a segment dimension whose values are all too small (pooled into 'other'), a shipped model with a
holdback, and experiment names full of Markdown, emoji shortcodes and a remote image."""
from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from report_fixtures import built_once

HAND, SHIPPED = "hand-v2", "hand-shipped"
TITLES = {HAND: "Hand made ![logo](http://example.invalid/x.png) root:x:0 *stars* <b>bold</b>",
          SHIPPED: "Shipped :rocket: model"}

CONFIG = f"""\
warehouse: data/warehouse.duckdb
inbox: inbox
metrics:
  spend:
    type: mean
    name: Spend per user
    event: purchase
    aggregate: sum
    window_days: 7
  net_margin:
    type: mean
    name: Net margin per user
    event: margin
    aggregate: sum
    window_days: 7
  buyer_rate: {{type: proportion, name: Buyer rate, event: purchase, window_days: 7}}
experiments:
  {HAND}:
    name: "{TITLES[HAND]}"
    status: running
    control: a
    variants:
      a: {{model: shop, version: "1.0"}}
      b: {{model: shop, version: "2.0"}}
    allocation: {{a: 0.5, b: 0.5}}
    primary: [spend]
    guardrails: [{{metric: net_margin, margin: 0.05}}, {{metric: buyer_rate, margin: 0.01, relative: false}}]
    segments: [country, platform]
    decision: {{alpha: 0.05, sequential: true, min_days: 3, min_units_per_variant: 200, min_segment_units: 150}}
  {SHIPPED}:
    name: "{TITLES[SHIPPED]}"
    status: shipped
    holdback: true
    control: old
    variants:
      old: {{model: shop, version: "0.9"}}
      new: {{model: shop, version: "1.0"}}
    allocation: {{old: 0.1, new: 0.9}}
    primary: [spend]
    decision: {{alpha: 0.05, sequential: false, min_days: 3, min_units_per_variant: 100}}
"""


def _rows(start: dt.datetime, seed: int = 3):
    """Exposures and events. In hand-v2, b raises spend by ~8% but makes the (negative) net margin
    25% worse; platform has 4 values of ~100 units each (all below min_segment_units)."""
    rng = random.Random(seed)
    exposures, events = [], []
    for key, arms, n, lift in ((HAND, ("a", "b"), 1600, 0.08), (SHIPPED, ("old", "new"), 1500, 0.10)):
        for i in range(n):
            unit = f"{key}-u{i}"
            arm = arms[0] if (key == HAND and i % 2 == 0) or (key == SHIPPED and i % 10 == 0) else arms[1]
            at = start + dt.timedelta(hours=rng.uniform(0, 5 * 24))
            country = ("DE", "FR", "US")[i % 3]
            platform = ("ios", "android", "web", "tv")[i % 4] if key == HAND else "web"
            exposures.append(f"{unit},{key},{arm},{at:%Y-%m-%dT%H:%M:%S}Z,{country},{platform}")
            treated = arm == arms[1]
            for k in range(rng.randint(0, 3)):
                when = at + dt.timedelta(hours=rng.uniform(1, 6 * 24))
                spend = rng.gammavariate(2.0, 10.0) * (1 + lift if treated else 1)
                events.append(f"{unit},purchase,{when:%Y-%m-%dT%H:%M:%S}Z,{spend:.2f}")
            if key == HAND:
                when = at + dt.timedelta(hours=rng.uniform(1, 6 * 24))
                margin = rng.gauss(-5.0 if treated else -4.0, 1.5)
                events.append(f"{unit},margin,{when:%Y-%m-%dT%H:%M:%S}Z,{margin:.2f}")
    return exposures, events


def build_handmade(root: Path) -> Path:
    from abproxy.jobs import run_job
    from abproxy.workspace import Workspace, init_workspace

    init_workspace(root, CONFIG)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    start = now - dt.timedelta(days=12)
    exposures, events = _rows(start)
    (root / "inbox" / "exposures" / "exposures.csv").write_text(
        "unit_id,experiment,variant,exposed_at,country,platform\n" + "\n".join(exposures) + "\n")
    (root / "inbox" / "events" / "events.csv").write_text(
        "unit_id,event,occurred_at,value\n" + "\n".join(events) + "\n")
    result = run_job(Workspace.open(root), "run", as_of=now)
    assert result.ok, result.errors
    return root


@pytest.fixture(scope="session")
def handmade_ws(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "handmade-workspace", build_handmade)
