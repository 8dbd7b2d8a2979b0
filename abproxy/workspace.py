"""A workspace folder: its configuration, inbox, warehouse and snapshot paths, and `init`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import CONFIG_FILE, Config, load_config, resolve_workspace

STARTER_CONFIG = """\
# abproxy workspace configuration. Reference: README.md, "Configuration reference".
warehouse: data/warehouse.duckdb   # the DuckDB file the job writes (one writer)
inbox: inbox                        # drop files into inbox/exposures/ and inbox/events/
schedule:
  ingest_every_minutes: 15          # how often `abproxy schedule` loads new inbox files
  analyze_cron: "0 * * * *"         # when it re-analyses every running experiment (UTC)
duckdb: {memory_limit: 3GB}

# Proxy metrics, written by data scientists. A unit's value is the aggregate of its events in
# [exposed_at, exposed_at + window_days]; no event counts as 0 (proportion: not converted).
metrics:
  spend_per_user:
    type: mean
    event: purchase
    aggregate: sum
    window_days: 14
    capping: {quantile: 0.99}       # winsorize heavy spenders at the pooled 99th percentile
    cuped: {pre_window_days: 14}    # variance reduction with pre-exposure spend
    description: Revenue per exposed user in their first 14 days.
  buyer_rate:     {type: proportion, event: purchase, window_days: 14}
  refund_rate:    {type: proportion, event: refund, window_days: 14, higher_is_better: false}
  spend_per_session:
    type: ratio
    numerator:   {event: purchase, aggregate: sum}
    denominator: {event: session_start, aggregate: count}
    window_days: 14

# Experiments: one entry per model rollout test.
experiments:
  recsys-v2:
    name: Recommendation model v2
    hypothesis: The two-tower model raises spend per user by at least 2%.
    owner: recsys-team
    status: running                 # running | shipped | rolled_back | stopped
    control: v1
    variants:
      v1: {model: recsys, version: "1.4.0"}
      v2: {model: recsys, version: "2.0.0", params: {layers: 4}, training_data: "s3://bucket/recsys/2026-10"}
    allocation: {v1: 0.5, v2: 0.5}
    primary: [spend_per_user]
    secondary: [buyer_rate, spend_per_session]
    guardrails: [{metric: refund_rate, margin: 0.05}]   # may worsen by at most 5% (relative)
    segments: [country, platform]
    decision: {alpha: 0.05, sequential: true, min_days: 7, min_units_per_variant: 1000}
"""


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: Config

    @classmethod
    def open(cls, root: str | Path | None = None) -> "Workspace":
        root = resolve_workspace(root)
        return cls(root, load_config(root))

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    @property
    def warehouse(self) -> Path:
        return self.path(self.config.warehouse)

    @property
    def snapshot(self) -> Path:
        return self.path(self.config.snapshot)

    @property
    def inbox(self) -> Path:
        return self.path(self.config.inbox.path)

    @property
    def lock_file(self) -> Path:
        return self.path("data/abproxy.lock")


def init_workspace(root: str | Path, config_text: str = STARTER_CONFIG) -> Path:
    """Create a workspace folder with a commented abproxy.yaml, the inbox folders and data/."""
    root = Path(root)
    config = root / CONFIG_FILE
    if config.exists():
        raise FileExistsError(f"{config} already exists; edit it, or pick another folder")
    for sub in ("inbox/exposures", "inbox/events", "data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    config.write_text(config_text)
    return root
