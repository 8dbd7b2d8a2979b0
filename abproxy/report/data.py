"""Snapshot queries for the report.

Plain functions take a read-only connection to the published snapshot and return small frames or
dataclasses (the HTML export calls them directly). The app goes through `Snapshot.load`, which
opens the snapshot per call and caches the answer for a few seconds, keyed on the snapshot file's
identity (mtime, size, inode): a newly published snapshot is a new key. Nothing here computes
statistics or opens the warehouse.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import duckdb
import pandas as pd

from abproxy.config import ConfigError, resolve_workspace
from abproxy.errors import UnknownExperimentError
from abproxy.history import arm_outcome
from abproxy import ledger
from abproxy.ledger import frames
from abproxy.ledger import loads  # noqa: F401  (pages use data.loads)
from abproxy.lineage import arm_status_of_run
from abproxy.offline import offline_vs_online, registry_fields
from abproxy.warehouse import WarehouseError, open_snapshot
from abproxy.workspace import Workspace

DEFAULT_SNAPSHOT = "data/report.duckdb"
CACHE_SECONDS = 5


# --------------------------------------------------------------------------- where the snapshot is

@dataclass(frozen=True)
class Source:
    """The workspace folder, its snapshot path, and the configuration error if abproxy.yaml is broken."""

    root: Path
    snapshot: Path
    config_error: str | None = None


def workspace_arg(argv: list[str] | None = None) -> str | None:
    """The value of `--workspace DIR` / `--workspace=DIR` in argv (after `streamlit run app.py --`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--workspace" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--workspace="):
            return arg.split("=", 1)[1]
    return None


def workspace_root(argv: list[str] | None = None) -> Path:
    """`--workspace` from argv, else $ABPROXY_WORKSPACE, else the current folder."""
    return resolve_workspace(workspace_arg(argv))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _st_cached(max_entries: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """st.cache_data applied on first call, so that importing this module (the CLI's export does)
    needs no Streamlit runtime."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        cached: list[Callable[..., Any]] = []

        def call(*args: Any) -> Any:
            if not cached:
                import streamlit as st

                cached.append(st.cache_data(ttl=CACHE_SECONDS, show_spinner=False, max_entries=max_entries)(fn))
            return cached[0](*args)
        call.__wrapped__ = fn  # type: ignore[attr-defined]
        return call
    return wrap


@_st_cached(max_entries=16)
def _locate(root: str, config_mtime: int) -> Source:
    path = Path(root)
    try:
        return Source(path, Workspace.open(path).snapshot)
    except ConfigError as exc:
        return Source(path, path / DEFAULT_SNAPSHOT, str(exc))
    except Exception as exc:  # an unreadable file must not take the report down
        return Source(path, path / DEFAULT_SNAPSHOT, f"{type(exc).__name__}: {exc}")


def locate(root: Path | None = None) -> Source:
    root = Path(root) if root is not None else workspace_root()
    return _locate(str(root), _mtime(root / "abproxy.yaml"))


def file_version(path: Path) -> tuple[int, int, int] | None:
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_mtime_ns, s.st_size, s.st_ino)


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot file at one version; `load` runs a named query on it (cached)."""

    path: Path
    version: tuple[int, int, int]

    @classmethod
    def at(cls, path: Path) -> "Snapshot | None":
        version = file_version(path)
        return cls(path, version) if version else None

    def load(self, query: str, *args: Any) -> Any:
        return _cached(query, str(self.path), self.version, args)


@_st_cached(max_entries=128)
def _cached(query: str, path: str, version: tuple, args: tuple) -> Any:
    con = open_snapshot(path)
    try:
        return QUERIES[query](con, *args)
    finally:
        con.close()


# --------------------------------------------------------------------------- helpers

tables = ledger.tables


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if _missing(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value)) if not isinstance(value, (list, dict, tuple)) else False
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- experiments

EXPERIMENT_COLUMNS = ["experiment", "name", "hypothesis", "owner", "status", "start", "end", "control",
                      "primary_metrics", "segments", "roles", "allocation", "decision", "guardrails", "holdback"]


