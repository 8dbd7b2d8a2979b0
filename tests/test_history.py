"""history / diff / models on simulated workspaces (real DuckDB, the real ingest → analyse → publish job).

One module-scoped ledger is built by a chain of runs, each changing one thing:

  run 1  as of day 4, one events file held back     win: KEEP_RUNNING (too early); bad: ROLLBACK
  run 2  as of the end (complete windows)           win: SHIP
  run 3  the same again (nothing changed)           identical numbers
  run 4  the held-back events file is dropped in    data change
  run 5  spend_per_user.window_days 14 → 7, bad marked rolled_back in abproxy.yaml   definition change
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from abproxy.history import HistoryError, diff, history, models, print_diff, print_history, print_models, resolve_run
from abproxy.jobs import run_job
from abproxy.ledger import code_version
from abproxy.simulate import ExperimentSpec, SimulationSpec, analysis_time, simulate
from abproxy.warehouse import WarehouseError
from abproxy.workspace import Workspace

# Well in the past: ingest rejects event timestamps later than "now".
START = dt.datetime(2025, 3, 1)
SPEC = SimulationSpec(
    experiments=(
        ExperimentSpec("win", name="Recsys v2", units=20_000, spend_lift=0.25, model="recsys", versions=("1.4.0", "2.0.0")),
        ExperimentSpec("bad", name="Ranker v3", units=10_000, spend_lift=-0.30, model="ranker",
                       versions=("2.9.0", "3.0.0")),
    ),
    start=START, seed=11, files_per_kind=2)
HELD_BACK = "events/sim-events-001.parquet"
pytestmark = pytest.mark.slow   # real simulations, DuckDB and subprocesses (~1 min in all)


def _run(root: Path, as_of: dt.datetime):
    result = run_job(Workspace.open(root), "run", as_of=as_of)
    assert result.ok, result.errors
    return {r.experiment: r for r in result.runs}


def _edit_config(root: Path, edit) -> None:
    path = root / "abproxy.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    root = tmp_path_factory.mktemp("hist") / "ws"
    simulate(root, SPEC)
    aside = root.parent / "aside.parquet"
    shutil.move(root / "inbox" / HELD_BACK, aside)
    end = analysis_time(SPEC)
    runs = [_run(root, START + dt.timedelta(days=4)), _run(root, end), _run(root, end)]
    shutil.move(aside, root / "inbox" / HELD_BACK)
    runs.append(_run(root, end))

    def edit(data):
        data["metrics"]["spend_per_user"]["window_days"] = 7
        data["experiments"]["bad"]["status"] = "rolled_back"
    _edit_config(root, edit)
    runs.append(_run(root, end))
    return root, runs


def _ids(runs, key):
    return [r[key].run_id for r in runs if key in r]


def _snapshot(root: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(root / "data" / "report.duckdb"), read_only=True)


# --------------------------------------------------------------------------- reproducibility

# `health` is left out: some checks look back over earlier runs (e.g. the recent decisions), so they
# legitimately differ between two otherwise identical runs.
LEDGER_TABLES = ("results", "series")


def _ledger_frames(root: Path, run_id: str) -> dict[str, pd.DataFrame]:
    con = _snapshot(root)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} WHERE run_id = ? ORDER BY ALL", [run_id]).df()
                for t in LEDGER_TABLES}
    finally:
        con.close()


def _run_row(root: Path, run_id: str) -> tuple:
    con = _snapshot(root)
    try:
        return con.execute("SELECT definition_hash, definitions, watermark, code_version, parameters, decision, "
                           "ship_variant, reasons, units, days_running FROM runs WHERE run_id = ?", [run_id]).fetchone()
    finally:
        con.close()


def test_reanalysing_unchanged_data_reproduces_the_numbers(ledger):
    """Same data, definitions, code and as_of: every row matches except run_id. With DuckDB's default
    parallel aggregation the float sums may be added in a different order, so floats agree to ~1e-14
    relative rather than bit for bit (bit-exact with one thread: the next test)."""
    root, runs = ledger
    a, b = runs[1]["win"].run_id, runs[2]["win"].run_id
    fa, fb = _ledger_frames(root, a), _ledger_frames(root, b)
    for table in LEDGER_TABLES:
        assert len(fa[table]) > 0
        x, y = fa[table], fb[table]
        floats = [c for c in x.columns if x[c].dtype.kind in "fc"]
        exact = [c for c in x.columns if c not in floats and c != "details"]
        pd.testing.assert_frame_equal(x[exact], y[exact], check_exact=True)
        pd.testing.assert_frame_equal(x[floats], y[floats], check_exact=False, rtol=1e-9, atol=1e-12)
        if "details" in x.columns:
            for dx, dy in zip(x["details"], y["details"]):
                dx, dy = json.loads(dx), json.loads(dy)
                assert dx.keys() == dy.keys()
                assert {k: v for k, v in dx.items() if v is not None} == pytest.approx(
                    {k: v for k, v in dy.items() if v is not None}, rel=1e-9)
    assert _run_row(root, a) == _run_row(root, b)      # verdict, reasons (with their numbers), units, watermark
    d = diff(Workspace.open(root), a, b)
    assert not d["verdict"]["changed"] and not d["data"]["changed"] and not d["definitions"]["changed"]
    assert not d["code"]["changed"]
    assert not any(m["significance_changed"] for m in d["metrics"])
    assert all(abs(m["delta"]["rel_effect"]) < 1e-12 for m in d["metrics"])
    assert d["summary"][:3] == ["Verdict unchanged: SHIP", "Same data (no file added or removed, same row counts)",
                                "Same definitions"]


def test_single_threaded_reanalysis_is_bit_identical(tmp_path):
    spec = SimulationSpec(experiments=(ExperimentSpec("win", units=4000, spend_lift=0.25),),
                          start=START, seed=3)
    simulate(tmp_path, spec)
    _edit_config(tmp_path, lambda data: data.update(duckdb={"threads": 1}))
    a, b = (_run(tmp_path, analysis_time(spec))["win"].run_id for _ in range(2))
    fa, fb = _ledger_frames(tmp_path, a), _ledger_frames(tmp_path, b)
    for table in LEDGER_TABLES:
        pd.testing.assert_frame_equal(fa[table], fb[table], check_exact=True)
    assert _run_row(tmp_path, a) == _run_row(tmp_path, b)
    d = diff(Workspace.open(tmp_path), a, b)
    assert not any(m["changed"] for m in d["metrics"])
    assert d["summary"][-1] == "Every metric's numbers are identical"


# --------------------------------------------------------------------------- history

def test_history_lists_every_run_oldest_first_with_verdicts(ledger):
    root, runs = ledger
    rows = history(Workspace.open(root), "win")
    assert [r["run_id"] for r in rows] == _ids(runs, "win")
    assert [r["decision"] for r in rows[:3]] == ["KEEP_RUNNING", "SHIP", "SHIP"]
    assert rows[0]["ship_variant"] is None and rows[1]["ship_variant"] == "treatment"
    assert rows[0]["as_of"] == (START + dt.timedelta(days=4)).isoformat()
    assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)
    for row, run in zip(rows, (r["win"] for r in runs)):
        assert row["status"] == "ok"
        assert row["definition_hash"] == run.definition_hash
        assert row["code_version"] == code_version()[0]
        assert row["units"] == run.units
        assert row["reasons"] == list(run.verdict.reasons)
        (p,) = row["primary"]
        expected = next(r for r in run.results if r.segment == "" and r.role == "primary")
        assert (p["metric"], p["variant"]) == ("spend_per_user", "treatment")
        assert p["rel_effect"] == pytest.approx(expected.effect.rel_effect, rel=1e-12)
        assert p["rel_ci"] == pytest.approx(list(expected.effect.rel_ci), rel=1e-12)
        assert p["p_value_adjusted"] == pytest.approx(expected.p_value_adjusted, rel=1e-9, abs=1e-300)
    assert rows[3]["definition_hash"] == rows[0]["definition_hash"] != rows[4]["definition_hash"]


def test_history_of_an_experiment_no_longer_analysed(ledger):
    root, runs = ledger
    rows = history(Workspace.open(root), "bad")
    assert [r["run_id"] for r in rows] == _ids(runs, "bad")
    assert len(rows) == 4 and [r["decision"] for r in rows[1:]] == ["ROLLBACK"] * 3


def test_unknown_experiment_names_the_known_ones(ledger):
    root, _ = ledger
    with pytest.raises(HistoryError, match=r"unknown experiment 'nope' \(known: bad, win\)"):
        history(Workspace.open(root), "nope")


def test_no_snapshot_yet_says_what_to_do(tmp_path):
    simulate(tmp_path, SPEC)
    with pytest.raises(WarehouseError, match="abproxy run"):
        history(Workspace.open(tmp_path), "win")


def test_print_history(ledger, capsys):
    root, runs = ledger
    print_history(history(Workspace.open(root), "win"))
    out = capsys.readouterr().out
    assert "win: 5 runs" in out
    for run_id in _ids(runs, "win"):
        assert run_id in out
    assert "SHIP → treatment" in out and "KEEP_RUNNING" in out and "spend_per_user[treatment]" in out


# --------------------------------------------------------------------------- diff

def test_diff_detects_a_verdict_change(ledger):
    root, runs = ledger
    d = diff(Workspace.open(root), runs[0]["win"].run_id, runs[1]["win"].run_id)
    v = d["verdict"]
    assert v["changed"] and (v["before"]["decision"], v["after"]["decision"]) == ("KEEP_RUNNING", "SHIP")
    assert v["after"]["ship_variant"] == "treatment"
    assert d["summary"][0] == "Verdict changed from KEEP_RUNNING to SHIP (treatment)"
    assert any(r.startswith("Ship treatment") for r in v["reasons_added"])
    # same files, later as_of: more rows, a later watermark, unchanged definitions
    data = d["data"]
    assert data["as_of"]["changed"] and not data["files_added"]
    assert data["exposure_rows"]["after"] > data["exposure_rows"]["before"]
    assert data["max_exposed_at"]["after"] > data["max_exposed_at"]["before"]
    assert not d["definitions"]["changed"]
    primary = next(m for m in d["metrics"] if m["metric"] == "spend_per_user")
    assert primary["before"]["significant"] is False or primary["after"]["significant"] is True
    assert primary["delta"]["rel_effect"] == pytest.approx(primary["after"]["rel_effect"] - primary["before"]["rel_effect"])


def test_diff_detects_a_new_data_file(ledger):
    root, runs = ledger
    d = diff(Workspace.open(root), runs[2]["win"].run_id, runs[3]["win"].run_id)
    data = d["data"]
    (added,) = data["files_added"]
    assert added["path"] == HELD_BACK and added["kind"] == "events" and added["rows"] > 0
    assert not data["files_removed"] and not data["as_of"]["changed"]
    assert data["files_after"] == data["files_before"] + 1
    assert data["event_rows"]["delta"] == data["event_rows"]["after"] - data["event_rows"]["before"] > 0
    assert data["exposure_rows"]["delta"] == 0
    assert f"1 new file ({added['rows']:,} events)" in d["summary"]
    assert any(s.startswith("Event rows ") for s in d["summary"])
    assert not d["definitions"]["changed"] and not d["code"]["changed"]
    assert all(m["changed"] for m in d["metrics"])   # half the units gained their events


def test_diff_detects_a_definition_change(ledger):
    root, runs = ledger
    d = diff(Workspace.open(root), runs[3]["win"].run_id, runs[4]["win"].run_id)
    assert d["definitions"]["changed"] == [{"path": "metrics.spend_per_user.window_days", "before": 14.0,
                                            "after": 7.0, "change": "changed"}]
    assert d["definitions"]["hash"]["changed"]
    assert "Definition changed: metrics.spend_per_user.window_days 14 → 7" in d["summary"]
    assert not d["data"]["changed"]
    by_metric = {m["metric"]: m for m in d["metrics"]}
    assert by_metric["spend_per_user"]["changed"]
    assert not by_metric["buyer_rate"]["changed"]   # its own 14-day window is untouched


def test_diff_other_experiment_definitions_are_not_mixed_in(ledger):
    root, runs = ledger
    # 'bad' was marked rolled_back in run 5 but is part of neither run's definitions of 'win'
    d = diff(Workspace.open(root), runs[0]["win"].run_id, runs[4]["win"].run_id)
    assert [c["path"] for c in d["definitions"]["changed"]] == ["metrics.spend_per_user.window_days"]


def test_diff_accepts_unique_prefixes_and_rejects_unknown_runs(ledger):
    root, runs = ledger
    ws = Workspace.open(root)
    a, b = runs[0]["win"].run_id, runs[1]["win"].run_id
    assert diff(ws, a[:8], b[:8])["run_a"]["run_id"] == a
    with pytest.raises(HistoryError, match="no run 'zzzz'"):
        diff(ws, "zzzz", b)
    with pytest.raises(HistoryError, match="empty run id"):
        diff(ws, a, " ")


def test_diff_between_experiments_says_so(ledger):
    root, runs = ledger
    d = diff(Workspace.open(root), runs[1]["win"].run_id, runs[1]["bad"].run_id)
    assert d["summary"][0] == "The runs belong to different experiments: win and bad"


def test_resolve_run_ambiguous_prefix():
    con = duckdb.connect()
    con.execute("CREATE TABLE runs (run_id VARCHAR, started_at TIMESTAMP)")
    con.execute("INSERT INTO runs VALUES ('abc111', '2025-01-01'), ('abc222', '2025-01-02'), ('abc', '2025-01-03')")
    with pytest.raises(HistoryError, match=r"prefix 'ab' is ambiguous \(3 runs"):
        resolve_run(con, "ab")
    assert resolve_run(con, "abc1") == "abc111"
    assert resolve_run(con, "abc") == "abc"   # an exact id wins over longer ids it prefixes


def test_print_diff(ledger, capsys):
    root, runs = ledger
    print_diff(diff(Workspace.open(root), runs[3]["win"].run_id, runs[4]["win"].run_id))
    out = capsys.readouterr().out
    assert "metrics.spend_per_user.window_days: 14 → 7" in out
    assert "Summary" in out and "spend_per_user" in out


# --------------------------------------------------------------------------- models

def test_leaderboard_lists_every_model_version_including_rolled_back(ledger):
    root, runs = ledger
    rows = models(Workspace.open(root))
    # sorted by each arm's own outcome (best first), then the primary lift; baselines last
    assert [(r["model"], r["version"], r["experiment"], r["variant"]) for r in rows] == [
        ("recsys", "2.0.0", "win", "treatment"), ("ranker", "3.0.0", "bad", "treatment"),
        ("ranker", "2.9.0", "bad", "control"), ("recsys", "1.4.0", "win", "control")]
    by = {(r["experiment"], r["variant"]): r for r in rows}

    bad = by["bad", "treatment"]
    assert bad["experiment_status"] == "rolled_back" and bad["role"] == "treatment"
    assert bad["run_id"] == runs[3]["bad"].run_id              # its latest run (not analysed in run 5)
    assert bad["decision"] == "ROLLBACK" and bad["variant_status"] == "rolled back" and not bad["shipped"]
    spend = next(e for e in bad["effects"] if e["metric"] == "spend_per_user")
    expected = next(r for r in runs[3]["bad"].results if r.segment == "" and r.metric == "spend_per_user")
    assert spend["role"] == "primary" and spend["significant"] and spend["rel_effect"] < 0
    assert spend["rel_effect"] == pytest.approx(expected.effect.rel_effect, rel=1e-12)
    assert {e["metric"] for e in bad["effects"]} == {r.metric for r in runs[3]["bad"].results if r.segment == ""}

    win = by["win", "treatment"]
    assert win["run_id"] == runs[4]["win"].run_id and win["experiment_status"] == "running"
    assert not win["shipped"]                                   # a running experiment has shipped nothing yet
    assert win["variant_status"] == ("ship recommended" if win["decision"] == "SHIP" else win["variant_status"])
    assert win["variant_status"] != "shipped"
    assert win["effects"] and all(e["control"] == "control" for e in win["effects"])

    for key in (("bad", "control"), ("win", "control")):
        base = by[key]
        assert base["role"] == "baseline" and base["is_control"] and base["effects"] == [] and not base["shipped"]


def test_leaderboard_keeps_removed_and_failed_experiments(ledger, tmp_path):
    root, runs = ledger
    copy = tmp_path / "ws"
    shutil.copytree(root, copy)

    def edit(data):
        del data["experiments"]["bad"]                          # removed from the file: lives on in the ledger
        data["experiments"]["ghost"] = {**data["experiments"]["win"], "segments": ["loyalty_tier"],
                                        "variants": {"control": {"model": "legacy", "version": "0.1"},
                                                     "treatment": {"model": "legacy", "version": "0.2"}}}
    _edit_config(copy, edit)
    result = run_job(Workspace.open(copy), "run", as_of=analysis_time(SPEC))
    assert not result.ok and any("loyalty_tier" in e for e in result.errors)

    rows = models(Workspace.open(copy))
    by = {(r["experiment"], r["variant"]): r for r in rows}
    assert set(by) == {("bad", "control"), ("bad", "treatment"), ("ghost", "control"), ("ghost", "treatment"),
                       ("win", "control"), ("win", "treatment")}
    bad = by["bad", "treatment"]
    assert bad["source"] == "ledger" and (bad["model"], bad["version"]) == ("ranker", "3.0.0")
    assert bad["decision"] == "ROLLBACK" and bad["effects"]
    ghost = by["ghost", "treatment"]
    assert ghost["run_status"] == "failed" and ghost["variant_status"] == "analysis failed"
    assert "loyalty_tier" in ghost["error"] and ghost["effects"] == [] and ghost["decision"] is None
    from abproxy.history import outcome_rank

    ranks = [outcome_rank(r["variant_status"]) for r in rows]
    assert ranks == sorted(ranks)


def test_print_models(ledger, capsys):
    root, _ = ledger
    print_models(models(Workspace.open(root)))
    out = capsys.readouterr().out
    for word in ("ranker", "3.0.0", "rolled_back", "ROLLBACK", "(baseline)", "recsys", "2.0.0"):
        assert word in out


# --------------------------------------------------------------------------- the CLI

def _cli(*args: str, workspace: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "abproxy"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "abproxy.cli"]
    return subprocess.run([*cmd, *args, "--workspace", str(workspace)], capture_output=True, text=True, timeout=120)


def test_cli_history_diff_models_json_while_the_warehouse_is_held(ledger):
    root, runs = ledger
    writer = duckdb.connect(str(root / "data" / "warehouse.duckdb"))   # like a running scheduler
    try:
        p = _cli("history", "win", "--json", workspace=root)
        assert p.returncode == 0, p.stderr
        rows = json.loads(p.stdout)
        assert [r["run_id"] for r in rows] == _ids(runs, "win")
        assert rows[1]["decision"] == "SHIP"

        a, b = runs[3]["win"].run_id, runs[4]["win"].run_id
        p = _cli("diff", a[:7], b[:7], "--json", workspace=root)
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert (d["run_a"]["run_id"], d["run_b"]["run_id"]) == (a, b)
        assert [c["path"] for c in d["definitions"]["changed"]] == ["metrics.spend_per_user.window_days"]

        p = _cli("models", "--json", workspace=root)
        assert p.returncode == 0, p.stderr
        assert {(r["model"], r["version"]) for r in json.loads(p.stdout)["models"]} == {
            ("ranker", "2.9.0"), ("ranker", "3.0.0"), ("recsys", "1.4.0"), ("recsys", "2.0.0")}

        p = _cli("history", "win", workspace=root)
        assert p.returncode == 0 and runs[0]["win"].run_id in p.stdout
    finally:
        writer.close()


def test_cli_unknown_experiment_is_one_line(ledger):
    root, _ = ledger
    p = _cli("history", "nope", workspace=root)
    assert p.returncode == 1
    assert "unknown experiment 'nope' (known: bad, win)" in p.stderr
    assert "Traceback" not in p.stderr
