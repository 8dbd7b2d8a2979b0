"""After validation: data that goes nowhere, metrics that silently compute zeros, raw engine errors.

A hand-made workspace (as a new user would write it) is run with the real command; the messages
are asserted: the file, the key, the fix.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from abproxy.cli import main

CONFIG = {
    "metrics": {
        "spend": {"type": "mean", "event": "purchase", "aggregate": "sum", "window_days": 7},
        "buyers": {"type": "proportion", "event": "purchase", "window_days": 7},
        "refunds": {"type": "proportion", "event": "refund", "window_days": 7, "higher_is_better": False},
    },
    "experiments": {
        "checkout-v2": {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["spend"],
                        "secondary": ["buyers"], "guardrails": ["refunds"],
                        "decision": {"min_days": 0, "min_units_per_variant": 10}},
    },
}


def workspace(tmp_path: Path, experiment_key: str = "checkout-v2", units: int = 400, **metric_edits) -> Path:
    ws = tmp_path / "ws"
    for sub in ("inbox/exposures", "inbox/events", "data"):
        (ws / sub).mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(CONFIG))
    for key, edit in metric_edits.items():
        config["metrics"][key] = {**config["metrics"].get(key, {}), **edit} if edit else None
    config["metrics"] = {k: v for k, v in config["metrics"].items() if v}
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rng = random.Random(3)
    exposures = ["unit_id,experiment,variant,exposed_at,platform"]
    events = ["unit_id,event,occurred_at,value,category"]
    for i in range(units):
        exposures.append(f"u{i},{experiment_key},{'ab'[i % 2]},2026-11-0{1 + i % 5} 10:00:00,{rng.choice(['ios', 'web'])}")
        for _ in range(rng.randint(0, 3)):
            events.append(f"u{i},purchase,2026-11-0{2 + i % 5} 12:00:00,{rng.randint(1, 50)},{rng.choice(['books', 'games'])}")
        if rng.random() < 0.1:
            events.append(f"u{i},refund,2026-11-0{3 + i % 5} 12:00:00,,")
        events.append(f"u{i},session_start,2026-11-0{1 + i % 5} 11:00:00,,")
    (ws / "inbox/exposures/exp.csv").write_text("\n".join(exposures) + "\n")
    (ws / "inbox/events/ev.csv").write_text("\n".join(events) + "\n")
    return ws


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--log-level", "ERROR"])
    out = capsys.readouterr()
    return code, out.out + out.err


def run_json(capsys, ws: Path) -> tuple[int, dict]:
    code, out = cli(capsys, "run", "-w", str(ws), "--as-of", "2026-11-08T00:00:00", "--json")
    return code, json.loads(out[out.index("{"):])


def health(exp: dict, check: str) -> list[dict]:
    return [c for c in exp["health"] if c["check"] == check]


def test_a_typod_event_is_a_health_fail_with_did_you_mean_and_invalidates(tmp_path, capsys):
    ws = workspace(tmp_path, spend={"event": "purchases"})
    code, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    [check] = health(exp, "metric_event")
    assert check["status"] == "fail" and check["metric"] == "spend"
    assert check["detail"] == ("metrics.spend.event: event 'purchases' has never been loaded; known events: "
                               "purchase, refund, session_start — did you mean 'purchase'?")
    assert exp["verdict"]["decision"] == "INVALID"
    assert "event 'purchases' has never been loaded" in exp["verdict"]["reasons"][0]

    code, out = cli(capsys, "validate", "-w", str(ws), "--data")
    assert code == 2
    assert ("metrics.spend.event: event 'purchases' has never been loaded; known events: purchase, refund, "
            "session_start — did you mean 'purchase'?") in out


def test_a_typod_event_of_a_secondary_metric_only_warns(tmp_path, capsys):
    ws = workspace(tmp_path, buyers={"event": "purchse"})
    _, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    [check] = health(exp, "metric_event")
    assert check["status"] == "warn" and "did you mean 'purchase'?" in check["detail"]
    assert exp["verdict"]["decision"] != "INVALID"


def test_a_where_matching_nothing_warns_with_the_values_seen(tmp_path, capsys):
    ws = workspace(tmp_path, buyers={"where": "category = 'Books'"})
    _, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    [check] = health(exp, "metric_where")
    assert check["status"] == "warn"
    assert check["detail"].startswith("metrics.buyers.where: metric 'buyers': 'where' \"category = 'Books'\" "
                                      "matches none of the ")
    assert "so the metric is 0 for every unit; category there is one of 'books', 'games' — did you mean 'books'?" \
        in check["detail"]
    code, out = cli(capsys, "validate", "-w", str(ws), "--data")
    assert code == 2 and "metrics.buyers.where: metric 'buyers'" in out


def test_a_typod_where_column_names_metric_key_column_and_known_columns(tmp_path, capsys):
    ws = workspace(tmp_path, buyers={"where": "categry = 'books'"})
    code, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    assert code == 1 and exp["status"] == "failed"
    assert exp["error"].startswith("metrics.buyers.where: metric 'buyers': 'where' \"categry = 'books'\" cannot run: "
                                   "column 'categry' does not exist — did you mean 'category'? (known columns: ")
    assert "Binder" not in exp["error"] and "LINE" not in exp["error"] and "INTERVAL" not in exp["error"]
    code, out = cli(capsys, "run", "-w", str(ws), "--as-of", "2026-11-08T00:00:00")
    assert code == 1 and "checkout-v2: analysis FAILED: metrics.buyers.where" in out and "Binder" not in out


def test_a_missing_column_says_it_follows_from_the_events_file_that_failed(tmp_path, capsys):
    ws = workspace(tmp_path, buyers={"where": "category = 'books'"})
    (ws / "inbox/events/ev.csv").write_text("unit_id;event;occurred_at;value;category\nu1;purchase;2026-11-02;1;books\n")
    code, out = cli(capsys, "run", "-w", str(ws), "--as-of", "2026-11-08T00:00:00")
    assert code == 1
    failed_file = out.index("FAILED: events/ev.csv: missing required columns")
    consequence = out.index("(this may follow from events/ev.csv, which failed to load: fix that first")
    assert failed_file < consequence


def test_exposures_under_a_typod_key_are_named_in_the_verdict(tmp_path, capsys):
    ws = workspace(tmp_path, experiment_key="checkout_v2")
    _, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    assert exp["verdict"]["decision"] == "KEEP_RUNNING"
    assert ("400 exposures name 'checkout_v2', which is not configured — did you mean 'checkout-v2'?"
            in exp["verdict"]["reasons"][0])


def test_rejected_exposures_are_named_in_the_no_exposures_reason(tmp_path, capsys):
    ws = workspace(tmp_path)
    text = (ws / "inbox/exposures/exp.csv").read_text().replace("2026-11-0", "0").replace(" 10:00:00", "/11/2026 10:00")
    (ws / "inbox/exposures/exp.csv").write_text(text)
    code, data = run_json(capsys, ws)
    [exp] = data["experiments"]
    assert code == 1
    assert ("but exposure data did arrive: exposures/exp.csv: 400 rows rejected (unparseable timestamp in "
            "exposed_at), the file was refused") in exp["verdict"]["reasons"][0]


def test_validate_data_passes_on_a_matching_workspace_and_checks_raw_sql_and_segments(tmp_path, capsys):
    ws = workspace(tmp_path)
    code, out = cli(capsys, "run", "-w", str(ws), "--as-of", "2026-11-08T00:00:00")
    assert code == 0, out
    code, out = cli(capsys, "validate", "-w", str(ws), "--data")
    assert code == 0 and out.startswith("OK")

    config = yaml.safe_load((ws / "abproxy.yaml").read_text())
    config["metrics"]["score"] = {"type": "mean", "sql": "SELECT unit_id AS user, 1 AS value FROM events"}
    config["experiments"]["checkout-v2"]["segments"] = ["platfrom"]
    config["experiments"]["checkout-v2"]["allocation"] = {"a": 0.8, "b": 0.2}
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(config))
    code, out = cli(capsys, "validate", "-w", str(ws), "--data")
    assert code == 2
    assert ("metrics.score.sql: metric 'score': the query must return the columns unit_id, value; it returns "
            "user, value (missing unit_id)") in out
    assert ("experiments.checkout-v2.segments.0: segment 'platfrom' is not a column of the exposures — did you "
            "mean 'platform'? (known attributes: platform)") in out
    assert "experiments.checkout-v2.allocation: the exposures show a 50.0%, b 50.0% of 400 units, the " \
           "allocation says a 80%, b 20%" in out
