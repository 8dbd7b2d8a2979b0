"""Effects from a table of sufficient statistics: overall (with power and family-wise adjustment),
per segment (small segments pooled), the daily series, and the verdict of a run.

Pure computation on an already fetched `StatsTable` (`fetch.run_query` runs the SQL); nothing here
touches a database.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import Config, Experiment, Metric
from .metric_types import MetricColumns, type_of
from .metrics import ExperimentQuery
from .records import AnalysisRun, MetricResult, SeriesPoint
from .stats import (Effect, JointMoments, Moments, adjust_pvalues, adjusted_alpha, at_level, power_analysis,
                    sequential, sequential_multiplier)
from .stats.groupseq import current_look, group_sequential, obf_boundary
from .stats.quantile import QuantileSummary
from .verdict import Flag, Outcome, Policy, Verdict, decide

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where a frame is read (not when the module loads)
    import pandas as pd

FAMILY_METHOD = {"primary": "holm", "guardrail": "holm", "secondary": "fdr_bh"}


@dataclass(frozen=True)
class StatsTable:
    """The query's sufficient statistics, addressable by (dimension, value, variant)."""

    frame: pd.DataFrame
    query: ExperimentQuery
    quantiles: dict[str, dict[str, QuantileSummary]] = field(default_factory=dict)  # metric → variant
    plain: frozenset[str] = frozenset()   # metrics whose CUPAC covariate was refused: analysed unadjusted
    by_dim: dict[str, list[dict[str, Any]]] | None = field(default=None, compare=False, repr=False)

    def records(self, dim: str) -> list[dict[str, Any]]:
        """The rows of `dim` as plain dicts, in the frame's order (`by_dim`: read from the frame once)."""
        if self.by_dim is None:
            object.__setattr__(self, "by_dim", records_by_dim(self.frame))
        return self.by_dim.get(dim, [])

    def moments(self, row: Any, col: MetricColumns) -> Moments | JointMoments:
        """The metric's own reading of its sums (`metric_types`); unadjusted when its covariate was refused."""
        return col.moments(row, adjusted=col.key not in self.plain)


def records_by_dim(frame: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """A statistics frame's rows as dicts of Python values by `dim` (one conversion of the whole frame)."""
    names, out = list(frame.columns), {}
    for values in frame.to_numpy(dtype=object).tolist():
        row = dict(zip(names, values))
        out.setdefault(row["dim"], []).append(row)
    return out


def compute_effect(metric: Metric, control, variant, alpha: float) -> Effect:
    """The estimator of the metric's type (`metric_types`; rare proportions: exact test, §13)."""
    return type_of(metric).effect(control, variant, alpha)


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


def _by_variant(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["variant"]): r for r in records}


def overall_results(table: StatsTable, config: Config, exp: Experiment, look: int | None = None) -> list[MetricResult]:
    arms = _by_variant(table.records("overall"))
    roles = exp.roles()
    out = []
    for col in table.query.columns:
        for variant in exp.treatments:
            if exp.control not in arms or variant not in arms:
                continue
            if not col.additive:                 # quantiles: order statistics of their own query
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
            out[i] = _adjusted(out[i], p)
    return out


def _adjusted(result: MetricResult, p_adjusted: float) -> MetricResult:
    """The result with its adjusted p and both intervals at the matching level (METHODS §19): the
    interval shown excludes 0 exactly when the result is significant."""
    e = result.effect
    effect = at_level(e, adjusted_alpha(e.alpha, e.p_value, p_adjusted))
    return replace(result, effect=effect, p_value_adjusted=p_adjusted)


def segment_results(table: StatsTable, exp: Experiment, look: int | None = None) -> list[MetricResult]:
    """Per-segment effects of primary and guardrail metrics; segments smaller than
    min_segment_units in any arm are pooled into 'other'; BH within each dimension.
    Quantile metrics have no segment results (quantiles do not pool across groups)."""
    roles = exp.roles()
    cols = [c for c in table.query.columns
            if roles[c.key] in ("primary", "guardrail") and c.additive]
    out = []
    for dim in table.query.segments:
        family = []
        buckets, pooled = _pooled_segments(table, dim, exp)
        for value, arms in buckets.items():
            details = {"pooled": pooled, "min_segment_units": exp.decision.min_segment_units} if value == "other" else {}
            for col in cols:
                for variant in exp.treatments:
                    if exp.control not in arms or variant not in arms:
                        continue
                    c, t = arms[exp.control].get(col), arms[variant].get(col)
                    effect = _decision_effect(col.metric, c, t, exp, look)
                    family.append(MetricResult(col.key, roles[col.key], variant, exp.control, dim, value,
                                               c.n, t.n, effect, effect.p_value, details=dict(details)))
        adjusted = adjust_pvalues([r.effect.p_value for r in family], "fdr_bh", exp.decision.alpha)
        out += [_adjusted(r, p) for r, p in zip(family, adjusted)]
    return out


