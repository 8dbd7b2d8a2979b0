"""Errors a new user will hit read as one line with what to do; --debug shows the traceback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ABPROXY = [sys.executable, "-m", "abproxy.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ABPROXY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    assert run("init", str(root)).returncode == 0
    return root


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_no_workspace(tmp_path):
    result = run("run", "--workspace", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "abproxy init" in result.stderr and "Traceback" not in result.stderr


def test_init_refuses_to_overwrite(workspace):
    result = run("init", str(workspace))
    assert result.returncode == 1
    assert "already exists" in _one_line_error(result)


def test_validate_ok_and_bad_config(workspace):
    ok = run("validate", "--workspace", str(workspace))
    assert ok.returncode == 0 and ok.stdout.strip() == "OK"
    config = workspace / "abproxy.yaml"
    config.write_text(config.read_text().replace("window_days: 14", "window_days: -3", 1)
                      .replace("higher_is_better: false", "higher_is_beter: false"))
    bad = run("validate", "--workspace", str(workspace))
    assert bad.returncode == 2
    assert "greater than 0" in bad.stderr and "higher_is_beter" in bad.stderr and "unknown key" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_empty_inbox_says_what_to_do(workspace):
    result = run("run", "--workspace", str(workspace), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["files_loaded"] == 0
    reasons = payload["experiments"][0]["verdict"]["reasons"]
    assert "inbox/exposures" in reasons[0]
    text = run("ingest", "--workspace", str(workspace))
    assert "The inbox is empty" in text.stdout


def test_report_before_any_run_says_what_to_do(workspace):
    result = run("report", "recsys-v2", "-o", str(workspace / "r.html"), "--workspace", str(workspace))
    assert result.returncode == 1 and "abproxy run" in _one_line_error(result)


def test_unknown_experiment_key(workspace):
    assert run("run", "--workspace", str(workspace)).returncode == 0
    for args in (["analyze", "-e", "nope"], ["report", "nope", "-o", str(workspace / "r.html")]):
        result = run(*args, "--workspace", str(workspace))
        assert result.returncode == 1
        assert "unknown experiment 'nope'" in _one_line_error(result) and "recsys-v2" in result.stderr


def test_port_in_use(workspace):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--workspace", str(workspace), "--port", str(port), "--address", "127.0.0.1")
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run("run", "--debug", "--workspace", str(tmp_path / "missing"))
    assert result.returncode != 0 and "Traceback" in result.stderr
