"""Metric preview: every number checked against numpy/statsmodels on the raw rows, and the panel
published into the report snapshot by the job."""
from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pytest
import yaml
from statsmodels.stats.power import NormalIndPower

from abproxy.cli import main
from abproxy.config import parse_config
from abproxy.ingest import ingest
from abproxy.preview import HORIZONS, PreviewError, preview, previews_frame
from abproxy.warehouse import connect

START = dt.datetime(2026, 3, 1)
AS_OF = dt.datetime(2026, 3, 25)
CONFIG = {
    "metrics": {
        "spend": {"type": "mean", "event": "purchase", "aggregate": "sum", "window_days": 7,
                  "capping": {"quantile": 0.95}},
        "buyers": {"type": "proportion", "event": "purchase", "window_days": 7},
        "unused": {"type": "mean", "event": "purchase"},
    },
    "experiments": {"exp": {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["spend"],
                            "secondary": ["buyers"]}},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    inbox = root / "inbox"
    (inbox / "exposures").mkdir(parents=True)
    (inbox / "events").mkdir()
    rng = random.Random(11)
    exposures, events, values = ["unit_id,experiment,variant,exposed_at"], ["unit_id,event,occurred_at,value"], {}
    for i in range(1200):
        exposed = START + dt.timedelta(hours=rng.uniform(0, 24 * 12))
        exposures.append(f"u{i:04d},exp,{'ab'[i % 2]},{exposed:%Y-%m-%d %H:%M:%S}")
        total = 0.0
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            at = exposed + dt.timedelta(hours=rng.uniform(-24, 24 * 9))  # some before / after the window
            amount = round(rng.expovariate(1 / 20), 2)
            events.append(f"u{i:04d},purchase,{at:%Y-%m-%d %H:%M:%S},{amount}")
            if exposed <= at < exposed + dt.timedelta(days=7):
                total += amount
        values[f"u{i:04d}"] = total
    (inbox / "exposures" / "x.csv").write_text("\n".join(exposures) + "\n")
    (inbox / "events" / "e.csv").write_text("\n".join(events) + "\n")
    con = connect(root / "w.duckdb")
    assert ingest(con, inbox, now=AS_OF).ok
    first = min(dt.datetime.fromisoformat(line.split(",")[3]) for line in exposures[1:])
    last = max(dt.datetime.fromisoformat(line.split(",")[3]) for line in exposures[1:])
    yield con, values, (last - first).total_seconds() / 86400
    con.close()


def test_mean_preview_matches_numpy_and_statsmodels(data):
    con, values, span_days = data
    config = parse_config(CONFIG)
    p = preview(con, config, "spend", None, AS_OF)
    y = np.array([values[k] for k in sorted(values)])
    assert (p.experiment, p.units, p.units_nonzero) == ("exp", 1200, int((y != 0).sum()))
    assert p.zero_share == pytest.approx((y == 0).mean())
    assert (p.p50, p.p90, p.p99, p.max) == pytest.approx((*np.quantile(y, [0.5, 0.9, 0.99]), y.max()))
    cap = np.quantile(y, 0.95)
    assert p.cap == pytest.approx(cap)
    capped = np.minimum(y, cap)
    assert p.cv == pytest.approx(capped.std(ddof=1) / capped.mean())
    assert p.units_per_day == pytest.approx(1200 / span_days)
    for days in HORIZONS:
        n = 1200 / span_days * days / 2
        d = NormalIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
        assert p.mde[str(days)] == pytest.approx(d * capped.std(ddof=1) / capped.mean(), rel=2e-3)
    assert [r["unit_id"] for r in p.rows] == sorted(values)[:10]
    assert p.rows[0]["value"] == pytest.approx(min(values[sorted(values)[0]], cap))
    assert "WITH exposed AS" in p.sql and "{as_of}" in p.sql


def test_proportion_preview_and_errors(data):
    con, values, _ = data
    config = parse_config(CONFIG)
    p = preview(con, config, "buyers", "exp", AS_OF)
    converted = np.array([values[k] > 0 for k in sorted(values)], dtype=float)
    assert p.zero_share == pytest.approx(1 - converted.mean()) and p.cap is None
    assert p.cv == pytest.approx(converted.std(ddof=1) / converted.mean())
    with pytest.raises(PreviewError, match=r"metric 'unused' is used by no experiment; name the experiment"):
        preview(con, config, "unused", None, AS_OF)
    with pytest.raises(PreviewError, match=r"unknown metric 'spnd' \(known: spend, buyers, unused\)"):
        preview(con, config, "spnd", None, AS_OF)
    assert preview(con, config, "unused", "exp", AS_OF).units == 1200   # any metric on an experiment's units
    frame = previews_frame(con, config, AS_OF)
    assert list(frame["metric"]) == ["spend", "buyers"] and frame["error"].isna().all()
    assert json.loads(frame["preview"][0])["units"] == 1200


def test_the_job_publishes_previews_for_the_catalog_page(tmp_path, capsys):
    ws = tmp_path / "ws"
    (ws / "inbox" / "exposures").mkdir(parents=True)
    (ws / "inbox" / "events").mkdir(parents=True)
    (ws / "abproxy.yaml").write_text(yaml.safe_dump(CONFIG))
    (ws / "inbox" / "exposures" / "x.csv").write_text(
        "unit_id,experiment,variant,exposed_at\n" + "".join(f"u{i},exp,{'ab'[i % 2]},2026-03-0{1 + i % 5} 10:00\n"
                                                            for i in range(50)))
    (ws / "inbox" / "events" / "e.csv").write_text(
        "unit_id,event,occurred_at,value\n" + "".join(f"u{i},purchase,2026-03-0{2 + i % 5} 10:00,{i}\n"
                                                      for i in range(0, 50, 3)))
    assert main(["run", "-w", str(ws), "--as-of", "2026-03-08T00:00:00", "--log-level", "ERROR"]) in (0, 1)
    from abproxy.report.data import metrics_catalog
    from abproxy.warehouse import open_snapshot

    snap = open_snapshot(ws / "data" / "report.duckdb")
    catalog = {m["metric"]: m for m in metrics_catalog(snap)}
    snap.close()
    assert catalog["spend"]["preview"]["units"] == 50 and catalog["unused"]["preview"] is None
    assert main(["ingest", "-w", str(ws), "--log-level", "ERROR"]) == 0   # carried over by ingest-only passes
    snap = open_snapshot(ws / "data" / "report.duckdb")
    assert {m["metric"]: m for m in metrics_catalog(snap)}["spend"]["preview"]["units"] == 50
    snap.close()
    capsys.readouterr()
    assert main(["preview", "spend", "-w", str(ws), "--as-of", "2026-03-08T00:00:00", "--json",
                 "--log-level", "ERROR"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == 50
    assert main(["preview", "spnd", "-w", str(ws), "--log-level", "ERROR"]) == 1
    assert "error: unknown metric 'spnd'" in capsys.readouterr().err


def test_previews_read_the_refreshed_state_and_equal_the_raw_tables(data):
    """The job computes the previews after the pass, reading the per-unit states it brought to as_of
    (no scan of the events per metric): the same numbers, rows and SQL shape as on the raw tables."""
    from abproxy.analysis import analyze
    from abproxy.sources import reading
    from abproxy.state import current_sources

    con = data[0]
    cfg = parse_config(CONFIG)
    raw = previews_frame(con, cfg, AS_OF)
    assert analyze(con, cfg, ["exp"], AS_OF, record=False)[0].refresh["mode"] in ("full", "incremental")
    sources = current_sources(con, cfg, ["exp"], AS_OF)
    assert set(sources) == {"exp"}
    assert current_sources(con, cfg, ["exp"], AS_OF - dt.timedelta(hours=1)) == {}   # another time: none
    con.execute("BEGIN TRANSACTION")          # with no events or exposures left, only the state can answer
    con.execute("DELETE FROM events")
    con.execute("DELETE FROM exposures")
    try:
        with reading(sources):
            folded = previews_frame(con, cfg, AS_OF)
    finally:
        con.execute("ROLLBACK")
    assert folded["error"].isna().all() and len(folded) == len(raw) == 2
    for (_, a), (_, b) in zip(raw.iterrows(), folded.iterrows()):
        one, two = json.loads(a["preview"]), json.loads(b["preview"])
        for key in ("units", "units_nonzero", "rows", "as_of", "type", "experiment"):
            assert one[key] == two[key], key
        for key in ("zero_share", "p50", "p90", "p99", "max", "cap", "cv", "units_per_day"):
            assert (one[key] is None) == (two[key] is None), key
            assert one[key] is None or one[key] == pytest.approx(two[key], rel=1e-9, abs=1e-12), key
        assert one["mde"].keys() == two["mde"].keys()
        for days in one["mde"]:
            assert one["mde"][days] == pytest.approx(two["mde"][days], rel=1e-9), days


def test_previews_of_one_experiment_come_from_one_query_and_equal_each_metric_alone(data):
    """The job previews an experiment's metrics together (one per-unit query); each equals the
    metric previewed alone, and a metric the warehouse cannot compute gets its own error."""
    con, _, _ = data
    cfg = dict(CONFIG, metrics=dict(CONFIG["metrics"],
               per_buyer={"type": "ratio", "numerator": {"event": "purchase"},
                          "denominator": {"event": "purchase", "aggregate": "count"}},
               spend_cuped={"type": "mean", "event": "purchase", "cuped": {"pre_window_days": 3}},
               broken={"type": "mean", "event": "purchase", "where": "no_such_column > 0"}))
    cfg["experiments"] = {"exp": dict(CONFIG["experiments"]["exp"],
                                      secondary=["buyers", "per_buyer", "spend_cuped", "broken"])}
    config = parse_config(cfg)
    frame = previews_frame(con, config, AS_OF)
    assert list(frame["metric"]) == ["spend", "buyers", "per_buyer", "spend_cuped", "broken"]
    rows = dict(zip(frame["metric"], zip(frame["preview"], frame["error"])))
    assert not isinstance(rows["broken"][0], str) and "no_such_column" in rows["broken"][1]
    for metric in ("spend", "buyers", "per_buyer", "spend_cuped"):
        assert not isinstance(rows[metric][1], str)
        alone = preview(con, config, metric, "exp", AS_OF).as_dict()
        assert json.loads(rows[metric][0]) == json.loads(json.dumps(alone, default=str)), metric
    good = parse_config(dict(cfg, metrics={k: v for k, v in cfg["metrics"].items() if k != "broken"},
                             experiments={"exp": dict(cfg["experiments"]["exp"],
                                                      secondary=["buyers", "per_buyer", "spend_cuped"])}))
    from abproxy.preview import previews
    together = previews(con, good, "exp", ["spend", "buyers", "per_buyer", "spend_cuped"], AS_OF)
    assert [p.as_dict() for p in together] == [preview(con, good, m, "exp", AS_OF).as_dict()
                                                for m in ("spend", "buyers", "per_buyer", "spend_cuped")]
    assert together[2].rows and set(together[2].rows[0]) == {"unit_id", "variant", "value", "denominator"}
