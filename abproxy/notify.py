"""Notifications: tell people when an experiment's verdict changes or a health check starts failing.

When it notifies
    After each analysis pass, every new run (status ok) is compared with the experiment's previous
    recorded run with a verdict. A notification goes out when the *announced* verdict changes or
    a health check fails that did not fail in the previous run ("newly failing").

Grace period (early alerts are suppressed)
    While a run has fewer than `decision.min_days` days or fewer than
    `decision.min_units_per_variant` units in its smallest arm, its verdict is announced as
    KEEP_RUNNING: early peeks (a ROLLBACK on day one) never page anyone. INVALID is the exception
    and always notifies, grace period or not: a broken split or a vanished event should be fixed
    early, not after a week of useless data (a failed health check always makes the verdict
    INVALID, so newly failing checks notify at once too). An experiment with no previous run counts
    as KEEP_RUNNING, so the first run notifies only if it already says something else. Failed
    analysis runs (no verdict) are not compared; they are logged and recorded in `job_runs`.

Where it goes
    `notifications.webhooks` (URL strings or `{url, headers}`): an HTTP POST of the JSON payload
    with the standard library, `notifications.timeout_seconds` per attempt, retried
    `notifications.retries` times with exponential backoff on network errors, 5xx, 408 and 429.
    `notifications.command`: a shell command run with the JSON payload on stdin (one run per
    notification). Deliveries run in daemon threads; the job waits for them at most
    `wait_seconds` (default `DELIVERY_WAIT_SECONDS`) and then carries on. Failures are logged and
    never raised.

Payload (JSON object)
    experiment, name, old_verdict (the verdict announced before; None for the first run),
    new_verdict, reasons (list of lines), failing_checks (all failing checks of the new run),
    new_failing_checks, ship_variant, run_id, as_of, link (the report URL) and text (one line,
    so a Slack-compatible incoming webhook shows something useful).
"""
from __future__ import annotations

import base64
import json
import logging
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from . import ledger
from .config import Config, Decision, Notifications, Webhook

if TYPE_CHECKING:  # pragma: no cover
    from .records import AnalysisRun
    from .workspace import Workspace

log = logging.getLogger(__name__)

KEEP_RUNNING, INVALID = "KEEP_RUNNING", "INVALID"
DELIVERY_WAIT_SECONDS = 10.0   # the longest a job waits for its notifications to be delivered
BACKOFF_SECONDS = 0.5          # first retry delay; doubles on every further retry
MAX_BACKOFF_SECONDS = 30.0
RETRY_STATUS = {408, 429}      # plus every 5xx


class Previous(NamedTuple):
    """An experiment's previous recorded run, as the comparison needs it. A plain
    `(decision, failing_checks)` tuple is accepted wherever a Previous is."""

    decision: str | None
    failing_checks: tuple[str, ...] = ()
    in_grace: bool = False
    run_id: str | None = None


# --------------------------------------------------------------------------- what to notify

def check_label(check: str, metric: str | None = None, segment: str | None = None,
                variant: str | None = None) -> str:
    """A stable name for one health check result, e.g. 'srm' or 'null_rate[metric=spend_per_user]'."""
    parts = [f"{k}={v}" for k, v in (("metric", metric), ("segment", segment), ("variant", variant)) if v]
    return f"{check}[{', '.join(parts)}]" if parts else check


def failing_checks(run: "AnalysisRun") -> tuple[str, ...]:
    return tuple(sorted({check_label(c.check, c.metric, c.segment, c.variant)
                         for c in run.health if c.status == "fail"}))


def in_grace(days_running: float, units: Mapping[str, int], decision: Decision) -> bool:
    """True while the experiment is below its minimum duration or its minimum units per arm."""
    fewest = min(units.values()) if units else 0
    return days_running < decision.min_days or fewest < decision.min_units_per_variant


def announced(decision: str | None, grace: bool) -> str:
    """The verdict subscribers are told: inside the grace period everything but INVALID reads
    KEEP_RUNNING; no verdict yet reads KEEP_RUNNING."""
    if decision is None:
        return KEEP_RUNNING
    return decision if decision == INVALID or not grace else KEEP_RUNNING


def report_link(base: str, experiment: str, run_id: str) -> str:
    query = urllib.parse.urlencode({"experiment": experiment, "run": run_id})
    return f"{base.rstrip('/')}/?{query}"


