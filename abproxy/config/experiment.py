"""The `experiments:` section: variants (and their models), guardrails, the decision policy, drift."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from .base import Identifier, Key, Strict


MODEL_REF = re.compile(r"^models:/(?P<name>[^/@\s]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_\-]+))$")


class Variant(Strict):
    """A variant and the model behind it (lineage): typed here, or resolved from an MLflow registry
    reference `models:/name/3` (a version) or `models:/name@alias` at each run."""

    model: str = ""
    version: str = ""
    mlflow: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    training_data: str = ""
    link: str = ""
    description: str = ""

    @field_validator("mlflow")
    @classmethod
    def _model_ref(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_REF.match(value.strip()):
            raise ValueError(f"{value!r} is not an MLflow model reference; write 'models:/NAME/VERSION' "
                             "(e.g. models:/recsys/3) or 'models:/NAME@ALIAS' (e.g. models:/recsys@challenger)")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_source(self) -> "Variant":
        if self.mlflow and self.version:
            raise ValueError("give either 'mlflow' (the registry names the version) or 'version', not both")
        return self


class Guardrail(Strict):
    metric: Key
    margin: float = Field(default=0.0, ge=0)
    relative: bool = True


class Decision(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    sequential: bool | Literal["group"] = True
    looks: PositiveInt | None = None
    sequential_tuning: PositiveFloat = 5000
    min_days: float = Field(default=7, ge=0)
    min_units_per_variant: int = Field(default=1000, ge=0)
    power: float = Field(default=0.8, gt=0, lt=1)
    target_mde: PositiveFloat = 0.02
    max_days: PositiveFloat | None = None
    segment_harm: Literal["block", "warn"] = "warn"
    min_segment_units: PositiveInt = 500

    @model_validator(mode="after")
    def _looks(self) -> "Decision":
        if self.sequential == "group" and self.looks is None:
            raise ValueError("sequential: group needs 'looks' (the planned number of analyses, e.g. 14)")
        if self.looks is not None and self.sequential != "group":
            raise ValueError("'looks' is for sequential: group (group-sequential boundaries)")
        return self

    @property
    def group_sequential(self) -> bool:
        return self.sequential == "group"


class Drift(Strict):
    decay_fraction: float = Field(default=0.5, gt=0, lt=1)
    recent_days: PositiveInt = 7


class Experiment(Strict):
    name: str = ""
    hypothesis: str = ""
    owner: str = ""
    status: Literal["running", "shipped", "rolled_back", "stopped"] = "running"
    start: dt.date | None = None
    end: dt.date | None = None
    control: Key
    variants: dict[Key, Variant]
    allocation: dict[Key, PositiveFloat] | None = None
    primary: list[Key] = Field(min_length=1)
    secondary: list[Key] = Field(default_factory=list)
    guardrails: list[Key | Guardrail] = Field(default_factory=list)
    segments: list[Identifier] = Field(default_factory=list)
    decision: Decision = Field(default_factory=Decision)
    holdback: bool = False
    launched_at: dt.date | None = None
    drift: Drift = Field(default_factory=Drift)

    @model_validator(mode="after")
    def _arms(self) -> "Experiment":
        if len(self.variants) < 2:
            raise ValueError("an experiment needs at least two variants (the control and one treatment)")
        if self.control not in self.variants:
            raise ValueError(f"control '{self.control}' is not one of the variants {sorted(self.variants)}")
        if self.allocation is not None:
            if set(self.allocation) != set(self.variants):
                raise ValueError(f"allocation names {sorted(self.allocation)} but the variants are {sorted(self.variants)}")
            total = sum(self.allocation.values())
            if abs(total - 1) > 1e-6:
                raise ValueError(f"allocation sums to {total:g}; the shares must sum to 1")
        if self.start and self.end and self.end < self.start:
            raise ValueError("'end' is before 'start'")
        if self.decision.group_sequential and self.planned_days is None:
            raise ValueError("sequential: group needs a planned duration: set decision.max_days, or 'start' and 'end'")
        return self

    @property
    def planned_days(self) -> float | None:
        """Planned duration in days: decision.max_days, else start..end (inclusive)."""
        if self.decision.max_days:
            return float(self.decision.max_days)
        if self.start and self.end:
            return float((self.end - self.start).days + 1)
        return None

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.allocation) if self.allocation else {v: 1 / len(self.variants) for v in self.variants}

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variants if v != self.control]

    @property
    def guardrail_specs(self) -> list[Guardrail]:
        return [g if isinstance(g, Guardrail) else Guardrail(metric=g) for g in self.guardrails]

    def roles(self) -> dict[str, str]:
        """metric key -> role, in display order: primary, guardrail, secondary."""
        roles = {m: "primary" for m in self.primary}
        roles.update({g.metric: "guardrail" for g in self.guardrail_specs if g.metric not in roles})
        roles.update({m: "secondary" for m in self.secondary if m not in roles})
        return roles
