"""One analysis run: SQL → sufficient statistics → effects → health → verdict → ledger row.

`analyze_experiment` is the whole pipeline for one experiment; `analyze` runs it for several,
isolating failures so that one broken metric never stops the other experiments.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import pandas as pd

from . import design_checks
from . import health as health_checks
from . import ledger
from .config import Config, Experiment, Metric, definition_hash, definitions
from .metrics import ExperimentQuery, MetricColumns, experiment_sql, quantile_sql
from .stats import (
    Effect,
    JointMoments,
    Moments,
    adjust_pvalues,
    cuped_effect,
    mean_effect,
    power_analysis,
    proportion_effect,
    ratio_effect,
    sequential,
    sequential_multiplier,
    srm_test,
)
from .stats.groupseq import current_look, group_sequential, obf_boundary
from .stats.quantile import RANK_Z, QuantileSummary, quantile_effect
from .stats.rare import proportion_auto
from .verdict import Flag, Outcome, Policy, Verdict, decide

log = logging.getLogger(__name__)
FAMILY_METHOD = {"primary": "holm", "guardrail": "holm", "secondary": "fdr_bh"}


@dataclass(frozen=True)
class MetricResult:
    """One row of the long results table (overall when segment == '')."""

    metric: str
    role: str
    variant: str
    control: str
    segment: str
    segment_value: str
    control_units: int
    variant_units: int
    effect: Effect
    p_value_adjusted: float
    mde: float | None = None
    mde_rel: float | None = None
    extra_units_needed: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return bool(self.p_value_adjusted < self.effect.alpha) if math.isfinite(self.p_value_adjusted) else False

    def record(self) -> dict[str, Any]:
        e = self.effect
        return {
            "metric": self.metric, "role": self.role, "variant": self.variant, "control": self.control,
            "segment": self.segment, "segment_value": self.segment_value,
            "control_units": self.control_units, "variant_units": self.variant_units,
            "control_mean": e.control_mean, "variant_mean": e.variant_mean,
            "abs_effect": e.abs_effect, "abs_ci": list(e.abs_ci), "rel_effect": e.rel_effect, "rel_ci": list(e.rel_ci),
            "p_value": e.p_value, "p_value_adjusted": self.p_value_adjusted, "significant": self.significant,
            "cuped_variance_reduction": e.variance_reduction, "mde": self.mde, "mde_rel": self.mde_rel,
            "method": e.method, "warning": e.warning, "details": self.details,
        }


@dataclass(frozen=True)
class SeriesPoint:
    metric: str
    variant: str
    kind: str          # daily | cumulative
    day: dt.date
    control_units: int
    variant_units: int
    abs_effect: float
    abs_se: float
    rel_effect: float
    rel_ci: tuple[float, float]


@dataclass(frozen=True)
class StatsTable:
    """The query's sufficient statistics, addressable by (dimension, value, variant)."""

    frame: pd.DataFrame
    query: ExperimentQuery
    quantiles: dict[str, dict[str, QuantileSummary]] = field(default_factory=dict)  # metric → variant
    plain: frozenset[str] = frozenset()   # metrics whose CUPAC covariate was refused: analysed unadjusted

    def rows(self, dim: str) -> pd.DataFrame:
        return self.frame[self.frame["dim"] == dim]

    def moments(self, row: pd.Series, col: MetricColumns) -> Moments | JointMoments:
        n = int(row["n"])
        if col.x is None or col.key in self.plain:
            return Moments(n, float(row[f"{col.y}_sum"]), float(row[f"{col.y}_sq"]))
        return JointMoments(n, float(row[f"{col.y}_sum"]), float(row[f"{col.y}_sq"]),
                            float(row[f"{col.x}_sum"]), float(row[f"{col.x}_sq"]), float(row[f"{col.alias}_xy"]))


@dataclass
class AnalysisRun:
    run_id: str
    experiment: str
    started_at: dt.datetime
    as_of: dt.datetime
    status: str = "ok"
    error: str | None = None
    finished_at: dt.datetime | None = None
    method: str = ""
    units: dict[str, int] = field(default_factory=dict)
    srm: Any = None
    excluded_multi: int = 0
    days_running: float = 0.0
    results: list[MetricResult] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    health: list[health_checks.Check] = field(default_factory=list)
    verdict: Verdict | None = None
    definition_hash: str = ""
    definitions: dict[str, Any] = field(default_factory=dict)
    watermark: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None


def compute_effect(metric: Metric, control, variant, alpha: float) -> Effect:
    """Pick the estimator the metric's definition implies (rare proportions: exact test, §13)."""
    if metric.type == "ratio":
        return ratio_effect(control, variant, alpha)
    if metric.type == "quantile":
        return quantile_effect(control, variant, alpha)
    if metric.type == "proportion" and isinstance(control, Moments):
        return proportion_auto(control, variant, alpha)
    if isinstance(control, JointMoments):
        return cuped_effect(control, variant, alpha)
    return mean_effect(control, variant, alpha)


