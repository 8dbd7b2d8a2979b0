"""The ledger gateway: the only code that writes the ledger tables (`runs`, `results`, `series`, `health`)
and the one place of their shared read definitions — the run columns, "the latest run", and the
queries the analysis itself needs (launch estimates, recent decisions, the previous verdict).

The read layer above it (`history`: history, diff, leaderboard) composes these into records for the
CLI, and the report reads the same definitions from the published snapshot.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from .errors import AbproxyError
from .lineage import ModelLineage, arm_status

if TYPE_CHECKING:  # pragma: no cover - records import the statistics (scipy, statsmodels): not at start-up
    from .records import AnalysisRun

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


RUN_COLUMNS = ("run_id", "job_id", "experiment", "started_at", "finished_at", "as_of", "status", "error",
               "definition_hash", "definitions", "watermark", "code_version", "git_commit", "parameters", "method",
               "decision", "ship_variant", "reasons", "srm_p", "units", "days_running")
RUN_SELECT = ", ".join(RUN_COLUMNS)
# "the latest run" of an experiment, everywhere (CLI, report, notifications): the one analysed furthest in
# time (as_of), ties by when it ran; so a backfill with an earlier --as-of never hides the current verdict
LATEST_FIRST = "as_of DESC, started_at DESC, run_id DESC"


def latest_runs_sql(columns: str = RUN_SELECT, where: str = "TRUE") -> str:
    """The latest run of each experiment (rows of `runs` satisfying `where`)."""
    return (f"SELECT {columns} FROM runs WHERE {where} "
            f"QUALIFY row_number() OVER (PARTITION BY experiment ORDER BY {LATEST_FIRST}) = 1")


def recent_decisions(con: duckdb.DuckDBPyConnection, experiment: str, definition_hash: str, as_of: dt.datetime,
                     exclude_run: str, limit: int) -> list[str]:
    """The decisions of the latest `limit` ok runs with these definitions up to `as_of`, oldest first."""
    rows = con.execute(f"""
        SELECT decision FROM runs WHERE experiment = ? AND status = 'ok' AND decision IS NOT NULL
          AND definition_hash = ? AND as_of <= ? AND run_id <> ?
        ORDER BY {LATEST_FIRST} LIMIT ?""", [experiment, definition_hash, as_of, exclude_run, limit]).fetchall()
    return [r[0] for r in reversed(rows)]


def launch_rows(con: duckdb.DuckDBPyConnection, experiment: str, as_of: dt.datetime, metrics: list[str]) -> pd.DataFrame:
    """Every ok run up to `as_of` (oldest first) with the overall relative effects of `metrics`."""
    return con.execute("""
        SELECT r.run_id, r.as_of, r.started_at, r.decision, x.metric, x.variant, x.rel_effect
        FROM runs r JOIN results x ON x.run_id = r.run_id
        WHERE r.experiment = ? AND r.status = 'ok' AND r.as_of <= ? AND x.segment = ''
          AND list_contains(?, x.metric)
        ORDER BY r.as_of, r.started_at""", [experiment, as_of, list(metrics)]).df()


def previous_verdict(con: duckdb.DuckDBPyConnection, experiment: str, started_before: dt.datetime,
                     exclude: list[str]) -> tuple[Any, ...] | None:
    """(run_id, decision, units, days_running) of the run with a verdict announced last before
    `started_before` (notifications compare with what was announced, so by when runs ran)."""
    return con.execute(
        """SELECT run_id, decision, units, days_running FROM runs
           WHERE experiment = ? AND status = 'ok' AND decision IS NOT NULL
             AND started_at <= ? AND NOT list_contains(?, run_id)
           ORDER BY started_at DESC, finished_at DESC NULLS LAST LIMIT 1""",
        [experiment, started_before, exclude]).fetchone()


def failed_checks(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[Any, ...]]:
    return con.execute("SELECT check_name, metric, segment, variant FROM health WHERE run_id = ? AND status = 'fail'",
                       [run_id]).fetchall()


@lru_cache(maxsize=1)
def code_version() -> tuple[str, str | None]:
    """(package version, git commit or None)."""
    try:
        version = metadata.version("abproxy")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return version, commit


def watermark(con: duckdb.DuckDBPyConnection, experiment: str, as_of: dt.datetime) -> dict[str, Any]:
    """What data a run saw: row counts and max timestamps up to as_of, and the ingested files."""
    exp_rows, exp_max = con.execute(
        "SELECT count(*), max(exposed_at) FROM exposures WHERE experiment = ? AND exposed_at <= ?",
        [experiment, as_of]).fetchone()
    from .loads import event_watermark

    ev_rows, ev_max = event_watermark(con, as_of)
    loaded = con.execute("SELECT path, sha256 FROM files WHERE status = 'loaded' ORDER BY file_id").fetchall()
    paths, files = [r[0] for r in loaded], [r[1] for r in loaded]
    return {"exposure_rows": exp_rows, "max_exposed_at": _iso(exp_max), "event_rows": ev_rows,
            "max_occurred_at": _iso(ev_max), "files": paths, "file_hashes": files}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, tuples → lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_clean = json_safe   # the former private name


def loads(value: Any, default: Any = None) -> Any:
    """JSON text from a ledger column (or an already parsed value) → Python; None/NaN/garbage → default."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return default


