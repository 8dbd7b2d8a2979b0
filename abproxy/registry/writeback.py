"""Write the verdict back to the model registry: tags on every variant's model version and, with
`mlflow.promote`, an alias on the shipped version (only for a SHIP without cautions).

Idempotent (only tags whose value differs are written; an alias already in place is left alone),
retried (`Registry.call`), logged, and recorded in the `registry_writes` ledger table. Nothing here
raises: a registry problem is a logged, recorded failure, never a failed job.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import cautions as caution_rules
from ..config import Config, MlflowSettings
from ..lineage import ModelLineage, arm_status, tag_key
from .client import NotInRegistry, Registry, RegistryUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteRecord:
    """One row of `registry_writes`."""

    run_id: str
    experiment: str
    variant: str | None
    model: str | None
    version: str | None
    action: str                  # tags | alias
    alias: str | None
    previous_version: str | None
    status: str                  # ok | unchanged | skipped | failed
    detail: str
    attempts: int
    written_at: dt.datetime

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _iso(value: dt.datetime | None) -> str:
    return (value or _now()).replace(microsecond=0).isoformat() + "Z"


def verdict_tags(run: Any, lin: ModelLineage, arm: str, link: str) -> dict[str, str]:
    """The tags of one variant's model version after a run (the primary metrics' lifts for treatments)."""
    v = run.verdict
    tags = {"abproxy.experiment": run.experiment, "abproxy.verdict": v.decision, "abproxy.arm_status": arm,
            "abproxy.run_id": run.run_id, "abproxy.decided_at": _iso(run.finished_at), "abproxy.report": link}
    if not lin.is_control:
        for r in run.results:
            if r.segment == "" and r.role == "primary" and r.variant == lin.variant:
                e = r.effect
                tags[f"abproxy.lift.{tag_key(r.metric)}"] = f"{e.rel_effect:.6g}"
                tags[f"abproxy.lift.{tag_key(r.metric)}.ci"] = f"{e.rel_ci[0]:.6g},{e.rel_ci[1]:.6g}"
    return tags


def _tag_version(registry: Registry, run, lin: ModelLineage, tags: dict[str, str]) -> WriteRecord:
    c = registry.client
    what = f"{lin.model} version {lin.version}"
    mv, attempts = registry.call(f"read {what}", c.get_model_version, lin.model, lin.version)
    changed = {k: val for k, val in tags.items() if (mv.tags or {}).get(k) != val}
    for key, value in changed.items():
        _, n = registry.call(f"tag {what}", c.set_model_version_tag, lin.model, lin.version, key, value)
        attempts += n
    status = "ok" if changed else "unchanged"
    detail = f"{len(changed)} of {len(tags)} tag(s) written" if changed else "tags already up to date"
    log.info("MLflow write-back %s (%s, %s): %s", what, run.experiment, lin.variant, detail)
    return WriteRecord(run.run_id, run.experiment, lin.variant, lin.model, lin.version, "tags", None, None,
                       status, detail, attempts, _now())


def _promote(registry: Registry, run, lin: ModelLineage, alias: str) -> WriteRecord:
    c = registry.client
    try:
        current, attempts = registry.call(f"alias {lin.model}@{alias}", c.get_model_version_by_alias, lin.model, alias)
        before = str(current.version)
    except NotInRegistry:
        before, attempts = None, 1
    if before == lin.version:
        status, detail = "unchanged", f"{alias} already points at version {lin.version}"
    else:
        _, n = registry.call(f"set alias {lin.model}@{alias}", c.set_registered_model_alias, lin.model, alias,
                             lin.version)
        attempts += n
        status = "ok"
        detail = (f"{alias} moved from version {before} to {lin.version}" if before
                  else f"{alias} set to version {lin.version}")
    log.info("MLflow promotion %s (%s): %s", lin.model, run.experiment, detail)
    return WriteRecord(run.run_id, run.experiment, lin.variant, lin.model, lin.version, "alias", alias, before,
                       status, detail, attempts, _now())


def _guarded(fn, run, lin: ModelLineage, action: str, alias: str | None, *args) -> WriteRecord:
    try:
        return fn(*args)
    except (RegistryUnavailable, NotInRegistry, Exception) as exc:  # never fail the job
        log.warning("MLflow write-back of %s %s (%s) failed: %s", lin.model, lin.version, run.experiment, exc)
        return WriteRecord(run.run_id, run.experiment, lin.variant, lin.model, lin.version, action, alias, None,
                           "failed", str(exc)[:500], 0, _now())


def _skip(run, lin: ModelLineage | None, action: str, alias: str | None, why: str) -> WriteRecord:
    log.info("MLflow %s skipped (%s): %s", action, run.experiment, why)
    return WriteRecord(run.run_id, run.experiment, lin.variant if lin else None, lin.model if lin else None,
                       lin.version if lin else None, action, alias, None, "skipped", why, 0, _now())


def _arm(run: Any, lin: ModelLineage) -> str:
    v = run.verdict
    return arm_status(lin.variant, lin.is_control, v.decision if v else None, v.ship_variant if v else None,
                      getattr(run, "status", "ok"), v.per_variant if v else None)


def write_run(registry: Registry, config: Config, run: Any, link: str) -> list[WriteRecord]:
    settings = config.mlflow or MlflowSettings()
    lineage: dict[str, ModelLineage] = getattr(run, "lineage", {}) or {}
    out = []
    if settings.write_back:
        for lin in lineage.values():
            if lin.in_registry:
                out.append(_guarded(_tag_version, run, lin, "tags", None, registry, run, lin,
                                    verdict_tags(run, lin, _arm(run, lin), link)))
    promote = settings.promote
    if promote and run.verdict.decision == promote.on:
        lin = lineage.get(run.verdict.ship_variant or "")
        found = caution_rules.of_run(run, config.experiments[run.experiment].primary)
        if lin is None or not lin.in_registry:
            out.append(_skip(run, lin, "alias", promote.alias, "the shipped variant has no registry model version"))
        elif found:
            out.append(_skip(run, lin, "alias", promote.alias, "SHIP carries cautions: " + "; ".join(found)))
        else:
            out.append(_guarded(_promote, run, lin, "alias", promote.alias, registry, run, lin, promote.alias))
    return out


def write_back(config: Config, root: Path, runs: Iterable[Any], registry: Registry | None,
               link_for) -> list[WriteRecord]:
    """Write back every successful run that has registry lineage; returns what was done."""
    runs = [r for r in runs if r.status == "ok" and r.verdict is not None
            and any(lin.in_registry for lin in (getattr(r, "lineage", {}) or {}).values())]
    if not runs:
        return []
    if registry is None:
        try:
            registry = Registry.open(config, root)
        except Exception as exc:  # MlflowMissing was caught at the start of the job; anything else is logged
            log.warning("MLflow write-back skipped: %s", exc)
            return [_skip(r, None, "tags", None, f"registry unavailable: {exc}") for r in runs]
    out = []
    for run in runs:
        out += write_run(registry, config, run, link_for(run))
    return out
