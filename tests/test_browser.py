"""The report in a real browser: `streamlit run app.py` on the simulated workspace, driven by
headless Chromium (Debian's /usr/bin/chromium through Python Playwright). Saves the screenshots
in the `docs_out` folder (a temp folder; docs/ under `make docs`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from processes import free_port, stop, wait_healthy
from report_fixtures import HARM, NAMES, NASTY, SHIP, latest_reasons

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-gpu"]
TIMEOUT_MS = 120_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(report_ws, tmp_path_factory):
    with serving(report_ws, tmp_path_factory.mktemp("streamlit") / "streamlit.log") as url:
        yield url


def launched_chromium():
    """Headless Chromium (Debian's) through playwright, closed at the end; skips when it is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium()


HEIGHT_JS = ("() => Math.max(document.querySelector('[data-testid=\"stMain\"]').scrollHeight, "
             "document.body.scrollHeight)")


def fit_viewport(page) -> None:
    """Streamlit scrolls inside its main container: grow the viewport to the content so every
    element (charts render lazily) is drawn and the screenshot holds the whole page."""
    page.set_viewport_size({"width": 1400, "height": min(int(page.evaluate(HEIGHT_JS)) + 40, 16000)})


def open_page(browser, url: str, heading: str, charts: int = 0):
    """Load `url`, wait for `heading`, the end of the script run and `charts` drawn Vega charts;
    return (page, text of the main area)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_text(heading, exact=True).first.wait_for()
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
    page.wait_for_function("document.querySelector('[data-testid=\"stMain\"]').innerText.length > 200")
    fit_viewport(page)
    page.wait_for_function(f"document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= {charts}")
    page.wait_for_timeout(500)
    fit_viewport(page)
    return page, main.inner_text()


def screenshot(page, path: Path) -> Path:
    """The whole page as a PNG at `path` (its folder is created)."""
    fit_viewport(page)
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def test_overview_in_a_real_browser(server, browser, docs_out):
    page, text = open_page(browser, server + "/", "Rollout overview", charts=1)
    try:
        for name in NAMES.values():
            assert name in text                      # user text shown literally, HTML not interpreted
        for verdict in ("SHIP", "ROLLBACK", "INVALID", "KEEP_RUNNING"):
            assert verdict in text
        assert "\\" not in text, "Markdown escapes must not leak into the page"
        assert "Download portfolio (CSV)" in text
        assert screenshot(page, docs_out / "screenshots" / "report-overview.png").stat().st_size > 10_000
    finally:
        page.close()


def test_experiment_page_in_a_real_browser(server, browser, report_ws, docs_out):
    page, text = open_page(browser, f"{server}/experiment?experiment={SHIP}", NAMES[SHIP], charts=5)
    try:
        assert "✔ SHIP" in text
        assert latest_reasons(report_ws, SHIP)[0] in text
        assert "Spend per user" in text and "Refund rate" in text
        assert "Download go/no-go review" in text
        assert "\\" not in text
        assert page.locator(".vega-embed").count() >= 5, "forest, effect over time, segments and history charts"
        assert screenshot(page, docs_out / "screenshots" / "report-experiment.png").stat().st_size > 10_000
    finally:
        page.close()


def test_harmed_segment_in_a_real_browser(server, browser):
    page, _ = open_page(browser, f"{server}/experiment?experiment={HARM}", NAMES[HARM])
    try:
        # the segments section is drawn below the charts: on a loaded machine the script may still be
        # running when the status widget first detaches, so wait for the section itself (or time out)
        main = page.locator('[data-testid="stMain"]')
        main.get_by_text("Harmed segments").first.wait_for()
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
        text = main.inner_text()
        assert "Harmed segments" in text and "country=DE" in text
        assert "HARMED" in text
    finally:
        page.close()


@pytest.mark.parametrize("path, heading, expected, shot", [
    ("/metrics", "Metrics catalog", ["Spend per user (spend_per_user)", "growth-analytics", "Generated SQL", NASTY],
     "metrics.png"),
    ("/models", "Model leaderboard", ["recsys", "2.0.0", "rolled back", "invalid data", "rolled_back"], "models.png"),
    ("/data-health", "Data health", ["events/broken.csv", "missing required columns", "unparseable timestamp"],
     "data-health.png"),
])
def test_other_pages_in_a_real_browser(server, browser, docs_out, path, heading, expected, shot):
    page, text = open_page(browser, server + path, heading)
    try:
        for item in expected:
            assert item in text, item
        assert "\\" not in text
        screenshot(page, docs_out / "screenshots" / shot)
    finally:
        page.close()


# --------------------------------------------------------------------------- every page, read as a reader (issue 11)

import contextlib  # noqa: E402
import re  # noqa: E402

from handmade import HAND, TITLES, handmade_ws  # noqa: E402,F401

BAD_TOKENS = re.compile(r"(?<![\w-])(nan|NaN|None|inf|-inf|\+inf)(?![\w-])")
VEGA_WARNING = re.compile(r"infinite extent|WARN|Vega|vega", re.I)


@contextlib.contextmanager
def serving(workspace: Path, log: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ABPROXY_WORKSPACE"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", "--", "--workspace", str(workspace)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, 15)


def experiment_keys(workspace: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(workspace / "data" / "report.duckdb"), read_only=True)
    try:
        return [k for (k,) in con.execute("SELECT experiment FROM experiments ORDER BY 1").fetchall()]
    finally:
        con.close()


def read_every_page(browser, url: str, keys: list[str]) -> dict[str, str]:
    """Open every page (each experiment's too) and fail on nan/None/inf in the text, a Vega warning in
    the console, or Streamlit's Deploy button; returns the text of each page."""
    pages = [("/", "Rollout overview"), ("/metrics", "Metrics catalog"), ("/models", "Model leaderboard"),
             ("/data-health", "Data health")] + [(f"/experiment?experiment={k}", None) for k in keys]
    texts = {}
    for path, heading in pages:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(url + path)
            main = page.locator('[data-testid="stMain"]')
            if heading:
                main.get_by_text(heading, exact=True).first.wait_for()
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
            page.wait_for_function("document.querySelector('[data-testid=\"stMain\"]').innerText.length > 200")
            fit_viewport(page)
            page.wait_for_timeout(1500)
            text = main.inner_text().replace("\u2060", "")
            texts[path] = text
            assert not BAD_TOKENS.findall(text), (path, sorted(set(BAD_TOKENS.findall(text))))
            vega = [m for m in console if VEGA_WARNING.search(m) and m.split(":")[0] in ("warning", "error")]
            assert not vega, (path, vega)
            assert page.locator('[data-testid="stAppDeployButton"]').count() == 0, "the Deploy button is shown"
            assert "Deploy" not in page.locator("header").inner_text() if page.locator("header").count() else True
            assert page.locator('img[src*="example.invalid"]').count() == 0, "a remote image in user text was fetched"
        finally:
            page.close()
    return texts


def test_every_page_of_the_simulated_workspace_reads_cleanly(server, browser, report_ws):
    read_every_page(browser, server, experiment_keys(report_ws))


def test_every_page_of_a_handmade_workspace_reads_cleanly(browser, handmade_ws, tmp_path):
    with serving(handmade_ws, tmp_path / "streamlit.log") as url:
        texts = read_every_page(browser, url, experiment_keys(handmade_ws))
    title = texts[f"/experiment?experiment={HAND}"]
    assert "root:x:0" in title and "![logo](http://example.invalid/x.png)" in title and "*stars*" in title
