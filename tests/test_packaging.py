"""The package installs from a wheel and works without the repository: migrations and the Streamlit
entry ship inside it. Builds the wheel, installs it non-editable into a fresh venv outside the
repository (its dependencies are borrowed from this test run's environment by a path file, so
nothing is downloaded but the build backend), then runs `init`, `simulate`, `run` and a `serve`
health check from there."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from processes import free_port

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ABPROXY_WORKSPACE")}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (outside the repository) with the wheel installed non-editable; returns its bin/."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"          # a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                                "demo", "data", ".pytest_cache", ".hypothesis", "docs"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(base / "dist"), str(source)], base)
    wheel = next((base / "dist").glob("abproxy-*.whl"))
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    target = Path(subprocess.check_output([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                          text=True).strip())
    # this environment's dependencies, but not its editable abproxy (a plain path entry runs no .pth files)
    (target / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)], base)
    return venv / "bin"


@pytest.mark.slow
def test_the_wheel_ships_migrations_and_the_report_entry(installed, tmp_path):
    where = _run([str(installed / "python"), "-c", "import abproxy, pathlib; p = pathlib.Path(abproxy.__file__).parent; "
                  "print(p); print(sorted(x.name for x in (p / 'sql').glob('*.sql'))); print((p / 'report' / 'app.py').is_file())"],
                 tmp_path).stdout.splitlines()
    assert str(ROOT) not in where[0] and "site-packages" in where[0]
    assert "001_core.sql" in where[1] and where[2] == "True"


@pytest.mark.slow
def test_init_simulate_run_and_serve_from_the_installed_wheel(installed, tmp_path):
    abproxy = str(installed / "abproxy")
    _run([abproxy, "init", "ws"], tmp_path)
    _run([abproxy, "validate", "--workspace", "ws"], tmp_path)
    _run([abproxy, "simulate", "--units", "3000", "--out", "sim"], tmp_path)
    out = json.loads(_run([abproxy, "run", "--workspace", "sim", "--json"], tmp_path).stdout)
    assert out["status"] == "ok" and out["experiments"][0]["verdict"]["decision"]
    assert (tmp_path / "sim" / "data" / "report.duckdb").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ABPROXY_WORKSPACE")}
    proc = subprocess.Popen([abproxy, "serve", "--workspace", "sim", "--port", str(port), "--address", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert body == b"ok", proc.stdout.read() if proc.poll() is not None else "no health answer"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0


def test_migrations_live_in_the_package():
    assert sorted(p.name for p in (ROOT / "sql").glob("*.sql")) == [], \
        "migrations belong in abproxy/sql/ (shipped in the wheel); move them there"
    assert (ROOT / "abproxy" / "sql" / "001_core.sql").is_file()
