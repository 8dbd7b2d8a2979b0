"""The `abproxy` command. Errors a user can cause (`errors.AbproxyError`) print one line with what to
do and exit with their code (1, or 2 for configuration problems); `--debug` shows the traceback."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Callable

from .config import resolve_workspace
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, AbproxyError, UserError  # noqa: F401

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def _workspace(args):
    from .workspace import Workspace

    return Workspace.open(args.workspace)


def _as_of(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--as-of {text!r} is not a timestamp; use ISO 8601, e.g. 2026-11-20T00:00:00Z") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _print_json(value: Any) -> None:
    from .ledger import json_safe

    print(json.dumps(json_safe(value), indent=2, default=str))


@command("init")
def cmd_init(args) -> int:
    from .workspace import init_workspace

    root = Path(args.dir)
    try:
        init_workspace(root)
    except FileExistsError as exc:
        raise UserError(str(exc)) from None
    print(f"Created workspace {root}: edit {root / 'abproxy.yaml'}, drop files into {root / 'inbox'}/exposures "
          f"and /events, then run 'abproxy run --workspace {root}'")
    return EXIT_OK


@command("validate")
def cmd_validate(args) -> int:
    _workspace(args)
    print("OK")
    return EXIT_OK


def _job(args, kind: str) -> int:
    from .jobs import run_job
    from .output import print_ingest, print_runs, runs_json

    ws = _workspace(args)
    result = run_job(ws, kind, _as_of(getattr(args, "as_of", None)),
                     [args.experiment] if getattr(args, "experiment", None) else None,
                     progress=sys.stderr.isatty() and not args.json, full=getattr(args, "full", False))
    if args.json:
        payload: dict[str, Any] = {}
        if result.ingest is not None:
            payload.update(result.ingest.as_dict())
        if kind != "ingest":
            payload["experiments"] = runs_json(result.runs)
        payload.update({"job_id": result.job_id, "status": result.status, "errors": result.errors})
        _print_json(payload if kind != "ingest" else {**result.ingest.as_dict()})
    else:
        if result.ingest is not None:
            print_ingest(result.ingest)
        if result.runs:
            print_runs(result.runs)
    return EXIT_OK if result.ok else EXIT_FAILED


@command("ingest")
def cmd_ingest(args) -> int:
    return _job(args, "ingest")


@command("analyze")
def cmd_analyze(args) -> int:
    return _job(args, "analyze")


@command("run")
def cmd_run(args) -> int:
    return _job(args, "run")


@command("schedule")
def cmd_schedule(args) -> int:
    from .scheduler import schedule

    return schedule(_workspace(args))


@command("serve")
def cmd_serve(args) -> int:
    from .scheduler import serve

    return serve(_workspace(args), port=args.port, address=args.address)


@command("history")
def cmd_history(args) -> int:
    from .history import history, print_history

    rows = history(_workspace(args), args.key)
    _print_json(rows) if args.json else print_history(rows)
    return EXIT_OK


@command("diff")
def cmd_diff(args) -> int:
    from .history import diff, print_diff

    result = diff(_workspace(args), args.run_a, args.run_b)
    _print_json(result) if args.json else print_diff(result)
    return EXIT_OK


@command("models")
def cmd_models(args) -> int:
    from .history import models, print_models

    rows = models(_workspace(args))
    _print_json(rows) if args.json else print_models(rows)
    return EXIT_OK


@command("report")
def cmd_report(args) -> int:
    from .report.export import write_review

    path = write_review(_workspace(args), args.key, Path(args.output))
    print(f"Wrote {path}")
    return EXIT_OK


@command("simulate")
def cmd_simulate(args) -> int:
    from .simulate import default_spec, simulate

    out = simulate(Path(args.out), default_spec(units=args.units, seed=args.seed))
    print(f"Simulated {args.units:,} units into {out}; next: abproxy run --workspace {out}")
    return EXIT_OK


@command("demo")
def cmd_demo(args) -> int:
    from .demo import build_demo, live

    root = resolve_workspace(args.workspace)
    if not (root / "abproxy.yaml").exists():
        build_demo(root)
        print(f"Demo workspace created in {root}")
    if args.live:
        return live(root, every_seconds=args.every)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", "-w", default=None,
                        help="workspace folder (default: $ABPROXY_WORKSPACE or the current folder)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    common.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p = argparse.ArgumentParser(prog="abproxy", parents=[common],
                                description="Rollout verdicts for ML model variants from proxy metrics.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    add("init", "create a workspace folder with a commented abproxy.yaml").add_argument("dir")
    add("validate", "check abproxy.yaml and print OK or every problem")
    s = add("ingest", "load new inbox files into the warehouse")
    s.add_argument("--json", action="store_true", help="print a JSON summary")
    for name, help in (("analyze", "analyse experiments and record the runs in the ledger"),
                       ("run", "one pass: ingest new files, analyse, publish the report snapshot")):
        s = add(name, help)
        s.add_argument("--experiment", "-e", help="only this experiment key")
        s.add_argument("--as-of", help="cut every window and the data at this instant (ISO 8601; default now)")
        s.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
        s.add_argument("--full", action="store_true",
                       help="recompute from the events instead of folding the new rows into the per-unit state")
    add("schedule", "run ingest and analysis on the schedule in abproxy.yaml (APScheduler)")
    s = add("serve", "the scheduler and the Streamlit report together")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--address", default="0.0.0.0")
    s = add("history", "list an experiment's runs with their verdicts")
    s.add_argument("key")
    s.add_argument("--json", action="store_true")
    s = add("diff", "explain what changed between two runs")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s.add_argument("--json", action="store_true")
    s = add("models", "model leaderboard across experiments")
    s.add_argument("--json", action="store_true")
    s = add("report", "write the go/no-go review of an experiment as one HTML file")
    s.add_argument("key")
    s.add_argument("--output", "-o", default="review.html")
    s = add("simulate", "write a synthetic workspace with known true effects")
    s.add_argument("--units", type=int, default=100_000)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=7)
    s = add("demo", "create the demo workspace (and keep feeding it with --live)")
    s.add_argument("--live", action="store_true", help="keep dropping new files into the inbox")
    s.add_argument("--every", type=float, default=60.0, help="seconds between new files with --live")
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, (AbproxyError, FileNotFoundError)):
            print(f"error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", EXIT_FAILED)
        print(f"error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
