"""The go/no-go review export: one self-contained, escaped HTML file per experiment."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import duckdb
import pytest

from abproxy.report.export import nice_ticks, review_html, write_review
from abproxy.workspace import Workspace
from report_fixtures import HARM, INVALID, NAMES, ROLLBACK, SHIP, latest_reasons

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SVG_LEAVES = {"line", "circle", "polygon", "polyline", "rect", "path"}


class Page(HTMLParser):
    """Collects tags, attributes and text, and checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "style":
            self._in_style = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def con(report_ws):
    connection = duckdb.connect(str(report_ws / "data" / "report.duckdb"), read_only=True)
    yield connection
    connection.close()


def overall_labels(con, key: str) -> list[str]:
    return [r[0] for r in con.execute("""
        SELECT DISTINCT coalesce(m.name, r.metric) FROM results r LEFT JOIN metrics m USING (metric)
        WHERE r.run_id = (SELECT run_id FROM runs WHERE experiment = ? ORDER BY as_of DESC, started_at DESC LIMIT 1)
          AND r.segment = ''""", [key]).fetchall()]


def assert_self_contained(html: str, page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "img"), tag
        for name in ("src", "href", "xlink:href", "srcset", "action", "data"):
            value = attrs.get(name) or ""
            assert not re.search(r"(https?:)?//", value), (tag, name, value)
        style = attrs.get("style") or ""
        assert "url(" not in style and "@import" not in style, style
    css = "".join(page.styles)
    assert "url(" not in css and "@import" not in css
    assert not re.search(r"https?://", html), "no web address anywhere in the file"


@pytest.mark.parametrize("key, verdict", [(SHIP, "✔ SHIP"), (ROLLBACK, "✖ ROLLBACK"), (INVALID, "⚠ INVALID")])
def test_review_parses_and_holds_verdict_scorecard_and_no_external_request(con, key, verdict):
    html = review_html(con, key)
    page = parse(html)
    text = " ".join(page.text)
    assert html.startswith("<!DOCTYPE html>")
    assert not page.problems and not page.stack, (page.problems, page.stack)
    assert verdict in text
    for label in overall_labels(con, key):
        assert label in text
    run_id = con.execute("SELECT run_id FROM runs WHERE experiment = ? ORDER BY as_of DESC, started_at DESC LIMIT 1",
                         [key]).fetchone()[0]
    assert run_id in text
    reasons = json.loads(con.execute("SELECT reasons FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])
    assert all(reason in text for reason in reasons)
    for section in ("Scorecard", "Health checks", "Model lineage", "Data watermark", "Run history"):
        assert section in text
    assert_self_contained(html, page)
    svgs = [t for t, _ in page.tags if t == "svg"]
    assert svgs, "the forest plot is drawn as inline SVG"


def test_review_of_ship_has_lift_lineage_watermark_and_changes(con, report_ws):
    html = review_html(con, SHIP)
    text = " ".join(parse(html).text)
    rel, lo, hi = con.execute("""SELECT rel_effect, rel_ci_lo, rel_ci_hi FROM results r JOIN runs u USING (run_id)
                                 WHERE r.experiment = ? AND metric = 'spend_per_user' AND segment = ''
                                 ORDER BY u.as_of DESC LIMIT 1""", [SHIP]).fetchone()
    assert f"{rel * 100:+.1f}% (95% CI {lo * 100:+.1f}% to {hi * 100:+.1f}%)" in text
    assert all(reason in text for reason in latest_reasons(report_ws, SHIP))
    assert "1.4.0" in text and "2.0.0" in text and "layers=4" in text
    rows = con.execute("""SELECT json_extract(watermark, '$.exposure_rows')::BIGINT FROM runs WHERE experiment = ?
                          ORDER BY as_of DESC LIMIT 1""", [SHIP]).fetchone()[0]
    assert "Exposure rows" in text and f"{rows:,}" in text
    assert "What changed since the previous run" in text
    assert "▲ better, significant" in text


def test_review_highlights_the_harmed_segment(con):
    page = parse(review_html(con, HARM))
    text = " ".join(page.text)
    assert "Harmed segments" in text and "country=DE" in text
    harmed_rows = [a for t, a in page.tags if t == "tr" and a.get("class") == "harmed"]
    assert harmed_rows


def test_review_draws_guardrail_margins_and_marker_shapes(con):
    page = parse(review_html(con, ROLLBACK))
    svg_titles = " ".join(page.text)
    assert "guardrail margin" in svg_titles
    polygons = [a for t, a in page.tags if t == "polygon"]
    assert polygons, "significant effects are triangles, not only coloured dots"


def test_user_text_is_escaped(con):
    html = review_html(con, ROLLBACK)
    assert "Search embeddings &lt;b&gt;&amp; refunds&lt;/b&gt;" in html
    assert "<b>&amp; refunds</b>" not in html and "<b>& refunds</b>" not in html
    assert NAMES[ROLLBACK] in " ".join(parse(html).text)


def test_write_review_writes_one_file_and_names_known_keys(report_ws, tmp_path):
    ws = Workspace.open(report_ws)
    out = write_review(ws, SHIP, tmp_path / "out" / "review.html")
    assert out == tmp_path / "out" / "review.html" and out.is_file()
    assert "✔ SHIP" in out.read_text(encoding="utf-8")
    with pytest.raises(KeyError) as err:
        write_review(ws, "no-such-experiment", tmp_path / "x.html")
    message = err.value.args[0]
    assert "no-such-experiment" in message and all(k in message for k in (SHIP, ROLLBACK, INVALID, HARM))
    assert not (tmp_path / "x.html").exists()


def test_cli_report_command(report_ws, tmp_path):
    from abproxy.cli import main

    target = tmp_path / "cli-review.html"
    assert main(["report", HARM, "-o", str(target), "--workspace", str(report_ws)]) == 0
    assert "country=DE" in target.read_text(encoding="utf-8")
    assert main(["report", "nope", "-o", str(tmp_path / "n.html"), "--workspace", str(report_ws)]) != 0


def test_experiment_without_runs_gets_a_placeholder_review(report_ws, tmp_path):
    snapshot = tmp_path / "report.duckdb"
    shutil.copy(report_ws / "data" / "report.duckdb", snapshot)
    con = duckdb.connect(str(snapshot))
    con.execute("DELETE FROM runs WHERE experiment = ?", [INVALID])
    html = review_html(con, INVALID)
    con.close()
    text = " ".join(parse(html).text)
    assert "Not analysed yet" in text and "6.0.0" in text


def test_nice_ticks():
    assert nice_ticks(-3.2, 11.7) == [-2.5, 0.0, 2.5, 5.0, 7.5, 10.0]
    assert nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
