"""The ledger gateway: the only code that reads or writes the ledger tables (`runs`, `results`,
`series`, `health`, `lineage`, `registry_writes`), on the warehouse or on the published snapshot
(tests/test_ledger_gateway.py fails on SQL naming them anywhere else).

- `core`: the tables, the run columns, "the latest run" (LATEST_FIRST), the JSON and error-text helpers;
- `write`: one run with its results, series, health and lineage in one transaction; registry writes;
- `reads`: rows — what the analysis needs of earlier runs, and what the read layer (`history`,
  `diff`, `leaderboard`) composes into records for the CLI, the report and the export;
- `frames`: frames for the report's pages (pandas).
"""
from __future__ import annotations

from .core import (ERROR_LIMIT, LATEST_FIRST, LATEST_KEYS, LEDGER_TABLES, OLDEST_FIRST, RUN_BRIEF, RUN_COLUMNS,
                   RUN_SELECT, _clean, clip, code_version, dumps, error_text, json_safe, latest_first,
                   latest_runs_sql, loads, oldest_first, rows, tables)
from .reads import (LINEAGE_KEYS, failed_checks, last_lineage, latest_lineage, latest_run, latest_runs,
                    launch_rows, lineage_from_row, overall_results, previous_verdict, recent_decisions,
                    run_experiments, run_health, run_ids_starting, run_lineage, run_rows, runs_of)
from .write import LINEAGE_JSON, record_registry_writes, record_run, watermark

__all__ = [
    "ERROR_LIMIT", "LATEST_FIRST", "LATEST_KEYS", "LEDGER_TABLES", "LINEAGE_JSON", "LINEAGE_KEYS", "OLDEST_FIRST",
    "RUN_BRIEF", "RUN_COLUMNS", "RUN_SELECT", "clip", "code_version", "dumps", "error_text", "failed_checks",
    "json_safe", "last_lineage", "latest_first", "latest_lineage", "latest_run", "latest_runs", "latest_runs_sql",
    "launch_rows", "lineage_from_row", "loads", "oldest_first", "overall_results", "previous_verdict",
    "recent_decisions", "record_registry_writes", "record_run", "rows", "run_experiments", "run_health",
    "run_ids_starting", "run_lineage", "run_rows", "runs_of", "tables", "watermark",
]
