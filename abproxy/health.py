"""Health checks: fragility (data quality), bias (segments) and drift (effect over time).

Each check returns `Check(status ok|warn|fail, numbers, plain explanation)`. A `fail` makes the
verdict INVALID; a `warn` is shown (and `segment_harm` blocks SHIP when the policy says so).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from .config import Config
from .stats import cochran_q

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import AnalysisRun


@dataclass(frozen=True)
class Check:
    check: str
    status: str                 # ok | warn | fail
    detail: str
    metric: str | None = None
    segment: str | None = None
    variant: str | None = None
    value: float | None = None
    threshold: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def srm_check(run: "AnalysisRun") -> Check:
    srm = run.srm
    observed = ", ".join(f"{v} {n:,}" for v, n in srm.observed.items())
    expected = ", ".join(f"{v} {e:,.0f}" for v, e in srm.expected.items())
    if srm.ok:
        return Check("srm", "ok", f"Split matches the configured allocation (p = {srm.p_value:.3g}): {observed}",
                     value=srm.p_value, threshold=srm.threshold)
    return Check("srm", "fail",
                 f"Sample-ratio mismatch: observed {observed}, expected {expected} (p = {srm.p_value:.2g} < "
                 f"{srm.threshold}); check the assignment code and exposure logging before trusting any effect",
                 value=srm.p_value, threshold=srm.threshold)


def multi_exposure_check(run: "AnalysisRun", warn_share: float = 0.01, fail_share: float = 0.05) -> Check:
    total = sum(run.units.values()) + run.excluded_multi
    share = run.excluded_multi / total if total else 0.0
    status = "fail" if share > fail_share else "warn" if share > warn_share else "ok"
    detail = (f"{run.excluded_multi:,} units ({share:.1%}) were exposed to more than one variant and are excluded"
              + ("; the assignment is leaking between arms" if status != "ok" else ""))
    return Check("multiple_exposures", status, detail, value=share, threshold=warn_share)


def segment_checks(run: "AnalysisRun", config: Config, key: str) -> list[Check]:
    """Bias: a segment significantly harmed while the overall effect is not harmful, and Cochran's Q
    heterogeneity across the values of each segment dimension (METHODS §11)."""
    exp = config.experiments[key]
    overall = {(r.metric, r.variant): r for r in run.results if r.segment == ""}
    checks = []
    segs = [r for r in run.results if r.segment != ""]
    for r in segs:
        metric = config.metrics[r.metric]
        o = overall.get((r.metric, r.variant))
        harmful = r.significant and (r.effect.abs_effect < 0) == metric.higher_is_better
        overall_harmful = o is not None and o.significant and (o.effect.abs_effect < 0) == metric.higher_is_better
        if harmful and not overall_harmful:
            checks.append(Check("segment_harm", "warn",
                                f"{r.segment}={r.segment_value}: {r.metric} {_pct(r.effect.rel_effect)} "
                                f"(95% CI {_pct(r.effect.rel_ci[0])} to {_pct(r.effect.rel_ci[1])}, adjusted p = "
                                f"{r.p_value_adjusted:.2g}) for {r.variant} while the overall effect is "
                                f"{_pct(o.effect.rel_effect) if o else 'n/a'}",
                                metric=r.metric, segment=f"{r.segment}={r.segment_value}", variant=r.variant,
                                value=r.effect.rel_effect, threshold=0.0))
    for dim in exp.segments:
        for (metric, variant) in overall:
            rows = [r for r in segs if r.segment == dim and r.metric == metric and r.variant == variant
                    and math.isfinite(r.effect.abs_se) and r.effect.abs_se > 0]
            if len(rows) < 2:
                continue
            het = cochran_q([r.effect.abs_effect for r in rows], [r.effect.abs_se ** 2 for r in rows])
            status = "warn" if het.p_value < exp.decision.alpha else "ok"
            checks.append(Check("segment_heterogeneity", status,
                                f"{metric} effect across {dim} ({len(rows)} groups): Cochran's Q = {het.q:.2f}, "
                                f"p = {het.p_value:.3g}, I² = {het.i2:.0%}"
                                + ("; the effect differs between segments" if status == "warn" else ""),
                                metric=metric, segment=dim, variant=variant, value=het.p_value,
                                threshold=exp.decision.alpha))
    return checks


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if x is not None and math.isfinite(x) else "n/a"


def experiment_checks(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                      run: "AnalysisRun") -> list[Check]:
    """Every health check of one experiment run, in display order."""
    return [srm_check(run), multi_exposure_check(run)] + segment_checks(run, config, key)


def decision_robustness(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                        run: "AnalysisRun") -> list[Check]:
    return []
