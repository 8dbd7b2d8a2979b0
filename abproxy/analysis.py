"""One analysis run: SQL → sufficient statistics → effects → health → verdict → ledger row.

`analyze_experiment` is the whole pipeline for one experiment; `analyze` runs it for several,
isolating failures so that one broken metric never stops the other experiments.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

import duckdb

from . import datacheck, design_checks
from . import health as health_checks
from . import ledger
from .config import Config, definition_hash, definitions
from .enrollment import enrollment
from .errors import DefinitionError, MetricSQLError
from .engines import DuckDBEngine, Engine
from .effects import (  # noqa: F401  (re-exported: the layer below the pipeline)
    StatsTable,
    _by_variant,
    adjust_families,
    compute_effect,
    look_of,
    overall_results,
    segment_results,
    series,
    verdict_for,
)
from .fetch import _check_definitions, quantile_summaries, run_query  # noqa: F401  (re-exported)
from .lineage import config_lineage
from .records import AnalysisRun, MetricResult, SeriesPoint  # noqa: F401  (re-exported)
from .robustness import decision_robustness
from .stats import srm_test
from .verdict import Verdict

log = logging.getLogger(__name__)


def analyze_experiment(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                       job_id: str | None = None, robustness: bool = True, resolution: Any = None,
                       engine: Engine | None = None, warehouse: datacheck.Warehouse | None = None) -> AnalysisRun:
    """`resolution` (registry.Resolution): the variants' lineage resolved from a model registry and the
    checks reporting on it; without it, lineage is what abproxy.yaml says. The data queries go to
    `engine` (default: the warehouse `con` itself); the ledger reads always go to `con`. `warehouse`:
    what it holds (`datacheck.Warehouse`), read once for a pass of several experiments."""
    exp = config.experiments[key]
    engine = engine or DuckDBEngine(con)
    local = engine.name == "duckdb"       # the warehouse holds the data (and the ingest's file ledger)
    run = _new_run(config, key, as_of, job_id, resolution)
    lineage_checks = list(resolution.checks) if resolution is not None else []
    try:
        run.watermark = engine.watermark(key, as_of)
        problems = datacheck.experiment_checks(con, config, key, as_of, warehouse, allocation=False) if local else []
        broken = [p for p in problems if p.check in datacheck.BROKEN and p.status == "fail"]
        if broken:
            raise DefinitionError("; ".join(p.line() for p in broken))
        if run.watermark["exposure_rows"] == 0:
            run.units = {v: 0 for v in exp.variants}
            run.health = lineage_checks
            if not local:
                _check_definitions(engine, config, key, as_of)
            run.verdict = Verdict("KEEP_RUNNING", None, _no_exposures(con, config, key, as_of) if local else (
                f"No exposures for '{key}' up to {as_of:%Y-%m-%d %H:%M} UTC in source.exposures yet",))
            run.finished_at = _utcnow()
            return run
        plain, covariate_checks = design_checks.covariate_refusals(engine, config, key, as_of)
        table = run_query(engine, config, key, as_of, plain)
        overall = _by_variant(table.records("overall"))
        run.units = {v: int(overall[v]["n"]) if v in overall else 0 for v in exp.variants}
        run.excluded_multi = int(table.frame["excluded_multi"].max()) if len(table.frame) else 0
        run.srm = srm_test(run.units, exp.weights)
        run.enrollment = enrollment(engine, config, key, as_of)
        run.days_running = run.enrollment.days_running
        look = look_of(exp, run.days_running)
        if look is not None:
            run.parameters["look"] = look
            run.method = f"group-sequential (look {look} of {exp.decision.looks})"
        run.results = overall_results(table, config, exp, look) + segment_results(table, exp, look)
        levels = {(r.metric, r.variant): r.effect.ci_alpha or r.effect.alpha for r in run.results if not r.segment}
        run.series = series(table, exp, levels, look)
        run.health = health_checks.experiment_checks(con, config, key, as_of, run, engine)
        run.health += covariate_checks + design_checks.design_checks(engine, config, key, as_of, table)
        run.health += _definition_checks(problems) + lineage_checks
        run.verdict = verdict_for(run, config, exp)
        if robustness:
            run.health += decision_robustness(con, config, key, as_of, run, engine)
            run.verdict = verdict_for(run, config, exp)
    except Exception as exc:  # isolation: the failure is recorded and the caller carries on
        run.status, run.error = "failed", ledger.clip(_error_text(exc))
        # reported with the job's summary, after the ingest problems it may follow from
        log.debug("analysis of %s failed: %s", key, run.error)
        log.debug("traceback of the failed analysis of %s", key, exc_info=True)
    run.finished_at = _utcnow()
    return run


def _new_run(config: Config, key: str, as_of: dt.datetime, job_id: str | None, resolution: Any) -> AnalysisRun:
    """The run record before any query: its definitions, lineage, method and parameters."""
    exp = config.experiments[key]
    run = AnalysisRun(uuid.uuid4().hex[:12], key, _utcnow(), as_of,
                      job_id=job_id, definition_hash=definition_hash(config, key), definitions=definitions(config, key))
    run.lineage = resolution.lineage if resolution is not None else config_lineage(exp)
    run.method = ("group-sequential" if exp.decision.group_sequential
                  else "sequential" if exp.decision.sequential else "fixed-horizon")
    run.parameters = {"as_of": as_of.isoformat(), "alpha": exp.decision.alpha, "method": run.method,
                      "sequential_tuning": exp.decision.sequential_tuning}
    if exp.decision.group_sequential:
        run.parameters.update(looks=exp.decision.looks, planned_days=exp.planned_days)
    return run


def _error_text(exc: Exception) -> str:
    if isinstance(exc, (DefinitionError, MetricSQLError)):
        return str(exc)
    if isinstance(exc, duckdb.Error):  # the engine's words without the echo of the generated query
        return f"{type(exc).__name__}: {str(exc).split(chr(10) + 'LINE ', 1)[0].strip()}"
    return f"{type(exc).__name__}: {exc}"


def _definition_checks(problems: list[datacheck.Problem]) -> list[health_checks.Check]:
    return [health_checks.Check(p.check, p.status, p.line(), metric=p.metric) for p in problems]


def _no_exposures(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime) -> tuple[str, ...]:
    """Why there is nothing to analyse: rejected or refused exposure files, exposures under a
    misspelt experiment key, or simply no file yet."""
    found = datacheck.rejected_exposures(con) + datacheck.unknown_experiment_keys(con, config, key)
    if not found:
        return (f"No exposures for '{key}' up to {as_of:%Y-%m-%d %H:%M} UTC yet: drop exposure files into "
                "inbox/exposures/ (and events into inbox/events/), then run again",)
    return (f"No exposures for '{key}' up to {as_of:%Y-%m-%d %H:%M} UTC, but exposure data did arrive: "
            + "; ".join(found) + ". Fix the files (the ingest summary says how) or the experiment key, then "
            "run again",)


def _warehouse(con: duckdb.DuckDBPyConnection) -> datacheck.Warehouse | None:
    """What the warehouse holds, once for the pass (None: each analysis reads it, and fails alone)."""
    try:
        return datacheck.Warehouse.read(con)
    except duckdb.Error:
        return None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def analyze(con: duckdb.DuckDBPyConnection, config: Config, keys: list[str], as_of: dt.datetime,
            job_id: str | None = None, record: bool = True, full: bool = False,
            use_state: bool = True, lineage: dict[str, Any] | None = None,
            engine: Engine | None = None) -> list[AnalysisRun]:
    """Analyse each experiment (`lineage`: registry resolutions by experiment key). The per-unit state is brought to `as_of` first, for all of them in
    one pass (`state.refresh`; `full` rebuilds it from the events); `use_state=False` reads only
    the raw tables (the reference the state is tested against). On Spark (`engine`) every pass is a
    full recomputation over the source: the per-unit state lives in the local warehouse."""
    from . import state
    from .loads import refresh_load_profile
    from .shared import sharing_pass
    from .sources import reading

    use_state = use_state and (engine is None or engine.name == "duckdb")
    refreshes = state.refresh(con, config, keys, as_of, full) if use_state else {}
    refresh_load_profile(con)   # brought up to date here: the analysis below only reads
    runs = []
    warehouse = _warehouse(con) if (engine is None or engine.name == "duckdb") and len(keys) > 1 else None
    with reading({k: r.source for k, r in refreshes.items() if r.source is not None}), \
            sharing_pass(con, config, keys, as_of):
        for key in keys:
            started = time.perf_counter()
            run = analyze_experiment(con, config, key, as_of, job_id, resolution=(lineage or {}).get(key),
                                     engine=engine, warehouse=warehouse)
            if key in refreshes:
                run.refresh = refreshes[key].record()
            if record:
                ledger.record_run(con, run)
            log.info("analysed %s: %s in %.2fs (%s)", key, run.verdict.decision if run.verdict else run.status,
                     time.perf_counter() - started, run.refresh.get("mode", "raw tables"))
            runs.append(run)
    return runs