def changes(config: Config, runs: Iterable["AnalysisRun"],
            previous: Mapping[str, Previous | tuple]) -> list[dict[str, Any]]:
    """The notification payloads for `runs` (pure: no I/O). `previous` maps an experiment key to
    its previous recorded run; a missing key means the experiment has no earlier run."""
    payloads = []
    for run in runs:
        if run.status != "ok" or run.verdict is None or run.experiment not in config.experiments:
            continue
        exp = config.experiments[run.experiment]
        raw = previous.get(run.experiment)
        prev = Previous(*raw) if raw is not None else None
        grace = in_grace(run.days_running, run.units, exp.decision)
        new = run.verdict.decision
        failing = failing_checks(run)
        newly = tuple(c for c in failing if c not in set(prev.failing_checks if prev else ()))
        old_announced = announced(prev.decision, prev.in_grace) if prev else KEEP_RUNNING
        new_announced = announced(new, grace)
        if new_announced == old_announced and not newly:
            if grace and new != new_announced:
                log.info("%s: verdict %s not announced (grace period: %.1f of %g days, %s of %s units)",
                         run.experiment, new, run.days_running, exp.decision.min_days,
                         min(run.units.values()) if run.units else 0, exp.decision.min_units_per_variant)
            continue
        old = old_announced if prev else None
        name = exp.name or run.experiment
        if newly and new_announced == old_announced:
            text = f"{name}: health check(s) started failing: {', '.join(newly)} (verdict {new})"
        else:
            text = f"{name}: verdict {old or 'none'} → {new}"
        if run.verdict.reasons:
            text += f" — {run.verdict.reasons[0]}"
        payloads.append({
            "experiment": run.experiment, "name": name, "old_verdict": old, "new_verdict": new,
            "reasons": list(run.verdict.reasons), "failing_checks": list(failing),
            "new_failing_checks": list(newly), "ship_variant": run.verdict.ship_variant,
            "run_id": run.run_id, "as_of": run.as_of.isoformat() if run.as_of else None,
            "link": report_link(config.notifications.link, run.experiment, run.run_id), "text": text,
        })
    return payloads


# --------------------------------------------------------------------------- the previous verdicts

def previous_verdicts(con, config: Config, runs: Iterable["AnalysisRun"]) -> dict[str, Previous]:
    """For each new run, the latest earlier run of its experiment that has a verdict, read from a
    connection holding the ledger tables `runs` and `health` (the warehouse or the snapshot)."""
    runs = list(runs)
    new_ids = [r.run_id for r in runs]
    out: dict[str, Previous] = {}
    for run in runs:
        row = ledger.previous_verdict(con, run.experiment, run.started_at, new_ids)
        if row is None:
            continue
        run_id, decision, units_json, days = row
        checks = tuple(sorted({check_label(*r) for r in ledger.failed_checks(con, run_id)}))
        grace = False
        exp = config.experiments.get(run.experiment)
        if exp is not None:
            try:
                units = {str(k): int(v) for k, v in (json.loads(units_json) if units_json else {}).items()}
            except (TypeError, ValueError):
                units = {}
            grace = in_grace(float(days or 0.0), units, exp.decision)
        out[run.experiment] = Previous(decision, checks, grace, run_id)
    return out


# --------------------------------------------------------------------------- delivery

@dataclass
class Delivery:
    """The outcome of one payload to one target (a webhook URL or the command)."""

    target: str
    experiment: str
    ok: bool = False
    attempts: int = 0
    error: str | None = None


def _targets(settings: Notifications) -> list[Webhook]:
    return [Webhook(url=w) if isinstance(w, str) else w for w in settings.webhooks]


def _redact(url: str) -> str:
    """Scheme, host and path only: webhook URLs often carry a secret in the query string."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without `user:pass@` and the Basic authorization header it stood for (if any)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects keep the POST and its body; a redirect to another origin (scheme, host, port) is not
    followed when the request carries credentials (headers from the config or `user:pass@`)."""

    def __init__(self, credentials: bool):
        self.credentials = credentials

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(req.full_url) and self.credentials:
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to another host ({_redact(newurl)}) not followed because "
                "the request carries credentials; point the webhook at its final URL", headers, fp)
        return urllib.request.Request(newurl, data=req.data, headers=dict(req.header_items()),
                                      method=req.get_method(), origin_req_host=req.origin_req_host,
                                      unverifiable=True)


