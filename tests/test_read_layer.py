"""One read layer, one vocabulary: the CLI (`history`, `diff`, `models`), the report's pages and the
HTML export show the same records and the same words for the same ledger (the report fixture's
simulated workspace: SHIP and HARM have two runs each)."""
from __future__ import annotations

import json
import re
from html import unescape

import duckdb
import pytest

from abproxy.cli import main
from abproxy.ledger import json_safe
from abproxy.lineage import STATUS_WORDS, arm_status, arm_status_of_run
from abproxy.report import components as c
from abproxy.report import data
from abproxy.report.export import review_html
from report_fixtures import HARM, SHIP


@pytest.fixture(scope="module")
def snap(report_ws):
    con = duckdb.connect(str(report_ws / "data" / "report.duckdb"), read_only=True)
    yield con
    con.close()


def cli_json(capsys, *args):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def plain(value):
    return json.loads(json.dumps(json_safe(value), default=str))


@pytest.mark.parametrize("key", [SHIP, HARM])
def test_report_history_is_the_cli_history(report_ws, snap, capsys, key):
    cli = cli_json(capsys, "history", key, "--workspace", str(report_ws))
    view = data.experiment_view(snap, key)
    assert plain(view.run_history) == cli
    assert [r["run_id"] for r in cli] == list(view.runs["run_id"])     # one order, the latest run last
    assert cli[-1]["run_id"] == view.run["run_id"]
    rows = c.history_rows(view)
    assert [(r["run_id"], r["verdict"]) for r in rows] == [(r["run_id"], r["verdict"]) for r in reversed(cli)]


@pytest.mark.parametrize("key", [SHIP, HARM])
def test_report_and_export_what_changed_is_the_cli_diff(report_ws, snap, capsys, key):
    view = data.experiment_view(snap, key)
    before, after = list(view.runs["run_id"].iloc[-2:])
    cli = cli_json(capsys, "diff", before, after, "--workspace", str(report_ws))
    assert plain(view.changes) == cli
    changes = c.compare_runs(view)
    verdict = dict(changes)["Verdict"]
    d0 = cli["verdict"]["before"]["decision"] or cli["verdict"]["before"]["status"]
    d1 = cli["verdict"]["after"]["decision"] or cli["verdict"]["after"]["status"]
    assert verdict == (f"{d0} → {d1}" if d0 != d1 else f"unchanged ({d1})")
    assert dict(changes)["Data as of"] == f"{c.when(cli['data']['as_of']['before'])} → {c.when(cli['data']['as_of']['after'])}"
    html = unescape(review_html(snap, key))
    for aspect, text in changes:
        assert f"{aspect}</b>: {text}" in html


def test_leaderboard_is_the_same_for_the_cli_and_the_report(report_ws, snap, capsys):
    cli = cli_json(capsys, "models", "--workspace", str(report_ws))
    page = {(r["experiment"], r["variant"]): r for r in data.models(snap)}
    assert {(r["experiment"], r["variant"]) for r in cli["models"]} == set(page)
    for r in cli["models"]:
        shown = page[(r["experiment"], r["variant"])]
        assert (shown["verdict"], shown["outcome"]) == (r["status"], r["variant_status"])
        assert r["status_words"] == STATUS_WORDS[r["status"]] == c.VERDICTS[shown["verdict"]][2]
        assert [e["rel_effect"] for e in shown["effects"]] == \
            [e["rel_effect"] for e in r["effects"] if e["role"] in ("primary", "guardrail")]
    assert plain(data.offline_online(snap)) == cli["offline_vs_online"]


def test_one_status_vocabulary(report_ws, capsys):
    assert {code: words for code, (_, _, words) in c.VERDICTS.items()} == STATUS_WORDS
    cli = cli_json(capsys, "history", SHIP, "--workspace", str(report_ws))
    for r in cli:
        assert r["verdict_words"] == c.verdict_meaning(r["verdict"])
    assert main(["history", SHIP, "--workspace", str(report_ws)]) == 0
    printed = capsys.readouterr().out
    assert all(r["verdict_words"] in printed for r in cli)


def test_arm_status_is_one_rule():
    per = {"a": "ROLLBACK", "b": "NO_DETECTABLE_EFFECT"}
    assert arm_status("t", False, "SHIP", "t") == "SHIP"
    assert arm_status("a", False, "SHIP", "t", per_variant=per) == "ROLLBACK"
    assert arm_status("b", False, "SHIP", "t", per_variant=per) == "NOT_SHIPPED"
    assert arm_status("b", False, "ROLLBACK", None, per_variant=per) == "NOT_SHIPPED"
    assert arm_status("a", False, "ROLLBACK", None, per_variant=per) == "ROLLBACK"
    assert arm_status("a", False, "ROLLBACK") == "ROLLBACK"          # a run row has no per-arm words
    assert arm_status("c", True, "SHIP", "t") == "CONTROL"
    assert arm_status("t", False, None, status="failed") == "FAILED"
    assert arm_status_of_run("t", False, None) == "NOT_ANALYSED"
    assert arm_status_of_run("t", False, {"status": "ok", "decision": "SHIP", "ship_variant": "u"}) == "NOT_SHIPPED"
    assert set(STATUS_WORDS) >= {"SHIP", "NOT_SHIPPED", "ROLLBACK", "CONTROL", "FAILED", "NOT_ANALYSED",
                                 "KEEP_RUNNING", "NO_DETECTABLE_EFFECT", "INVALID"}


def test_models_page_names_the_experiment_key_once():
    from abproxy.report.models import experiment_cell

    row = {"experiment": "recsys-v2", "experiment_name": "recsys-v2", "variant": "v2", "experiment_status": "running"}
    assert experiment_cell(row) == "recsys-v2 · v2 · running"
    row["experiment_name"] = "Recsys v2"
    assert experiment_cell(row) == "Recsys v2 · recsys-v2 · v2 · running"
    assert not re.search(r"recsys-v2 · recsys-v2", experiment_cell({**row, "experiment_name": None}))
