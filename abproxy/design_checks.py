"""Checks on the experiment's design: pre-exposure balance (and restarts), CUPAC covariates, and
interactions with concurrent experiments (METHODS §15–§17).

`covariate_refusals` runs before the effects (a refused covariate makes its metric unadjusted);
`design_checks` runs after them on the same sufficient statistics plus two small grouped queries.
"""
from __future__ import annotations

import datetime as dt
import logging
import math

import duckdb

from .config import Config, Experiment
from .engines import ENGINE_ERRORS, Engine, as_engine
from .effects import StatsTable, compute_effect
from .metrics import MetricColumns, experiment_sql, literal, timestamp_literal
from .records import Check
from .shared import current, others_sql, position_case
from .stats import JointMoments, Moments, adjust_pvalues
from .stats.balance import cuped_correction, ks_p_value, pre_exposure_balance
from .stats.interaction import assignment_independence_all, interaction_test

log = logging.getLogger(__name__)
COVARIATE_KS_P = 0.001   # a CUPAC covariate differing by arm at this level is refused


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"


# ------------------------------------------------------------------ CUPAC covariates (§17)

def _ks_sql(unit_sql: str, x: str, control: str, variant: str) -> str:
    """Two-sample KS D between two arms' per-unit covariate, computed in the engine (ties grouped)."""
    c, t = literal(control), literal(variant)
    return f"""WITH v AS (SELECT variant, {x} AS x FROM ({unit_sql}) unit_rows WHERE variant IN ({c}, {t})),
     counts AS (SELECT x, count(*) FILTER (WHERE variant = {c}) AS nc, count(*) FILTER (WHERE variant = {t}) AS nt
                FROM v GROUP BY x),
     totals AS (SELECT sum(nc) AS tc, sum(nt) AS tt FROM counts)
SELECT max(abs(fc - ft)) AS d, max(tc) AS nc, max(tt) AS nt FROM (
    SELECT sum(nc) OVER (ORDER BY x) / (SELECT tc FROM totals) AS fc,
           sum(nt) OVER (ORDER BY x) / (SELECT tt FROM totals) AS ft, (SELECT tc FROM totals) AS tc,
           (SELECT tt FROM totals) AS tt
    FROM counts) cdf"""


def _row(engine: Engine, sql: str) -> tuple:
    import pandas as pd

    return tuple(None if pd.isna(v) else v for v in engine.frame(sql).iloc[0])


def _covariate_check(engine: Engine, unit_sql: str, col: MetricColumns,
                     exp: Experiment) -> Check:
    name = col.covariate
    changed, units = (int(v) for v in _row(engine, f"SELECT count(*) FILTER (WHERE cov_{name}_values > 1) AS changed, "
                                                   f"count(*) AS n FROM ({unit_sql}) unit_rows"))
    if changed:
        return Check("cuped_covariate", "warn",
                     f"{col.key}: covariate '{name}' changes after exposure for {changed:,} of {units:,} units "
                     "(different values on a unit's exposure rows); refused — the metric is analysed without "
                     "CUPED. Log the covariate once, at the first exposure", metric=col.key,
                     value=float(changed), threshold=0.0)
    worst = (math.inf, "", 0.0)
    for variant in exp.treatments:
        d, nc, nt = _row(engine, _ks_sql(unit_sql, col.x, exp.control, variant))
        if d is None or not nc or not nt:
            continue
        p = ks_p_value(float(d), int(nc), int(nt))
        worst = min(worst, (p, variant, float(d)))
    p, variant, d = worst
    if p < COVARIATE_KS_P:
        return Check("cuped_covariate", "warn",
                     f"{col.key}: covariate '{name}' differs by arm ({variant} vs {exp.control}: KS D = {d:.3f}, "
                     f"p = {p:.2g} < {COVARIATE_KS_P}); refused — a score produced by the variant's own model "
                     "would absorb the treatment effect; the metric is analysed without CUPED", metric=col.key,
                     variant=variant, value=p, threshold=COVARIATE_KS_P)
    shown = f"KS p = {p:.3g}" if math.isfinite(p) else "not testable yet"
    return Check("cuped_covariate", "ok", f"{col.key}: covariate '{name}' is fixed at exposure and balanced "
                                          f"across arms ({shown}); used as CUPED covariate (CUPAC)",
                 metric=col.key, value=p if math.isfinite(p) else None, threshold=COVARIATE_KS_P)


def covariate_refusals(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str,
                       as_of: dt.datetime) -> tuple[frozenset[str], list[Check]]:
    """(metrics whose covariate is refused, one `cuped_covariate` check per CUPAC metric)."""
    exp = config.experiments[key]
    keys = [m for m in exp.roles() if config.metrics[m].cuped_covariate]
    if not keys:
        return frozenset(), []
    engine = as_engine(engine)
    query = experiment_sql(config, key, as_of, keys=keys, dialect=engine.dialect)
    checks = [_covariate_check(engine, query.unit_sql, col, exp) for col in query.columns]
    refused = frozenset(c.metric for c in checks if c.status != "ok")
    return refused, checks


