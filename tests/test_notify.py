"""Notifications of verdict changes: which runs notify (grace period, unchanged verdicts, newly
failing checks) and delivery to a real local HTTP server (retries, unreachable and hanging hooks)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from abproxy import notify
from abproxy.records import AnalysisRun
from abproxy.config import parse_config
from abproxy.records import Check
from abproxy.jobs import run_job
from abproxy.notify import Previous, changes, deliver, notify as send
from abproxy.simulate import ExperimentSpec, SimulationSpec, simulate
from abproxy.verdict import Verdict
from abproxy.workspace import Workspace

NOW = dt.datetime(2026, 11, 20, 12, 0)


# --------------------------------------------------------------------------- a capturing HTTP server

class Hooks:
    """A local HTTP server. POST /<name> records (name, payload, headers); `script[name]` is a list
    of status codes answered in turn (then 200); `hang[name]` seconds to sleep before answering."""

    def __init__(self):
        self.received: list[tuple[str, dict, dict]] = []
        self.script: dict[str, list[int]] = {}
        self.hang: dict[str, float] = {}
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                name = self.path.strip("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hooks.hang.get(name):
                    time.sleep(hooks.hang[name])
                with hooks.lock:
                    hooks.received.append((name, json.loads(body), dict(self.headers)))
                    codes = hooks.script.get(name) or []
                    code = codes.pop(0) if codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def payloads(self, name: str) -> list[dict]:
        with self.lock:
            return [p for n, p, _ in self.received if n == name]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hooks():
    server = Hooks()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF_SECONDS", 0.05)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- pure decisions

def config(**notifications):
    return parse_config({
        "metrics": {"spend": {"type": "mean", "event": "purchase"}},
        "experiments": {"exp": {"name": "Model v2", "control": "a", "variants": {"a": {}, "b": {}},
                                "primary": ["spend"],
                                "decision": {"min_days": 7, "min_units_per_variant": 1000}}},
        "notifications": {"link": "http://report.example:8501", **notifications},
    })


def a_run(decision: str, days: float = 14, units: int = 5000, failing: tuple[str, ...] = (),
          status: str = "ok", run_id: str = "run2") -> AnalysisRun:
    checks = [Check(name, "fail", f"{name} failed") for name in failing] + [Check("multiple_exposures", "ok", "fine")]
    verdict = Verdict(decision, "b" if decision == "SHIP" else None, (f"because {decision}", "second reason"))
    return AnalysisRun(run_id, "exp", NOW, NOW, status=status, units={"a": units, "b": units},
                       days_running=days, health=checks, verdict=verdict if status == "ok" else None)


def test_verdict_change_notifies_with_the_payload():
    [p] = changes(config(), [a_run("SHIP")], {"exp": ("KEEP_RUNNING", ())})
    assert p["experiment"] == "exp" and p["name"] == "Model v2"
    assert (p["old_verdict"], p["new_verdict"]) == ("KEEP_RUNNING", "SHIP")
    assert p["reasons"] == ["because SHIP", "second reason"]
    assert p["failing_checks"] == [] and p["run_id"] == "run2" and p["ship_variant"] == "b"
    assert p["link"] == "http://report.example:8501/?experiment=exp&run=run2"
    assert "KEEP_RUNNING → SHIP" in p["text"]
    json.dumps(p)   # JSON-serialisable as it is


def test_unchanged_verdict_does_not_notify():
    assert changes(config(), [a_run("SHIP")], {"exp": ("SHIP", ())}) == []
    assert changes(config(), [a_run("INVALID", failing=("srm",))], {"exp": ("INVALID", ("srm",))}) == []


def test_first_run_notifies_only_if_it_says_more_than_keep_running():
    assert changes(config(), [a_run("KEEP_RUNNING")], {}) == []
    [p] = changes(config(), [a_run("ROLLBACK")], {})
    assert p["old_verdict"] is None and p["new_verdict"] == "ROLLBACK"


def test_grace_period_suppresses_early_verdicts():
    early_days, early_units = a_run("ROLLBACK", days=2), a_run("ROLLBACK", units=300)
    assert changes(config(), [early_days], {"exp": ("KEEP_RUNNING", ())}) == []
    assert changes(config(), [early_units], {"exp": ("KEEP_RUNNING", ())}) == []
    # Leaving the grace period announces the verdict even if the previous (early) run had it already.
    [p] = changes(config(), [a_run("ROLLBACK")], {"exp": Previous("ROLLBACK", (), True, "run1")})
    assert (p["old_verdict"], p["new_verdict"]) == ("KEEP_RUNNING", "ROLLBACK")


def test_invalid_and_newly_failing_checks_notify_even_in_the_grace_period():
    [p] = changes(config(), [a_run("INVALID", days=1, failing=("srm",))], {"exp": ("KEEP_RUNNING", ())})
    assert p["new_verdict"] == "INVALID" and p["failing_checks"] == ["srm"] and p["new_failing_checks"] == ["srm"]
    # still INVALID, but another check started failing
    [p] = changes(config(), [a_run("INVALID", days=1, failing=("srm", "event_missing"))],
                  {"exp": Previous("INVALID", ("srm",), True)})
    assert p["new_failing_checks"] == ["event_missing"] and "started failing" in p["text"]
    # recovering from INVALID is news too
    [p] = changes(config(), [a_run("KEEP_RUNNING", days=1)], {"exp": Previous("INVALID", ("srm",), True)})
    assert (p["old_verdict"], p["new_verdict"]) == ("INVALID", "KEEP_RUNNING")


def test_failed_runs_and_unknown_experiments_are_not_compared():
    assert changes(config(), [a_run("SHIP", status="failed")], {"exp": ("KEEP_RUNNING", ())}) == []
    other = a_run("SHIP")
    other.experiment = "gone"
    assert changes(config(), [other], {}) == []


# --------------------------------------------------------------------------- delivery

def test_notify_posts_to_every_webhook_with_headers(hooks, tmp_path: Path):
    cfg = config(webhooks=[hooks.url("plain"), {"url": hooks.url("auth"), "headers": {"X-Token": "s3cret"}}],
                 command=f"cat > {tmp_path / 'payload.json'}")
    sent = send(Workspace(tmp_path, cfg), [a_run("SHIP")], {"exp": ("KEEP_RUNNING", ())}, wait_seconds=10)
    assert len(sent) == 1
    [plain], [auth] = hooks.payloads("plain"), hooks.payloads("auth")
    assert plain == auth == json.loads(json.dumps(sent[0]))
    headers = next(h for n, _, h in hooks.received if n == "auth")
    assert headers["X-Token"] == "s3cret" and headers["Content-Type"] == "application/json"
    assert json.loads((tmp_path / "payload.json").read_text())["new_verdict"] == "SHIP"


def test_unchanged_verdict_sends_nothing(hooks, tmp_path: Path):
    cfg = config(webhooks=[hooks.url("plain")])
    assert send(Workspace(tmp_path, cfg), [a_run("SHIP")], {"exp": ("SHIP", ())}) == []
    time.sleep(0.2)
    assert hooks.received == []


def test_failing_webhook_is_retried(hooks):
    hooks.script["flaky"] = [500, 503]
    settings = config(webhooks=[hooks.url("flaky")], retries=3).notifications
    [d] = deliver(settings, [{"experiment": "exp", "x": 1}], wait_seconds=10)
    assert d.ok and d.attempts == 3 and d.error is None
    assert len(hooks.payloads("flaky")) == 3


def test_retries_are_bounded_and_client_errors_are_not_retried(hooks):
    hooks.script["down"] = [500] * 10
    hooks.script["bad"] = [400]
    settings = config(webhooks=[hooks.url("down"), hooks.url("bad")], retries=2).notifications
    down, bad = deliver(settings, [{"experiment": "exp"}], wait_seconds=10)
    assert not down.ok and down.attempts == 3 and "HTTP 500" in down.error
    assert not bad.ok and bad.attempts == 1 and "HTTP 400" in bad.error


def test_unreachable_webhook_neither_blocks_nor_raises(tmp_path: Path):
    cfg = config(webhooks=[f"http://127.0.0.1:{closed_port()}/hook?token=secret"], retries=2)
    started = time.monotonic()
    sent = send(Workspace(tmp_path, cfg), [a_run("SHIP")], {"exp": ("KEEP_RUNNING", ())}, wait_seconds=5)
    assert len(sent) == 1 and time.monotonic() - started < 5
    [d] = deliver(cfg.notifications, sent, wait_seconds=5)
    assert not d.ok and d.attempts == 3 and "token" not in d.target


def test_hanging_webhook_does_not_hold_the_job(hooks):
    hooks.hang["slow"] = 5
    settings = config(webhooks=[hooks.url("slow")], retries=3, timeout_seconds=3).notifications
    started = time.monotonic()
    [d] = deliver(settings, [{"experiment": "exp"}], wait_seconds=0.5)
    assert time.monotonic() - started < 2
    assert not d.ok and d.error == "still running"


def test_broken_command_is_logged_not_raised(tmp_path: Path, caplog):
    # other tests in the same worker may leave the logging tree changed (a CLI run's root level, a
    # library's dictConfig disabling loggers): capture this module's logger explicitly
    logger = logging.getLogger("abproxy.notify")
    logger.disabled, logger.propagate = False, True
    caplog.set_level(logging.INFO, logger="abproxy.notify")
    cfg = config(command="exit 3")
    send(Workspace(tmp_path, cfg), [a_run("SHIP")], {"exp": ("KEEP_RUNNING", ())}, wait_seconds=10)
    assert "exit code 3" in caplog.text


def test_hook_without_snapshot_or_targets_is_a_no_op(tmp_path: Path, hooks):
    assert notify.notify_changes(Workspace(tmp_path, config()), [a_run("SHIP")]) == []
    # configured, but no snapshot to read the previous verdicts from: logged, nothing raised
    ws = Workspace(tmp_path, config(webhooks=[hooks.url("x")]))
    assert notify.notify_changes(ws, [a_run("SHIP")]) == []


# --------------------------------------------------------------------------- through run_job

@pytest.mark.slow
def test_run_job_notifies_verdict_changes_once(tmp_path: Path, hooks):
    today = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=30)
    root = simulate(tmp_path / "ws", SimulationSpec(
        experiments=(ExperimentSpec("winner", name="Winner model", units=6000, days=7, spend_lift=0.4),),
        start=start))
    data = yaml.safe_load((root / "abproxy.yaml").read_text())
    data["notifications"] = {"webhooks": [hooks.url("hook")], "link": "http://report:8501"}
    (root / "abproxy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    ws = Workspace.open(root)

    early = run_job(ws, "run", as_of=start + dt.timedelta(days=3))        # inside the grace period
    assert early.ok, early.errors
    time.sleep(0.3)
    assert hooks.payloads("hook") == [], "the grace period suppresses early alerts"

    late = run_job(ws, "run", as_of=start + dt.timedelta(days=22))        # complete windows
    assert late.ok and late.runs[0].verdict.decision == "SHIP", late.runs[0].verdict
    [p] = hooks.payloads("hook")
    assert p["experiment"] == "winner" and p["name"] == "Winner model"
    assert (p["old_verdict"], p["new_verdict"]) == ("KEEP_RUNNING", "SHIP")
    assert p["run_id"] == late.runs[0].run_id and p["reasons"] == list(late.runs[0].verdict.reasons)
    assert p["link"].startswith("http://report:8501/?experiment=winner")

    same = run_job(ws, "run", as_of=start + dt.timedelta(days=22))        # unchanged: nothing new
    assert same.ok
    time.sleep(0.3)
    assert len(hooks.payloads("hook")) == 1

    quiet = run_job(ws, "run", as_of=start + dt.timedelta(days=3), on_runs=None)   # hook disabled
    assert quiet.ok
    time.sleep(0.3)
    assert len(hooks.payloads("hook")) == 1
