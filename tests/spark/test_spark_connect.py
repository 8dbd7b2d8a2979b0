"""Spark Connect: `spark: {remote: sc://…}` against a real Connect server that this test starts (a
separate JVM from pyspark's own jars, on a free port). The client needs no Java; only grouped rows
travel back over gRPC, and the numbers equal the local DuckDB run's."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import yaml

from abproxy.analysis import analyze_experiment
from abproxy.config import parse_config
from abproxy.simulate import ExperimentSpec, SimulationSpec, analysis_time, config_for
from lake import simulated_lake
from processes import free_port, stop

pytestmark = [pytest.mark.spark, pytest.mark.slow]
SPEC = SimulationSpec(experiments=(ExperimentSpec("connect", units=1200, spend_lift=0.08, days=6),), seed=5)


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    import pyspark

    home = Path(pyspark.__file__).parent
    port = free_port()
    logs = tmp_path_factory.mktemp("connect-logs") / "server.log"
    cmd = [str(home / "bin" / "spark-submit"), "--master", "local[1]",
           "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
           "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.sql.session.timeZone=UTC", "--conf", "spark.sql.shuffle.partitions=2", "spark-internal"]
    env = {**os.environ, "SPARK_HOME": str(home)}
    with open(logs, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the Connect server exited: {logs.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        else:
            pytest.fail("the Connect server did not listen within 240 s")
        yield f"sc://127.0.0.1:{port}"
    finally:
        stop(proc, 30)


def test_abproxy_run_over_spark_connect_matches_duckdb(tmp_path, connect_server):
    """`abproxy analyze` in its own process (a Connect client cannot share a process with the classic
    local session of the other Spark tests), reading Parquet through the server."""
    con, source = simulated_lake(tmp_path, SPEC)
    data = config_for(SPEC)
    as_of = analysis_time(SPEC)
    duck = analyze_experiment(con, parse_config(data), "connect", as_of)
    con.close()
    ws = tmp_path / "remote"
    ws.mkdir()
    data.update(engine="spark", spark={"remote": connect_server}, source=source)
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(data, default=str))))
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME",)}
    env["PATH"] = os.path.dirname(sys.executable)          # no java: a Connect client needs none
    done = subprocess.run([sys.executable, "-m", "abproxy.cli", "analyze", "--workspace", str(ws), "--json",
                           "--as-of", as_of.isoformat()], capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout)["experiments"][0]
    assert remote["status"] == "ok", remote["error"]
    assert remote["srm"]["units"] == duck.units
    assert remote["verdict"]["decision"] == duck.verdict.decision
    assert remote["verdict"]["reasons"] == list(duck.verdict.reasons)
    mine = {(r.metric, r.variant, r.segment, r.segment_value): r.record() for r in duck.results}
    theirs = {(r["metric"], r["variant"], r["segment"], r["segment_value"]): r
              for r in remote["results"] + remote["segments"]}
    assert mine.keys() == theirs.keys()
    for k in mine:
        for field in ("control_mean", "variant_mean", "abs_effect", "rel_effect", "p_value", "p_value_adjusted"):
            assert mine[k][field] == pytest.approx(theirs[k][field], rel=1e-9, abs=1e-12), (k, field)