# ------------------------------------------------------------------ pre-exposure imbalance (§16)

def _restarts(engine: Engine, exp: Experiment, key: str, as_of: dt.datetime) -> Check | None:
    if exp.start is None:
        return None
    start = dt.datetime.combine(exp.start, dt.time())
    earlier, total = (int(v) for v in _row(engine,
        f"SELECT count(*) FILTER (WHERE first < {timestamp_literal(start)}) AS earlier, count(*) AS n FROM "
        f"(SELECT min(exposed_at) AS first FROM exposures WHERE experiment = {literal(key)} "
        f"AND exposed_at <= {timestamp_literal(as_of)} GROUP BY unit_id) firsts"))
    if not earlier:
        return Check("pre_exposure_imbalance", "ok", f"No unit was exposed to {key} before its start {exp.start} "
                                                     "(no restart carry-over)", value=0.0, threshold=0.0)
    return Check("pre_exposure_imbalance", "warn",
                 f"{earlier:,} of {total:,} units were exposed to {key} before its start {exp.start} (an earlier "
                 "run of the experiment): their pre-period and first exposure belong to that run — re-randomise "
                 "with a new salt on a restart, or exclude them", segment="restarts",
                 value=float(earlier), threshold=0.0)


def pre_exposure_checks(table: "StatsTable", config: Config, exp: Experiment) -> list[Check]:
    """Arms compared on each CUPED covariate (pre-window or CUPAC), Holm over metrics × treatments."""
    threshold = config.health.pre_exposure_p
    arms = {str(r["variant"]): r for r in table.records("overall")}
    tests = []
    for col in table.query.columns:
        if not (col.metric.cuped_days or col.covariate) or exp.control not in arms:
            continue
        for variant in exp.treatments:
            if variant not in arms:
                continue
            c, t = (table.moments(arms[v], col) for v in (exp.control, variant))
            if not isinstance(c, JointMoments):
                continue  # covariate refused: reported by cuped_covariate
            tests.append((col, variant, c, t, pre_exposure_balance(c.x, t.x)))
    adjusted = adjust_pvalues([b.p_value for *_, b in tests], "holm")
    out = []
    for (col, variant, c, t, b), p in zip(tests, adjusted):
        what = f"the pre-period ({col.metric.cuped_days:g} days)" if col.metric.cuped_days else f"'{col.covariate}'"
        correction = cuped_correction(c, t)
        unadjusted = t.y.mean - c.y.mean
        size = (f"{variant} {b.variant_mean:.4g} vs {exp.control} {b.control_mean:.4g} ({_pct(b.relative)}, "
                f"standardised difference {b.smd:+.3f}), p = {b.p_value:.2g} (Holm-adjusted {p:.2g})")
        if p < threshold:
            detail = (f"{col.key}: the arms already differed before exposure on {what}: {size}. CUPED corrects "
                      f"the linear part: it removes {correction:+.4g} from the unadjusted effect {unadjusted:+.4g}; "
                      "but an imbalance this large points at the split or at carry-over from an earlier test — "
                      "check the assignment before trusting the effect")
            status = "warn"
        else:
            detail = f"{col.key}: arms balanced before exposure on {what}: {size}"
            status = "ok"
        out.append(Check("pre_exposure_imbalance", status, detail, metric=col.key, variant=variant,
                         value=p, threshold=threshold))
    return out


# ------------------------------------------------------------------ concurrent experiments (§15)

def _cells(engine: Engine, table: "StatsTable", cols: list[MetricColumns], others: list[str], as_of: dt.datetime,
           variants: list[str]):
    """Per (other experiment, arm of A, arm of the other): n and the metric sums — one scan of A's
    units (an experiment sharing no unit has no cells); rows by other, arm of A, arm of the other."""
    import pandas as pd

    d, sums = engine.dialect, []
    for c in cols:
        sums += [d.sum(c.y), d.sum(f"{c.y} * {c.y}")]
        if c.x:
            sums += [d.sum(c.x), d.sum(f"{c.x} * {c.x}"), d.sum(f"{c.y} * {c.x}")]
    sums = "".join(f", {s} AS s{i}" for i, s in enumerate(sums))
    found = shared.assignments(engine, others, as_of) if (shared := current()) is not None else None
    if found is None:
        sql = (f"SELECT o.other, u.variant, o.other_variant, count(*) AS n{sums} FROM ({table.query.unit_sql}) u "
               f"JOIN ({others_sql(others, as_of, engine.dialect)}) o ON o.unit_id = u.unit_id "
               "GROUP BY o.other, u.variant, o.other_variant")
        rows = list(engine.frame(sql).itertuples(index=False))
    else:   # the pass's numbered assignments: joined and grouped on integers (A's variant numbered too)
        ids = ", ".join(str(found.others.index(o)) for o in others)
        values = "".join(f", v.{name}" for c in cols for name in c.unit_names())   # only what the sums read
        units = f"{found.table}_x"      # A's units numbered first: the join below reads a table of known size
        engine.con.execute(f"CREATE OR REPLACE TEMP TABLE {units} AS SELECT m.h{values}, CAST("
                           f"{position_case('v.variant', variants)} AS INTEGER) AS aid FROM ({table.query.unit_sql}) v "
                           f"JOIN {found.units} m ON m.unit_id = v.unit_id")
        try:
            frame = engine.frame(f"SELECT o.oid, u.aid, o.vid, count(*) AS n{sums} FROM {units} u JOIN (SELECT h, oid, "
                                 f"vid FROM {found.table} WHERE oid IN ({ids})) o ON o.h = u.h GROUP BY o.oid, u.aid, o.vid")
        finally:
            engine.con.execute(f"DROP TABLE IF EXISTS {units}")
        rows = [(found.others[int(r[0])], variants[int(r[1])], None if pd.isna(r[2]) else found.variants[int(r[2])],
                 *r[3:]) for r in frame.itertuples(index=False)]
    out: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: tuple((v is None, v or "") for v in r[:3])):
        out.setdefault(row[0], []).append(row[1:])
    return out


