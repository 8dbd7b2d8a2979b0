"""One class per metric type: which per-unit columns it needs, which sums the query returns for it,
how it reads its own moments back from a row of sufficient statistics, and which estimator it uses.

This is the one place of the column-name contract between the SQL (`metrics.py` writes what
`unit_columns` and `sums` declare) and the statistics (`moments` reads the same names):

    per unit:  {alias}_y (outcome or ratio numerator), {alias}_x (ratio denominator, CUPED pre-period
               value, or CUPAC exposure covariate)
    per group: {alias}_y_sum, {alias}_y_sq, and with an x: {alias}_x_sum, {alias}_x_sq, {alias}_xy

A type whose per-group statistics do not add up (`additive = False`, e.g. quantiles) gets no segment
results and no daily series; its effect comes from its own statistics (`fetch.quantile_summaries`).

To add a metric type, subclass `MetricColumns`, set `type_name`, override what differs (usually
`unit_columns`, `sums`, `moments` and `effect`) and register it in `TYPES`; the config's `type`
literal must name it too. See the docstring of `metrics.py` for the SQL side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from .config import EventSource, Metric
from .dialect import Dialect
from .stats import Effect, JointMoments, Moments, cuped_effect, mean_effect, ratio_effect
from .stats.quantile import quantile_effect
from .stats.rare import proportion_auto

Stats = Moments | JointMoments


@dataclass(frozen=True)
class UnitColumn:
    """One per-unit number: an aggregate of a unit's events in a window relative to its exposure."""

    name: str
    source: EventSource
    window: str                 # "post": [exposed_at, exposed_at + days); "pre": [exposed_at - days, exposed_at)
    days: float
    as_bool: bool = False       # 1.0 when the aggregate is positive (a proportion's conversion)


@dataclass(frozen=True)
class MetricColumns:
    """A metric of an experiment's query: its key, its column alias, its definition; the base type."""

    key: str
    alias: str
    metric: Metric

    type_name: ClassVar[str] = ""
    cappable: ClassVar[bool] = False       # winsorizing applies (the robustness check may toggle it)
    cupedable: ClassVar[bool] = False      # a CUPED pre-period covariate applies
    in_points: ClassVar[bool] = False      # effects read in percentage points (proportions)
    additive: ClassVar[bool] = True        # group statistics add up: segments pool, daily series accumulate

    # ------------------------------------------------------------------ names
    @property
    def y(self) -> str:
        return f"{self.alias}_y"

    @property
    def x(self) -> str | None:
        return f"{self.alias}_x" if self.metric.cuped_days or self.metric.cuped_covariate else None

    @property
    def covariate(self) -> str | None:
        """CUPAC: the exposure column whose value at first exposure is x (METHODS §17)."""
        return self.metric.cuped_covariate

    @property
    def raw(self) -> bool:
        return self.metric.sql is not None

    # ------------------------------------------------------------------ what the SQL computes
    def sources(self) -> list[EventSource]:
        """The event sources this metric aggregates (none for a raw SQL metric)."""
        return [] if self.raw else [self.metric.source()]

    def unit_columns(self) -> list[UnitColumn]:
        """The per-unit columns computed from the joined events (empty for a raw SQL metric)."""
        if self.raw:
            return []
        m, source = self.metric, self.metric.source()
        out = [UnitColumn(self.y, source, "post", m.window_days, self.in_points)]
        if m.cuped_days:
            out.append(UnitColumn(self.x, source, "pre", m.cuped_days, self.in_points))
        return out

    def unit_names(self) -> list[str]:
        return [self.y] + ([self.x] if self.x else [])

    def capped_names(self) -> list[str]:
        """The per-unit columns winsorized when the metric has capping (the outcome and its covariate)."""
        return [self.y] + ([self.x] if self.metric.cuped_days else [])

    def cap_sql(self, expr: str, d: Dialect) -> str | None:
        """The cap of the per-unit values `expr` (None without capping): the absolute value, or their
        pooled quantile, an aggregate over the unit rows (of the non-zero values with ignore_zeros)."""
        cap = self.metric.capping
        if cap is None:
            return None
        if cap.value is not None:
            return d.number(cap.value)
        return d.quantile(expr, cap.quantile) + (f" FILTER (WHERE {expr} <> 0)" if cap.ignore_zeros else "")

    def sums(self, d: Dialect) -> list[tuple[str, str]]:
        """(output column, aggregate over the unit table) of the sufficient statistics per group."""
        y, x = self.y, self.x
        out = [(f"{y}_sum", d.sum(y)), (f"{y}_sq", d.sum(f"{y} * {y}"))]
        if x:
            out += [(f"{x}_sum", d.sum(x)), (f"{x}_sq", d.sum(f"{x} * {x}")), (f"{self.alias}_xy", d.sum(f"{y} * {x}"))]
        return out

    # ------------------------------------------------------------------ what the statistics read back
    def moments(self, row: Mapping[str, Any], adjusted: bool = True) -> Stats:
        """The moments of this metric in one row of sums; `adjusted=False`: y alone (covariate refused)."""
        n, y = int(row["n"]), self.y
        if self.x is None or not adjusted:
            return Moments(n, float(row[f"{y}_sum"]), float(row[f"{y}_sq"]))
        x = self.x
        return JointMoments(n, float(row[f"{y}_sum"]), float(row[f"{y}_sq"]),
                            float(row[f"{x}_sum"]), float(row[f"{x}_sq"]), float(row[f"{self.alias}_xy"]))

    @classmethod
    def effect(cls, control: Stats, variant: Stats, alpha: float) -> Effect:
        if isinstance(control, JointMoments):
            return cuped_effect(control, variant, alpha)
        return mean_effect(control, variant, alpha)


