"""Resolve variants' MLflow references into lineage at each run: alias → version, the training run's
params, offline metrics and dataset inputs, the version's tags and creation time.

An unreachable registry never stops the analysis: the variant keeps the lineage the ledger recorded
last, and a warning check `mlflow_registry` says so.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ..config import Config
from ..records import Check
from ..lineage import ModelLineage, ModelRef, config_lineage, from_previous, move_text, with_move
from .client import NotInRegistry, Registry, RegistryUnavailable

OWN_TAGS = "abproxy."           # tags abproxy writes back are not part of a model's lineage


@dataclass
class Resolution:
    """One experiment's lineage for this run and the checks that report on resolving it."""

    lineage: dict[str, ModelLineage]
    checks: list[Check] = field(default_factory=list)


def _ms(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc).replace(tzinfo=None)


def _datasets(run: Any) -> list[dict[str, Any]]:
    inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
    out = []
    for item in inputs:
        d = item.dataset
        tags = {t.key: t.value for t in (item.tags or [])}
        out.append({"name": d.name, "digest": d.digest, "source": d.source, "source_type": d.source_type,
                    "context": tags.get("mlflow.data.context")})
    return out


def resolve_ref(registry: Registry, base: ModelLineage, now: dt.datetime) -> ModelLineage:
    """Fill one variant's lineage from the registry (raises NotInRegistry / RegistryUnavailable)."""
    ref = ModelRef.parse(base.ref or "")
    c = registry.client
    if ref.alias:
        mv, _ = registry.call(f"alias {ref}", c.get_model_version_by_alias, ref.name, ref.alias)
    else:
        mv, _ = registry.call(f"version {ref}", c.get_model_version, ref.name, ref.version)
    params, metrics, datasets = {}, {}, []
    if mv.run_id:
        try:
            run, _ = registry.call(f"run {mv.run_id} of {ref}", c.get_run, mv.run_id)
            params, metrics, datasets = dict(run.data.params), dict(run.data.metrics), _datasets(run)
        except NotInRegistry:  # the training run was deleted; the version itself still counts
            pass
    tags = {k: v for k, v in (mv.tags or {}).items() if not k.startswith(OWN_TAGS)}
    return replace(base, source="mlflow", model=mv.name, version=str(mv.version), model_run_id=mv.run_id or None,
                   params={**params, **base.params}, metrics=metrics, datasets=datasets, tags=tags,
                   link=base.link or (mv.source or ""), created_at=_ms(mv.creation_timestamp), resolved_at=now,
                   error=None)


def resolve_experiment(registry: Registry | None, down: str | None, config: Config, key: str,
                       previous: Mapping[str, ModelLineage], now: dt.datetime) -> Resolution:
    """Lineage of one experiment: config lineage, registry references resolved (or the last recorded)."""
    lineage = config_lineage(config.experiments[key])
    refs = [v for v, lin in lineage.items() if lin.ref]
    if not refs:
        return Resolution(lineage)
    problems, moved = [], []
    for v in refs:
        base = lineage[v]
        try:
            if registry is None:
                raise RegistryUnavailable(down or "MLflow registry unavailable")
            lineage[v] = with_move(resolve_ref(registry, base, now), previous.get(v))
            if lineage[v].moved:
                moved.append(move_text(v, lineage[v]))
        except (NotInRegistry, RegistryUnavailable) as exc:
            lineage[v] = from_previous(base, previous.get(v), str(exc))
            problems.append((v, lineage[v], str(exc)))
    return Resolution(lineage, _checks(lineage, refs, problems, moved))


def _checks(lineage, refs, problems, moved) -> list[Check]:
    checks = []
    if problems:
        parts = []
        for v, lin, why in problems:
            kept = (f"kept {lin.label()} as recorded by an earlier run" if lin.source == "ledger"
                    else "no earlier lineage recorded: the model version is unknown")
            parts.append(f"{v} ({lin.ref}): {why}; {kept}")
        checks.append(Check("mlflow_registry", "warn", "The model registry could not be read: " + "; ".join(parts),
                            value=float(len(problems)), threshold=0.0))
    else:
        shown = ", ".join(f"{v} → {lineage[v].label()}" for v in refs)
        checks.append(Check("mlflow_registry", "ok", f"Resolved {len(refs)} model version(s) from the registry: {shown}",
                            value=0.0, threshold=0.0))
    for text in moved:
        checks.append(Check("model_alias_moved", "warn",
                            f"{text} since the previous run: the arm served the earlier version before the move"))
    return checks


def resolve(config: Config, root: Path, keys: list[str],
            previous: Mapping[str, Mapping[str, ModelLineage]], now: dt.datetime) -> tuple[dict[str, Resolution], Registry | None]:
    """Resolutions of the experiments `keys` (only those naming MLflow references), and the registry
    (None when it could not be opened)."""
    wanted = [k for k in keys if any(v.mlflow for v in config.experiments[k].variants.values())]
    if not wanted:
        return {}, None
    registry, down = None, None
    try:
        registry = Registry.open(config, root)
    except RegistryUnavailable as exc:
        down = str(exc)
    out = {k: resolve_experiment(registry, down, config, k, previous.get(k, {}), now) for k in wanted}
    return out, registry