def _cell_moments(row, cols: list[MetricColumns], plain: frozenset[str]) -> dict[str, Moments | JointMoments]:
    n, values, out, i = int(row[2]), row[3:], {}, 0
    for c in cols:
        if c.x:
            m = JointMoments(n, *(float(v or 0) for v in values[i:i + 5]))
            out[c.key] = m.y if c.key in plain else m
            i += 5
        else:
            out[c.key] = Moments(n, float(values[i] or 0), float(values[i + 1] or 0))
            i += 2
    return out


def interaction_checks(engine: Engine, config: Config, key: str, as_of: dt.datetime,
                       table: "StatsTable") -> list[Check]:
    """For every other running experiment sharing units: χ² of the assignments' cross-tab and the
    interaction test of each primary metric's effect across the other experiment's arms."""
    exp = config.experiments[key]
    threshold = config.health.interaction_p
    cols = [c for c in table.query.columns if c.key in exp.primary and c.metric.type != "quantile"]
    running = [o for o, e in config.experiments.items() if o != key and e.status == "running"]
    cells_by_other = _cells(engine, table, cols, running, as_of, list(exp.variants)) if running else {}
    shared = [(other, rows, sorted({r[1] for r in rows})) for other in running if (rows := cells_by_other.get(other))]
    tables = []
    for _, rows, arms_b in shared:
        arms_a = [v for v in exp.variants if any(r[0] == v for r in rows)]
        counts = {(r[0], r[1]): int(r[2]) for r in rows}
        tables.append([[counts.get((a, b), 0) for b in arms_b] for a in arms_a])
    out = []
    for (other, rows, arms_b), indep in zip(shared, assignment_independence_all(tables)):
        tests = [("assignment", None, None, indep.p_value,
                  f"assignments of {key} and {other} on {indep.shared_units:,} shared units: χ² = {indep.chi2:.2f}, "
                  f"df = {indep.df}, p = {indep.p_value:.3g}")]
        cells = {(r[0], r[1]): _cell_moments(r, cols, table.plain) for r in rows}
        for col in cols:
            for variant in exp.treatments:
                effects = [compute_effect(col.metric, cells[(exp.control, b)][col.key], cells[(variant, b)][col.key],
                                          exp.decision.alpha)
                           for b in arms_b if (exp.control, b) in cells and (variant, b) in cells]
                res = interaction_test([e.abs_effect for e in effects], [e.abs_se**2 for e in effects])
                if res.warning:
                    continue
                by_arm = ", ".join(f"{b}: {_pct(e.rel_effect)}" for b, e in zip(arms_b, effects))
                tests.append(("effect", col.key, variant, res.p_value,
                              f"{col.key} effect of {variant} across the arms of {other} ({by_arm}): Q = {res.q:.2f}, "
                              f"df = {res.df}, p = {res.p_value:.3g}"))
        for kind, metric, variant, p, text in tests:
            bad = p < threshold
            advice = ("; the assignments are not independent — one experiment steers the other's split" if kind ==
                      "assignment" else f"; the effect depends on the arm of {other} — analyse the combination "
                      "before shipping")
            out.append(Check("interaction", "warn" if bad else "ok", text + (advice if bad else ""), metric=metric,
                             segment=other, variant=variant, value=p, threshold=threshold))
    return out


def design_checks(engine: Engine | duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                  table: "StatsTable") -> list[Check]:
    exp = config.experiments[key]
    engine = as_engine(engine)
    checks = pre_exposure_checks(table, config, exp)
    restart = _restarts(engine, exp, key, as_of)
    if restart is not None:
        checks.append(restart)
    try:
        checks += interaction_checks(engine, config, key, as_of, table)
    except ENGINE_ERRORS as exc:
        log.warning("interaction checks of %s could not run", key, exc_info=exc)
        checks.append(Check("interaction", "warn", f"The interaction checks could not run ({exc})"))
    return checks