def experiments(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The configured experiments (snapshot table `experiments`), plus any experiment that only
    appears in the ledger (removed from the configuration since)."""
    have = tables(con)
    frame = _df(con, "SELECT * FROM experiments") if "experiments" in have else pd.DataFrame(columns=EXPERIMENT_COLUMNS)
    known = set(frame["experiment"])
    extra = [k for k in ledger.run_experiments(con) if k not in known]
    if extra:
        rows = pd.DataFrame([{"experiment": k, "name": k, "status": "unknown", "primary_metrics": "[]",
                              "roles": "{}", "guardrails": "[]", "segments": "[]", "allocation": "{}",
                              "decision": "{}"} for k in extra])
        frame = pd.concat([frame, rows], ignore_index=True)
    return frame.reindex(columns=EXPERIMENT_COLUMNS)


def experiment_keys(con: duckdb.DuckDBPyConnection) -> list[str]:
    return list(experiments(con)["experiment"])


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


# --------------------------------------------------------------------------- one experiment

@dataclass
class ExperimentView:
    """Everything the experiment page and the review export show, from one snapshot read."""

    key: str
    meta: dict[str, Any]
    runs: pd.DataFrame                      # every run, oldest first
    run: dict[str, Any] | None              # the latest run (None: never analysed)
    results: pd.DataFrame                   # latest run, overall and segments
    series: pd.DataFrame
    health: pd.DataFrame
    variants: pd.DataFrame
    metrics: pd.DataFrame                   # catalog rows of the metrics this experiment uses
    history: pd.DataFrame                   # overall results of every run (metric × variant)
    published_at: Any = None
    definitions: dict[str, Any] = field(default_factory=dict)        # latest run's definitions
    previous_definitions: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.key

    @property
    def overall(self) -> pd.DataFrame:
        return self.results[self.results["segment"] == ""]

    @property
    def segments(self) -> pd.DataFrame:
        return self.results[self.results["segment"] != ""]

    @property
    def previous(self) -> dict[str, Any] | None:
        return _records(self.runs.iloc[[-2]])[0] if len(self.runs) >= 2 else None

    @cached_property
    def _metric_info(self) -> dict[str, tuple[str, bool]]:
        out = {}
        for r in self.metrics.to_dict("records"):
            name = r.get("name")
            hib = r.get("higher_is_better")
            out[r["metric"]] = (name if isinstance(name, str) and name else r["metric"],
                                True if _missing(hib) else bool(hib))
        return out

    def metric_label(self, metric: str) -> str:
        return self._metric_info.get(metric, (metric, True))[0]

    def higher_is_better(self, metric: str) -> bool:
        return self._metric_info.get(metric, (metric, True))[1]

    @property
    def alpha(self) -> float:
        return float(self.meta.get("decision", {}).get("alpha", 0.05) or 0.05)


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key, default in (("primary_metrics", []), ("segments", []), ("roles", {}), ("allocation", {}),
                         ("decision", {}), ("guardrails", [])):
        out[key] = loads(row.get(key), default)
    return out


def experiment_view(con: duckdb.DuckDBPyConnection, key: str) -> ExperimentView:
    """Raises KeyError (listing the known keys) for an unknown experiment."""
    exps = experiments(con)
    match = exps[exps["experiment"] == key]
    if match.empty:
        known = ", ".join(exps["experiment"]) or "none"
        raise UnknownExperimentError(f"unknown experiment '{key}' (known: {known})")
    meta = _meta(_records(match)[0])
    have = tables(con)
    runs = frames.runs_frame(con, key)
    run = _records(runs.iloc[[-1]])[0] if len(runs) else None
    run_id = run["run_id"] if run else ""
    results = frames.run_results(con, run_id)
    series = frames.run_series(con, run_id)
    health = frames.run_checks(con, run_id)
    variants = _df(con, "SELECT * FROM variants WHERE experiment = ? ORDER BY NOT is_control, variant", [key]) \
        if "variants" in have else pd.DataFrame()
    variants = with_registry_lineage(con, key, variants)
    used = list(dict.fromkeys([*meta["roles"], *results["metric"]]))
    metrics = _df(con, "SELECT metric, name, type, description, owner, higher_is_better, window_days FROM metrics "
                       "WHERE metric IN (SELECT unnest(?::VARCHAR[]))", [used]) if "metrics" in have else pd.DataFrame(
        columns=["metric", "name", "type", "description", "owner", "higher_is_better", "window_days"])
    history = frames.results_history(con, key)
    definitions: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    if len(runs):
        ids = list(runs["run_id"].iloc[-2:])
        defs = frames.definitions(con, ids)
        definitions = defs.get(ids[-1], {})
        previous = defs.get(ids[0], {}) if len(ids) == 2 else {}
    published = con.execute("SELECT max(published_at) FROM snapshot_info").fetchone()[0] \
        if "snapshot_info" in have else None
    return ExperimentView(key, meta, runs, run, results, series, health, variants, metrics, history, published,
                          definitions, previous)


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
    """Every model version (variants table) with the latest measured overall effects of its
    experiment (primary and guardrail metrics, that arm vs the control) and the verdict."""
    have = tables(con)
    if "variants" not in have:
        return []
    variants = _records(_df(con, "SELECT * FROM variants ORDER BY model, version, experiment, variant"))
    exps = {e["experiment"]: _meta(e) for e in _records(experiments(con))}
    latest = {r["experiment"]: r for r in _records(frames.latest_runs_frame(con))}
    ids = [r["run_id"] for r in latest.values()]
    effects = frames.arm_effects(con, ids)
    names = dict(con.execute("SELECT metric, coalesce(name, metric) FROM metrics").fetchall()) if "metrics" in have else {}
    recorded = ledger.latest_lineage(con)
    out = []
    for v in variants:
        lin = recorded.get((v["experiment"], v["variant"]))
        if lin and lin.get("model"):      # resolved from a registry: the version the run actually saw
            v = {**v, "model": lin["model"], "version": lin.get("version") or v.get("version")}
        run = latest.get(v["experiment"])
        exp = exps.get(v["experiment"], {})
        mine = effects[(effects["run_id"] == run["run_id"]) & (effects["variant"] == v["variant"])] \
            if run is not None and len(effects) else pd.DataFrame()
        measured = [{**e, "label": names.get(e["metric"], e["metric"])} for e in _records(mine)]
        out.append({**v, "experiment_name": exp.get("name") or v["experiment"], "experiment_status": exp.get("status"),
                    "run": run, "effects": measured, "verdict": arm_verdict(v, run),
                    "outcome": arm_outcome(v["variant"], bool(v.get("is_control")), exp.get("status"), run),
                    **registry_fields(lin)})
    return out


def with_registry_lineage(con: duckdb.DuckDBPyConnection, key: str, variants: pd.DataFrame) -> pd.DataFrame:
    """Variants that name MLflow references show the version their latest run resolved: model, version
    (and alias), the training run's params, its datasets as training data, the reference as link."""
    recorded = {v: lin for (k, v), lin in ledger.latest_lineage(con).items() if k == key and lin.get("ref")}
    if variants.empty or not recorded:
        return variants
    frame = variants.copy()
    for i, row in frame.iterrows():
        lin = recorded.get(row["variant"])
        if lin is None:
            continue
        datasets = ", ".join(f"{d.get('name')} ({d.get('digest')})" for d in lin.get("datasets") or [])
        frame.at[i, "model"] = lin.get("model") or ""
        frame.at[i, "version"] = (lin.get("version") or "?") + (f" (@{lin['alias']})" if lin.get("alias") else "")
        frame.at[i, "params"] = json.dumps(lin.get("params") or {}, sort_keys=True)
        frame.at[i, "training_data"] = datasets or row.get("training_data") or ""
        frame.at[i, "link"] = lin["ref"]
    return frame


def offline_online(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Offline metric vs online lift across experiments (abproxy.offline)."""
    return offline_vs_online(models(con))


def arm_verdict(variant: dict[str, Any], run: dict[str, Any] | None) -> str:
    """What the latest verdict means for one arm (the one rule, `lineage.arm_status`)."""
    return arm_status_of_run(variant["variant"], bool(variant.get("is_control")), run)


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


QUERIES: dict[str, Callable[..., Any]] = {
    "experiments": experiments, "experiment_keys": experiment_keys, "overview": overview, "portfolio": portfolio,
    "experiment": experiment_view, "catalog": metrics_catalog, "models": models, "data_health": data_health,
    "freshness": freshness, "offline_online": offline_online,
}


def register_query(name: str, fn: Callable[..., Any]) -> None:
    """Add a named snapshot query from a module above this one (the HTML export adds `review_html`)."""
    QUERIES[name] = fn

__all__ = ["Source", "Snapshot", "ExperimentView", "WarehouseError", "locate", "workspace_root", "loads",
           "experiments", "overview", "portfolio", "experiment_view", "metrics_catalog", "models", "data_health",
           "freshness", "arm_verdict"]
