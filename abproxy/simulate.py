"""Synthetic workspaces with known true effects (demo, tests, benchmarks).

Everything is generated inside DuckDB with SQL and written straight to Parquet, so ten million
events take seconds. Randomness is a deterministic hash of (seed, experiment, unit, row, purpose):
``unif(k, salt) = (hash(xor(k, salt)) >> 11 + 0.5) / 2^53``. DuckDB's ``hash`` of a single
integer is a 64-bit finaliser, so the uniforms are independent across salts and do not depend on
thread scheduling (``random()`` under several threads is not reproducible). With DuckDB's default
``preserve_insertion_order`` the generated files are byte-identical for the same spec.

The data model (per unit, during ``[exposed_at, exposed_at + 14 days)``):

* ``session_start``: 1..8 events, uniform (mean 4.5); unaffected by the treatment.
* ``purchase``: the unit buys with probability ``0.25 * (1 + conversion_lift)``; a buyer buys
  ``1 + Poisson(1)`` items (truncated at 8) whose values are ``20 * a * m * LogNormal(mean 1)``,
  where ``a`` is the unit's spend propensity (log-normal, mean 1) and
  ``m = (1 + spend_lift) / (1 + conversion_lift)`` for treatment arms (1 for the control). So the
  mean spend per buyer is about 40 and the expected spend per user of a treatment arm is exactly
  ``(1 + spend_lift)`` times the control's: ``spend_lift`` is the true lift of *spend per user*.
* ``feature_use``: ``floor(3 * (1 + usage_lift) * Exp(1) + U)`` events (mean exactly
  ``3 * (1 + usage_lift)``).
* ``refund``: one event with probability ``0.05 * (1 + refund_lift)``.
* Pre-period (``[exposed_at - pre_period_days, exposed_at)``): ``purchase`` events with
  probability ``0.25 * pre_period_days / 14`` drawn like post-period purchases without the
  treatment. The pre and post purchase decisions share one uniform with probability 0.8 and both
  use the unit's propensity ``a``, so pre-period spend predicts post-period spend (rho^2 ~ 0.3 for
  14 + 14 days) and CUPED reduces variance for real.

Treatment effects: every non-control arm gets the same lifts. With ``fading`` a unit exposed on
day ``d`` (0-based) of ``days`` gets ``lift * (1 - fading * d / (days - 1))``, so the average lift
is ``lift * (1 - fading / 2)``. With ``segment_harm`` the spend lift inside that segment is
``segment_harm.spend_lift`` instead of ``spend_lift``; because control spend per user is the same in
every segment, the overall true spend lift is then the mixture
``share * segment_lift + (1 - share) * spend_lift`` (see `true_lifts`).
"""
from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import yaml

from .config import CONFIG_FILE, KEY

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
_US_PER_DAY = 86_400_000_000
_TWO_53 = 9007199254740992.0


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
    return _naive(spec.start) + timedelta(days=max(e.days for e in spec.experiments) + WINDOW_DAYS + 1)


def data_end(spec: SimulationSpec) -> datetime:
    """The end (exclusive) of the generated event times: start + longest exposure period + 14 days.
    `Injections.drop_event` removes that event from `data_end - drop_last_days` on."""
    return _naive(spec.start) + timedelta(days=max(e.days for e in spec.experiments) + WINDOW_DAYS)


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


def _validate(spec: SimulationSpec) -> None:
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
            "start": (_naive(spec.start) + timedelta(days=e.start_offset_days)).date(),
            "end": (_naive(spec.start) + timedelta(days=e.start_offset_days + e.days - 1)).date(),
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


