"""The `metrics:` section: one metric (event aggregate, ratio or raw SQL), its capping and CUPED settings."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, model_validator

from .base import Aggregate, Identifier, Key, Strict


class EventSource(Strict):
    """Which events feed one number of a unit: name, optional SQL predicate, aggregate."""

    event: Key
    aggregate: Aggregate = "sum"
    where: str | None = None
    column: Identifier = "value"


class Capping(Strict):
    """Winsorize per-unit values at an absolute value or a pooled quantile (METHODS §6)."""

    quantile: float | None = Field(default=None, gt=0.5, lt=1)
    value: float | None = None
    ignore_zeros: bool = False

    @model_validator(mode="after")
    def _one(self) -> "Capping":
        if (self.quantile is None) == (self.value is None):
            raise ValueError("give exactly one of 'quantile' (e.g. 0.99) or 'value' (an absolute cap)")
        return self


class Cuped(Strict):
    """CUPED covariate: the metric over a pre-exposure window, or (CUPAC) a numeric exposure
    attribute logged at exposure time, e.g. the model's predicted value (METHODS §5, §17)."""

    pre_window_days: PositiveFloat = 14
    covariate: Identifier | None = None

    @model_validator(mode="after")
    def _one(self) -> "Cuped":
        if self.covariate is not None and "pre_window_days" in self.model_fields_set:
            raise ValueError("give either 'pre_window_days' (the metric before exposure) or 'covariate' "
                             "(an exposure column), not both")
        return self


class Metric(Strict):
    type: Literal["mean", "proportion", "ratio", "quantile"]
    name: str | None = None
    description: str = ""
    owner: str = ""
    event: Key | None = None
    aggregate: Aggregate | None = None
    where: str | None = None
    column: Identifier = "value"
    numerator: EventSource | None = None
    denominator: EventSource | None = None
    sql: str | None = None
    window_days: PositiveFloat = 14
    quantile: float | None = Field(default=None, gt=0, lt=1)
    capping: Capping | None = None
    cuped: Cuped | bool | None = None
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _shape(self) -> "Metric":
        if self.sql is not None:
            if self.event or self.numerator or self.denominator:
                raise ValueError("a raw 'sql' metric takes no 'event', 'numerator' or 'denominator'")
            if self.cuped:
                raise ValueError("CUPED is not available for raw 'sql' metrics")
            return self
        if self.type == "ratio":
            if self.numerator is None or self.denominator is None:
                raise ValueError("a ratio metric needs 'numerator' and 'denominator' ({event, aggregate})")
            if self.event is not None:
                raise ValueError("a ratio metric takes 'numerator'/'denominator', not 'event'")
        else:
            if self.event is None:
                raise ValueError(f"a {self.type} metric needs 'event' (the event name to aggregate)")
            if self.numerator or self.denominator:
                raise ValueError(f"'numerator'/'denominator' are for ratio metrics, not {self.type}")
        if self.type == "proportion" and self.capping is not None:
            raise ValueError("capping does not apply to a proportion metric")
        if (self.type == "quantile") != (self.quantile is not None):
            raise ValueError("a quantile metric needs 'quantile' (e.g. 0.9), and 'quantile' needs type: quantile")
        if self.type == "quantile" and (self.capping is not None or self.cuped):
            raise ValueError("a quantile metric takes no 'capping' or 'cuped' (quantiles are robust to the tail)")
        return self

    @property
    def cuped_covariate(self) -> str | None:
        """The exposure column used as CUPED covariate (CUPAC), if any."""
        return self.cuped.covariate if isinstance(self.cuped, Cuped) else None

    @property
    def cuped_days(self) -> float | None:
        if self.cuped is True:
            return Cuped().pre_window_days
        if isinstance(self.cuped, Cuped) and self.cuped.covariate is None:
            return self.cuped.pre_window_days
        return None

    def source(self) -> EventSource:
        """The event source of a mean/proportion metric."""
        default = "count" if self.type == "proportion" else "sum"
        return EventSource(event=self.event, aggregate=self.aggregate or default,
                           where=self.where, column=self.column)
