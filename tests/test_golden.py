"""Golden test: `abproxy analyze --json` on a fixed simulated workspace stays what it was.

The workspace is the demo (seven experiments: SHIP, flat, ROLLBACK, broken split, young, segment harm,
shipped with holdback) at a fixed date, with extra metrics on recsys-v2 that reach every corner of the
metric SQL (every aggregate, `where`, absolute and quantile caps with ignore_zeros, raw SQL mean and
ratio). Two analyses are recorded: a week after launch, then with complete windows; both outputs are
compared with `tests/golden/analyze.json`, ignoring run ids (and the job id). Numbers compare to 1e-9
relative; everything else (verdicts, reasons, health texts, ordering) exactly.

This test guards behaviour-preserving refactors. When a change alters the output ON PURPOSE (a fixed
sign, a new check, a reworded reason), regenerate the golden deliberately and say so in the commit:

    ABPROXY_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py

then review `git diff tests/golden/analyze.json`: only the intended change may appear.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from abproxy.cli import main
from abproxy.demo import build_demo

GOLDEN = Path(__file__).parent / "golden" / "analyze.json"
NOW = dt.datetime(2026, 3, 1)            # the demo's "now": all its data lies before it
AS_OF = ("2026-02-15T00:00:00", "2026-03-01T00:00:00")
UNITS = 2_000
EXTRA_METRICS: dict[str, Any] = {
    "max_purchase": {"type": "mean", "event": "purchase", "aggregate": "max", "window_days": 7},
    "min_purchase": {"type": "mean", "event": "purchase", "aggregate": "min", "window_days": 7},
    "avg_purchase": {"type": "mean", "event": "purchase", "aggregate": "avg", "window_days": 7},
    "active_days": {"type": "mean", "event": "session_start", "aggregate": "count_distinct_days"},
    "any_session": {"type": "proportion", "event": "session_start", "aggregate": "exists"},
    "big_buyer": {"type": "proportion", "event": "purchase", "where": "value > 20 AND (value < 1e9)"},
    "spend_capped_abs": {"type": "mean", "event": "purchase", "capping": {"value": 50.0}, "cuped": True},
    "spend_capped_nz": {"type": "mean", "event": "purchase", "capping": {"quantile": 0.95, "ignore_zeros": True}},
    "raw_purchases": {"type": "mean", "sql": "SELECT unit_id, value FROM events "
                                             "WHERE event = 'purchase' AND occurred_at <= {as_of}"},
    "raw_ratio": {"type": "ratio", "sql": "SELECT unit_id, value, 1 AS denominator FROM events "
                                          "WHERE event = 'purchase' AND occurred_at <= {as_of}"},
}


def build_golden_workspace(root: Path) -> Path:
    build_demo(root, now=NOW, units=UNITS)
    path = root / "abproxy.yaml"
    config = yaml.safe_load(path.read_text())
    config["metrics"].update(EXTRA_METRICS)
    config["experiments"]["recsys-v2"]["secondary"] += list(EXTRA_METRICS)
    config["experiments"]["image-tagger"]["decision"]["sequential"] = False
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _analyze(root: Path, as_of: str, capsys) -> dict[str, Any]:
    assert main(["analyze", "--workspace", str(root), "--as-of", as_of, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def golden_outputs(root: Path, capsys) -> list[dict[str, Any]]:
    assert main(["ingest", "--workspace", str(root)]) == 0
    capsys.readouterr()
    outputs = [_analyze(root, as_of, capsys) for as_of in AS_OF]
    run_ids = {e["run_id"] for out in outputs for e in out["experiments"]}
    return [_normalise(out, run_ids) for out in outputs]


def _normalise(value: Any, run_ids: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: ("<id>" if k in ("run_id", "job_id") else _normalise(v, run_ids)) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, run_ids) for v in value]
    if isinstance(value, str):
        return re.sub(r"\b[0-9a-f]{12}\b", lambda m: "<run>" if m.group(0) in run_ids else m.group(0), value)
    return value


def _same(a: Any, b: Any, where: str = "") -> list[str]:
    """Differences between two JSON values (floats to 1e-9 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'golden' if k in a else 'now'}" for k in set(a) ^ set(b)]
        return out + [d for k in a if k in b for d in _same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items in the golden, {len(b)} now"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{where}: {a!r} golden, {b!r} now"]
    return [] if a == b else [f"{where}: {a!r} golden, {b!r} now"]


@pytest.mark.slow
def test_analyze_json_matches_the_golden(tmp_path, capsys):
    outputs = golden_outputs(build_golden_workspace(tmp_path / "ws"), capsys)
    if os.environ.get("ABPROXY_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    differences = _same(golden, outputs)
    assert not differences, "analyze --json changed (see this file's docstring to regenerate on purpose):\n" \
        + "\n".join(differences[:40])