class Mean(MetricColumns):
    type_name = "mean"
    cappable = True
    cupedable = True


class Proportion(MetricColumns):
    type_name = "proportion"
    cupedable = True
    in_points = True

    @classmethod
    def effect(cls, control: Stats, variant: Stats, alpha: float) -> Effect:
        if isinstance(control, JointMoments):
            return cuped_effect(control, variant, alpha)
        return proportion_auto(control, variant, alpha)     # exact test for rare proportions (§13)


class Ratio(MetricColumns):
    """Σ numerator / Σ denominator per arm (delta method); x is the denominator."""

    type_name = "ratio"

    @property
    def x(self) -> str:
        return f"{self.alias}_x"

    def sources(self) -> list[EventSource]:
        return [] if self.raw else [self.metric.numerator, self.metric.denominator]

    def unit_columns(self) -> list[UnitColumn]:
        if self.raw:
            return []
        m = self.metric
        return [UnitColumn(self.y, m.numerator, "post", m.window_days),
                UnitColumn(self.x, m.denominator, "post", m.window_days)]

    @classmethod
    def effect(cls, control: Stats, variant: Stats, alpha: float) -> Effect:
        return ratio_effect(control, variant, alpha)


class Quantile(MetricColumns):
    """The q-quantile of the per-unit values per arm, from order statistics ranked in the engine
    (METHODS §14); its statistics do not pool, so no segments and no daily series."""

    type_name = "quantile"
    additive = False

    @classmethod
    def effect(cls, control: Any, variant: Any, alpha: float) -> Effect:
        return quantile_effect(control, variant, alpha)


TYPES: dict[str, type[MetricColumns]] = {t.type_name: t for t in (Mean, Proportion, Ratio, Quantile)}


def type_of(metric: Metric) -> type[MetricColumns]:
    return TYPES[metric.type]


def columns_for(key: str, alias: str, metric: Metric) -> MetricColumns:
    """The typed columns of `metric` under `alias` in one query."""
    return type_of(metric)(key, alias, metric)
