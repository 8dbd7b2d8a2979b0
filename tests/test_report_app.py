"""Every page of the Streamlit report, driven by AppTest on a simulated, analysed workspace.

The pages must show what a reader looks for as text: experiment names, verdicts, lifts with their
intervals, harmed segment names, model versions. Expected numbers come from the snapshot itself.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from report_fixtures import (HARM, INVALID, NAMES, NASTY, ROLLBACK, SHIP, empty_workspace, latest_reasons)

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
REPORT = ROOT / "abproxy" / "report"
PAGE = {name: f"abproxy/report/{name}.py" for name in ("overview", "experiment", "catalog", "models", "data_health")}


def unescape(text: str) -> str:
    """The text a reader sees: Markdown escapes and the invisible joiner that breaks :emoji: removed."""
    return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")


def page_text(at: AppTest) -> str:
    """All the text the page shows (Markdown escapes removed)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "success", "info", "warning", "error",
                 "code", "text"):
        parts += [str(el.value) for el in getattr(at, kind)]
    parts += [el.label for el in at.download_button]
    return unescape("\n".join(parts))


def run(workspace: Path, page: str | None = None, monkeypatch=None, **query) -> AppTest:
    monkeypatch.setenv("ABPROXY_WORKSPACE", str(workspace))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page:
        at.query_params.update(query)
        at.switch_page(PAGE[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def latest(ws: Path, key: str, metric: str = "spend_per_user", segment: str = "", value: str = "") -> dict:
    con = duckdb.connect(str(ws / "data" / "report.duckdb"), read_only=True)
    try:
        row = con.execute("""SELECT r.rel_effect, r.rel_ci_lo, r.rel_ci_hi, u.decision FROM results r
                             JOIN runs u USING (run_id) WHERE r.experiment = ? AND r.metric = ? AND r.segment = ?
                               AND r.segment_value = ? ORDER BY u.as_of DESC, u.started_at DESC LIMIT 1""",
                          [key, metric, segment, value]).fetchone()
    finally:
        con.close()
    return dict(zip(("rel", "lo", "hi", "decision"), row))


def lift_text(r: dict) -> str:
    return f"{r['rel'] * 100:+.1f}% (95% CI {r['lo'] * 100:+.1f}% to {r['hi'] * 100:+.1f}%)"


# --------------------------------------------------------------------------- the simulated stories

def test_fixture_tells_the_four_stories(report_ws):
    assert latest(report_ws, SHIP)["decision"] == "SHIP"
    assert latest(report_ws, ROLLBACK)["decision"] == "ROLLBACK"
    assert latest(report_ws, INVALID)["decision"] == "INVALID"
    de = latest(report_ws, HARM, segment="country", value="DE")
    assert de["hi"] < 0


# --------------------------------------------------------------------------- overview

def test_overview_shows_every_experiment_with_verdict_and_primary_lift(report_ws, monkeypatch):
    at = run(report_ws, monkeypatch=monkeypatch)
    text = page_text(at)
    assert at.title[0].value == "Rollout overview"
    for name in NAMES.values():
        assert name in text
    for decision in ("✔ SHIP", "✖ ROLLBACK", "⚠ INVALID"):
        assert decision in text
    assert lift_text(latest(report_ws, SHIP)) in text
    assert "rolled_back" in text                      # search-emb's status after the rollback
    assert "Snapshot published" in text and "latest event analysed" in text
    assert "units: control" in text and "days running" in text
    assert "Segment harmed: country=DE" in text             # ranker-v3's card carries the bias as a caution
    assert [b.label for b in at.download_button] == ["Download portfolio (CSV)"]
    assert all(not m.allow_html for m in at.markdown)


def test_overview_filters_by_verdict_and_status(report_ws, monkeypatch):
    at = run(report_ws, monkeypatch=monkeypatch)
    at.multiselect[1].set_value(["SHIP"]).run()
    text = page_text(at)
    assert "1 of 4 experiments" in text
    assert NAMES[SHIP] in text and NAMES[INVALID] not in text
    at.multiselect[1].set_value([]).run()
    at.multiselect[0].set_value(["rolled_back"]).run()
    text = page_text(at)
    assert NAMES[ROLLBACK] in text and NAMES[SHIP] not in text


def test_portfolio_has_every_run_with_its_primary_lift(report_ws):
    from abproxy.report import data

    con = duckdb.connect(str(report_ws / "data" / "report.duckdb"), read_only=True)
    try:
        frame = data.portfolio(con)
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()
    assert len(frame) == runs
    assert {"run_id", "experiment", "as_of", "decision", "primary_lift", "primary_lift_ci_lo"} <= set(frame.columns)
    ship = frame[frame["experiment"] == SHIP].sort_values("as_of")
    assert list(ship["decision"])[-1] == "SHIP"
    assert ship["primary_lift"].iloc[-1] == pytest.approx(latest(report_ws, SHIP)["rel"])
    assert frame.to_csv(index=False).startswith("run_id,")


# --------------------------------------------------------------------------- experiment page

def test_experiment_page_ship_verdict_scorecard_lineage_and_history(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=SHIP)
    text = page_text(at)
    assert at.title[0].value == NAMES[SHIP]
    assert "✔ SHIP" in at.success[0].value
    banner = unescape(at.success[0].value)
    assert all(reason in banner for reason in latest_reasons(report_ws, SHIP))
    assert "Spend per user" in text and "Refund rate" in text and "Buyer rate" in text
    assert lift_text(latest(report_ws, SHIP)) in text
    assert "▲ better, significant" in text
    assert "The two-tower model raises spend per user" in text
    assert "2.0.0" in text and "1.4.0" in text and "layers=4" in text and "s3://bucket/recsys/2026-10" in text
    assert "What changed since the previous run" in text
    assert "Exposure rows" in text and "Primary estimate Spend per user (treatment)" in text
    assert "Definitions**: unchanged" in unescape("\n".join(m.value for m in at.markdown)) or "unchanged (hash" in text
    assert "Download go/no-go review" in text
    assert "MDE (relative)" in text
    assert at.query_params["experiment"] == SHIP


def test_experiment_page_statistical_details_toggle(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=SHIP)
    assert "Variance (control / variant)" not in page_text(at)
    at.toggle[0].set_value(True).run()
    text = page_text(at)
    assert "Variance (control / variant)" in text and "CUPED variance cut" in text and "MDE (absolute)" in text
    assert "welch" in text or "z-proportion" in text


def test_experiment_page_names_the_harmed_segment(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=HARM)
    text = page_text(at)
    errors = unescape("\n".join(e.value for e in at.error))
    assert "Harmed segments" in errors and "country=DE" in errors
    assert "⚠ HARMED" in text
    assert lift_text(latest(report_ws, HARM, segment="country", value="DE")) in text
    assert "Cochran's Q" in text
    assert all(reason in text for reason in latest_reasons(report_ws, HARM))   # the verdict's reasons


def test_experiment_page_invalid_shows_the_failed_health_check(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=INVALID)
    text = page_text(at)
    assert "⚠ INVALID" in at.warning[0].value
    assert "Sample-ratio mismatch" in text
    assert "✖ FAIL" in text and "Traffic split (sample-ratio mismatch)" in text


def test_experiment_page_rollback_and_guardrail_margin(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=ROLLBACK)
    text = page_text(at)
    assert "✖ ROLLBACK" in at.error[0].value
    assert all(reason in unescape(at.error[0].value) for reason in latest_reasons(report_ws, ROLLBACK))
    assert lift_text(latest(report_ws, ROLLBACK, metric="refund_rate")) in text
    assert "▼ worse, significant" in text
    assert "Red ticks" in text                          # the forest plot draws the guardrail margin


def test_experiment_page_switches_series_metric(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=SHIP)
    assert "Spend per user on the last day, as the verdict reads it" in page_text(at)
    at.selectbox(key="series_metric").set_value("buyer_rate").run()
    assert "Buyer rate on the last day, as the verdict reads it" in page_text(at)


def test_experiment_selectbox_updates_query_param(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=SHIP)
    at.selectbox(key="experiment_key").set_value(HARM).run()
    assert at.title[0].value == NAMES[HARM]
    assert at.query_params["experiment"] == HARM


def test_experiment_unknown_key_falls_back_politely(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment="no-such-test")
    assert "There is no experiment no-such-test" in unescape(at.warning[0].value)
    assert at.title[0].value in NAMES.values()


def test_experiment_page_script_runs_on_its_own(report_ws, monkeypatch):
    monkeypatch.setenv("ABPROXY_WORKSPACE", str(report_ws))
    at = AppTest.from_file(str(REPORT / "experiment.py"), default_timeout=60)
    at.query_params["experiment"] = HARM
    at.run()
    assert not at.exception
    assert "country=DE" in page_text(at)


def test_user_text_is_escaped_not_rendered(report_ws, monkeypatch):
    at = run(report_ws, "experiment", monkeypatch, experiment=ROLLBACK)
    assert unescape(at.title[0].value) == NAMES[ROLLBACK]  # st.title shows it as text (escaped Markdown)
    assert at.title[0].value != NAMES[ROLLBACK]
    assert all(not m.allow_html for m in at.markdown)
    overview = run(report_ws, monkeypatch=monkeypatch)
    raw = "\n".join(m.value for m in overview.markdown)
    assert r"\<b\>" in raw and "<b>&" not in raw
    for path in [*REPORT.glob("*.py"), APP]:
        assert "unsafe_allow_html=True" not in path.read_text(), path


@pytest.mark.parametrize("text", [NASTY, NAMES[ROLLBACK], "# not a heading", "1. not a list", "- nor this",
                                  "back\\slash", "spend_per_user", "_emph_ and **strong**", ":smile: :blue[x]",
                                  "line\nbreak | cell", "> quote", "$x^2$", "&amp; &#60;"])
def test_md_escapes_every_markdown_construct(text):
    from abproxy.report.components import md

    escaped = md(text)
    assert unescape(escaped) == text.replace("\n", " ")
    assert "\n" not in escaped and not re.search(r"(?<!\\)[*`\[\]<>|$~]", escaped)
    assert "spend_per_user" == md("spend_per_user")      # intraword underscores stay readable


# --------------------------------------------------------------------------- other pages

def test_metrics_catalog_shows_definition_sql_owner_and_users(report_ws, monkeypatch):
    at = run(report_ws, "catalog", monkeypatch)
    text = page_text(at)
    assert at.title[0].value == "Metrics catalog"
    assert "Spend per user (spend_per_user)" in text
    assert "Owner: **growth-analytics**" in text
    assert "Purchase value per exposed user" in text
    assert NASTY in text                                     # escaped, so shown literally
    assert "Numerator: sum of purchase" in text and "Denominator: count of session_start" in text
    assert f"{NAMES[SHIP]} ({SHIP})" in text
    sql = [c.value for c in at.code if c.language == "sql"]
    assert len(sql) == 6 and all("SELECT" in s.upper() for s in sql)
    # the preview panel, computed by the job into the snapshot (carried over by the ingest-only pass)
    assert "Per-unit value: p50" in text and "MDE at the current traffic" in text and "7 days" in text
    assert len(at.dataframe) >= 5
    at.text_input[0].set_value("refund").run()
    assert len([c for c in at.code if c.language == "sql"]) == 1


def test_models_leaderboard_lists_every_version_with_its_verdict(report_ws, monkeypatch):
    at = run(report_ws, "models", monkeypatch)
    text = page_text(at)
    table = unescape(next(m.value for m in at.markdown if "| Model |" in m.value))
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "**recsys 2.0.0**" in rows
    assert any(w in rows["**recsys 2.0.0**"] for w in ("ship recommended", "collecting data"))
    assert lift_text(latest(report_ws, SHIP)) in rows["**recsys 2.0.0**"]
    assert "rolled back" in rows["**search 1.1.0**"] and "rolled_back" in rows["**search 1.1.0**"]
    assert "invalid data" in rows["**churn 6.0.0**"]
    assert "**recsys 1.4.0**" not in rows                    # baselines hidden by default
    at.toggle[0].set_value(True).run()
    table = unescape(next(m.value for m in at.markdown if "| Model |" in m.value))
    assert "recsys 1.4.0" in table and "baseline" in table
    assert "Download leaderboard (CSV)" in text


def test_data_health_shows_ledger_rejections_failures_and_jobs(report_ws, monkeypatch):
    at = run(report_ws, "data_health", monkeypatch)
    text = page_text(at)
    assert at.title[0].value == "Data health"
    assert "events/broken.csv" in text and "missing required columns unit_id" in text
    assert "unparseable timestamp in occurred_at" in text and "missing unit_id" in text
    assert "late-batch.csv row 2" in text and "not-a-time" in text        # an example of a rejected row
    assert "Snapshot published" in text and "Latest event analysed" in text
    assert "| run |" in text and "| ingest |" in text                      # the scheduler's job runs
    assert "✖ failed" in text                                              # broken.csv fails every job
    assert len(at.dataframe) == 1


# --------------------------------------------------------------------------- no snapshot, broken config

def test_empty_workspace_explains_how_to_start(tmp_path, monkeypatch):
    ws = empty_workspace(tmp_path / "fresh")
    for page in (None, *PAGE):
        at = run(ws, page if page != "overview" else None, monkeypatch)
        text = page_text(at)
        assert at.title[0].value == "Welcome to abproxy", page
        assert "inbox/exposures/" in text and "abproxy run" in text and "make run" in text


def test_missing_workspace_folder_is_not_an_error(tmp_path, monkeypatch):
    at = run(tmp_path / "nowhere", monkeypatch=monkeypatch)
    text = page_text(at)
    assert "Welcome to abproxy" in text
    assert "abproxy.yaml" in text            # the polite configuration message


def test_broken_config_falls_back_to_the_default_snapshot(report_ws, tmp_path, monkeypatch):
    ws = tmp_path / "broken"
    (ws / "data").mkdir(parents=True)
    shutil.copy(report_ws / "data" / "report.duckdb", ws / "data" / "report.duckdb")
    (ws / "abproxy.yaml").write_text("metrics: {spend: {type: nonsense}}\nexperiments: [\n")
    at = run(ws, monkeypatch=monkeypatch)
    text = page_text(at)
    assert "has a problem" in text and "not valid YAML" in text
    assert NAMES[SHIP] in text and "✔ SHIP" in text


def test_a_newly_published_snapshot_is_read_at_once(report_ws, tmp_path, monkeypatch):
    """The cache is keyed on the snapshot file's identity: an atomic replace shows up on the next run."""
    ws = tmp_path / "live"
    (ws / "data").mkdir(parents=True)
    shutil.copy(report_ws / "abproxy.yaml", ws / "abproxy.yaml")
    shutil.copy(report_ws / "data" / "report.duckdb", ws / "data" / "report.duckdb")
    at = run(ws, monkeypatch=monkeypatch)
    assert NAMES[SHIP] in page_text(at)
    fresh = tmp_path / "next.duckdb"
    shutil.copy(report_ws / "data" / "report.duckdb", fresh)
    con = duckdb.connect(str(fresh))
    con.execute("UPDATE experiments SET name = 'Recommendation model v3' WHERE experiment = ?", [SHIP])
    con.close()
    os.replace(fresh, ws / "data" / "report.duckdb")
    at.run()
    assert "Recommendation model v3" in page_text(at) and NAMES[SHIP] not in page_text(at)


def test_a_damaged_snapshot_is_reported_not_a_traceback(tmp_path, monkeypatch):
    ws = empty_workspace(tmp_path / "damaged")
    (ws / "data" / "report.duckdb").write_bytes(b"this is not a DuckDB file" * 100)
    at = run(ws, monkeypatch=monkeypatch)
    assert at.title[0].value == "The report snapshot cannot be read"
    assert "abproxy run" in page_text(at)


# --------------------------------------------------------------------------- speed

class _CountingConnection:
    """A real snapshot connection that records the SQL it is given (the page's query count)."""

    def __init__(self, con, statements: list[str]):
        self._con, self._statements = con, statements

    def execute(self, sql, *args, **kwargs):
        self._statements.append(sql)
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


def test_experiment_page_with_24_metrics_runs_no_query_per_metric(report_ws, tmp_path, monkeypatch):
    """Quadruple every metric of the SHIP experiment (24 metrics): a cold load of its page runs the
    same snapshot queries as with 6 metrics, so the page's cost does not grow by a query per metric.
    (A structural check: timings on a shared machine belong to benchmarks, not to tests.)"""
    import streamlit as st

    from abproxy.report import snapshot

    ws = tmp_path / "wide"
    (ws / "data").mkdir(parents=True)
    shutil.copy(report_ws / "abproxy.yaml", ws / "abproxy.yaml")
    src = report_ws / "data" / "report.duckdb"
    con = duckdb.connect(str(ws / "data" / "report.duckdb"))
    con.execute(f"ATTACH '{src}' AS src (READ_ONLY)")
    suffix = "SELECT unnest(['', '_b', '_c', '_d']) AS s"
    quadrupled = {"results": "metric || s AS metric", "series": "metric || s AS metric",
                  "metrics": "metric || s AS metric, name || s AS name"}
    for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'").fetchall():
        rows = f"* REPLACE ({quadrupled[table]}) FROM src.{table}, ({suffix})" if table in quadrupled else f"* FROM src.{table}"
        con.execute(f"CREATE TABLE {table} AS SELECT {rows}")
    con.close()
    statements: list[str] = []
    opened = snapshot.open_snapshot
    monkeypatch.setattr(snapshot, "open_snapshot", lambda path: _CountingConnection(opened(path), statements))

    def cold_load(workspace: Path) -> tuple[AppTest, list[str]]:
        monkeypatch.setenv("ABPROXY_WORKSPACE", str(workspace))
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        at.query_params["experiment"] = SHIP
        at.switch_page(PAGE["experiment"]).run()
        st.cache_data.clear()
        statements.clear()
        at.run()
        assert not at.exception and "has a problem" not in page_text(at)
        return at, list(statements)

    wide, wide_sql = cold_load(ws)
    assert "Spend per user_d" in page_text(wide) and "Spend per user_b" in page_text(wide)
    narrow, narrow_sql = cold_load(report_ws)
    assert "Spend per user_d" not in page_text(narrow)
    assert narrow_sql, "the page read nothing through the snapshot"
    assert len(wide_sql) == len(narrow_sql), (len(wide_sql), len(narrow_sql))
