"""The demo tells its story: each experiment gets the verdict (and warning) it was built for."""
from __future__ import annotations

import datetime as dt

import pytest

from abproxy.demo import build_demo, live_batch
from abproxy.jobs import run_job
from abproxy.workspace import Workspace

pytestmark = pytest.mark.slow

EXPECTED = {
    "recsys-v2": "SHIP",
    "image-tagger": "NO_DETECTABLE_EFFECT",
    "ranker-v3": "ROLLBACK",
    "churn-gbm": "INVALID",
    "feed-v5": "KEEP_RUNNING",
    "pricing-nn": "SHIP",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    build_demo(root, now=now)
    ws = Workspace.open(root)
    result = run_job(ws, "run", as_of=now, on_runs=None)
    return ws, {r.experiment: r for r in result.runs}, result


def test_demo_is_large_enough_and_loads_cleanly(demo):
    ws, runs, result = demo
    assert result.ingest.files_failed == 0 and result.ingest.rows_rejected == 0
    assert sum(sum(r.units.values()) + r.excluded_multi for r in runs.values()) >= 200_000


@pytest.mark.parametrize("key,decision", sorted(EXPECTED.items()))
def test_demo_verdicts(demo, key, decision):
    _, runs, _ = demo
    run = runs[key]
    assert run.status == "ok", run.error
    assert run.verdict.decision == decision, run.verdict.reasons


def test_ship_names_the_variant_and_the_srm_experiment_says_why(demo):
    _, runs, _ = demo
    assert runs["recsys-v2"].verdict.ship_variant == "treatment"
    assert "Sample-ratio mismatch" in " ".join(runs["churn-gbm"].verdict.reasons)
    assert "more" in runs["feed-v5"].verdict.reasons[0]


def test_bias_warning_names_the_harmed_country(demo):
    _, runs, _ = demo
    harms = [c for c in runs["pricing-nn"].health if c.check == "segment_harm"]
    assert harms and all(c.status == "warn" for c in harms)
    assert any(c.segment == "country=DE" for c in harms)


def test_shipped_model_with_holdback_is_analysed_and_its_fading_lift_is_flagged(demo):
    _, runs, _ = demo
    run = runs["search-emb"]
    assert run.status == "ok"
    drift = [c for c in run.health if c.check in ("novelty", "launch_decay", "distribution_drift") and c.status != "ok"]
    assert drift, [(c.check, c.status, c.detail) for c in run.health]


def test_live_mode_drops_new_files_that_load(demo, tmp_path):
    ws, _, _ = demo
    files = live_batch(ws.root, tick=0, units=200)
    assert {f.parent.name for f in files} == {"exposures", "events"}
    result = run_job(ws, "ingest", on_runs=None)
    assert result.ingest.files_loaded == len(files) and result.ingest.files_failed == 0
    assert result.ingest.rows_rejected == 0


@pytest.mark.browser
def test_demo_report_in_a_real_browser_makes_the_readme_screenshots(demo, tmp_path, docs_out):
    """The README's screenshots: the demo workspace served by `streamlit run app.py` in Chromium
    (started by test_browser's `serving()`, with its Chromium settings)."""
    from test_browser import ARGS, CHROMIUM, experiment_keys, open_page, read_every_page, screenshot, serving

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium: make browser)")
    from playwright.sync_api import sync_playwright

    ws, runs, _ = demo
    with serving(ws.root, tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page, text = open_page(browser, url + "/", "Rollout overview", charts=1)
            for key, decision in EXPECTED.items():
                assert decision in text and key in text
            screenshot(page, docs_out / "screenshots" / "overview.png")
            page.close()
            page, text = open_page(browser, f"{url}/experiment?experiment=pricing-nn",
                                   "Price suggestion network", charts=3)
            assert "SHIP" in text and "country=DE" in text and "caution" in text
            screenshot(page, docs_out / "screenshots" / "experiment.png")
            page.close()
            # every page of the demo, read as a reader: no nan/None/inf, no Vega warning, no Deploy button
            read_every_page(browser, url, experiment_keys(ws.root))
        finally:
            browser.close()
    # the review example in docs/ is the demo's SHIP-with-caution experiment
    from abproxy.report.export import write_review

    review = docs_out / "review-example.html"
    write_review(ws, "pricing-nn", review)
    html = review.read_text()
    assert "Price suggestion network" in html and "SHIP" in html
