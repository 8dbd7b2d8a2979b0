"""Model lineage of a run's variants: what model version each arm served, and the arm's outcome.

A variant's lineage is typed in abproxy.yaml (`model`, `version`, `params`, …) or resolved from an
MLflow registry reference (`mlflow: models:/name/3` or `models:/name@alias`, see `registry/`).
It is recorded in the ledger with every run, so history holds even when the registry changes later.
This module is pure: records and rules, no I/O.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import MODEL_REF, Experiment

if TYPE_CHECKING:  # pragma: no cover
    from .verdict import Verdict


@dataclass(frozen=True)
class ModelRef:
    """A parsed `models:/name/3` or `models:/name@alias`."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        match = MODEL_REF.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not an MLflow model reference (models:/NAME/VERSION or models:/NAME@ALIAS)")
        return cls(match["name"], match["version"], match["alias"])

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelLineage:
    """One variant's model in one run (a row of the `lineage` ledger table)."""

    variant: str
    is_control: bool = False
    source: str = "config"               # config | mlflow | ledger | unresolved
    ref: str | None = None
    model: str = ""
    version: str = ""
    alias: str | None = None
    previous_version: str | None = None  # set when an alias moved since the previous run
    model_run_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    training_data: str = ""
    link: str = ""
    created_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    error: str | None = None

    @property
    def in_registry(self) -> bool:
        """The version is known in a registry (resolved now, or recorded by an earlier run)."""
        return self.source in ("mlflow", "ledger") and bool(self.model and self.version)

    @property
    def moved(self) -> bool:
        return self.previous_version is not None and self.previous_version != self.version

    def label(self) -> str:
        if not self.model:
            return self.ref or "(no model named)"
        text = f"{self.model} {self.version}".strip()
        return f"{text} (@{self.alias})" if self.alias else text

    def record(self) -> dict[str, Any]:
        return asdict(self)


def config_lineage(exp: Experiment) -> dict[str, ModelLineage]:
    """Lineage as typed in abproxy.yaml; variants naming an MLflow reference stay unresolved
    until the registry (or the ledger) fills them in."""
    out = {}
    for name, v in exp.variants.items():
        base = ModelLineage(name, name == exp.control, model=v.model, version=v.version, params=dict(v.params),
                            training_data=v.training_data, link=v.link)
        if v.mlflow:
            ref = ModelRef.parse(v.mlflow)
            base = replace(base, source="unresolved", ref=str(ref), model=ref.name, version=ref.version or "",
                           alias=ref.alias)
        out[name] = base
    return out


def from_previous(current: ModelLineage, previous: ModelLineage | None, error: str) -> ModelLineage:
    """The registry could not be read: keep the last recorded lineage of the same reference."""
    if previous is None or previous.ref != current.ref:
        return replace(current, source="unresolved", error=error)
    return replace(previous, variant=current.variant, is_control=current.is_control, source="ledger",
                   previous_version=None, error=error)


def with_move(current: ModelLineage, previous: ModelLineage | None) -> ModelLineage:
    """Mark an alias that now points at another version than in the previous run."""
    if (current.alias and previous is not None and previous.ref == current.ref and previous.version
            and previous.version != current.version):
        return replace(current, previous_version=previous.version)
    return current


def arm_status(variant: str, is_control: bool, verdict: "Verdict | None", status: str = "ok") -> str:
    """What the run's verdict means for one arm: SHIP, NOT_SHIPPED, ROLLBACK, CONTROL, the
    experiment's decision (KEEP_RUNNING, NO_DETECTABLE_EFFECT, INVALID) or FAILED."""
    if status != "ok" or verdict is None:
        return "FAILED"
    if is_control:
        return "CONTROL"
    if verdict.decision == "SHIP":
        if verdict.ship_variant == variant:
            return "SHIP"
        return "ROLLBACK" if verdict.per_variant.get(variant) == "ROLLBACK" else "NOT_SHIPPED"
    if verdict.decision == "ROLLBACK" and verdict.per_variant.get(variant) not in (None, "ROLLBACK"):
        return "NOT_SHIPPED"
    return verdict.decision


def move_text(variant: str, lineage: ModelLineage) -> str:
    """'v2: challenger moved from version 7 to 8 (models:/recsys@challenger)'."""
    return (f"{variant}: {lineage.alias} moved from version {lineage.previous_version} to {lineage.version} "
            f"({lineage.ref})")


SAFE_TAG = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def tag_key(text: str) -> str:
    """A registry-safe tag key piece (metric keys are validated already; this is belt and braces)."""
    return SAFE_TAG.sub("_", text)
