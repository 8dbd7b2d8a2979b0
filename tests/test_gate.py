"""`abproxy gate`: the exit code of every verdict, stale and failed runs, unknown keys — on a simulated
workspace analysed by the real job — and the exact commands of the README's CI/pipeline examples."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abproxy.cli import main
from abproxy.gate import evaluate, gate
from abproxy.jobs import run_job
from abproxy.simulate import ExperimentSpec, SegmentHarm, SimulationSpec, analysis_time, simulate
from abproxy.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
START = dt.datetime(2025, 3, 1)
SPEC = SimulationSpec(experiments=(
    ExperimentSpec("recsys-v2", units=6000, spend_lift=1.5, variants=("v1", "v2")),         # SHIP
    ExperimentSpec("ranker-v3", units=6000, spend_lift=-0.4, variants=("v1", "v2")),        # ROLLBACK
    ExperimentSpec("banner", units=6000, variants=("v1", "v2")),                            # NO_DETECTABLE_EFFECT
    ExperimentSpec("churn", units=6000, spend_lift=0.1, actual_allocation=(0.6, 0.4)),      # INVALID
    ExperimentSpec("young", units=6000, spend_lift=1.5),                                    # KEEP_RUNNING
    ExperimentSpec("search-emb", units=12_000, spend_lift=0.4, variants=("v1", "v2"),       # SHIP + caution
                   segment_harm=SegmentHarm("country", "DE", -0.9)),
), start=START, seed=5)
EXPECTED = {"recsys-v2": ("SHIP", 0), "ranker-v3": ("ROLLBACK", 4), "banner": ("NO_DETECTABLE_EFFECT", 4),
            "churn": ("INVALID", 5), "young": ("KEEP_RUNNING", 3), "search-emb": ("SHIP", 3)}
pytestmark = pytest.mark.slow   # one simulated workspace and the real job (~30 s), a few subprocesses


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = simulate(tmp_path_factory.mktemp("gate") / "abproxy-workspace", SPEC)
    path = root / "abproxy.yaml"
    data = yaml.safe_load(path.read_text())
    data["experiments"]["banner"]["decision"]["max_days"] = 10      # the planned duration is reached
    data["experiments"]["young"]["decision"]["min_days"] = 60       # too early to ship
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_job(Workspace.open(root), "run", as_of=analysis_time(SPEC))
    assert result.ok, result.errors
    assert {r.experiment: r.verdict.decision for r in result.runs} == {k: d for k, (d, _) in EXPECTED.items()}
    return root


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_exit_code_of_each_verdict(ws, key, capsys):
    decision, code = EXPECTED[key]
    assert main(["gate", key, "--json", "--workspace", str(ws)]) == code
    out = json.loads(capsys.readouterr().out)
    assert (out["decision"], out["exit_code"]) == (decision, code)
    assert out["run_id"] and out["reasons"] and out["outcome"] == {0: "pass", 3: "hold", 4: "stop", 5: "invalid"}[code]


def test_cautions_hold_a_ship_unless_allowed(ws, capsys):
    assert main(["gate", "search-emb", "--json", "--workspace", str(ws)]) == 3
    held = json.loads(capsys.readouterr().out)
    assert held["decision"] == "SHIP" and any("country=DE" in c for c in held["cautions"])
    assert main(["gate", "search-emb", "--allow-cautions", "--workspace", str(ws)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_the_variant_must_be_the_shipped_one(ws, capsys):
    assert main(["gate", "recsys-v2", "--variant", "v2", "--workspace", str(ws)]) == 0
    assert main(["gate", "recsys-v2", "--variant", "v1", "--json", "--workspace", str(ws)]) == 4
    result = gate(Workspace.open(ws), "recsys-v2", variant="v1")
    assert (result.exit_code, result.arm_status) == (4, "CONTROL")


def test_a_stale_verdict_exits_5(ws, capsys):
    later = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=30)
    result = gate(Workspace.open(ws), "recsys-v2", max_age_hours=24, now=later)
    assert result.exit_code == 5 and result.stale and "--max-age 24" in result.message
    assert gate(Workspace.open(ws), "recsys-v2", max_age_hours=48, now=later).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["gate", "nope"], "unknown experiment 'nope'"),
    (["gate", "recsys-v2", "--variant", "v9"], "has no variant 'v9'"),
    (["gate", "recsys-v2", "--max-age", "0"], "positive number of hours"),
])
def test_configuration_errors_exit_2(ws, args, message, capsys):
    assert main([*args, "--workspace", str(ws)]) == 2
    assert message in capsys.readouterr().err


def test_a_known_experiment_without_runs_is_not_a_verdict(ws, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    data = yaml.safe_load((copy / "abproxy.yaml").read_text())
    data["experiments"]["later"] = {**data["experiments"]["young"], "name": "not analysed yet"}
    (copy / "abproxy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = gate(Workspace.open(copy), "later")
    assert result.exit_code == 5 and "no verdict recorded yet" in result.message


# --------------------------------------------------------------------------- pure rules

def _run(decision, ship=None, status="ok", hours_ago=1.0, now=dt.datetime(2026, 1, 2)):
    return {"run_id": "r1", "decision": decision, "ship_variant": ship, "status": status, "error": None,
            "started_at": now - dt.timedelta(hours=hours_ago), "finished_at": now - dt.timedelta(hours=hours_ago),
            "reasons": json.dumps(["because"])}


@pytest.mark.parametrize("run, variant, cautions, allow, code", [
    (_run("SHIP", "v2"), None, [], False, 0),
    (_run("SHIP", "v2"), "v2", [], False, 0),
    (_run("SHIP", "v2"), "v3", [], False, 4),
    (_run("SHIP", "v2"), None, ["a segment"], False, 3),
    (_run("SHIP", "v2"), None, ["a segment"], True, 0),
    (_run("KEEP_RUNNING"), None, [], False, 3),
    (_run("ROLLBACK"), None, [], False, 4),
    (_run("NO_DETECTABLE_EFFECT"), "v2", [], False, 4),
    (_run("INVALID"), None, [], True, 5),
    (_run(None, status="failed"), None, [], False, 5),
    (_run("SHIP", "v2", hours_ago=25), None, [], False, 5),
    (None, None, [], False, 5),
])
def test_gate_rules(run, variant, cautions, allow, code):
    result = evaluate("x", run, variant, None, cautions, dt.datetime(2026, 1, 2), 24, allow)
    assert result.exit_code == code
    assert result.stale == (run is not None and run["started_at"] < dt.datetime(2026, 1, 1, 23))


# --------------------------------------------------------------------------- the README's examples

def _readme_yaml_blocks() -> list:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [yaml.safe_load(b) for b in blocks if "abproxy, gate" in b or "abproxy gate" in b]


def _find(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key)


def _env(ws: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "ABPROXY_WORKSPACE": str(ws), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def test_the_readme_ci_and_pipeline_examples_run_as_written(ws, tmp_path):
    blocks = _readme_yaml_blocks()
    scripts = [s for b in blocks for s in _find(b, "run") if isinstance(s, str) and "abproxy gate" in s]
    commands = [c for b in blocks for c in _find(b, "command") if isinstance(c, list) and c[:2] == ["abproxy", "gate"]]
    assert len(scripts) == 1 and len(commands) == 2          # GitHub Actions; Argo and Kubeflow Pipelines
    runs = [subprocess.run(["bash", "-c", scripts[0]], cwd=tmp_path, env=_env(ws), capture_output=True, text=True,
                           timeout=180)]
    runs += [subprocess.run([str(x) for x in c], cwd=tmp_path, env=_env(ws), capture_output=True, text=True,
                            timeout=180) for c in commands]
    for p in runs:
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert (out["experiment"], out["variant"], out["decision"], out["outcome"]) == ("recsys-v2", "v2", "SHIP", "pass")
    # the same step fails the pipeline for an experiment that must not ship
    held = subprocess.run(["bash", "-c", scripts[0].replace("recsys-v2", "ranker-v3")], cwd=tmp_path, env=_env(ws),
                          capture_output=True, text=True, timeout=180)
    assert held.returncode == 4, held.stderr
