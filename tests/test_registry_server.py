"""The REST path: a real `mlflow server` subprocess on 127.0.0.1 (sqlite backend in a temp folder);
the real job resolves lineage over HTTP, writes the verdict back and promotes the shipped version."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processes import free_port, wait_healthy
from mlflow_fixtures import START, VAL_AUC, empty_store, registry_store, use_registry  # noqa: F401
from abproxy.jobs import run_job
from abproxy.simulate import ExperimentSpec, SimulationSpec, analysis_time, simulate
from abproxy.workspace import Workspace

SPEC = SimulationSpec(experiments=(
    ExperimentSpec("recsys-v2", units=6000, spend_lift=1.5, model="recsys", variants=("v1", "v2")),),
    start=START, seed=5)
pytestmark = pytest.mark.slow   # the server takes ~20-60 s to start


@pytest.fixture
def server(tmp_path, empty_store):
    store = tmp_path / "store"
    store.mkdir()
    client = registry_store(store, empty_store)
    exe = Path(sys.executable).with_name("mlflow")
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{store / 'mlruns.db'}",
                             "--default-artifact-root", str(store / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, tmp_path / "server.log", seconds=240)
        yield f"http://127.0.0.1:{port}", client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)        # the server we started, and its worker
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_lineage_and_write_back_through_a_real_mlflow_server(server, tmp_path):
    from mlflow import MlflowClient

    uri, _ = server
    root = simulate(tmp_path / "ws", SPEC)
    use_registry(root, {"recsys-v2": {"v1": "models:/recsys@champion", "v2": "models:/recsys@challenger"}},
                 {"tracking_uri": uri, "promote": {"alias": "champion"}})
    result = run_job(Workspace.open(root), "run", as_of=analysis_time(SPEC))
    assert result.ok, result.errors
    run = result.runs[0]
    lin = run.lineage["v2"]
    assert (run.verdict.decision, lin.source, lin.version, lin.metrics) == ("SHIP", "mlflow", "2", {"val_auc": VAL_AUC[1]})
    assert lin.datasets[0]["digest"] == "digest3"
    rest = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = rest.get_model_version("recsys", "2").tags
    assert (tags["abproxy.verdict"], tags["abproxy.run_id"]) == ("SHIP", run.run_id)
    assert str(rest.get_model_version_by_alias("recsys", "champion").version) == "2"
    assert {w.status for w in result.registry_writes} == {"ok"}
