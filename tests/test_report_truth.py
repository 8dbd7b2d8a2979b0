"""A report that never misleads (issue 11, items 6–16), on the simulated report workspace and on a
hand-made one, through AppTest, the HTML export and the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from handmade import HAND, SHIPPED, TITLES, handmade_ws  # noqa: F401
from report_fixtures import HARM, INVALID, SHIP, report_ws  # noqa: F401
from test_report_app import PAGE, page_text, run

BAD = re.compile(r"(?<![\w-])(nan|NaN|None|inf|-inf|\+inf)(?![\w-])")


def bad_tokens(text: str) -> list[str]:
    return sorted({m.group(0) for m in BAD.finditer(text)})


def snapshot(ws: Path):
    return duckdb.connect(str(ws / "data" / "report.duckdb"), read_only=True)


def experiment_page(ws, key, monkeypatch):
    return run(ws, "experiment", monkeypatch, experiment=key)


# ------------------------------------------------------------------ 6: no nan/None/inf, no doubled segment

@pytest.mark.parametrize("which", ["simulated", "handmade"])
def test_no_page_prints_nan_none_or_inf(which, report_ws, handmade_ws, monkeypatch):
    ws = report_ws if which == "simulated" else handmade_ws
    con = snapshot(ws)
    keys = [k for (k,) in con.execute("SELECT experiment FROM experiments").fetchall()]
    con.close()
    for page in ("overview", "catalog", "models", "data_health"):
        text = page_text(run(ws, page, monkeypatch))
        assert not bad_tokens(text), (page, bad_tokens(text))
    for key in keys:
        text = page_text(experiment_page(ws, key, monkeypatch))
        assert not bad_tokens(text), (key, bad_tokens(text))


def test_healthy_segments_show_no_red_box_and_harm_is_not_doubled(report_ws, monkeypatch):
    at = experiment_page(report_ws, SHIP, monkeypatch)
    assert not [e for e in at.error if "Harmed segments" in str(e.value)]
    at = experiment_page(report_ws, HARM, monkeypatch)
    box = " ".join(str(e.value) for e in at.error if "Harmed segments" in str(e.value))
    assert "country=DE" in box and "country=DE: country=DE" not in box.replace("\\", "")
    assert "nan" not in box


# ------------------------------------------------------------------ 7: one interval per decision metric

def test_the_page_shows_the_decision_interval_only(report_ws, monkeypatch):
    con = snapshot(report_ws)
    lo, hi = con.execute("""SELECT rel_ci_lo, rel_ci_hi FROM results r JOIN runs u USING (run_id)
        WHERE r.experiment = ? AND metric = 'spend_per_user' AND segment = ''
        ORDER BY u.as_of DESC, u.started_at DESC LIMIT 1""", [SHIP]).fetchone()
    last = con.execute("""SELECT s.rel_ci_lo, s.rel_ci_hi FROM series s JOIN runs u USING (run_id)
        WHERE s.experiment = ? AND metric = 'spend_per_user' AND kind = 'cumulative'
        ORDER BY u.as_of DESC, u.started_at DESC, s.day DESC LIMIT 1""", [SHIP]).fetchone()
    con.close()
    assert last == pytest.approx((lo, hi), rel=1e-9)      # the cumulative chart ends on the verdict's interval
    text = page_text(experiment_page(report_ws, SHIP, monkeypatch))
    assert "fixed-horizon interval" not in text
    # every line about the overall metric (segment rows name a segment 'dim=value', history rows a date)
    lines = [x for x in re.split(r"\n|\|\s*\|", text) if "=" not in x and "UTC" not in x]
    intervals = {m for x in lines for m in re.findall(r"Spend per user[^\n(|]*\(95% CI ([^)]*)\)", x)}
    assert len(intervals) == 1, intervals


# ------------------------------------------------------------------ 8: cautions

def test_a_ship_with_a_harmed_segment_says_so_everywhere(report_ws, monkeypatch, tmp_path):
    con = snapshot(report_ws)
    decision = con.execute("SELECT decision FROM runs WHERE experiment = ? ORDER BY as_of DESC, started_at DESC "
                           "LIMIT 1", [HARM]).fetchone()[0]
    con.close()
    at = experiment_page(report_ws, HARM, monkeypatch)
    banner = [str(w.value) for w in at.warning if "caution" in str(w.value)]
    if decision in ("SHIP", "KEEP_RUNNING", "NO_DETECTABLE_EFFECT"):
        assert banner and "Segment harmed" in banner[0] and "country=DE" in banner[0]
        overview = page_text(run(report_ws, "overview", monkeypatch))
        assert "with caution" in overview and "Segment harmed: country=DE" in overview


def test_cli_json_carries_cautions(handmade_ws, tmp_path, capsys):
    import shutil

    from abproxy.cli import main

    ws = tmp_path / "ws"
    shutil.copytree(handmade_ws, ws)
    assert main(["analyze", "--workspace", str(ws), "--json"]) in (0, 1)
    payload = json.loads(capsys.readouterr().out)
    for exp in payload["experiments"]:
        assert isinstance(exp["verdict"]["cautions"], list)


# ------------------------------------------------------------------ 9: shipped models

def test_a_shipped_model_is_kept_or_reverted(handmade_ws, monkeypatch):
    text = page_text(experiment_page(handmade_ws, SHIPPED, monkeypatch))
    assert "ship the variant" not in text and "→ ship " not in text
    assert any(w in text for w in ("keep the shipped model", "revert the shipped model", "lift has faded",
                                   "keep monitoring"))


# ------------------------------------------------------------------ 1 end to end: the negative guardrail

def test_the_negative_net_margin_guardrail_rolls_back(handmade_ws):
    con = snapshot(handmade_ws)
    decision, reasons = con.execute("SELECT decision, reasons FROM runs WHERE experiment = ? "
                                    "ORDER BY as_of DESC LIMIT 1", [HAND]).fetchone()
    rel, abs_ = con.execute("""SELECT rel_effect, abs_effect FROM results r JOIN runs u USING (run_id)
        WHERE r.experiment = ? AND metric = 'net_margin' AND segment = '' ORDER BY u.as_of DESC LIMIT 1""",
                            [HAND]).fetchone()
    con.close()
    assert abs_ < 0 and rel < 0
    assert decision == "ROLLBACK", reasons


# ------------------------------------------------------------------ 10: INVALID behind its reason

def test_invalid_scorecard_is_gated(report_ws, monkeypatch):
    at = experiment_page(report_ws, INVALID, monkeypatch)
    headers = [h.value for h in at.header]
    assert headers.index("Results (not trustworthy)") < headers.index("Scorecard")   # inside the gate
    assert any("cannot be trusted" in str(e.value) for e in at.error)


# ------------------------------------------------------------------ 12: units

def test_absolute_margin_guardrail_reads_in_points_everywhere(handmade_ws, monkeypatch):
    at = experiment_page(handmade_ws, HAND, monkeypatch)
    table = " ".join(str(m.value) for m in at.markdown if "Buyer rate" in str(m.value) and "|" in str(m.value))
    row = next(line for line in table.split("\n") if "Buyer rate" in line)
    assert " pt (95% CI" in row and "%" not in row.split("|")[6].replace("95%", ""), row


# ------------------------------------------------------------------ 13: health check list

def test_health_checks_problems_first_with_plain_titles_ok_folded(report_ws, monkeypatch):
    at = experiment_page(report_ws, SHIP, monkeypatch)
    lines = [str(m.value) for m in at.markdown if "-badge[" in str(m.value) and "**" in str(m.value)]
    assert not any("**event\\_missing**" in x or "**event_missing**" in x for x in lines)
    assert any(e.label.startswith("Passed checks") for e in at.expander)
    text = page_text(at)
    assert "Events that stopped arriving" in text
    assert "expected since)" not in text


# ------------------------------------------------------------------ 14: segments pooled into 'other'

def test_no_segment_row_is_the_whole_population_and_other_is_explained(handmade_ws, monkeypatch):
    con = snapshot(handmade_ws)
    dims = {d for (d,) in con.execute("SELECT DISTINCT segment FROM results WHERE experiment = ? AND segment <> ''",
                                      [HAND]).fetchall()}
    con.close()
    assert "platform" not in dims                          # every platform value was too small
    text = page_text(experiment_page(handmade_ws, HAND, monkeypatch))
    assert "platform=other" not in text
    assert "Not shown: platform" in text


# ------------------------------------------------------------------ 15: leaderboard

def test_leaderboard_sorts_by_outcome_and_gives_each_arm_its_status(report_ws, monkeypatch):
    from abproxy.history import arm_outcome

    assert arm_outcome("t", False, "running", {"status": "ok", "decision": "SHIP", "ship_variant": "t"}) == \
        "ship recommended"
    assert arm_outcome("t", False, "shipped", {"status": "ok", "decision": "SHIP", "ship_variant": "t"}) == "shipped"
    assert arm_outcome("c", True, "running", {"status": "ok", "decision": "SHIP", "ship_variant": "t"}) == "baseline"
    at = run(report_ws, "models", monkeypatch)
    table = next(str(m.value) for m in at.markdown if "| Model |" in str(m.value))
    outcomes = re.findall(r"badge\[([a-z ]+)\]", table)
    from abproxy.history import outcome_rank

    assert outcomes and [outcome_rank(o) for o in outcomes] == sorted(outcome_rank(o) for o in outcomes)
    assert "shipped" not in outcomes or "ship recommended" in outcomes


# ------------------------------------------------------------------ 16: user text as plain text

def test_user_text_renders_as_text(handmade_ws, monkeypatch):
    at = experiment_page(handmade_ws, HAND, monkeypatch)
    title = at.title[0].value
    assert "![logo]" not in title.replace("\\", "") or "\\!" in title or "\\[" in title
    assert "\\[" in title and "\\*" in title                 # escaped: no image, no emphasis
    assert ":\u2060x:" in title                                # the emoji shortcode is broken up
    from abproxy.report.components import md

    assert md("root:x:0").replace("\u2060", "").replace("\\", "") == "root:x:0"


def test_the_developer_toolbar_is_hidden():
    app = (Path(__file__).resolve().parent.parent / "abproxy" / "report" / "app.py").read_text()
    assert 'st.set_option("client.toolbarMode", "minimal")' in app


# ------------------------------------------------------------------ export

def test_review_export_has_no_nan_and_gates_invalid(report_ws):
    from abproxy.report.export import review_html

    con = snapshot(report_ws)
    try:
        for key in (SHIP, HARM, INVALID):
            html = review_html(con, key)
            text = re.sub(r"<[^>]+>", " ", html)
            assert not bad_tokens(text), (key, bad_tokens(text))
        assert "Results (not trustworthy)" in review_html(con, INVALID)
    finally:
        con.close()
