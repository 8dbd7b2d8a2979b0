"""What a simulation is (experiments, segments, injected problems), its true effects, and the
abproxy.yaml that analyses it. The data model is described in the package docstring."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import yaml

from ..config import KEY

WINDOW_DAYS = 14
BASE_BUY_PROB = 0.25
ITEM_MEAN = 20.0               # mean item value; E[items | buyer] ~ 2 -> ~40 per buyer
ITEM_SIGMA = 0.5               # log-normal sigma of one item's value
PROPENSITY_SIGMA = 0.6         # log-normal sigma of the unit's spend propensity
SHARED_BUY = 0.8               # probability that a unit's pre and post purchase decisions share one uniform
FEATURE_MEAN = 3.0
REFUND_PROB = 0.05
DUPLICATE_SHARE = 0.05
CATEGORIES = ("books", "electronics", "fashion", "home", "grocery")
DEFAULT_COUNTRIES = ("US", "DE", "FR", "GB", "BR")
DEFAULT_COUNTRY_WEIGHTS = (0.40, 0.20, 0.15, 0.15, 0.10)
DEFAULT_PLATFORMS = ("ios", "android", "web")
DEFAULT_PLATFORM_WEIGHTS = (0.45, 0.35, 0.20)


@dataclass(frozen=True)
class SegmentHarm:
    """True relative spend lift inside one segment (instead of the experiment's `spend_lift`)."""

    dimension: str = "country"      # "country" or "platform"
    value: str = "DE"
    spend_lift: float = -0.15


@dataclass(frozen=True)
class ExperimentSpec:
    key: str
    name: str = ""
    units: int = 20_000
    days: int = 14                                        # exposure days (units spread uniformly)
    variants: tuple[str, ...] = ("control", "treatment")  # the first is the control
    allocation: tuple[float, ...] | None = None           # configured allocation (default equal)
    actual_allocation: tuple[float, ...] | None = None    # real split (≠ configured → SRM)
    spend_lift: float = 0.0          # true relative lift of treatment arms on spend per user
    conversion_lift: float = 0.0     # true relative lift on purchase probability
    usage_lift: float = 0.0          # true relative lift on feature_use events per user
    refund_lift: float = 0.0         # true relative lift on refund probability (positive = harm)
    fading: float = 0.0              # 0..1: lift decays linearly over the exposure days to (1-fading)x
    segment_harm: SegmentHarm | None = None
    status: str = "running"
    model: str = "model"
    versions: tuple[str, ...] | None = None
    multi_exposed_fraction: float = 0.0   # units also exposed to another variant
    start_offset_days: int = 0       # exposures begin this many days after SimulationSpec.start
    first_unit: int = 0              # unit ids run from first_unit (new batches of the same experiment)

    @property
    def configured(self) -> tuple[float, ...]:
        n = len(self.variants)
        return tuple(self.allocation) if self.allocation else tuple(1 / n for _ in range(n))

    @property
    def actual(self) -> tuple[float, ...]:
        return tuple(self.actual_allocation) if self.actual_allocation else self.configured

    @property
    def model_versions(self) -> tuple[str, ...]:
        return tuple(self.versions) if self.versions else tuple(f"{i + 1}.0.0" for i in range(len(self.variants)))


@dataclass(frozen=True)
class Injections:
    """Fragility problems for health-check tests."""

    null_value_fraction: float = 0.0   # fraction of purchase rows whose `value` is NULL
    drop_event: str | None = None      # this event type vanishes for the last `drop_last_days`
    drop_last_days: int = 3            # ... days of data (see `data_end`)
    duplicate_batch: bool = False      # re-deliver ~5% of events (same event_id) in a second file
    late_fraction: float = 0.0         # accepted for API compatibility; not simulated in files


@dataclass(frozen=True)
class SimulationSpec:
    experiments: tuple[ExperimentSpec, ...]
    start: datetime = datetime(2026, 1, 5)    # UTC (naive), in the past so no event lies in the future
    seed: int = 7
    countries: tuple[str, ...] = DEFAULT_COUNTRIES
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    pre_period_days: int = 14                 # pre-exposure purchases for CUPED
    injections: Injections = field(default_factory=Injections)
    files_per_kind: int = 1                   # split exposures/events over this many files
    observed_until: datetime | None = None    # only events/exposures before this instant ("so far")


# --------------------------------------------------------------------------- specs and truth

def default_spec(units: int = 100_000, seed: int = 7) -> SimulationSpec:
    """One experiment 'recsys-v2': +3% spend per user, nothing else changes."""
    return SimulationSpec(
        experiments=(ExperimentSpec(key="recsys-v2", name="Recommendation model v2", units=units,
                                    spend_lift=0.03, usage_lift=0.0, refund_lift=0.0,
                                    model="recsys", versions=("1.4.0", "2.0.0")),),
        seed=seed)


def demo_spec(units: int = 40_000, seed: int = 7) -> SimulationSpec:
    """A demo workspace with one experiment per kind of story: a clear win, a segment harm (bias),
    a fading effect (drift), a broken split (sample-ratio mismatch), a guardrail harm (refunds)
    and a flat test."""
    return SimulationSpec(
        experiments=(
            ExperimentSpec(key="recsys-v2", name="Recommendation model v2", units=units,
                           spend_lift=0.05, conversion_lift=0.02, usage_lift=0.04,
                           model="recsys", versions=("1.4.0", "2.0.0")),
            ExperimentSpec(key="ranker-v3", name="Search ranker v3 (harms DE)", units=units,
                           spend_lift=0.04, segment_harm=SegmentHarm("country", "DE", -0.20),
                           model="ranker", versions=("2.1.0", "3.0.0")),
            ExperimentSpec(key="pricing-nn", name="Price suggestion network (novelty effect)",
                           units=units, spend_lift=0.10, usage_lift=0.20, fading=1.0,
                           model="pricing", versions=("0.9.0", "1.0.0")),
            ExperimentSpec(key="churn-gbm", name="Churn model GBM (broken split)", units=units,
                           spend_lift=0.02, actual_allocation=(0.53, 0.47),
                           model="churn", versions=("5.2.0", "6.0.0")),
            ExperimentSpec(key="search-emb", name="Search embeddings (more refunds)", units=units,
                           spend_lift=0.03, refund_lift=0.30, model="search", versions=("1.0.0", "1.1.0")),
            ExperimentSpec(key="banner-ml", name="Banner selection model (no change)", units=units,
                           model="banner", versions=("1.0.0", "1.1.0")),
        ),
        seed=seed)


def analysis_time(spec: SimulationSpec) -> datetime:
    """start + longest exposure period + 15 days: every unit's 14-day window is complete."""
    return naive(spec.start) + timedelta(days=max(e.days for e in spec.experiments) + WINDOW_DAYS + 1)


def data_end(spec: SimulationSpec) -> datetime:
    """The end (exclusive) of the generated event times: start + longest exposure period + 14 days.
    `Injections.drop_event` removes that event from `data_end - drop_last_days` on."""
    return naive(spec.start) + timedelta(days=max(e.days for e in spec.experiments) + WINDOW_DAYS)


def _weights(values: tuple[str, ...], default: tuple[str, ...], weights: tuple[float, ...]) -> list[float]:
    if tuple(values) == default:
        return list(weights)
    raw = [1 / (i + 1) for i in range(len(values))]
    return [w / sum(raw) for w in raw]


def segment_shares(spec: SimulationSpec, dimension: str) -> dict[str, float]:
    """The true share of units in each value of 'country' or 'platform'."""
    if dimension == "country":
        return dict(zip(spec.countries, _weights(spec.countries, DEFAULT_COUNTRIES, DEFAULT_COUNTRY_WEIGHTS)))
    if dimension == "platform":
        return dict(zip(spec.platforms, _weights(spec.platforms, DEFAULT_PLATFORMS, DEFAULT_PLATFORM_WEIGHTS)))
    raise ValueError(f"unknown segment dimension '{dimension}'; use 'country' or 'platform'")


def true_lifts(spec: SimulationSpec, key: str) -> dict[str, float]:
    """The expected relative lift (treatment vs control, averaged over exposure days and
    segments) of each generated metric for experiment `key`."""
    exp = next((e for e in spec.experiments if e.key == key), None)
    if exp is None:
        raise KeyError(f"no experiment '{key}' in the spec")
    fade = 1 - exp.fading / 2 if exp.days > 1 else 1.0
    spend = exp.spend_lift
    if exp.segment_harm is not None:
        share = segment_shares(spec, exp.segment_harm.dimension)[exp.segment_harm.value]
        spend = share * exp.segment_harm.spend_lift + (1 - share) * exp.spend_lift
    return {
        "spend_per_user": spend * fade,
        "buyer_rate": exp.conversion_lift * fade,
        "feature_usage": exp.usage_lift * fade,
        "refund_rate": exp.refund_lift * fade,
        "spend_per_session": spend * fade,   # sessions are not affected by the treatment
    }


def validate_spec(spec: SimulationSpec) -> None:
    if not spec.experiments:
        raise ValueError("a simulation needs at least one experiment")
    keys = [e.key for e in spec.experiments]
    if len(set(keys)) != len(keys):
        raise ValueError(f"experiment keys must be unique: {keys}")
    if spec.files_per_kind < 1:
        raise ValueError("files_per_kind must be at least 1")
    if spec.pre_period_days < 0 or spec.pre_period_days * BASE_BUY_PROB / WINDOW_DAYS > 1:
        raise ValueError("pre_period_days must be between 0 and 56")
    if not spec.countries or not spec.platforms:
        raise ValueError("countries and platforms must not be empty")
    inj = spec.injections
    if not 0 <= inj.null_value_fraction <= 1:
        raise ValueError("null_value_fraction must be within [0, 1]")
    if inj.drop_last_days < 0:
        raise ValueError("drop_last_days must not be negative")
    for e in spec.experiments:
        where = f"experiment '{e.key}'"
        if not KEY.match(e.key):
            raise ValueError(f"{where}: key must match {KEY.pattern}")
        if len(e.variants) < 2 or len(set(e.variants)) != len(e.variants):
            raise ValueError(f"{where}: needs at least two distinct variants")
        for v in e.variants:
            if not KEY.match(v):
                raise ValueError(f"{where}: variant '{v}' must match {KEY.pattern}")
        if e.units < 1 or e.days < 1:
            raise ValueError(f"{where}: units and days must be positive")
        for name, alloc in (("allocation", e.allocation), ("actual_allocation", e.actual_allocation)):
            if alloc is not None:
                if len(alloc) != len(e.variants) or any(a <= 0 for a in alloc) or abs(sum(alloc) - 1) > 1e-6:
                    raise ValueError(f"{where}: {name} needs one positive share per variant, summing to 1")
        if not 0 <= e.fading <= 1:
            raise ValueError(f"{where}: fading must be within [0, 1]")
        if not 0 <= e.multi_exposed_fraction <= 1:
            raise ValueError(f"{where}: multi_exposed_fraction must be within [0, 1]")
        spend_lifts = [e.spend_lift] + ([e.segment_harm.spend_lift] if e.segment_harm else [])
        for name, lift, hi in (("spend_lift", min(spend_lifts), math.inf),
                               ("conversion_lift", e.conversion_lift, 1 / BASE_BUY_PROB - 1),
                               ("usage_lift", e.usage_lift, math.inf),
                               ("refund_lift", e.refund_lift, 1 / REFUND_PROB - 1)):
            if not -1 < lift <= hi:
                raise ValueError(f"{where}: {name} must be within (-1, {hi:g}]")
        if e.segment_harm is not None:
            shares = segment_shares(spec, e.segment_harm.dimension)
            if e.segment_harm.value not in shares:
                raise ValueError(f"{where}: segment value '{e.segment_harm.value}' is not one of {list(shares)}")


# --------------------------------------------------------------------------- configuration

def config_for(spec: SimulationSpec) -> dict[str, Any]:
    """The abproxy.yaml mapping (metrics + experiments) matching the generated data."""
    metrics = {
        "spend_per_user": {
            "type": "mean", "name": "Spend per user", "event": "purchase", "aggregate": "sum",
            "window_days": WINDOW_DAYS, "higher_is_better": True,
            "description": "Purchase value per exposed user in their first 14 days (uncapped).",
        },
        "spend_per_user_capped": {
            "type": "mean", "name": "Spend per user (capped, CUPED)", "event": "purchase",
            "aggregate": "sum", "window_days": WINDOW_DAYS, "higher_is_better": True,
            "capping": {"quantile": 0.99}, "cuped": {"pre_window_days": 14},
            "description": "Spend per user winsorized at the pooled 99th percentile, CUPED-adjusted.",
        },
        "buyer_rate": {"type": "proportion", "name": "Buyer rate", "event": "purchase",
                       "window_days": WINDOW_DAYS},
        "feature_usage": {"type": "mean", "name": "Feature uses per user", "event": "feature_use",
                          "aggregate": "count", "window_days": WINDOW_DAYS},
        "refund_rate": {"type": "proportion", "name": "Refund rate", "event": "refund",
                        "window_days": WINDOW_DAYS, "higher_is_better": False},
        "spend_per_session": {
            "type": "ratio", "name": "Spend per session",
            "numerator": {"event": "purchase", "aggregate": "sum"},
            "denominator": {"event": "session_start", "aggregate": "count"},
            "window_days": WINDOW_DAYS,
        },
    }
    experiments: dict[str, Any] = {}
    for e in spec.experiments:
        experiments[e.key] = {
            "name": e.name or e.key,
            "status": e.status,
            "start": (naive(spec.start) + timedelta(days=e.start_offset_days)).date(),
            "end": (naive(spec.start) + timedelta(days=e.start_offset_days + e.days - 1)).date(),
            "control": e.variants[0],
            "variants": {v: {"model": e.model, "version": ver} for v, ver in zip(e.variants, e.model_versions)},
            "allocation": {v: float(a) for v, a in zip(e.variants, e.configured)},
            "primary": ["spend_per_user"],
            "secondary": ["buyer_rate", "feature_usage", "spend_per_session", "spend_per_user_capped"],
            "guardrails": [{"metric": "refund_rate", "margin": 0.0}],
            "segments": ["country", "platform"],
            "decision": {"alpha": 0.05, "sequential": False, "min_days": 7, "min_units_per_variant": 1000},
        }
    return {"warehouse": "data/warehouse.duckdb", "inbox": "inbox", "metrics": metrics,
            "experiments": experiments}


def config_text(spec: SimulationSpec) -> str:
    lines = [
        "# abproxy workspace generated by `abproxy simulate` (synthetic data with known true effects).",
        f"# seed {spec.seed}; exposures from {naive(spec.start):%Y-%m-%d}; analyse as of "
        f"{analysis_time(spec):%Y-%m-%d %H:%M} UTC for complete 14-day windows.",
        "# True relative lifts of the treatment arm(s):",
    ]
    for e in spec.experiments:
        lifts = true_lifts(spec, e.key)
        text = ", ".join(f"{m} {v:+.2%}" for m, v in lifts.items() if m != "spend_per_session")
        lines.append(f"#   {e.key}: {text}")
        if e.segment_harm:
            lines.append(f"#     (spend lift {e.segment_harm.spend_lift:+.2%} inside "
                         f"{e.segment_harm.dimension}={e.segment_harm.value}, {e.spend_lift:+.2%} elsewhere)")
        if e.fading:
            lines.append(f"#     (lift fades linearly to {1 - e.fading:.0%} of its start over {e.days} days)")
        if e.actual_allocation:
            lines.append(f"#     (actual split {list(e.actual)} vs configured {list(e.configured)}: "
                         "sample-ratio mismatch)")
    return "\n".join(lines) + "\n" + yaml.safe_dump(config_for(spec), sort_keys=False, allow_unicode=True)


def naive(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts
