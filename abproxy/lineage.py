"""Model lineage of a run's variants: what model version each arm served, the arm's status and
outcome, and the one status vocabulary (codes → words) of the CLI, the report and the export.

A variant's lineage is typed in abproxy.yaml (`model`, `version`, `params`, …) or resolved from an
MLflow registry reference (`mlflow: models:/name/3` or `models:/name@alias`, see `registry/`).
It is recorded in the ledger with every run, so history holds even when the registry changes later.
This module is pure: records and rules, no I/O.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .config import MODEL_REF, Experiment


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


# one status vocabulary: a verdict or arm-status code (what the ledger's `lineage.arm_status`, the gate,
# the registry tags and the report's badges key on) → the words every reader sees: the report's badges
# and banners, the HTML export and the CLI (`history`, `models` and `gate` records carry them)
STATUS_WORDS = {"SHIP": "ship the variant", "ROLLBACK": "roll the variant back",
                "KEEP_RUNNING": "keep collecting data", "NO_DETECTABLE_EFFECT": "no effect detectable",
                "INVALID": "numbers cannot be trusted", "FAILED": "the analysis failed",
                "NOT_ANALYSED": "not analysed yet", "CONTROL": "baseline arm", "NOT_SHIPPED": "another arm was shipped"}
ARM_STATUS = STATUS_WORDS


def status_words(code: str | None) -> str:
    """The plain words of a verdict or arm-status code (None: not analysed)."""
    return STATUS_WORDS.get(code or "NOT_ANALYSED", (code or "").replace("_", " ").lower())


def arm_status(variant: str, is_control: bool, decision: str | None, ship_variant: str | None = None,
               status: str | None = "ok", per_variant: dict[str, str] | None = None) -> str:
    """What a run's verdict means for one arm, a key of ARM_STATUS: SHIP, NOT_SHIPPED, ROLLBACK,
    CONTROL, the experiment's decision (KEEP_RUNNING, NO_DETECTABLE_EFFECT, INVALID), FAILED, or
    NOT_ANALYSED (`status` None: no run). `per_variant` is the verdict's own word per arm when known
    (at analysis time); without it a SHIP of another arm reads NOT_SHIPPED and a ROLLBACK reads
    ROLLBACK for every treatment. The one rule for the ledger, the gate, the registry and the reads."""
    if status is None:
        return "NOT_ANALYSED"
    if status != "ok" or not decision:
        return "FAILED"
    if is_control:
        return "CONTROL"
    own = (per_variant or {}).get(variant)
    if decision == "SHIP":
        if ship_variant in (None, variant):
            return "SHIP"
        return "ROLLBACK" if own == "ROLLBACK" else "NOT_SHIPPED"
    if decision == "ROLLBACK" and own not in (None, "ROLLBACK"):
        return "NOT_SHIPPED"
    return decision


def arm_status_of_run(variant: str, is_control: bool, run: dict[str, Any] | None) -> str:
    """arm_status from a `runs` row (None: never analysed)."""
    if run is None:
        return "NOT_ANALYSED"
    return arm_status(variant, is_control, run.get("decision"), run.get("ship_variant"), run.get("status"))


# outcome → sort rank on the leaderboard (best first)
OUTCOMES = ("shipped", "ship recommended", "collecting data", "no detectable effect", "not chosen",
            "revert recommended", "roll back recommended", "rolled back", "stopped", "invalid data",
            "analysis failed", "not analysed", "baseline")


def arm_outcome(variant: str, is_control: bool, experiment_status: str | None,
                run: dict[str, Any] | None) -> str:
    """One arm's own outcome in its experiment's latest run (the CLI and the models page share it):
    'ship recommended' while the experiment runs, 'shipped' only once its status is shipped; in a
    ROLLBACK only the arms the verdict names are rolled back."""
    if is_control:
        return "baseline"
    if experiment_status == "rolled_back":
        return "rolled back"
    if run is None:
        return "not analysed"
    if run.get("status") != "ok" or not run.get("decision"):
        return "analysis failed"
    decision, ship = run["decision"], run.get("ship_variant")
    shipped = experiment_status == "shipped"
    if decision == "SHIP":
        if ship != variant:
            return "not chosen"
        return "shipped" if shipped else "ship recommended"
    if decision == "ROLLBACK":
        named = _named_in_first_reason(variant, run.get("reasons"))
        if not named:
            return "no detectable effect"
        return "revert recommended" if shipped else "roll back recommended"
    if experiment_status == "stopped":
        return "stopped"
    return {"KEEP_RUNNING": "collecting data", "INVALID": "invalid data",
            "NO_DETECTABLE_EFFECT": "no detectable effect"}.get(decision, decision.lower())


def _named_in_first_reason(variant: str, reasons: Any) -> bool:
    """Does the verdict's first reason ('Roll back a, b: …') name this arm?"""
    first = (_json_list(reasons) or [""])[0]
    head = str(first).split(":", 1)[0]
    names = [n.strip() for n in head.replace("Roll back", "").replace("Revert the shipped model", "").split(",")]
    return variant in names


def outcome_rank(outcome: str) -> int:
    return OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES)




def _json_list(value: Any) -> list[Any]:
    """The verdict's reasons as stored (JSON text) or as given (a list)."""
    if isinstance(value, list):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []


def move_text(variant: str, lineage: ModelLineage) -> str:
    """'v2: challenger moved from version 7 to 8 (models:/recsys@challenger)'."""
    return (f"{variant}: {lineage.alias} moved from version {lineage.previous_version} to {lineage.version} "
            f"({lineage.ref})")


SAFE_TAG = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def tag_key(text: str) -> str:
    """A registry-safe tag key piece (metric keys are validated already; this is belt and braces)."""
    return SAFE_TAG.sub("_", text)
