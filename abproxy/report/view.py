"""One experiment as the page and the HTML export read it (`ExperimentView`), and the list of
experiments it is chosen from. Its run history and "what changed" are the read layer's records
(`history.history_on`, `diff.run_diff`), the ones `abproxy history` and `abproxy diff` print."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import duckdb
import pandas as pd

from abproxy import ledger
from abproxy.diff import run_diff
from abproxy.errors import UnknownExperimentError
from abproxy.history import history_on
from abproxy.ledger import frames, loads

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
    run_history: list[dict[str, Any]] = field(default_factory=list)  # the read layer's history records
    changes: dict[str, Any] | None = None   # the read layer's diff: previous run → latest run

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
    ids = list(runs["run_id"].iloc[-2:]) if len(runs) else []
    changes = run_diff(con, ids[0], ids[1]) if len(ids) == 2 else None
    published = con.execute("SELECT max(published_at) FROM snapshot_info").fetchone()[0] \
        if "snapshot_info" in have else None
    return ExperimentView(key, meta, runs, run, results, series, health, variants, metrics, history, published,
                          history_on(con, key), changes)


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
