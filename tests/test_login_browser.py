"""The report behind Streamlit's OIDC login, for real (issue 13, item 7): `abproxy serve` with
`auth:` in abproxy.yaml, a local OpenID provider (oidc-provider-mock, started by the test on a free
port) and headless Chromium. Anonymous → the login page only; an allowed user → the report;
another user → refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from processes import free_port, stop, wait_healthy
from test_browser import TIMEOUT_MS, launched_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def provider(monkeypatch):
    oidc = pytest.importorskip("oidc_provider_mock")
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")   # the local provider speaks plain http
    with oidc.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture()
def served(report_ws, provider, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(report_ws, root, symlinks=True)
    config = yaml.safe_load((root / "abproxy.yaml").read_text())
    config["auth"] = {"server_metadata_url": f"{provider}/.well-known/openid-configuration",
                      "client_id": "abproxy-report", "allowed_emails": ["pm@example.com"],
                      "allowed_domains": ["review.example"]}
    (root / "abproxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "ABPROXY_OIDC_CLIENT_SECRET": "test-client-secret",
           "ABPROXY_COOKIE_SECRET": "a-long-random-cookie-secret-for-the-test",
           "ABPROXY_SCHEDULE_SECONDS": "3600", "ABPROXY_ANALYZE_SECONDS": "3600"}
    env.pop("ABPROXY_WORKSPACE", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "abproxy.cli", "serve", "--workspace", str(root),
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log, seconds=120)
        yield f"http://localhost:{port}", log
    finally:
        stop(proc, 30)


@pytest.fixture()
def browser():
    yield from launched_chromium()


def settled(page) -> str:
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
    page.wait_for_timeout(300)
    return page.locator('[data-testid="stMain"]').inner_text()


def log_in(browser, url: str, email: str):
    context = browser.new_context()      # a fresh cookie jar per user
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("Log in to read the experiment report").wait_for()
    page.get_by_role("button", name="Log in").click()
    page.locator('input[name="sub"]').fill(email)     # the provider's own authorization form
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{url}/**")
    return context, page


def test_anonymous_allowed_and_other_users(served, browser):
    url, log = served
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/experiment?experiment=winner")
    page.get_by_text("Log in to read the experiment report").wait_for()
    text = settled(page)
    assert "Log in to read the experiment report" in text
    assert "Spend per user" not in text and "SHIP" not in text and "Workspace:" not in page.content()

    context, page = log_in(browser, url, "pm@example.com")
    page.get_by_text("Signed in as pm@example.com").wait_for()
    text = settled(page)
    assert "Log in" not in text and "Access refused" not in text
    assert "Overview" in page.locator('[data-testid="stSidebar"]').inner_text()
    context.close()

    context, page = log_in(browser, url, "lead@review.example")          # an allowed domain
    page.get_by_text("Signed in as lead@review.example").wait_for()
    context.close()

    context, page = log_in(browser, url, "mallory@evil.example")
    page.get_by_text("Access refused").wait_for()
    text = settled(page)
    assert "mallory@evil.example may not read this report" in text
    assert "Spend per user" not in text and "Signed in as" not in page.content()
    context.close()
    assert "test-client-secret" not in log.read_text()