class _ArmSums:
    """Sufficient statistics of one segment value and arm, additive so small segments can pool."""

    def __init__(self, table: StatsTable, row: dict[str, Any]):
        self.by_col = {c.key: table.moments(row, c) for c in table.query.columns}
        self.n = int(row["n"])

    def add(self, other: "_ArmSums") -> "_ArmSums":
        for k, m in other.by_col.items():
            self.by_col[k] = self.by_col[k] + m
        self.n += other.n
        return self

    def get(self, col: MetricColumns):
        return self.by_col[col.key]


def _segment_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        value = r["dim_value"] if isinstance(r["dim_value"], str) else "(missing)"
        out.setdefault(value, {})[str(r["variant"])] = r
    return out


def _pooled_segments(table: StatsTable, dim: str, exp: Experiment
                     ) -> tuple[dict[str, dict[str, _ArmSums]], list[str]]:
    """Segment values with at least min_segment_units in every arm, the rest pooled into 'other'
    (the pooled values are returned too). A bucket that holds every unit (all values pooled, or a
    single value) is the whole population, not a segment: the dimension is then left out."""
    raw = _segment_rows(table.records(dim))
    minimum = exp.decision.min_segment_units
    out: dict[str, dict[str, _ArmSums]] = {}
    pooled: list[str] = []
    for value, arms in sorted(raw.items()):
        sums = {v: _ArmSums(table, r) for v, r in arms.items()}
        small = any(s.n < minimum for s in sums.values()) or set(sums) != set(exp.variants)
        target = "other" if small else value
        if small:
            pooled.append(value)
        bucket = out.setdefault(target, {})
        for v, s in sums.items():
            bucket[v] = bucket[v].add(s) if v in bucket else s
    return (out, pooled) if len(out) >= 2 else ({}, pooled)


def series(table: StatsTable, exp: Experiment, levels: dict[tuple[str, str], float] | None = None,
           look: int | None = None) -> list[SeriesPoint]:
    """Daily (per exposure-day cohort, fixed-horizon) and cumulative effects of each metric. The
    cumulative points use the decision's method (the confidence sequence in sequential mode) at the
    level of the overall result (`levels`: (metric, variant) → the interval's α), so the last one is
    the interval the verdict shows (METHODS §19)."""
    levels = levels or {}
    rows = table.records("day")
    if not rows:
        return []
    by_day: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_day.setdefault(str(r["dim_value"]), {})[str(r["variant"])] = r
    days = sorted(by_day)
    out = []
    for col in (c for c in table.query.columns if c.additive):
        for variant in exp.treatments:
            running: dict[str, Any] = {}
            for d in days:
                arms = by_day[d]
                if exp.control not in arms or variant not in arms:
                    continue
                c, t = table.moments(arms[exp.control], col), table.moments(arms[variant], col)
                running = {"c": running["c"] + c, "t": running["t"] + t} if running else {"c": c, "t": t}
                for kind, (cc, tt) in (("daily", (c, t)), ("cumulative", (running["c"], running["t"]))):
                    if kind == "daily":
                        e = compute_effect(col.metric, cc, tt, exp.decision.alpha)
                    else:
                        e = _decision_effect(col.metric, cc, tt, exp, look)
                        e = at_level(e, levels.get((col.key, variant), exp.decision.alpha))
                    out.append(SeriesPoint(col.key, variant, kind, dt.date.fromisoformat(d), cc.n, tt.n,
                                           e.abs_effect, e.abs_se, e.rel_effect, e.rel_ci))
    return out


def _outcomes(results: list[MetricResult], config: Config, exp: Experiment) -> list[Outcome]:
    margins = {g.metric: g for g in exp.guardrail_specs}
    out = []
    for r in results:
        m = config.metrics[r.metric]
        g = margins.get(r.metric)
        e = r.effect
        out.append(Outcome(r.metric, m.name or r.metric.replace("_", " ").capitalize(), r.role, r.variant,
                           e.abs_effect, e.abs_ci, e.rel_effect, e.rel_ci, r.significant, m.higher_is_better,
                           g.margin if g else 0.0, g.relative if g else True, type_of(m).in_points,
                           r.extra_units_needed))
    return out


def verdict_for(run: AnalysisRun, config: Config, exp: Experiment) -> Verdict:
    overall = [r for r in run.results if r.segment == ""]
    flags = [Flag(c.check, c.status, c.detail, c.segment, c.metric, c.variant) for c in run.health]
    info = run.enrollment
    units_per_day = info.recent_per_variant_per_day if info is not None and run.days_running >= 1 else None
    stopped = info.stopped_since if info is not None else None
    p = exp.decision
    policy = Policy(p.alpha, p.min_days, p.min_units_per_variant, p.max_days, p.segment_harm,
                    units_per_day or None, stopped, exp.status == "shipped")
    return decide(_outcomes(overall, config, exp), flags, run.days_running, run.units, policy, exp.control)
