"""Configuration → tables the report needs (experiments with model lineage, the metrics catalog)."""
from __future__ import annotations

import json

import pandas as pd

from .config import Config
from .metrics import MetricSQLError, metric_sql


def experiments_frame(config: Config) -> pd.DataFrame:
    rows = []
    for key, exp in config.experiments.items():
        rows.append({
            "experiment": key, "name": exp.name or key, "hypothesis": exp.hypothesis, "owner": exp.owner,
            "status": exp.status, "start": exp.start.isoformat() if exp.start else None,
            "end": exp.end.isoformat() if exp.end else None, "control": exp.control,
            "primary_metrics": json.dumps(exp.primary), "segments": json.dumps(exp.segments),
            "roles": json.dumps(exp.roles()), "allocation": json.dumps(exp.weights),
            "decision": json.dumps(exp.decision.model_dump(mode="json")),
            "guardrails": json.dumps([g.model_dump(mode="json") for g in exp.guardrail_specs]),
            "holdback": exp.holdback,
        })
    return pd.DataFrame(rows, columns=["experiment", "name", "hypothesis", "owner", "status", "start", "end",
                                       "control", "primary_metrics", "segments", "roles", "allocation",
                                       "decision", "guardrails", "holdback"])


def variants_frame(config: Config) -> pd.DataFrame:
    rows = []
    for key, exp in config.experiments.items():
        for name, v in exp.variants.items():
            rows.append({"experiment": key, "variant": name, "is_control": name == exp.control,
                         "model": v.model, "version": v.version, "params": json.dumps(v.params, sort_keys=True),
                         "training_data": v.training_data, "link": v.link, "description": v.description,
                         "allocation": exp.weights[name]})
    return pd.DataFrame(rows, columns=["experiment", "variant", "is_control", "model", "version", "params",
                                       "training_data", "link", "description", "allocation"])


def metrics_frame(config: Config) -> pd.DataFrame:
    rows = []
    for key, m in config.metrics.items():
        used = [k for k, e in config.experiments.items() if key in e.roles()]
        try:
            sql = metric_sql(config, key)
        except MetricSQLError as exc:
            sql = f"-- cannot build SQL: {exc}"
        rows.append({"metric": key, "name": m.name or key.replace("_", " ").capitalize(), "type": m.type,
                     "description": m.description, "owner": m.owner, "higher_is_better": m.higher_is_better,
                     "window_days": m.window_days, "definition": json.dumps(m.model_dump(mode="json", exclude_none=True)),
                     "sql": sql, "used_by": json.dumps(used)})
    return pd.DataFrame(rows, columns=["metric", "name", "type", "description", "owner", "higher_is_better",
                                       "window_days", "definition", "sql", "used_by"])


def snapshot_tables(config: Config) -> dict[str, pd.DataFrame]:
    return {"experiments": experiments_frame(config), "variants": variants_frame(config),
            "metrics": metrics_frame(config)}
