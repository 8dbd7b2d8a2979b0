"""The records every layer shares: one analysis run, its long results table, its daily series and its
health checks. Logic modules import these; this module imports only `stats` and `verdict` (both pure).

Kept apart from the modules that compute them (gbstats keeps its records in `models/`), so that the
ledger, the CLI output, notifications and the report can read a run without importing the analysis.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import Effect
from .verdict import Verdict


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
    enrollment: Any = None          # enrollment.Enrollment: robust start, early exposures, recent rate
    results: list[MetricResult] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    health: list[Check] = field(default_factory=list)
    verdict: Verdict | None = None
    definition_hash: str = ""
    definitions: dict[str, Any] = field(default_factory=dict)
    watermark: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    refresh: dict[str, str] = field(default_factory=dict)   # per-unit state: {mode, reason} (state.Refresh)
    lineage: dict[str, Any] = field(default_factory=dict)   # variant → lineage.ModelLineage