def _decision_effect(metric: Metric, control, variant, exp: Experiment, look: int | None = None) -> Effect:
    policy = exp.decision
    effect = compute_effect(metric, control, variant, policy.alpha)
    if policy.group_sequential:
        effect = group_sequential(effect, look or 1, policy.looks)
    elif policy.sequential:
        effect = sequential(effect, control.n + variant.n, policy.sequential_tuning)
    return effect


def _critical(exp: Experiment, n_total: int, look: int | None) -> float | None:
    """The decision's critical value in SEs (for power), None for fixed horizon."""
    policy = exp.decision
    if policy.group_sequential:
        z = obf_boundary(policy.looks, policy.alpha, look or 1).z[-1]
        return z if math.isfinite(z) else None
    if policy.sequential:
        return sequential_multiplier(n_total, policy.alpha, policy.sequential_tuning)
    return None


def look_of(exp: Experiment, days_running: float) -> int | None:
    """Group-sequential: the last planned look reached (METHODS §12); None otherwise."""
    if not exp.decision.group_sequential:
        return None
    return current_look(days_running / exp.planned_days, exp.decision.looks)


def _by_variant(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {str(r["variant"]): r for _, r in frame.iterrows()}


def overall_results(table: StatsTable, config: Config, exp: Experiment, look: int | None = None) -> list[MetricResult]:
    arms = _by_variant(table.rows("overall"))
    roles = exp.roles()
    out = []
    for col in table.query.columns:
        for variant in exp.treatments:
            if exp.control not in arms or variant not in arms:
                continue
            if col.metric.type == "quantile":
                q = table.quantiles.get(col.key, {})
                if exp.control not in q or variant not in q:
                    continue
                c, t = q[exp.control], q[variant]
            else:
                c, t = table.moments(arms[exp.control], col), table.moments(arms[variant], col)
            effect = _decision_effect(col.metric, c, t, exp, look)
            policy = exp.decision
            critical = _critical(exp, c.n + t.n, look)
            pw = power_analysis(effect, c.n, t.n, policy.alpha, policy.power, policy.target_mde, critical)
            details = {"control_var": _var(c), "variant_var": _var(t), "abs_se": effect.abs_se, "df": effect.df}
            out.append(MetricResult(col.key, roles[col.key], variant, exp.control, "", "", c.n, t.n, effect,
                                    effect.p_value, pw.mde_abs, pw.mde_rel, pw.extra_units_per_variant, details))
    return adjust_families(out, exp.decision.alpha)


def _var(m) -> float:
    if isinstance(m, QuantileSummary):
        return m.se**2 * m.n if math.isfinite(m.se) else math.nan
    return m.var if isinstance(m, Moments) else m.y.var


def adjust_families(results: list[MetricResult], alpha: float) -> list[MetricResult]:
    """Holm within primary and within guardrail metrics, Benjamini–Hochberg within secondary
    (each family spans metrics × treatment arms; METHODS §9)."""
    out = list(results)
    for role, method in FAMILY_METHOD.items():
        idx = [i for i, r in enumerate(out) if r.role == role]
        adjusted = adjust_pvalues([out[i].effect.p_value for i in idx], method, alpha)
        for i, p in zip(idx, adjusted):
            out[i] = replace(out[i], p_value_adjusted=p)
    return out


def segment_results(table: StatsTable, exp: Experiment, look: int | None = None) -> list[MetricResult]:
    """Per-segment effects of primary and guardrail metrics; segments smaller than
    min_segment_units in any arm are pooled into 'other'; BH within each dimension.
    Quantile metrics have no segment results (quantiles do not pool across groups)."""
    roles = exp.roles()
    cols = [c for c in table.query.columns
            if roles[c.key] in ("primary", "guardrail") and c.metric.type != "quantile"]
    out = []
    for dim in table.query.segments:
        family = []
        for value, arms in _pooled_segments(table, dim, exp).items():
            for col in cols:
                for variant in exp.treatments:
                    if exp.control not in arms or variant not in arms:
                        continue
                    c, t = arms[exp.control].get(col), arms[variant].get(col)
                    effect = _decision_effect(col.metric, c, t, exp, look)
                    family.append(MetricResult(col.key, roles[col.key], variant, exp.control, dim, value,
                                               c.n, t.n, effect, effect.p_value))
        adjusted = adjust_pvalues([r.effect.p_value for r in family], "fdr_bh", exp.decision.alpha)
        out += [replace(r, p_value_adjusted=p) for r, p in zip(family, adjusted)]
    return out


class _ArmSums:
    """Sufficient statistics of one segment value and arm, additive so small segments can pool."""

    def __init__(self, table: StatsTable, row: pd.Series):
        self.by_col = {c.key: table.moments(row, c) for c in table.query.columns}
        self.n = int(row["n"])

    def add(self, other: "_ArmSums") -> "_ArmSums":
        for k, m in other.by_col.items():
            self.by_col[k] = self.by_col[k] + m
        self.n += other.n
        return self

    def get(self, col: MetricColumns):
        return self.by_col[col.key]


def _segment_rows(rows: pd.DataFrame) -> dict[str, dict[str, pd.Series]]:
    out: dict[str, dict[str, pd.Series]] = {}
    for _, r in rows.iterrows():
        value = r["dim_value"] if isinstance(r["dim_value"], str) else "(missing)"
        out.setdefault(value, {})[str(r["variant"])] = r
    return out


def _pooled_segments(table: StatsTable, dim: str, exp: Experiment) -> dict[str, dict[str, _ArmSums]]:
    raw = _segment_rows(table.rows(dim))
    minimum = exp.decision.min_segment_units
    out: dict[str, dict[str, _ArmSums]] = {}
    for value, arms in sorted(raw.items()):
        sums = {v: _ArmSums(table, r) for v, r in arms.items()}
        small = any(s.n < minimum for s in sums.values()) or set(sums) != set(exp.variants)
        target = "other" if small else value
        bucket = out.setdefault(target, {})
        for v, s in sums.items():
            bucket[v] = bucket[v].add(s) if v in bucket else s
    return out


def series(table: StatsTable, exp: Experiment) -> list[SeriesPoint]:
    """Daily (per exposure-day cohort) and cumulative fixed-horizon effects of each metric."""
    rows = table.rows("day")
    if rows.empty:
        return []
    days = sorted({str(d) for d in rows["dim_value"]})
    by_day = {d: _by_variant(rows[rows["dim_value"] == d]) for d in days}
    out = []
    for col in (c for c in table.query.columns if c.metric.type != "quantile"):
        for variant in exp.treatments:
            running: dict[str, Any] = {}
            for d in days:
                arms = by_day[d]
                if exp.control not in arms or variant not in arms:
                    continue
                c, t = table.moments(arms[exp.control], col), table.moments(arms[variant], col)
                running = {"c": running["c"] + c, "t": running["t"] + t} if running else {"c": c, "t": t}
                for kind, (cc, tt) in (("daily", (c, t)), ("cumulative", (running["c"], running["t"]))):
                    e = compute_effect(col.metric, cc, tt, exp.decision.alpha)
                    out.append(SeriesPoint(col.key, variant, kind, dt.date.fromisoformat(d), cc.n, tt.n,
                                           e.abs_effect, e.abs_se, e.rel_effect, e.rel_ci))
    return out


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _query(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime) -> ExperimentQuery:
    return experiment_sql(config, key, as_of, _columns(con, "exposures"), _columns(con, "events"))


def run_query(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
              plain: frozenset[str] = frozenset()) -> StatsTable:
    """The sufficient statistics, plus one order-statistics query per quantile metric (METHODS §14)."""
    query = _query(con, config, key, as_of)
    return StatsTable(con.execute(query.sql).df(), query, quantile_summaries(con, query), plain)


def quantile_summaries(con: duckdb.DuckDBPyConnection, query: ExperimentQuery) -> dict[str, dict[str, QuantileSummary]]:
    out: dict[str, dict[str, QuantileSummary]] = {}
    for col in (c for c in query.columns if c.metric.type == "quantile"):
        rows = con.execute(quantile_sql(query, col, RANK_Z)).fetchall()
        out[col.key] = {str(v): QuantileSummary(int(n), float(col.metric.quantile), float(est), float(lo), float(hi))
                        for v, n, est, lo, hi in rows if n}
    return out


def _check_definitions(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime) -> None:
    """Run the metric query once, so a broken definition fails even before this experiment's data
    arrives; segment columns are only checked once the workspace holds some exposures."""
    if con.execute("SELECT count(*) FROM (SELECT 1 FROM exposures LIMIT 1)").fetchone()[0]:
        con.execute(_query(con, config, key, as_of).sql).fetchall()
        return
    lean = config.model_copy(update={"experiments": {
        **config.experiments, key: config.experiments[key].model_copy(update={"segments": []})}})
    con.execute(experiment_sql(lean, key, as_of, None, _columns(con, "events")).sql).fetchall()


def _days_running(con: duckdb.DuckDBPyConnection, exp: Experiment, key: str, as_of: dt.datetime) -> float:
    first = con.execute("SELECT min(exposed_at) FROM exposures WHERE experiment = ? AND exposed_at <= ?",
                        [key, as_of]).fetchone()[0]
    start = dt.datetime.combine(exp.start, dt.time()) if exp.start else first
    if start is None:
        return 0.0
    end = min(as_of, dt.datetime.combine(exp.end, dt.time()) + dt.timedelta(days=1)) if exp.end else as_of
    return max(0.0, (end - start).total_seconds() / 86400)


def _outcomes(results: list[MetricResult], config: Config, exp: Experiment) -> list[Outcome]:
    margins = {g.metric: g for g in exp.guardrail_specs}
    out = []
    for r in results:
        m = config.metrics[r.metric]
        g = margins.get(r.metric)
        e = r.effect
        out.append(Outcome(r.metric, m.name or r.metric.replace("_", " ").capitalize(), r.role, r.variant,
                           e.abs_effect, e.abs_ci, e.rel_effect, e.rel_ci, r.significant, m.higher_is_better,
                           g.margin if g else 0.0, g.relative if g else True, m.type == "proportion",
                           r.extra_units_needed))
    return out


def verdict_for(run: AnalysisRun, config: Config, exp: Experiment) -> Verdict:
    overall = [r for r in run.results if r.segment == ""]
    flags = [Flag(c.check, c.status, c.detail, c.segment, c.metric, c.variant) for c in run.health]
    units_per_day = (min(run.units.values()) / run.days_running) if run.units and run.days_running >= 1 else None
    p = exp.decision
    policy = Policy(p.alpha, p.min_days, p.min_units_per_variant, p.max_days, p.segment_harm, units_per_day)
    return decide(_outcomes(overall, config, exp), flags, run.days_running, run.units, policy, exp.control)


def analyze_experiment(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                       job_id: str | None = None, robustness: bool = True) -> AnalysisRun:
    exp = config.experiments[key]
    run = AnalysisRun(uuid.uuid4().hex[:12], key, _utcnow(), as_of,
                      job_id=job_id, definition_hash=definition_hash(config, key), definitions=definitions(config, key))
    run.method = ("group-sequential" if exp.decision.group_sequential
                  else "sequential" if exp.decision.sequential else "fixed-horizon")
    run.parameters = {"as_of": as_of.isoformat(), "alpha": exp.decision.alpha, "method": run.method,
                      "sequential_tuning": exp.decision.sequential_tuning}
    if exp.decision.group_sequential:
        run.parameters.update(looks=exp.decision.looks, planned_days=exp.planned_days)
    try:
        run.watermark = ledger.watermark(con, key, as_of)
        if run.watermark["exposure_rows"] == 0:
            _check_definitions(con, config, key, as_of)
            run.units = {v: 0 for v in exp.variants}
            run.verdict = Verdict("KEEP_RUNNING", None, (
                f"No exposures for '{key}' up to {as_of:%Y-%m-%d %H:%M} UTC yet: drop exposure files into "
                "inbox/exposures/ (and events into inbox/events/), then run again",))
            run.finished_at = _utcnow()
            return run
        plain, covariate_checks = design_checks.covariate_refusals(con, config, key, as_of)
        table = run_query(con, config, key, as_of, plain)
        overall = _by_variant(table.rows("overall"))
        run.units = {v: int(overall[v]["n"]) if v in overall else 0 for v in exp.variants}
        run.excluded_multi = int(table.frame["excluded_multi"].max()) if len(table.frame) else 0
        run.srm = srm_test(run.units, exp.weights)
        run.days_running = _days_running(con, exp, key, as_of)
        look = look_of(exp, run.days_running)
        if look is not None:
            run.parameters["look"] = look
            run.method = f"group-sequential (look {look} of {exp.decision.looks})"
        run.results = overall_results(table, config, exp, look) + segment_results(table, exp, look)
        run.series = series(table, exp)
        run.health = health_checks.experiment_checks(con, config, key, as_of, run)
        run.health += covariate_checks + design_checks.design_checks(con, config, key, as_of, table)
        run.verdict = verdict_for(run, config, exp)
        if robustness:
            run.health += health_checks.decision_robustness(con, config, key, as_of, run)
            run.verdict = verdict_for(run, config, exp)
    except Exception as exc:  # isolation: the failure is recorded and the caller carries on
        run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("analysis of %s failed: %s", key, run.error)
        log.debug("traceback of the failed analysis of %s", key, exc_info=True)
    run.finished_at = _utcnow()
    return run


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def analyze(con: duckdb.DuckDBPyConnection, config: Config, keys: list[str], as_of: dt.datetime,
            job_id: str | None = None, record: bool = True) -> list[AnalysisRun]:
    runs = []
    for key in keys:
        started = time.perf_counter()
        run = analyze_experiment(con, config, key, as_of, job_id)
        if record:
            ledger.record_run(con, run)
        log.info("analysed %s: %s in %.2fs", key, run.verdict.decision if run.verdict else run.status,
                 time.perf_counter() - started)
        runs.append(run)
    return runs
