"""What `ingest`, `analyze` and `run` print: the JSON schema of the README, or readable tables."""
from __future__ import annotations

import math
from typing import Any

from . import format as fmt
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - records imports the statistics (scipy, statsmodels)
    from .ingest import IngestSummary
    from .records import AnalysisRun


def run_json(run: "AnalysisRun") -> dict[str, Any]:
    srm = run.srm
    return {
        "experiment": run.experiment, "run_id": run.run_id, "analyzed_at": run.as_of.isoformat(),
        "status": run.status, "error": run.error, "method": run.method,
        "days_running": run.days_running, "excluded_multiple_exposures": run.excluded_multi,
        "srm": {"p_value": srm.p_value if srm else None, "ok": srm.ok if srm else None, "units": run.units},
        "results": [r.record() for r in run.results if r.segment == ""],
        "segments": [r.record() for r in run.results if r.segment != ""],
        "verdict": {"decision": run.verdict.decision if run.verdict else None,
                    "ship_variant": run.verdict.ship_variant if run.verdict else None,
                    "reasons": list(run.verdict.reasons) if run.verdict else [],
                    "cautions": list(run.verdict.cautions) if run.verdict else []},
        "health": [c.record() for c in run.health],
        "refresh": run.refresh or {"mode": "full", "reason": "read from the raw tables"},
    }


def runs_json(runs: list["AnalysisRun"]) -> list[dict[str, Any]]:
    return [run_json(r) for r in runs]


def _pct(x: float | None) -> str:
    return fmt.pct(x)


def print_ingest(summary: "IngestSummary") -> None:
    s = summary
    print(f"Ingest: {s.files_loaded} file(s) loaded, {s.files_skipped} skipped, {s.files_failed} failed; "
          f"{s.rows_loaded:,} rows loaded, {s.rows_rejected:,} rejected, {s.rows_duplicate:,} duplicates")
    if s.files_loaded + s.files_skipped + s.files_failed == 0:
        print("  The inbox is empty: drop exposure files into inbox/exposures/ and event files into inbox/events/ "
              "(CSV, Parquet or JSON Lines, optionally .gz)")
    for f in s.failures:
        print(f"  FAILED: {f['message']}")
    for r in s.rejects:  # a refused file's main reason is in its FAILED line
        first, *reasons = r.lines()
        if s.over_limit(r) and len(reasons) < 2:
            continue
        print(f"  REJECTED {first}" + ("; the file was refused" if s.over_limit(r) else ""))
        for line in reasons:
            print(f"    {line}")


def print_runs(runs: list["AnalysisRun"]) -> None:
    for run in runs:
        print()
        if run.status != "ok":
            print(f"{run.experiment}: analysis FAILED: {run.error}")
            continue
        v = run.verdict
        caution = f" WITH {len(v.cautions)} CAUTION(S)" if v.cautions else ""
        units = ", ".join(f"{k} {fmt.count(n)}" for k, n in run.units.items())
        print(f"{run.experiment}  [{v.decision}{' → ' + v.ship_variant if v.ship_variant else ''}{caution}]  "
              f"run {run.run_id}, {run.method}, {fmt.days(run.days_running)}, units {units}")
        for text in v.cautions:
            print(f"  ! CAUTION: {text}")
        for reason in v.reasons:
            print(f"  - {reason}")
        if not run.results:
            continue
        print(f"  {'metric':<24} {'role':<10} {'variant':<12} {'lift':>9} {'95% CI':>21} {'p adj':>8}  sig")
        for r in (r for r in run.results if r.segment == ""):
            e = r.effect
            print(f"  {r.metric:<24} {r.role:<10} {r.variant:<12} {_pct(e.rel_effect):>9} "
                  f"{_pct(e.rel_ci[0]) + ' to ' + _pct(e.rel_ci[1]):>21} {fmt.pvalue(r.p_value_adjusted):>8}  "
                  f"{'yes' if r.significant else 'no'}")
        problems = [c for c in run.health if c.status != "ok"]
        for c in problems:
            print(f"  {c.status.upper()} {c.check}: {c.detail}")
