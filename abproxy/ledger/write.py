"""Writing the ledger: one run with its results, series, health checks and lineage, in one
transaction, and what the registry write-back did."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..lineage import ModelLineage, arm_status
from ..warehouse import transaction
from .core import code_version, dumps, json_safe

if TYPE_CHECKING:  # pragma: no cover - records import the statistics (scipy, statsmodels): not at start-up
    import duckdb

    from ..records import AnalysisRun


def watermark(con: duckdb.DuckDBPyConnection, experiment: str, as_of: dt.datetime) -> dict[str, Any]:
    """What data a run saw: row counts and max timestamps up to as_of, and the ingested files."""
    exp_rows, exp_max = con.execute(
        "SELECT count(*), max(exposed_at) FROM exposures WHERE experiment = ? AND exposed_at <= ?",
        [experiment, as_of]).fetchone()
    from ..loads import event_watermark

    ev_rows, ev_max = event_watermark(con, as_of)
    loaded = con.execute("SELECT path, sha256 FROM files WHERE status = 'loaded' ORDER BY file_id").fetchall()
    paths, files = [r[0] for r in loaded], [r[1] for r in loaded]
    return {"exposure_rows": exp_rows, "max_exposed_at": _iso(exp_max), "event_rows": ev_rows,
            "max_occurred_at": _iso(ev_max), "files": paths, "file_hashes": files}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def record_run(con: duckdb.DuckDBPyConnection, run: "AnalysisRun") -> None:
    """Append one run with its results, series and health checks, in one transaction."""
    with transaction(con):
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _run_row(run))
        if run.results:
            _insert(con, "results", [_result_row(run, r) for r in run.results])
        if run.series:
            _insert(con, "series", [(run.run_id, run.experiment, p.metric, p.variant, p.kind, p.day, p.control_units,
                                     p.variant_units, *json_safe([p.abs_effect, p.abs_se, p.rel_effect, *p.rel_ci]))
                                    for p in run.series])
        if run.health:
            _insert(con, "health", [(run.run_id, run.experiment, c.check, c.status, c.metric, c.segment, c.variant,
                                     *json_safe([c.value, c.threshold]), c.detail) for c in run.health])
        if run.lineage:
            _insert(con, "lineage", [_lineage_row(run, lin) for lin in run.lineage.values()])


def _run_row(run: "AnalysisRun") -> list[Any]:
    version, commit = code_version()
    v = run.verdict
    return [run.run_id, run.job_id, run.experiment, run.started_at, run.finished_at, run.as_of, run.status,
            run.error, run.definition_hash, dumps(run.definitions), dumps(run.watermark), version, commit,
            dumps(run.parameters), run.method, v.decision if v else None, v.ship_variant if v else None,
            dumps(list(v.reasons) if v else []), run.srm.p_value if run.srm else None, dumps(run.units),
            run.days_running]


def _result_row(run: "AnalysisRun", result: Any) -> tuple:
    rec = json_safe(result.record())
    return (run.run_id, run.experiment, rec["metric"], rec["role"], rec["variant"], rec["control"],
            rec["segment"], rec["segment_value"], rec["control_units"], rec["variant_units"],
            rec["control_mean"], rec["variant_mean"], rec["abs_effect"], rec["abs_ci"][0],
            rec["abs_ci"][1], rec["rel_effect"], rec["rel_ci"][0], rec["rel_ci"][1], rec["p_value"],
            rec["p_value_adjusted"], rec["significant"], rec["cuped_variance_reduction"], rec["mde"],
            rec["mde_rel"], rec["method"], rec["warning"], dumps(rec["details"]))


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    import pandas as pd  # only where used: a pass that analyses nothing never loads pandas

    columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    frame = pd.DataFrame(rows, columns=columns)
    con.register("_ledger_rows", frame)
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _ledger_rows")
    finally:
        con.unregister("_ledger_rows")


LINEAGE_JSON = ("params", "metrics", "datasets", "tags")


def _lineage_row(run: "AnalysisRun", lin: ModelLineage) -> tuple:
    r = lin.record()
    v = run.verdict
    status = arm_status(lin.variant, lin.is_control, v.decision if v else None, v.ship_variant if v else None,
                        run.status, v.per_variant if v else None)
    return (run.run_id, run.experiment, lin.variant, lin.is_control, status, r["source"], r["ref"], r["model"],
            r["version"], r["alias"], r["previous_version"], r["model_run_id"],
            *(dumps(r[k]) for k in LINEAGE_JSON), r["training_data"], r["link"], r["created_at"],
            r["resolved_at"], r["error"])


def record_registry_writes(con: duckdb.DuckDBPyConnection, writes: list[Any]) -> None:
    """Append what the registry write-back did (registry.WriteRecord rows)."""
    if writes:
        _insert(con, "registry_writes", [tuple(w.record().values()) for w in writes])
