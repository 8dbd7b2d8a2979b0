"""Webhook deliveries never leak credentials (issue 13, item 8): a redirect to another host is not
followed when the request carries credentials, `user:pass@` URLs deliver with Basic auth, and no
secret reaches a log line or a Delivery. Real local HTTP servers on free ports."""
from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from abproxy import notify
from abproxy.config import Notifications
from abproxy.notify import deliver


class Server:
    """Records (method, path, headers, body) of every request; `redirects[path] = (code, url)`."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.redirects: dict[str, tuple[int, str]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                server.requests.append((self.command, self.path, dict(self.headers), body))
                if self.path in server.redirects:
                    code, url = server.redirects[self.path]
                    self.send_response(code)
                    self.send_header("Location", url)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _answer

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.http.server_address[1]}{path}"

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture()
def servers():
    pair = Server(), Server()
    yield pair
    for s in pair:
        s.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF_SECONDS", 0.01)


def send(webhooks, retries=0):
    return deliver(Notifications(webhooks=webhooks, retries=retries), [{"experiment": "exp", "x": 1}],
                   wait_seconds=10)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_with_credentials_is_a_failed_delivery(servers, caplog, code):
    hook, elsewhere = servers
    hook.redirects["/hook"] = (code, elsewhere.url("/steal"))
    caplog.set_level(logging.INFO, logger="abproxy.notify")
    [d] = send([{"url": hook.url("/hook"), "headers": {"Authorization": "Bearer SECRET-TOKEN"}}])
    assert not d.ok and d.attempts == 1
    assert f"HTTP {code}" in d.error and "not followed" in d.error
    assert elsewhere.requests == [], "the token went to another host"
    assert "SECRET-TOKEN" not in caplog.text and "giving up" in caplog.text


def test_a_basic_auth_url_delivers_and_its_password_is_never_logged(servers, caplog):
    hook, _ = servers
    caplog.set_level(logging.INFO, logger="abproxy.notify")
    [d] = send([hook.url("/hook?token=QUERYSECRET", userinfo="bot:p%40ss-SECRET@")])
    assert d.ok, d.error
    [(method, path, headers, body)] = hook.requests
    assert method == "POST" and json.loads(body)["experiment"] == "exp"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"bot:p@ss-SECRET").decode()
    assert "SECRET" not in d.target and "bot" not in d.target


def test_failures_of_a_basic_auth_url_do_not_log_the_password(caplog):
    caplog.set_level(logging.INFO, logger="abproxy.notify")
    [d] = send(["http://bot:HUNTER2@127.0.0.1:9/hook"], retries=1)   # port 9: nothing listens
    assert not d.ok
    assert "HUNTER2" not in caplog.text and "HUNTER2" not in (d.error or "") and "HUNTER2" not in d.target


def test_a_same_host_redirect_keeps_the_post_and_its_body(servers):
    hook, _ = servers
    hook.redirects["/old"] = (308, hook.url("/new"))
    [d] = send([{"url": hook.url("/old"), "headers": {"Authorization": "Bearer T"}}])
    assert d.ok, d.error
    (m1, p1, _, _), (m2, p2, headers, body) = hook.requests
    assert (m1, p1, m2, p2) == ("POST", "/old", "POST", "/new")
    assert headers["Authorization"] == "Bearer T" and json.loads(body)["x"] == 1


def test_a_redirect_without_credentials_is_followed_with_the_payload(servers):
    hook, elsewhere = servers
    hook.redirects["/hook"] = (302, elsewhere.url("/moved"))
    [d] = send([hook.url("/hook")])
    assert d.ok, d.error
    [(method, path, headers, body)] = elsewhere.requests
    assert (method, path) == ("POST", "/moved") and json.loads(body)["experiment"] == "exp"
    assert "Authorization" not in headers
