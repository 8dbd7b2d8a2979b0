"""MLflow registry lineage and write-back against a real sqlite tracking + registry store (no mocks):
variants name `models:/name@alias` / `models:/name/N`, the real job resolves, records, tags and
promotes; an unreachable registry warns and keeps the last recorded lineage."""
from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from mlflow_fixtures import START, VAL_AUC, empty_store, registry_store, use_registry  # noqa: F401
from abproxy.config import ConfigError, parse_config
from abproxy.history import diff, models_report
from abproxy.jobs import run_job
from abproxy.simulate import ExperimentSpec, SegmentHarm, SimulationSpec, analysis_time, simulate
from abproxy.workspace import Workspace

SPEC = SimulationSpec(experiments=(
    ExperimentSpec("recsys-v2", units=6000, spend_lift=1.5, model="recsys", variants=("v1", "v2")),
    ExperimentSpec("ranker-v3", units=6000, spend_lift=-0.4, model="ranker", variants=("v1", "v2")),
    ExperimentSpec("search-emb", units=12_000, spend_lift=0.4, model="search", variants=("v1", "v2"),
                   segment_harm=SegmentHarm("country", "DE", -0.9)),
), start=START, seed=5)
AS_OF = analysis_time(SPEC)
REFS = {key: {"v1": f"models:/{model}@champion", "v2": f"models:/{model}@challenger"}
        for key, model in (("recsys-v2", "recsys"), ("ranker-v3", "ranker"), ("search-emb", "search"))}
pytestmark = pytest.mark.slow   # a real MLflow store and simulated workspaces (~1 min in all)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("sim") / "ws", SPEC)


def _workspace(simulated: Path, empty: Path, folder: Path):
    """A fresh copy of the simulated workspace with its own registry (recsys, ranker, search)."""
    root = folder / "ws"
    shutil.copytree(simulated, root)
    client = registry_store(root, empty, models=("recsys", "ranker", "search"))
    use_registry(root, REFS, {"promote": {"alias": "champion"}})
    return root, client


@pytest.fixture
def ws(simulated, empty_store, tmp_path):
    return _workspace(simulated, empty_store, tmp_path)


@pytest.fixture(scope="module")
def ran(simulated, empty_store, tmp_path_factory):
    """One pass of the real job over a fresh registry, with promotion (shared by the read-only tests)."""
    root, client = _workspace(simulated, empty_store, tmp_path_factory.mktemp("ran"))
    result, runs = _run(root)
    return root, client, result, runs


def _run(root: Path, as_of: dt.datetime = AS_OF):
    result = run_job(Workspace.open(root), "run", as_of=as_of)
    assert result.ok, result.errors
    return result, {r.experiment: r for r in result.runs}