def post_webhook(hook: Webhook, payload: dict[str, Any], timeout: float, retries: int,
                 delivery: Delivery) -> Delivery:
    body = json.dumps(payload, default=str).encode()
    url, basic = _credentials(hook.url)
    headers = {"Content-Type": "application/json", "User-Agent": "abproxy", **basic, **hook.headers}
    opener = urllib.request.build_opener(_Redirects(credentials=bool(basic or hook.headers)))
    delay = BACKOFF_SECONDS
    for attempt in range(retries + 1):
        delivery.attempts = attempt + 1
        retry = True
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with opener.open(request, timeout=timeout) as response:
                response.read(65536)
                delivery.ok, delivery.error = True, None
                return delivery
        except urllib.error.HTTPError as exc:
            delivery.error = f"HTTP {exc.code} {exc.reason}"
            retry = exc.code >= 500 or exc.code in RETRY_STATUS
            exc.close()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc)).replace(hook.url, delivery.target).replace(url, delivery.target)
            delivery.error = f"{type(exc).__name__}: {reason}"
            retry = not isinstance(exc, ValueError)   # a malformed URL will not get better
        if not retry or attempt == retries:
            break
        log.info("webhook %s: attempt %d failed (%s); retrying in %.1fs", delivery.target, attempt + 1,
                 delivery.error, delay)
        time.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF_SECONDS)
    log.warning("webhook %s: giving up on %s after %d attempt(s): %s", delivery.target, delivery.experiment,
                delivery.attempts, delivery.error)
    return delivery


def run_command(command: str, payload: dict[str, Any], timeout: float, delivery: Delivery) -> Delivery:
    delivery.attempts = 1
    try:
        done = subprocess.run(command, shell=True, input=json.dumps(payload, default=str), text=True,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        delivery.error = f"timed out after {timeout:g}s"
    except OSError as exc:
        delivery.error = f"{type(exc).__name__}: {exc}"
    else:
        if done.returncode == 0:
            delivery.ok = True
        else:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            delivery.error = f"exit code {done.returncode} {tail[0]}".strip()
    if not delivery.ok:
        log.warning("notification command failed for %s: %s", delivery.experiment, delivery.error)
    return delivery


def deliver(settings: Notifications, payloads: list[dict[str, Any]],
            wait_seconds: float | None = None) -> list[Delivery]:
    """Send every payload to every target in daemon threads; wait at most `wait_seconds`.
    Returns one Delivery per (payload, target); those still running when the wait ends have
    ok False and error 'still running' (they carry on in the background). Never raises."""
    wait = DELIVERY_WAIT_SECONDS if wait_seconds is None else wait_seconds
    jobs: list[tuple[threading.Thread, Delivery]] = []

    def guarded(fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # never let a delivery bug escape its thread
            args[-1].error = f"{type(exc).__name__}: {exc}"
            log.exception("notification delivery failed")

    for payload in payloads:
        for hook in _targets(settings):
            d = Delivery(_redact(hook.url), payload["experiment"])
            jobs.append((threading.Thread(target=guarded, daemon=True, name="abproxy-notify", args=(
                post_webhook, hook, payload, settings.timeout_seconds, settings.retries, d)), d))
        if settings.command:
            d = Delivery("command", payload["experiment"])
            jobs.append((threading.Thread(target=guarded, daemon=True, name="abproxy-notify", args=(
                run_command, settings.command, payload, settings.timeout_seconds, d)), d))
    for thread, _ in jobs:
        thread.start()
    deadline = time.monotonic() + wait
    for thread, _ in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
    out = []
    for thread, d in jobs:
        if thread.is_alive():
            log.warning("notification to %s for %s still running after %.0fs; not waiting any longer",
                        d.target, d.experiment, wait)
            out.append(Delivery(d.target, d.experiment, False, d.attempts, "still running"))
        else:
            out.append(d)
    return out


# --------------------------------------------------------------------------- entry points

def notify(ws: "Workspace", runs: list["AnalysisRun"], previous: Mapping[str, Previous | tuple],
           wait_seconds: float | None = None) -> list[dict[str, Any]]:
    """Send a notification for each run whose announced verdict changed (or with newly failing
    health checks) to the configured webhooks and command. Returns the payloads sent; never raises."""
    settings = ws.config.notifications
    if not settings.webhooks and not settings.command:
        return []
    try:
        payloads = changes(ws.config, runs, previous)
    except Exception:
        log.exception("could not work out which notifications to send")
        return []
    if not payloads:
        return []
    for p in payloads:
        log.info("notify: %s", p["text"])
    deliver(settings, payloads, wait_seconds)
    return payloads


def notify_changes(ws: "Workspace", runs: list["AnalysisRun"]) -> list[dict[str, Any]]:
    """The `on_runs` hook of `jobs.run_job`: reads each experiment's previous run from the report
    snapshot just published (it holds the whole ledger; reading it never touches the writer's
    warehouse file), then calls `notify`. Never raises."""
    settings = ws.config.notifications
    if not runs or (not settings.webhooks and not settings.command):
        return []
    from .warehouse import open_snapshot

    try:
        con = open_snapshot(ws.snapshot)
        try:
            previous = previous_verdicts(con, ws.config, runs)
        finally:
            con.close()
    except Exception:
        log.exception("notifications skipped: cannot read the previous verdicts from %s", ws.snapshot)
        return []
    return notify(ws, runs, previous)
