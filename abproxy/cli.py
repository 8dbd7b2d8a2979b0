"""The `abproxy` command. Errors a user can cause (`errors.AbproxyError`) print one line with what to
do and exit with their code (1, or 2 for configuration problems); `--debug` shows the traceback."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Callable

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
    ws = _workspace(args)
    if ws.config.uses_mlflow():
        from .registry import require_client

        require_client()
    if not args.data:
        print("OK")
        return EXIT_OK
    from .datacheck import workspace_problems
    from .warehouse import connect

    as_of = _as_of(args.as_of) or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    con = connect(ws.warehouse, read_only=True)
    try:
        problems = workspace_problems(con, ws.config, as_of)
    finally:
        con.close()
    if not problems:
        print(f"OK: abproxy.yaml matches the warehouse ({len(ws.config.metrics)} metrics, "
              f"{len(ws.config.experiments)} experiments checked)")
        return EXIT_OK
    print(f"{ws.root / 'abproxy.yaml'}: {len(problems)} problem(s) with the data")
    for p in problems:
        print(f"  {p.status.upper()} {p.line()}")
    return EXIT_USAGE


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
    ws = _workspace(args)
    if ws.config.engine == "spark":
        source = ws.config.source
        print(f"engine: spark reads the exposures ({source.exposures}) and events ({source.events}) where they "
              "live: nothing to ingest")
        return EXIT_OK
    return _job(args, "ingest")


@command("analyze")
def cmd_analyze(args) -> int:
    return _job(args, "analyze")


@command("run")
def cmd_run(args) -> int:
    return _job(args, "run")


@command("preview")
def cmd_preview(args) -> int:
    from .preview import preview
    from .warehouse import connect

    ws = _workspace(args)
    as_of = _as_of(args.as_of) or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    con = connect(ws.warehouse, read_only=True)
    try:
        result = preview(con, ws.config, args.metric, args.experiment, as_of)  # PreviewError: a UserError
    finally:
        con.close()
    if args.json:
        _print_json(result.as_dict())
    else:
        print("\n".join(result.lines()))
    return EXIT_OK


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
    from .history import models, models_report, print_models

    ws = _workspace(args)
    _print_json(models_report(ws)) if args.json else print_models(models(ws))
    return EXIT_OK


@command("gate")
def cmd_gate(args) -> int:
    from .gate import GateError, gate, print_gate

    try:
        result = gate(_workspace(args), args.key, args.variant, args.max_age, args.allow_cautions)
    except GateError as exc:
        if args.json:
            _print_json({"outcome": "error", "exit_code": EXIT_USAGE, "experiment": args.key, "message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_json(result.record()) if args.json else print_gate(result)
    return result.exit_code


@command("report")
def cmd_report(args) -> int:
    from .report.export import write_review

    output = Path(args.output or f"review-{args.key}.html")
    path = write_review(_workspace(args), args.key, output)
    print(f"Wrote the review of {args.key} to {Path(path).resolve()}")
    return EXIT_OK


@command("simulate")
def cmd_simulate(args) -> int:
    from .simulate import default_spec, simulate

    out = simulate(Path(args.out), default_spec(units=args.units, seed=args.seed))
    print(f"Simulated {args.units:,} units into {out}; next: abproxy run --workspace {out}")
    return EXIT_OK


@command("demo")
def cmd_demo(args) -> int:
    from .config import resolve_workspace
    from .demo import build_demo, live

    root = resolve_workspace(args.workspace)
    if not (root / "abproxy.yaml").exists():
        build_demo(root)
        print(f"Demo workspace created in {root}")
    if args.live:
        return live(root, every_seconds=args.every)
    return EXIT_OK


EXAMPLES = {  # one example per command, shown by `abproxy --help`
    "init": "abproxy init my-workspace",
    "validate": "abproxy validate --data",
    "ingest": "abproxy ingest --json",
    "analyze": "abproxy analyze --experiment recsys-v2",
    "run": "abproxy run --as-of 2026-11-20T00:00:00Z",
    "preview": "abproxy preview spend_per_user --experiment recsys-v2",
    "schedule": "abproxy schedule",
    "serve": "abproxy serve --port 8501",
    "history": "abproxy history recsys-v2",
    "diff": "abproxy diff RUN_A RUN_B",
    "models": "abproxy models --json",
    "gate": "abproxy gate recsys-v2 --variant v2 --max-age 24 --json",
    "report": "abproxy report recsys-v2",
    "simulate": "abproxy simulate --out sim --units 20000",
    "demo": "abproxy demo --workspace demo",
}
EXIT_CODES = """exit codes:
  0  success
  1  a run, file or command failed (a file failed to load or had more than
     ingest.max_rejected_fraction of its rows rejected; an analysis failed)
  2  abproxy.yaml is invalid, or `validate --data` found a problem
  3, 4, 5  `abproxy gate`: keep running / roll back or no effect / invalid or stale
  130 interrupted"""


def parser() -> argparse.ArgumentParser:
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--debug", action="store_true", help="show tracebacks")
    base.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    base.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    common = argparse.ArgumentParser(add_help=False, parents=[base])
    common.add_argument("--workspace", "-w", default=None,
                        help="workspace folder (default: $ABPROXY_WORKSPACE or the current folder)")
    examples = "\n".join(f"  {line}" for line in EXAMPLES.values())
    p = argparse.ArgumentParser(prog="abproxy", parents=[common],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Rollout verdicts for ML model variants from proxy metrics.",
                                epilog=f"examples:\n{examples}\n\n{EXIT_CODES}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, parents=(common,)) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=list(parents),
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=f"example:\n  {EXAMPLES[name]}\n\n{EXIT_CODES}")

    _pipeline_commands(add, base)
    _reading_commands(add)
    return p


JSON_HELP = "print JSON instead of a table"


def _pipeline_commands(add, base: argparse.ArgumentParser) -> None:
    """init, validate, ingest, analyze, run, preview, schedule, serve."""
    json_help = JSON_HELP
    s = add("init", "create a workspace folder with a commented abproxy.yaml", parents=(base,))
    s.add_argument("dir", help="the folder to create (it must not hold an abproxy.yaml yet)")
    s = add("validate", "check abproxy.yaml and print OK or every problem")
    s.add_argument("--data", action="store_true",
                   help="also check the definitions against the warehouse: events, columns, segments, "
                        "'where' conditions, raw SQL and allocation (exit 2 on a problem)")
    s.add_argument("--as-of", help="end of the windows checked (ISO 8601; default now)")
    s = add("ingest", "load new inbox files into the warehouse")
    s.add_argument("--json", action="store_true", help="print a JSON summary (schema in the README)")
    for name, help in (("analyze", "analyse experiments and record the runs in the ledger"),
                       ("run", "one pass: ingest new files, analyse, publish the report snapshot")):
        s = add(name, help)
        s.add_argument("--experiment", "-e", help="only this experiment key")
        s.add_argument("--as-of", help="cut every window and the data at this instant (ISO 8601; default now)")
        s.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
        s.add_argument("--full", action="store_true",
                       help="recompute from the events instead of folding the new rows into the per-unit state")
    s = add("preview", "show what a metric computes on the warehouse: units, zeros, quantiles, cap, MDE, SQL")
    s.add_argument("metric", help="the metric key in abproxy.yaml")
    s.add_argument("--experiment", "-e", help="the experiment whose units to use (default: the first using it)")
    s.add_argument("--as-of", help="end of the windows (ISO 8601; default now)")
    s.add_argument("--json", action="store_true", help=json_help)
    add("schedule", "run ingest and analysis on the schedule in abproxy.yaml (APScheduler)")
    s = add("serve", "the scheduler and the Streamlit report together")
    s.add_argument("--port", type=int, default=8501, help="the report's port (default 8501)")
    s.add_argument("--address", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for every "
                        "interface: configure 'auth:' or a reverse proxy first)")


def _reading_commands(add) -> None:
    """history, diff, models, gate, report, simulate, demo."""
    json_help = JSON_HELP
    s = add("history", "list an experiment's runs with their verdicts")
    s.add_argument("key", help="the experiment key")
    s.add_argument("--json", action="store_true", help=json_help)
    s = add("diff", "explain what changed between two runs")
    s.add_argument("run_a", help="the earlier run id (from 'abproxy history')")
    s.add_argument("run_b", help="the later run id")
    s.add_argument("--json", action="store_true", help=json_help)
    s = add("models", "model leaderboard across experiments")
    s.add_argument("--json", action="store_true", help=json_help)
    s = add("gate", "deployment gate: exit 0 when the latest verdict lets the variant roll out (3 keep running, "
                    "4 roll back / no effect, 5 invalid or stale, 2 configuration error)")
    s.add_argument("key", help="the experiment key")
    s.add_argument("--variant", help="the variant to roll out (default: the one the verdict ships)")
    s.add_argument("--max-age", type=float, metavar="HOURS", help="a verdict older than this is stale (exit 5)")
    s.add_argument("--allow-cautions", action="store_true", help="let a SHIP with cautions pass (exit 0)")
    s.add_argument("--json", action="store_true", help="print the decision, reasons and run id as JSON")
    s = add("report", "write the go/no-go review of an experiment as one HTML file")
    s.add_argument("key", help="the experiment key")
    s.add_argument("--output", "-o", default=None, help="the HTML file to write (default: review-KEY.html)")
    s = add("simulate", "write a synthetic workspace with known true effects")
    s.add_argument("--units", type=int, default=100_000, help="units to simulate (default 100000)")
    s.add_argument("--out", required=True, help="the workspace folder to write")
    s.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    s = add("demo", "create the demo workspace (and keep feeding it with --live)")
    s.add_argument("--live", action="store_true", help="keep dropping new files into the inbox")
    s.add_argument("--every", type=float, default=60.0, help="seconds between new files with --live")


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