def _config_text(spec: SimulationSpec) -> str:
    lines = [
        "# abproxy workspace generated by `abproxy simulate` (synthetic data with known true effects).",
        f"# seed {spec.seed}; exposures from {_naive(spec.start):%Y-%m-%d}; analyse as of "
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


# --------------------------------------------------------------------------- generation

def _naive(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _u64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _salt(name: str) -> str:
    """A fixed 64-bit salt per purpose (the seed enters through the unit keys)."""
    return f"{_u64('abproxy.simulate/' + name)}::UBIGINT"


def _u(key: str, name: str) -> str:
    return f"unif({key}, {_salt(name)})"


def _cases(u: str, weights: list[float] | tuple[float, ...], outputs: list[str]) -> str:
    """CASE choosing outputs[i] when the uniform `u` falls in the i-th cumulative weight band."""
    weights, parts, acc = list(weights), [], 0.0
    for w, out in zip(weights[:-1], outputs[:-1]):
        acc += w
        parts.append(f"WHEN {u} < {acc!r} THEN {out}")
    return f"CASE {' '.join(parts)} ELSE {outputs[-1]} END"


def _poisson1(u: str) -> str:
    """Inverse CDF of Poisson(1) truncated at 7."""
    cdf, acc, k = [], 0.0, 0
    while k < 7:
        acc += math.exp(-1) / math.factorial(k)
        cdf.append(acc)
        k += 1
    parts = " ".join(f"WHEN {u} < {c!r} THEN {i}" for i, c in enumerate(cdf))
    return f"(CASE {parts} ELSE 7 END)"


def _units_sql(spec: SimulationSpec, e: ExperimentSpec) -> str:
    """SELECT of one row per unit of experiment `e` with its attributes, latent values and
    event counts."""
    base = _u64(f"{spec.seed}/{e.key}")
    variants = "[" + ", ".join(_lit(v) for v in e.variants) + "]"
    n_var = len(e.variants)
    vidx = _cases("u_var", e.actual, [str(i) for i in range(n_var)])
    countries = _cases("u_country", segment_shares(spec, "country").values(), [_lit(c) for c in spec.countries])
    platforms = _cases("u_platform", segment_shares(spec, "platform").values(), [_lit(p) for p in spec.platforms])
    fade = f"(1 - {float(e.fading)!r} * day / {max(e.days - 1, 1)})" if e.days > 1 else "1.0"
    if e.segment_harm is not None:
        col = e.segment_harm.dimension
        spend = (f"CASE WHEN {col} = {_lit(e.segment_harm.value)} THEN {float(e.segment_harm.spend_lift)!r} "
                 f"ELSE {float(e.spend_lift)!r} END")
    else:
        spend = repr(float(e.spend_lift))
    begin = _naive(spec.start) + timedelta(days=e.start_offset_days)
    start = f"TIMESTAMP '{begin:%Y-%m-%d %H:%M:%S}'"
    pre_prob = BASE_BUY_PROB * spec.pre_period_days / WINDOW_DAYS
    return f"""
    WITH k AS (
        SELECT i, hash(xor(hash(i), {base}::UBIGINT)) AS k FROM range({int(e.first_unit)}, {int(e.first_unit + e.units)}) t(i)
    ), u AS (
        SELECT i, k,
            floor({_u('k', 'day')} * {int(e.days)})::INTEGER AS day,
            {_u('k', 'time')} AS u_time, {_u('k', 'variant')} AS u_var,
            {_u('k', 'country')} AS u_country, {_u('k', 'platform')} AS u_platform,
            {_u('k', 'shared_buy')} AS u_shared,
            CASE WHEN {_u('k', 'mix')} < {SHARED_BUY} THEN {_u('k', 'shared_buy')}
                 ELSE {_u('k', 'buy_post')} END AS u_buy,
            CASE WHEN {_u('k', 'mix')} < {SHARED_BUY} THEN {_u('k', 'shared_buy')}
                 ELSE {_u('k', 'buy_pre')} END AS u_buy_pre,
            sqrt(-2 * ln({_u('k', 'prop1')})) * cos(2 * pi() * {_u('k', 'prop2')}) AS z_prop,
            {_u('k', 'items')} AS u_items, {_u('k', 'items_pre')} AS u_items_pre,
            {_u('k', 'sessions')} AS u_sess, {_u('k', 'feat1')} AS u_feat1, {_u('k', 'feat2')} AS u_feat2,
            {_u('k', 'refund')} AS u_refund, {_u('k', 'part')} AS u_part, {_u('k', 'multi')} AS u_multi
        FROM k
    ), v AS (
        SELECT *, {vidx} AS vidx, {countries} AS country, {platforms} AS platform FROM u
    ), l AS (
        SELECT *, CASE WHEN vidx > 0 THEN {fade} ELSE 0.0 END AS f FROM v
    ), c AS (
        SELECT *, f * ({spend}) AS l_spend, f * {float(e.conversion_lift)!r} AS l_conv,
               f * {float(e.usage_lift)!r} AS l_usage, f * {float(e.refund_lift)!r} AS l_refund
        FROM l
    )
    SELECT {_lit(e.key + '-')} || i AS unit_id, {_lit(e.key)} AS experiment,
        {variants}[vidx + 1] AS variant,
        {start} + to_microseconds(day::BIGINT * {_US_PER_DAY} + floor(u_time * {_US_PER_DAY})::BIGINT) AS exposed_at,
        country, platform, k,
        floor(u_part * {int(spec.files_per_kind)})::INTEGER AS part,
        u_multi < {float(e.multi_exposed_fraction)!r} AS multi,
        {variants}[(vidx + 1) % {n_var} + 1] AS other_variant,
        exp({PROPENSITY_SIGMA} * z_prop - {PROPENSITY_SIGMA ** 2 / 2!r}) AS a,
        (1 + l_spend) / (1 + l_conv) AS m,
        (1 + floor(u_sess * 8))::INTEGER AS n_sess,
        CASE WHEN u_buy < {BASE_BUY_PROB} * (1 + l_conv) THEN 1 + {_poisson1('u_items')} ELSE 0 END AS n_items,
        floor({FEATURE_MEAN} * (1 + l_usage) * -ln(u_feat1) + u_feat2)::INTEGER AS n_feat,
        (u_refund < {REFUND_PROB} * (1 + l_refund))::INTEGER AS n_ref,
        CASE WHEN u_buy_pre < {pre_prob!r} THEN 1 + {_poisson1('u_items_pre')} ELSE 0 END AS n_pre
    FROM c
    """


def _events_sql(spec: SimulationSpec, unit_filter: str, row_filter: str = "TRUE") -> str:
    inj = spec.injections
    window_us = WINDOW_DAYS * _US_PER_DAY
    pre_us = spec.pre_period_days * _US_PER_DAY
    cats = "[" + ", ".join(_lit(c) for c in CATEGORIES) + "]"
    z = f"sqrt(-2 * ln({_u('rk', 'val1')})) * cos(2 * pi() * {_u('rk', 'val2')})"
    value = f"round({ITEM_MEAN} * a * CASE WHEN kind = 1 THEN m ELSE 1.0 END * exp({ITEM_SIGMA} * {z} - {ITEM_SIGMA ** 2 / 2!r}), 2)"
    is_buy = "kind IN (1, 4)"
    if inj.null_value_fraction > 0:
        is_buy += f" AND {_u('rk', 'null')} >= {float(inj.null_value_fraction)!r}"
    drop = "TRUE"
    if inj.drop_event:
        cutoff = data_end(spec) - timedelta(days=inj.drop_last_days)
        drop = f"NOT (event = {_lit(inj.drop_event)} AND occurred_at >= TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S}')"
    b1, b2, b3 = "n_sess", "n_sess + n_items", "n_sess + n_items + n_feat"
    b4 = "n_sess + n_items + n_feat + n_ref"
    return f"""
    WITH e AS (
        SELECT unit_id, exposed_at, k, a, m, n_sess, n_items, n_feat, n_ref,
               unnest(generate_series(0, n_sess + n_items + n_feat + n_ref + n_pre - 1)) AS j
        FROM units WHERE {unit_filter}
    ), r AS (
        SELECT *, xor(k, hash(j)) AS rk,
            CASE WHEN j < {b1} THEN 0 WHEN j < {b2} THEN 1 WHEN j < {b3} THEN 2
                 WHEN j < {b4} THEN 3 ELSE 4 END AS kind
        FROM e
    ), x AS (
        SELECT unit_id,
            ['session_start', 'purchase', 'feature_use', 'refund', 'purchase'][kind + 1] AS event,
            CASE WHEN kind = 4
                 THEN exposed_at - to_microseconds({pre_us}) + to_microseconds(floor({_u('rk', 'time')} * {pre_us})::BIGINT)
                 ELSE exposed_at + to_microseconds(floor({_u('rk', 'time')} * {window_us})::BIGINT) END AS occurred_at,
            CASE WHEN {is_buy} THEN {value} END AS value,
            unit_id || ':' || j AS event_id,
            CASE WHEN kind IN (1, 4) THEN {cats}[1 + floor({_u('rk', 'category')} * {len(CATEGORIES)})::INTEGER] END AS category,
            rk
        FROM r
    )
    SELECT unit_id, event, occurred_at, value, event_id, category FROM x
    WHERE {drop} AND {row_filter} AND {_until(spec, "occurred_at")}
    """


def _until(spec: SimulationSpec, column: str) -> str:
    if spec.observed_until is None:
        return "TRUE"
    return f"{column} < TIMESTAMP '{_naive(spec.observed_until):%Y-%m-%d %H:%M:%S.%f}'"


def _exposures_sql(part: int, spec: SimulationSpec | None = None) -> str:
    return f"""
    SELECT unit_id, experiment, variant, exposed_at, country, platform FROM (
        SELECT unit_id, experiment, variant, exposed_at, country, platform, 0 AS o, k FROM units WHERE part = {part}
        UNION ALL
        SELECT unit_id, experiment, other_variant, exposed_at + to_microseconds(3600000000 +
                   floor({_u('k', 'multi_time')} * 2 * {_US_PER_DAY})::BIGINT), country, platform, 1, k
        FROM units WHERE part = {part} AND multi
    ) WHERE {_until(spec, "exposed_at") if spec else "TRUE"} ORDER BY k, o
    """


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE MACRO unif(k, s) AS ((hash(xor(k, s)) >> 11)::DOUBLE + 0.5) / {_TWO_53!r}")
    return con


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    con.execute(f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    tmp.replace(path)


def simulate(out: Path, spec: SimulationSpec, *, write_config: bool = True) -> Path:
    """Write a synthetic workspace: out/inbox/exposures/sim-exposures-NNN.parquet,
    out/inbox/events/sim-events-NNN.parquet (plus sim-events-redelivery.parquet with
    `Injections.duplicate_batch`), out/abproxy.yaml (if `write_config`) and an empty out/data/.
    Files from an earlier simulation (names starting with 'sim-') are replaced; other inbox
    files are left alone. Returns `out`."""
    _validate(spec)
    out = Path(out)
    exposures_dir, events_dir = out / "inbox" / "exposures", out / "inbox" / "events"
    for folder in (exposures_dir, events_dir, out / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (exposures_dir, events_dir):
        for old in folder.glob("sim-*"):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    con = _connect()
    try:
        for i, e in enumerate(spec.experiments):
            verb = "CREATE TABLE units AS" if i == 0 else "INSERT INTO units"
            con.execute(f"{verb} {_units_sql(spec, e)}")
        for part in range(spec.files_per_kind):
            _copy(con, _exposures_sql(part, spec), exposures_dir / f"sim-exposures-{part:03d}.parquet")
            _copy(con, _events_sql(spec, f"part = {part}"), events_dir / f"sim-events-{part:03d}.parquet")
        if spec.injections.duplicate_batch:
            _copy(con, _events_sql(spec, "TRUE", f"{_u('rk', 'duplicate')} < {DUPLICATE_SHARE}"),
                  events_dir / "sim-events-redelivery.parquet")
    finally:
        con.close()
    if write_config:
        (out / CONFIG_FILE).write_text(_config_text(spec))
    return out
