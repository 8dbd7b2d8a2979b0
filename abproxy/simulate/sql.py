"""The DuckDB SQL that draws the synthetic units, exposures and events from hashed uniforms."""
from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from .spec import (BASE_BUY_PROB, CATEGORIES, FEATURE_MEAN, ITEM_MEAN, ITEM_SIGMA, PROPENSITY_SIGMA, REFUND_PROB,
                   SHARED_BUY, WINDOW_DAYS, ExperimentSpec, SimulationSpec, data_end, naive, segment_shares)

_US_PER_DAY = 86_400_000_000


def lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _u64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _salt(name: str) -> str:
    """A fixed 64-bit salt per purpose (the seed enters through the unit keys)."""
    return f"{_u64('abproxy.simulate/' + name)}::UBIGINT"


def uniform(key: str, name: str) -> str:
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


def units_sql(spec: SimulationSpec, e: ExperimentSpec) -> str:
    """SELECT of one row per unit of experiment `e` with its attributes, latent values and
    event counts."""
    base = _u64(f"{spec.seed}/{e.key}")
    variants = "[" + ", ".join(lit(v) for v in e.variants) + "]"
    n_var = len(e.variants)
    vidx = _cases("u_var", e.actual, [str(i) for i in range(n_var)])
    countries = _cases("u_country", segment_shares(spec, "country").values(), [lit(c) for c in spec.countries])
    platforms = _cases("u_platform", segment_shares(spec, "platform").values(), [lit(p) for p in spec.platforms])
    fade = f"(1 - {float(e.fading)!r} * day / {max(e.days - 1, 1)})" if e.days > 1 else "1.0"
    spend = _spend_lift(e)
    begin = naive(spec.start) + timedelta(days=e.start_offset_days)
    start = f"TIMESTAMP '{begin:%Y-%m-%d %H:%M:%S}'"
    pre_prob = BASE_BUY_PROB * spec.pre_period_days / WINDOW_DAYS
    return f"""
    WITH k AS (
        SELECT i, hash(xor(hash(i), {base}::UBIGINT)) AS k FROM range({int(e.first_unit)}, {int(e.first_unit + e.units)}) t(i)
    ), u AS (
        SELECT i, k,{_uniforms(e)}
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
    SELECT {lit(e.key + '-')} || i AS unit_id, {lit(e.key)} AS experiment,
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


def _spend_lift(e: ExperimentSpec) -> str:
    """The spend lift of a treated unit: `segment_harm.spend_lift` inside the harmed segment."""
    if e.segment_harm is None:
        return repr(float(e.spend_lift))
    col = e.segment_harm.dimension
    return (f"CASE WHEN {col} = {lit(e.segment_harm.value)} THEN {float(e.segment_harm.spend_lift)!r} "
            f"ELSE {float(e.spend_lift)!r} END")


def _uniforms(e: ExperimentSpec) -> str:
    """The per-unit uniforms (and the exposure day), one salt per purpose."""
    return f"""
            floor({uniform('k', 'day')} * {int(e.days)})::INTEGER AS day,
            {uniform('k', 'time')} AS u_time, {uniform('k', 'variant')} AS u_var,
            {uniform('k', 'country')} AS u_country, {uniform('k', 'platform')} AS u_platform,
            {uniform('k', 'shared_buy')} AS u_shared,
            CASE WHEN {uniform('k', 'mix')} < {SHARED_BUY} THEN {uniform('k', 'shared_buy')}
                 ELSE {uniform('k', 'buy_post')} END AS u_buy,
            CASE WHEN {uniform('k', 'mix')} < {SHARED_BUY} THEN {uniform('k', 'shared_buy')}
                 ELSE {uniform('k', 'buy_pre')} END AS u_buy_pre,
            sqrt(-2 * ln({uniform('k', 'prop1')})) * cos(2 * pi() * {uniform('k', 'prop2')}) AS z_prop,
            {uniform('k', 'items')} AS u_items, {uniform('k', 'items_pre')} AS u_items_pre,
            {uniform('k', 'sessions')} AS u_sess, {uniform('k', 'feat1')} AS u_feat1, {uniform('k', 'feat2')} AS u_feat2,
            {uniform('k', 'refund')} AS u_refund, {uniform('k', 'part')} AS u_part, {uniform('k', 'multi')} AS u_multi"""


def events_sql(spec: SimulationSpec, unit_filter: str, row_filter: str = "TRUE") -> str:
    inj = spec.injections
    window_us = WINDOW_DAYS * _US_PER_DAY
    pre_us = spec.pre_period_days * _US_PER_DAY
    cats = "[" + ", ".join(lit(c) for c in CATEGORIES) + "]"
    z = f"sqrt(-2 * ln({uniform('rk', 'val1')})) * cos(2 * pi() * {uniform('rk', 'val2')})"
    value = f"round({ITEM_MEAN} * a * CASE WHEN kind = 1 THEN m ELSE 1.0 END * exp({ITEM_SIGMA} * {z} - {ITEM_SIGMA ** 2 / 2!r}), 2)"
    is_buy = "kind IN (1, 4)"
    if inj.null_value_fraction > 0:
        is_buy += f" AND {uniform('rk', 'null')} >= {float(inj.null_value_fraction)!r}"
    drop = "TRUE"
    if inj.drop_event:
        cutoff = data_end(spec) - timedelta(days=inj.drop_last_days)
        drop = f"NOT (event = {lit(inj.drop_event)} AND occurred_at >= TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S}')"
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
                 THEN exposed_at - to_microseconds({pre_us}) + to_microseconds(floor({uniform('rk', 'time')} * {pre_us})::BIGINT)
                 ELSE exposed_at + to_microseconds(floor({uniform('rk', 'time')} * {window_us})::BIGINT) END AS occurred_at,
            CASE WHEN {is_buy} THEN {value} END AS value,
            unit_id || ':' || j AS event_id,
            CASE WHEN kind IN (1, 4) THEN {cats}[1 + floor({uniform('rk', 'category')} * {len(CATEGORIES)})::INTEGER] END AS category,
            rk
        FROM r
    )
    SELECT unit_id, event, occurred_at, value, event_id, category FROM x
    WHERE {drop} AND {row_filter} AND {_until(spec, "occurred_at")}
    """


def _until(spec: SimulationSpec, column: str) -> str:
    if spec.observed_until is None:
        return "TRUE"
    return f"{column} < TIMESTAMP '{naive(spec.observed_until):%Y-%m-%d %H:%M:%S.%f}'"


def exposures_sql(part: int, spec: SimulationSpec | None = None) -> str:
    return f"""
    SELECT unit_id, experiment, variant, exposed_at, country, platform FROM (
        SELECT unit_id, experiment, variant, exposed_at, country, platform, 0 AS o, k FROM units WHERE part = {part}
        UNION ALL
        SELECT unit_id, experiment, other_variant, exposed_at + to_microseconds(3600000000 +
                   floor({uniform('k', 'multi_time')} * 2 * {_US_PER_DAY})::BIGINT), country, platform, 1, k
        FROM units WHERE part = {part} AND multi
    ) WHERE {_until(spec, "exposed_at") if spec else "TRUE"} ORDER BY k, o
    """
