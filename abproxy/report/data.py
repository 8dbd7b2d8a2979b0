"""Snapshot queries for the report's pages.

Plain functions take a read-only connection to the published snapshot and return small frames or
records (the HTML export calls them directly); the app reaches them through `Snapshot.load`
(`snapshot`). Ledger tables are read through the ledger gateway, history, diff and leaderboard
through the read layer the CLI prints. Nothing here computes statistics or opens the warehouse.
"""
from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from abproxy.leaderboard import models_on
from abproxy.ledger import frames
from abproxy.ledger import loads  # noqa: F401  (pages use data.loads)
from abproxy.offline import offline_vs_online
from abproxy.report.snapshot import (CACHE_SECONDS, DEFAULT_SNAPSHOT, QUERIES, Snapshot, Source,  # noqa: F401
                                     file_version, locate, register_query, workspace_arg, workspace_root)
from abproxy.report.view import (EXPERIMENT_COLUMNS, ExperimentView, _df, _meta, _missing, _records,  # noqa: F401
                                 experiment_keys, experiment_view, experiments, tables, with_registry_lineage)
from abproxy.warehouse import WarehouseError  # noqa: F401  (pages catch data.WarehouseError)

primary_results = frames.primary_results


def overview(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One record per experiment: configuration, latest run and its primary lifts."""
    exps = experiments(con)
    by_key = {r["experiment"]: r for r in _records(frames.latest_runs_frame(con))}
    ids = [r["run_id"] for r in by_key.values()]
    prim = primary_results(con, ids) if by_key else pd.DataFrame()
    problems = frames.problems(con, ids)
    out = []
    for exp in _records(exps):
        run = by_key.get(exp["experiment"])
        lifts = _records(prim[prim["run_id"] == run["run_id"]]) if run is not None and len(prim) else []
        issues = _records(problems[problems["run_id"] == run["run_id"]]) if run is not None else []
        out.append({**exp, "run": run, "primary": lifts, "issues": issues, "cautions": _cautions(exp, run, issues)})
    return out


def _cautions(exp: dict[str, Any], run: dict[str, Any] | None, issues: list[dict[str, Any]]) -> list[str]:
    """The latest verdict's cautions, by the verdict's own rule (`verdict.cautions_of`)."""
    from abproxy.verdict import Flag, cautions_of

    if run is None or run.get("status") != "ok" or run.get("decision") == "INVALID":
        return []
    roles = loads(exp.get("roles"), {}) or {}
    flags = [Flag(i["check_name"], i["status"], i.get("detail") or "", i.get("segment"), i.get("metric"),
                  i.get("variant")) for i in issues]
    return cautions_of(flags, {m for m, r in roles.items() if r in ("primary", "guardrail")})


def portfolio(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every run's verdict and primary lift: the portfolio timeline (CSV download)."""
    runs = frames.portfolio_runs(con)
    if runs is None:
        return pd.DataFrame(columns=["run_id", "experiment", "as_of", "decision"])
    prim = primary_results(con)
    prim = prim.rename(columns={"metric": "primary_metric", "rel_effect": "primary_lift",
                                "rel_ci_lo": "primary_lift_ci_lo", "rel_ci_hi": "primary_lift_ci_hi",
                                "p_value_adjusted": "primary_p_adjusted"})
    keep = ["run_id", "primary_metric", "variant", "primary_lift", "primary_lift_ci_lo", "primary_lift_ci_hi",
            "primary_p_adjusted", "significant"]
    return runs.merge(prim[keep], on="run_id", how="left")


# --------------------------------------------------------------------------- catalog, models, health

def metrics_catalog(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    if "metrics" not in tables(con):
        return []
    rows = _records(_df(con, "SELECT * FROM metrics ORDER BY metric"))
    previews = {}
    if "metric_previews" in tables(con):  # computed by the job (abproxy.preview), never here
        previews = {m: (loads(p, None), e) for m, p, e in
                    con.execute("SELECT metric, preview, error FROM metric_previews").fetchall()}
    for r in rows:
        r["used_by"] = loads(r.get("used_by"), [])
        r["definition"] = loads(r.get("definition"), {})
        r["preview"], r["preview_error"] = previews.get(r["metric"], (None, None))
    return rows


def models(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The read layer's leaderboard records (`leaderboard.models_on`, what `abproxy models` prints),
    with the metric names, the latest run, the arm's verdict (status) and outcome for the page."""
    names = dict(con.execute("SELECT metric, coalesce(name, metric) FROM metrics").fetchall()) \
        if "metrics" in tables(con) else {}
    return [_model_row(r, names) for r in models_on(con)]


def _model_row(r: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    effects = [{**e, "label": names.get(e["metric"], e["metric"]), "rel_ci_lo": (e["rel_ci"] or [None, None])[0],
                "rel_ci_hi": (e["rel_ci"] or [None, None])[1]}
               for e in r["effects"] if e["role"] in ("primary", "guardrail")]
    run = {k: r[k] for k in ("run_id", "as_of", "decision", "ship_variant")} if r["run_id"] else None
    if run is not None:
        run["status"] = r["run_status"]
    return {**r, "params": json.dumps(r["params"] or {}, sort_keys=True), "effects": effects, "run": run,
            "verdict": r["status"], "outcome": r["variant_status"]}


def offline_online(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Offline metric vs online lift across experiments (abproxy.offline), on the leaderboard's records."""
    return offline_vs_online(models_on(con))


def data_health(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    have = tables(con)
    files = _df(con, "SELECT * FROM files ORDER BY file_id DESC") if "files" in have else pd.DataFrame()
    rejected = _df(con, """
        SELECT reason, count(*) AS rows, count(DISTINCT path) AS files,
               list(DISTINCT path ORDER BY path)[1:3] AS paths,
               list(struct_pack(path := path, row := row_number, raw := raw) ORDER BY path, row_number)[1:3] AS examples
        FROM rejected_rows GROUP BY reason ORDER BY rows DESC, reason""") if "rejected_rows" in have else pd.DataFrame()
    jobs = _df(con, "SELECT * FROM job_runs ORDER BY started_at DESC LIMIT 50") if "job_runs" in have else pd.DataFrame()
    return {"files": files, "rejected": rejected, "jobs": jobs, "freshness": freshness(con)}


def freshness(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Snapshot published_at, latest file load, latest event and exposure the analyses saw."""
    have = tables(con)
    out: dict[str, Any] = {"published_at": None, "last_loaded_at": None, "latest_event": None,
                           "latest_exposure": None, "last_job": None}
    if "snapshot_info" in have:
        out["published_at"] = con.execute("SELECT max(published_at) FROM snapshot_info").fetchone()[0]
    if "files" in have:
        out["last_loaded_at"] = con.execute("SELECT max(loaded_at) FROM files").fetchone()[0]
    out["latest_event"], out["latest_exposure"] = frames.latest_data_seen(con)
    if "job_runs" in have:
        job = _records(_df(con, "SELECT kind, status, started_at, finished_at FROM job_runs "
                                "ORDER BY started_at DESC LIMIT 1"))
        out["last_job"] = job[0] if job else None
    return out


QUERIES.update({
    "experiments": experiments, "experiment_keys": experiment_keys, "overview": overview, "portfolio": portfolio,
    "experiment": experiment_view, "catalog": metrics_catalog, "models": models, "data_health": data_health,
    "freshness": freshness, "offline_online": offline_online,
})

__all__ = ["Source", "Snapshot", "ExperimentView", "WarehouseError", "locate", "workspace_root", "loads",
           "experiments", "overview", "portfolio", "experiment_view", "metrics_catalog", "models", "data_health",
           "freshness"]
