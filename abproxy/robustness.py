"""Fragility of the decision: the verdict re-derived under alternative metric settings (capping, CUPED,
attribution window) from one extra query, and the stability of the decision over recent runs.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace

import duckdb

from . import ledger
from .config import Capping, Config, Cuped, Experiment, Metric
from .engines import ENGINE_ERRORS, Engine, as_engine
from .effects import StatsTable, look_of, overall_results, records_by_dim, verdict_for
from .fetch import quantile_summaries
from .metric_types import type_of
from .metrics import experiment_sql
from .records import AnalysisRun, Check

log = logging.getLogger(__name__)
STABILITY_RUNS = 5           # the current verdict and the 4 runs before it
ACTIONABLE = {"SHIP", "ROLLBACK"}


def decision_robustness(con: duckdb.DuckDBPyConnection, config: Config, key: str, as_of: dt.datetime,
                        run: "AnalysisRun", engine: "Engine | None" = None) -> list[Check]:
    """Fragility of the decision: the verdict under alternative metric settings, and its history."""
    if run.verdict is None:
        return []
    out = []
    for name, fn in (("decision_robustness", lambda: robustness_check(engine or con, config, key, as_of, run)),
                     ("verdict_stability", lambda: verdict_stability(con, key, run))):
        try:
            out.append(fn())
        except ENGINE_ERRORS as exc:
            log.warning("%s of %s could not run", name, key, exc_info=exc)
            out.append(Check(name, "warn", f"This check could not run ({type(exc).__name__}: {exc})"))
    return out


def _alternatives(config: Config, exp: Experiment) -> list[tuple[str, str, dict[str, Metric]]]:
    """(current setting, alternative setting, changed metrics) over primary and guardrail metrics."""
    keys = [m for m, r in exp.roles().items() if r != "secondary" and config.metrics[m].sql is None]
    ms = {k: config.metrics[k] for k in keys}
    out = []
    means = {k: m for k, m in ms.items() if type_of(m).cappable}
    if means:
        if any(m.capping for m in means.values()):
            out.append(("with capping", "without capping", {k: m.model_copy(update={"capping": None})
                                                            for k, m in means.items()}))
        else:
            cap = Capping(quantile=0.99)
            out.append(("without capping", "with capping at p99", {k: m.model_copy(update={"capping": cap})
                                                                   for k, m in means.items()}))
    plain = {k: m for k, m in ms.items() if type_of(m).cupedable}
    if plain:
        if any(m.cuped_days for m in plain.values()):
            out.append(("with CUPED", "without CUPED", {k: m.model_copy(update={"cuped": None})
                                                        for k, m in plain.items()}))
        else:
            out.append(("without CUPED", f"with CUPED ({Cuped().pre_window_days:g}-day pre-period)",
                        {k: m.model_copy(update={"cuped": Cuped()}) for k, m in plain.items()}))
    if ms:
        windows = {m.window_days for m in ms.values()}
        one = windows.pop() if len(windows) == 1 else None
        for factor, word in ((0.5, "halved"), (2.0, "doubled")):
            alt = f"with a {one * factor:g}-day window" if one else f"with {word} windows"
            out.append((f"with the {one:g}-day window" if one else "with the configured windows", alt,
                        {k: m.model_copy(update={"window_days": m.window_days * factor}) for k, m in ms.items()}))
    return out


def _label(decision: str, variant: str | None) -> str:
    return f"{decision} {variant}" if variant else decision


def robustness_check(engine: "Engine | duckdb.DuckDBPyConnection", config: Config, key: str, as_of: dt.datetime,
                     run: "AnalysisRun") -> Check:
    """Re-derive the verdict with capping, CUPED and the attribution window changed (primary and
    guardrail metrics only, no segments); warn when SHIP/ROLLBACK flips. One query computes every
    alternative: each changed metric is an extra column (`alt_key`) next to the unchanged ones."""
    base = run.verdict
    current = _label(base.decision, base.ship_variant)
    if base.decision == "INVALID":
        return Check("decision_robustness", "ok", "Not evaluated: the verdict is INVALID")
    exp = config.experiments[key]
    lean = exp.model_copy(update={"segments": []})
    health = [c for c in run.health if c.check not in ("decision_robustness", "verdict_stability")]
    alternatives = _alternatives(config, exp)
    if not alternatives:
        return Check("decision_robustness", "ok", "No alternative settings apply to these metrics")
    flips, others, checked = [], [], []
    look = look_of(exp, run.days_running)
    for (now_label, alt_label, changed), (alt_cfg, results) in zip(
            alternatives, alternative_results(engine, config, key, as_of, alternatives, look)):
        alt = verdict_for(replace(run, results=results, health=health), alt_cfg, lean)
        label = _label(alt.decision, alt.ship_variant)
        checked.append(alt_label)
        if label == current:
            continue
        if base.decision in ACTIONABLE or alt.decision in ACTIONABLE:
            flips.append(f"{current} only holds {now_label}; {alt_label}: {label}")
        else:
            others.append(f"{alt_label}: {label}")
    if flips:
        return Check("decision_robustness", "warn",
                     "; ".join(flips) + " — the decision depends on an analysis choice: agree on the metric "
                     "definition before acting, or collect more data", value=float(len(flips)), threshold=0.0)
    return Check("decision_robustness", "ok",
                 f"The decision ({current}) holds {', '.join(checked)}"
                 + (f" (not actionable either way: {'; '.join(others)})" if others else ""),
                 value=0.0, threshold=0.0)


def alternative_results(engine: "Engine | duckdb.DuckDBPyConnection", config: Config, key: str, as_of: dt.datetime,
                        alternatives: list[tuple[str, str, dict[str, Metric]]],
                        look: int | None = None) -> list[tuple[Config, list]]:
    """(configuration, overall results of the primary and guardrail metrics) under each alternative,
    from one query: the changed metrics are extra columns (`alt_key`) beside the unchanged ones
    (quantile metrics: one order-statistics query each; `look`: the group-sequential look)."""
    exp = config.experiments[key]
    lean = exp.model_copy(update={"segments": []})
    decisive = [m for m, role in exp.roles().items() if role != "secondary"]
    extra = {alt_key(m, i): metric for i, (_, _, changed) in enumerate(alternatives) for m, metric in changed.items()}
    cfg = config.model_copy(update={"experiments": {**config.experiments, key: lean}})
    engine = as_engine(engine)
    query = experiment_sql(cfg, key, as_of, keys=decisive, extra=extra, dialect=engine.dialect)
    frame = engine.frame(query.sql)
    rows = records_by_dim(frame)            # read once for every alternative
    by_key = {c.key: c for c in query.columns}
    out = []
    for i, (_, _, changed) in enumerate(alternatives):
        # this alternative's columns, in the order of the decisive metrics, under the metrics' own keys
        cols = tuple(replace(by_key[alt_key(m, i)], key=m) if m in changed else by_key[m]
                     for m in decisive if m in by_key)
        alt_cfg = cfg.model_copy(update={"metrics": {**config.metrics, **changed}})
        alt_query = replace(query, columns=cols)
        table = StatsTable(frame, alt_query, quantile_summaries(engine, alt_query), by_dim=rows)
        out.append((alt_cfg, overall_results(table, alt_cfg, lean, look)))
    return out


def alt_key(metric: str, alternative: int) -> str:
    """The key of a metric's variant under alternative setting number `alternative` (not a valid
    metric name, so it cannot collide with one)."""
    return f"{metric}@{alternative}"


def verdict_stability(con: duckdb.DuckDBPyConnection, key: str, run: "AnalysisRun") -> Check:
    """Warn when the decision changed more than once over the current and the previous 4 runs with the
    same definitions (a decision flip-flopping between runs sits on a threshold)."""
    past = ledger.recent_decisions(con, key, run.definition_hash, run.as_of, run.run_id, STABILITY_RUNS - 1)
    history = past + [run.verdict.decision]
    changes = sum(a != b for a, b in zip(history, history[1:]))
    path = " → ".join(history)
    if changes > 1:
        return Check("verdict_stability", "warn",
                     f"The decision changed {changes} times over the last {len(history)} runs ({path}); it sits on "
                     "a threshold — wait for more data before acting on it", value=float(changes), threshold=1.0)
    return Check("verdict_stability", "ok", f"Decisions over the last {len(history)} run(s): {path}",
                 value=float(changes), threshold=1.0)