def _snapshot(root: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str((root / "data" / "report.duckdb").resolve()), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_lineage_is_resolved_from_the_registry_and_recorded_with_the_run(ran):
    root, client, _, runs = ran
    run = runs["recsys-v2"]
    lin = run.lineage["v2"]
    assert (lin.source, lin.model, lin.version, lin.alias) == ("mlflow", "recsys", "2", "challenger")
    truth = client.get_model_version("recsys", "2")
    assert lin.model_run_id == truth.run_id and lin.params == {"layers": "3"}
    assert lin.metrics == {"val_auc": VAL_AUC[1]}
    assert lin.datasets == [{"name": "clicks-3", "digest": "digest3", "source": "s3://bucket/clicks/3",
                             "source_type": "s3", "context": "training"}]
    assert lin.created_at == dt.datetime.fromtimestamp(truth.creation_timestamp / 1000, dt.timezone.utc).replace(tzinfo=None)
    rows = _snapshot(root, """SELECT variant, source, ref, model, version, alias, model_run_id,
                                     json_extract(metrics, '$.val_auc')::DOUBLE, json_extract_string(datasets, '$[0].digest'),
                                     arm_status
                              FROM lineage WHERE run_id = ? ORDER BY variant""", [run.run_id])
    assert rows == [("v1", "mlflow", "models:/recsys@champion", "recsys", "1", "champion",
                     client.get_model_version("recsys", "1").run_id, VAL_AUC[0], "digest2", "CONTROL"),
                    ("v2", "mlflow", "models:/recsys@challenger", "recsys", "2", "challenger", truth.run_id,
                     VAL_AUC[1], "digest3", "SHIP")]
    registry = [c for c in run.health if c.check == "mlflow_registry"]
    assert [c.status for c in registry] == ["ok"] and "v2 → recsys 2 (@challenger)" in registry[0].detail


def test_verdict_tags_are_written_back_and_ship_promotes_the_alias(ran):
    root, client, _, runs = ran
    ship, rollback = runs["recsys-v2"], runs["ranker-v3"]
    assert (ship.verdict.decision, ship.verdict.ship_variant, rollback.verdict.decision) == ("SHIP", "v2", "ROLLBACK")
    tags = client.get_model_version("recsys", "2").tags
    lift = next(r.effect for r in ship.results if r.metric == "spend_per_user" and r.segment == "")
    assert tags["abproxy.experiment"] == "recsys-v2" and tags["abproxy.verdict"] == "SHIP"
    assert tags["abproxy.arm_status"] == "SHIP" and tags["abproxy.run_id"] == ship.run_id
    assert tags["abproxy.decided_at"] == ship.finished_at.replace(microsecond=0).isoformat() + "Z"
    assert tags["abproxy.report"].endswith(f"experiment=recsys-v2&run={ship.run_id}")
    assert float(tags["abproxy.lift.spend_per_user"]) == pytest.approx(lift.rel_effect, rel=1e-5)
    assert [float(x) for x in tags["abproxy.lift.spend_per_user.ci"].split(",")] == pytest.approx(lift.rel_ci, rel=1e-5)
    control = client.get_model_version("recsys", "1").tags
    assert control["abproxy.arm_status"] == "CONTROL" and "abproxy.lift.spend_per_user" not in control
    assert client.get_model_version("ranker", "2").tags["abproxy.verdict"] == "ROLLBACK"
    # promotion: only the SHIP moves its alias; the ROLLBACK's champion stays
    assert str(client.get_model_version_by_alias("recsys", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("ranker", "champion").version) == "1"
    writes = _snapshot(root, "SELECT experiment, action, alias, previous_version, version, status FROM registry_writes "
                             "WHERE action = 'alias'")
    assert ("recsys-v2", "alias", "champion", "1", "2", "ok") in writes
    assert not [w for w in writes if w[0] == "ranker-v3"]


def test_a_ship_with_cautions_is_not_promoted(ran):
    root, client, _, runs = ran
    run = runs["search-emb"]
    assert run.verdict.decision == "SHIP"
    assert any(c.check == "segment_harm" and c.status == "warn" for c in run.health)
    assert str(client.get_model_version_by_alias("search", "champion").version) == "1"
    assert client.get_model_version("search", "2").tags["abproxy.verdict"] == "SHIP"   # still tagged
    skipped = _snapshot(root, "SELECT status, detail FROM registry_writes WHERE experiment = 'search-emb' "
                              "AND action = 'alias'")
    assert len(skipped) == 1 and skipped[0][0] == "skipped" and "cautions" in skipped[0][1]


def test_write_back_is_idempotent(ran):
    from abproxy.notify import report_link
    from abproxy.registry import Registry, write_back

    root, client, _, runs = ran
    workspace = Workspace.open(root)
    registry = Registry.open(workspace.config, root)
    before = client.get_model_version("recsys", "2").tags
    again = write_back(workspace.config, root, [runs["recsys-v2"]], registry,
                       lambda r: report_link(workspace.config.notifications.link, r.experiment, r.run_id))
    assert {(w.variant, w.action): w.status for w in again} == {
        ("v1", "tags"): "unchanged", ("v2", "tags"): "unchanged", ("v2", "alias"): "unchanged"}
    assert client.get_model_version("recsys", "2").tags == before


def test_an_alias_that_moved_is_recorded_shown_in_the_diff_and_blocks_promotion(ws):
    root, client = ws
    data = yaml.safe_load((root / "abproxy.yaml").read_text())
    data["mlflow"].pop("promote")                # first run: no promotion, champion stays at 1
    (root / "abproxy.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    _, first = _run(root)
    client.set_registered_model_alias("recsys", "challenger", "3")
    use_registry(root, REFS, {"promote": {"alias": "champion"}})
    _, second = _run(root)
    lin = second["recsys-v2"].lineage["v2"]
    assert (lin.version, lin.previous_version) == ("3", "2")
    assert _snapshot(root, "SELECT previous_version, version FROM lineage WHERE run_id = ? AND variant = 'v2'",
                     [second["recsys-v2"].run_id]) == [("2", "3")]
    moved = [c for c in second["recsys-v2"].health if c.check == "model_alias_moved"]
    assert len(moved) == 1 and "challenger moved from version 2 to 3" in moved[0].detail
    d = diff(Workspace.open(root), first["recsys-v2"].run_id, second["recsys-v2"].run_id)
    assert "challenger moved from v2 to v3 (v2, models:/recsys@challenger)" in d["summary"]
    assert [m["variant"] for m in d["lineage"] if m["alias_moved"]] == ["v2"]
    assert str(client.get_model_version_by_alias("recsys", "champion").version) == "1"   # the move is a caution


def test_an_unreachable_registry_warns_and_keeps_the_last_recorded_lineage(ws):
    root, client = ws
    _, first = _run(root)
    with socket.socket() as s:              # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use_registry(root, REFS, {"tracking_uri": f"http://127.0.0.1:{port}", "timeout_seconds": 2})
    result, runs = _run(root)
    run = runs["recsys-v2"]
    assert run.status == "ok" and run.verdict.decision == "SHIP"
    check = next(c for c in run.health if c.check == "mlflow_registry")
    assert check.status == "warn" and "unreachable" in check.detail and "kept recsys 2 (@challenger)" in check.detail
    lin = run.lineage["v2"]
    assert (lin.source, lin.version, lin.model_run_id) == ("ledger", "2", first["recsys-v2"].lineage["v2"].model_run_id)
    assert lin.metrics == {"val_auc": VAL_AUC[1]}
    assert result.registry_writes and all(w.status in ("failed", "skipped") for w in result.registry_writes)
    # a sqlite store that is not there is unreachable too (MLflow would create an empty one)
    use_registry(root, REFS, {"tracking_uri": "sqlite:///nowhere.db"})
    _, runs = _run(root)
    check = next(c for c in runs["recsys-v2"].health if c.check == "mlflow_registry")
    assert check.status == "warn" and "no MLflow database" in check.detail
    assert not (root / "nowhere.db").exists()
    assert runs["recsys-v2"].lineage["v2"].source == "ledger"


def test_models_show_offline_metrics_beside_online_effects(ran):
    root, _, _, _ = ran
    report = models_report(Workspace.open(root))
    rows = {(r["experiment"], r["variant"]): r for r in report["models"]}
    ship = rows[("recsys-v2", "v2")]
    assert (ship["model"], ship["version"]) == ("recsys", "2")
    assert ship["offline_metrics"] == {"val_auc": VAL_AUC[1]} and ship["effects"]
    assert rows[("ranker-v3", "v2")]["variant_status"] == "roll back recommended"    # failed models included
    assert ship["registry"]["datasets"][0]["digest"] == "digest3"
    entry = next(e for e in report["offline_vs_online"] if e["offline_metric"] == "val_auc")
    assert entry["n"] == 3 and entry["status"] == "not enough experiments yet" and entry["rho"] is None


def test_fixed_versions_resolve_and_an_unknown_alias_warns_while_the_analysis_goes_on(ws):
    root, _ = ws
    use_registry(root, {"recsys-v2": {"v1": "models:/recsys/1", "v2": "models:/recsys/3"},
                        "ranker-v3": {"v2": "models:/ranker@nobody"}})
    _, runs = _run(root)
    lin = runs["recsys-v2"].lineage["v2"]
    assert (lin.source, lin.version, lin.alias, lin.metrics) == ("mlflow", "3", None, {"val_auc": VAL_AUC[2]})
    run = runs["ranker-v3"]
    check = next(c for c in run.health if c.check == "mlflow_registry")
    assert run.status == "ok" and check.status == "warn" and "nobody" in check.detail
    assert run.lineage["v2"].source == "unresolved" and run.lineage["v1"].source == "mlflow"


@pytest.mark.parametrize("ref, message", [
    ("recsys/1", "not an MLflow model reference"),
    ("models:/recsys", "not an MLflow model reference"),
    ("models:/recsys@", "not an MLflow model reference"),
])
def test_bad_references_are_configuration_errors(ref, message):
    data = {"metrics": {"m": {"type": "mean", "event": "e"}},
            "experiments": {"x": {"control": "a", "primary": ["m"],
                                  "variants": {"a": {"mlflow": ref}, "b": {}}}}}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "experiments.x.variants.a.mlflow" in str(err.value) and message in str(err.value)
    data["experiments"]["x"]["variants"]["a"] = {"mlflow": "models:/recsys/1", "version": "1"}
    with pytest.raises(ConfigError, match="either 'mlflow'"):
        parse_config(data)


def test_without_the_mlflow_client_an_mlflow_key_gives_one_clear_line(simulated, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(simulated, root)
    use_registry(root, REFS)
    code = ("import sys; sys.modules['mlflow'] = None\n"
            "from abproxy.cli import main\n"
            f"sys.exit(main(['run', '--workspace', {str(root)!r}]))")
    for command in (code, code.replace("'run'", "'validate'")):
        p = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "pip install 'abproxy[mlflow]'" in lines[0], p.stderr


def test_the_models_page_shows_offline_metrics_and_offline_vs_online(ran, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, _, _, _ = ran
    monkeypatch.setenv("ABPROXY_WORKSPACE", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("abproxy/report/models.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.markdown[0].value.replace("\\", "")
    row = next(line for line in table.splitlines() if line.startswith("| **recsys 2** |"))
    assert f"val_auc {VAL_AUC[1]:.4g}" in row
    assert "Offline vs online" in [s.value for s in at.subheader]
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "not enough experiments yet: 3 of the 5 experiments needed" in shown


def test_the_experiment_page_shows_the_resolved_registry_lineage(ran, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root, _, _, _ = ran
    monkeypatch.setenv("ABPROXY_WORKSPACE", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.query_params["experiment"] = "recsys-v2"
    at.switch_page("abproxy/report/experiment.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(m.value for m in at.markdown).replace("\\", "")
    assert "models:/recsys@challenger" in shown and "2 (@challenger)" in shown and "clicks-3 (digest3)" in shown