ERROR_LIMIT = 500


def error_text(exc: BaseException, limit: int = ERROR_LIMIT) -> str:
    """An error as stored in the ledger and shown on pages: one line, without DuckDB's echo of the
    query and its hints, at most `limit` characters (a message never carries pages of data)."""
    text = str(exc).strip()
    for marker in ("\nLINE ", "\nPossible fixes", "\nPossible Solution"):
        text = text.split(marker, 1)[0]
    text = " ".join(text.split())
    own = isinstance(exc, AbproxyError)   # already says what and where
    return clip(text if own else f"{type(exc).__name__}: {text}", limit)


def clip(text: str, limit: int = ERROR_LIMIT) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dumps(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, default=str)


def record_run(con: duckdb.DuckDBPyConnection, run: "AnalysisRun") -> None:
    """Append one run with its results, series and health checks, in one transaction."""
    version, commit = code_version()
    v = run.verdict
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            run.run_id, run.job_id, run.experiment, run.started_at, run.finished_at, run.as_of, run.status,
            run.error, run.definition_hash, dumps(run.definitions), dumps(run.watermark), version, commit,
            dumps(run.parameters), run.method, v.decision if v else None, v.ship_variant if v else None,
            dumps(list(v.reasons) if v else []), run.srm.p_value if run.srm else None, dumps(run.units),
            run.days_running])
        if run.results:
            rows = []
            for r in run.results:
                rec = json_safe(r.record())
                rows.append((run.run_id, run.experiment, rec["metric"], rec["role"], rec["variant"], rec["control"],
                             rec["segment"], rec["segment_value"], rec["control_units"], rec["variant_units"],
                             rec["control_mean"], rec["variant_mean"], rec["abs_effect"], rec["abs_ci"][0],
                             rec["abs_ci"][1], rec["rel_effect"], rec["rel_ci"][0], rec["rel_ci"][1], rec["p_value"],
                             rec["p_value_adjusted"], rec["significant"], rec["cuped_variance_reduction"], rec["mde"],
                             rec["mde_rel"], rec["method"], rec["warning"], dumps(rec["details"])))
            _insert(con, "results", rows)
        if run.series:
            _insert(con, "series", [(run.run_id, run.experiment, p.metric, p.variant, p.kind, p.day, p.control_units,
                                     p.variant_units, *json_safe([p.abs_effect, p.abs_se, p.rel_effect, *p.rel_ci]))
                                    for p in run.series])
        if run.health:
            _insert(con, "health", [(run.run_id, run.experiment, c.check, c.status, c.metric, c.segment, c.variant,
                                     *json_safe([c.value, c.threshold]), c.detail) for c in run.health])
        if run.lineage:
            _insert(con, "lineage", [_lineage_row(run, lin) for lin in run.lineage.values()])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


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
    return (run.run_id, run.experiment, lin.variant, lin.is_control,
            arm_status(lin.variant, lin.is_control, run.verdict, run.status), r["source"], r["ref"], r["model"],
            r["version"], r["alias"], r["previous_version"], r["model_run_id"],
            *(dumps(r[k]) for k in LINEAGE_JSON), r["training_data"], r["link"], r["created_at"],
            r["resolved_at"], r["error"])


def last_lineage(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, ModelLineage]:
    """Per variant, the latest lineage a registry gave (resolved then, or kept from before)."""
    cur = con.execute("""
        SELECT l.* FROM lineage l JOIN runs r USING (run_id)
        WHERE l.experiment = ? AND l.source IN ('mlflow', 'ledger') AND l.version <> ''
        QUALIFY row_number() OVER (PARTITION BY l.variant ORDER BY r.started_at DESC, r.run_id DESC) = 1""",
                      [experiment])
    names = [d[0] for d in cur.description]
    return {row["variant"]: lineage_from_row(row) for row in (dict(zip(names, t)) for t in cur.fetchall())}


def lineage_from_row(row: dict[str, Any]) -> ModelLineage:
    """A `lineage` ledger row back into a ModelLineage."""
    fields = ModelLineage.__dataclass_fields__
    values = {k: row[k] for k in fields if k in row}
    for k in LINEAGE_JSON:
        values[k] = loads(row.get(k), [] if k == "datasets" else {})
    for k in ("model", "version", "training_data", "link"):
        values[k] = values.get(k) or ""
    values["is_control"] = bool(values.get("is_control"))
    return ModelLineage(**values)


def record_registry_writes(con: duckdb.DuckDBPyConnection, writes: list[Any]) -> None:
    """Append what the registry write-back did (registry.WriteRecord rows)."""
    if writes:
        _insert(con, "registry_writes", [tuple(w.record().values()) for w in writes])
