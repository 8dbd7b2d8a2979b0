"""The workspace file `abproxy.yaml`: typed models, loading, clear errors.

Every model forbids unknown keys so a typo never passes silently. `load_config` returns a
validated `Config` or raises `ConfigError` listing every problem with its key path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from ..errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)
from .base import CONFIG_FILE, IDENTIFIER, KEY, Aggregate, Identifier, Key, Strict
from .engine import TABLE_NAME, Source, SparkSettings
from .experiment import MODEL_REF, Decision, Drift, Experiment, Guardrail, Variant
from .formats import FORMAT_ROOTS, InboxFormat
from .metric import Capping, Cuped, EventSource, Metric
from .settings import (NULL_MARKERS, Auth, DuckDBSettings, HealthSettings, Inbox, IngestSettings,
                       MlflowSettings, Notifications, Promote, Schedule, Webhook)

__all__ = ["CONFIG_FILE", "FORMAT_ROOTS", "IDENTIFIER", "KEY", "MODEL_REF", "NULL_MARKERS", "TABLE_NAME",
           "Aggregate", "Auth", "Capping", "Config", "ConfigError", "Cuped", "Decision", "definition_hash",
           "definitions", "Drift", "DuckDBSettings", "EventSource", "Experiment", "Guardrail",
           "HealthSettings", "Identifier", "Inbox", "InboxFormat", "IngestSettings", "Key", "load_config",
           "Metric", "MlflowSettings", "Notifications", "parse_config", "Promote", "resolve_workspace",
           "Schedule", "Source", "SparkSettings", "Strict", "Variant", "Webhook"]


class Config(Strict):
    warehouse: str = "data/warehouse.duckdb"
    inbox: Inbox = Field(default_factory=Inbox)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    snapshot: str = "data/report.duckdb"
    schedule: Schedule = Field(default_factory=Schedule)
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings)
    metrics: dict[Key, Metric] = Field(default_factory=dict)
    experiments: dict[Key, Experiment] = Field(default_factory=dict)
    notifications: Notifications = Field(default_factory=Notifications)
    health: HealthSettings = Field(default_factory=HealthSettings)
    mlflow: MlflowSettings | None = None
    auth: Auth | None = None
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    source: Source | None = None

    def uses_mlflow(self) -> bool:
        return self.mlflow is not None or any(v.mlflow for e in self.experiments.values() for v in e.variants.values())

    @field_validator("inbox", mode="before")
    @classmethod
    def _inbox_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


def definition_hash(config: Config, experiment: str) -> str:
    """sha256 of an experiment's definition and the definitions of the metrics it uses."""
    return hashlib.sha256(json.dumps(definitions(config, experiment), sort_keys=True).encode()).hexdigest()[:16]


def definitions(config: Config, experiment: str) -> dict[str, Any]:
    exp = config.experiments[experiment]
    return {
        "experiment": exp.model_dump(mode="json"),
        "metrics": {m: config.metrics[m].model_dump(mode="json") for m in exp.roles()},
    }


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in {"str", "Guardrail", "Cuped", "bool"}))]
    return ".".join(parts) or "(top level)"


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors():
        where, msg = _location(item["loc"]), item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (a typo?): remove it or fix its spelling (see the README's configuration reference)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        problems.append((where, msg))
    return list(dict.fromkeys(problems))


def _unknown_metrics(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Metrics named by experiments but not defined, checked on the raw mapping so they are
    reported together with every other problem."""
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    known = ", ".join(sorted(metrics)) or "none defined"
    problems = []
    experiments = data.get("experiments") if isinstance(data.get("experiments"), dict) else {}
    for key, exp in experiments.items():
        if not isinstance(exp, dict):
            continue
        for field in ("primary", "secondary", "guardrails"):
            names = exp.get(field) or []
            for i, item in enumerate(names if isinstance(names, list) else []):
                name = item.get("metric") if isinstance(item, dict) else item
                if isinstance(name, str) and name not in metrics:
                    problems.append((f"experiments.{key}.{field}.{i}",
                                     f"unknown metric '{name}'; define it under 'metrics' (known: {known})"))
    return problems


def _engine_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """`engine: spark` needs `source`; `source` means nothing to DuckDB (it loads the inbox)."""
    engine, source = data.get("engine", "duckdb"), data.get("source")
    if engine == "spark" and source is None:
        return [("source", "engine: spark reads the exposures and events where they live: add "
                           "'source: {exposures: <Parquet path/glob or table>, events: <same>}'")]
    if engine == "duckdb" and source is not None:
        return [("source", "read by engine: spark only (DuckDB loads the inbox): set 'engine: spark' "
                           "or remove 'source'")]
    return []


def parse_config(data: Any, path: Path | str = CONFIG_FILE) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("(top level)", "expected a mapping of keys such as 'metrics' and 'experiments'")])
    problems = _unknown_metrics(data) + _engine_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc) + problems
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(workspace: Path | str) -> Config:
    path = Path(workspace) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(path, [("(file)", f"not found; create a workspace with 'abproxy init {workspace}' "
                                            "or point --workspace at one")])
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~8x faster
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(path, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_config(data, path)


def resolve_workspace(workspace: str | os.PathLike | None) -> Path:
    return Path(workspace or os.environ.get("ABPROXY_WORKSPACE") or ".").resolve()
