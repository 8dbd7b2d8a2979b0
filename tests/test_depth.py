"""Issue 18 end to end on a real DuckDB warehouse: quantile metrics, rare-event proportions,
group-sequential decisions, CUPAC, pre-exposure imbalance (and restarts), interactions.

Raw exposures and events are inserted; expected numbers come from numpy/scipy on the same rows.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from abproxy.stats import at_level
from scipy import stats


from abproxy.analysis import analyze_experiment
from abproxy.config import ConfigError, parse_config
from abproxy.stats.groupseq import obf_boundary
from abproxy.stats.quantile import QuantileSummary, quantile_effect, quantile_ranks
from abproxy.warehouse import connect

START = dt.datetime(2024, 3, 1)
AS_OF = dt.datetime(2024, 3, 15)
N = 6000


def _load(con, exposures: pd.DataFrame, events: pd.DataFrame) -> None:
    for extra in [c for c in exposures.columns if c not in ("unit_id", "experiment", "variant", "exposed_at")]:
        kind = "DOUBLE" if pd.api.types.is_numeric_dtype(exposures[extra]) else "VARCHAR"
        con.execute(f'ALTER TABLE exposures ADD COLUMN IF NOT EXISTS "{extra}" {kind}')
    con.register("_ex", exposures.assign(file_id=1, loaded_at=pd.Timestamp("2024-04-01")))
    con.register("_ev", events.assign(event_id=[f"e{i}" for i in range(len(events))], file_id=2,
                                      loaded_at=pd.Timestamp("2024-04-01")))
    con.execute("INSERT INTO exposures BY NAME SELECT * FROM _ex")
    con.execute("INSERT INTO events BY NAME SELECT * FROM _ev")
    con.unregister("_ex")
    con.unregister("_ev")


def _world(seed=1, *, pre_shift=0.0, score_shift=0.0, interaction=0.0, rare_rate=0.001, restart=0):
    """Experiment 'exp' (a/b) and a concurrent 'other' (x/y) on the same units."""
    rng = np.random.default_rng(seed)
    uid = np.array([f"u{i:05d}" for i in range(N)])
    arm = rng.choice(["a", "b"], N)
    other = rng.choice(["x", "y"], N)
    t0 = pd.Timestamp(START) + pd.to_timedelta(rng.integers(0, 7 * 86400, N), unit="s")
    base = rng.lognormal(2.0, 1.0, N)
    score = base * rng.lognormal(0, 0.3, N) * np.where(arm == "b", 1 + score_shift, 1.0)
    exposures = pd.concat([
        pd.DataFrame({"unit_id": uid, "experiment": "exp", "variant": arm, "exposed_at": t0, "score": score}),
        pd.DataFrame({"unit_id": uid, "experiment": "other", "variant": other,
                      "exposed_at": t0 + pd.Timedelta(minutes=5), "score": np.nan}),
    ], ignore_index=True)
    if restart:
        early = exposures.iloc[:restart].assign(exposed_at=pd.Timestamp(START) - pd.Timedelta(days=20))
        exposures = pd.concat([exposures, early], ignore_index=True)
    lift = np.where(arm == "b", 1.05 + interaction * (other == "y"), 1.0)
    spend = base * lift * rng.lognormal(0, 0.5, N) * (rng.random(N) < 0.6)
    pre = base * (1 + pre_shift * (arm == "b")) * rng.lognormal(0, 0.5, N)
    rare = rng.random(N) < rare_rate
    events = pd.concat([
        pd.DataFrame({"unit_id": uid, "event": "purchase", "occurred_at": t0 + pd.Timedelta(hours=3), "value": spend}),
        pd.DataFrame({"unit_id": uid, "event": "purchase", "occurred_at": t0 - pd.Timedelta(days=3), "value": pre}),
        pd.DataFrame({"unit_id": uid[rare], "event": "refund", "occurred_at": t0[rare] + pd.Timedelta(hours=5),
                      "value": 1.0}),
    ], ignore_index=True)
    events = events[events["value"] > 0]
    units = pd.DataFrame({"unit_id": uid, "arm": arm, "other": other, "spend": spend, "pre": pre,
                          "refund": rare.astype(float), "score": score})
    return exposures, events, units


METRICS = {
    "spend": {"type": "mean", "event": "purchase", "window_days": 7, "cuped": {"pre_window_days": 7}},
    "spend_p90": {"type": "quantile", "quantile": 0.9, "event": "purchase", "window_days": 7},
    "spend_cupac": {"type": "mean", "event": "purchase", "window_days": 7, "cuped": {"covariate": "score"}},
    "refund_rate": {"type": "proportion", "event": "refund", "window_days": 7, "higher_is_better": False},
}


def _config(decision=None, **exp):
    return parse_config({"metrics": METRICS, "experiments": {
        "exp": {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["spend", "spend_p90"],
                "secondary": ["spend_cupac"], "guardrails": ["refund_rate"],
                "decision": {"sequential": False, "min_days": 0, "min_units_per_variant": 0, **(decision or {})},
                **exp},
        "other": {"control": "x", "variants": {"x": {}, "y": {}}, "primary": ["spend"],
                  "decision": {"sequential": False}}}})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    con = connect(tmp_path_factory.mktemp("depth") / "warehouse.duckdb")
    exposures, events, units = _world()
    _load(con, exposures, events)
    yield con, units
    con.close()


def _result(run, metric):
    return next(r for r in run.results if r.metric == metric and r.segment == "")


def _checks(run, name):
    return [c for c in run.health if c.check == name]


def test_quantile_metric_matches_numpy_order_statistics(world):
    con, units = world
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    assert run.status == "ok", run.error
    r = _result(run, "spend_p90")
    assert r.effect.method == "quantile-order-stat"

    def summary(x):
        x = np.sort(x)
        lo, k, hi = quantile_ranks(len(x), 0.9)
        return QuantileSummary(len(x), 0.9, x[k - 1], x[lo - 1], x[hi - 1])

    c, t = (units.loc[units["arm"] == v, "spend"].to_numpy() for v in ("a", "b"))
    expected = quantile_effect(summary(c), summary(t))
    assert r.effect.control_mean == pytest.approx(np.quantile(c, 0.9, method="inverted_cdf"), rel=1e-9)
    assert r.effect.abs_effect == pytest.approx(expected.abs_effect, rel=1e-9)
    assert r.effect.abs_se == pytest.approx(expected.abs_se, rel=1e-9)
    # the run shows the interval at the level of its adjusted p (METHODS §19)
    assert r.effect.rel_ci == pytest.approx(at_level(expected, r.effect.ci_alpha).rel_ci, rel=1e-9)
    assert r.record()["method"] == "quantile-order-stat"
    assert not [x for x in run.results if x.metric == "spend_p90" and x.segment]


def test_rare_proportion_uses_fisher(world):
    con, units = world
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    r = _result(run, "refund_rate")
    assert r.effect.method == "fisher-exact"
    k = {v: int(units.loc[units["arm"] == v, "refund"].sum()) for v in ("a", "b")}
    n = {v: int((units["arm"] == v).sum()) for v in ("a", "b")}
    ref = stats.fisher_exact([[k["b"], n["b"] - k["b"]], [k["a"], n["a"] - k["a"]]]).pvalue
    assert r.effect.p_value == pytest.approx(ref)


def test_group_sequential_decision(world):
    con, _ = world
    cfg = _config({"sequential": "group", "looks": 14, "max_days": 28})
    run = analyze_experiment(con, cfg, "exp", AS_OF, robustness=False)
    assert run.status == "ok", run.error
    look = run.parameters["look"]
    assert look == math.floor(run.days_running / 28 * 14)
    assert run.method == f"group-sequential (look {look} of 14)"
    r = _result(run, "spend")
    c = obf_boundary(14, 0.05, look).z[-1]
    assert r.effect.method == "cuped+group-sequential"
    assert r.effect.abs_ci[1] - r.effect.abs_ci[0] == pytest.approx(2 * c * r.effect.abs_se)


def test_group_sequential_config_errors():
    with pytest.raises(ConfigError, match="needs 'looks'"):
        _config({"sequential": "group"})
    with pytest.raises(ConfigError, match="planned duration"):
        _config({"sequential": "group", "looks": 14})
    with pytest.raises(ConfigError, match="'looks' is for sequential: group"):
        _config({"looks": 14})


def test_quantile_and_cuped_config_errors():
    bad = {**METRICS, "p": {"type": "quantile", "event": "purchase"}}
    with pytest.raises(ConfigError, match="needs 'quantile'"):
        parse_config({"metrics": bad})
    bad = {**METRICS, "p": {"type": "mean", "event": "purchase", "cuped": {"covariate": "s", "pre_window_days": 3}}}
    with pytest.raises(ConfigError, match="either 'pre_window_days'"):
        parse_config({"metrics": bad})


def test_balanced_world_checks_ok(world):
    con, _ = world
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    pre = _checks(run, "pre_exposure_imbalance")
    assert {c.metric for c in pre} == {"spend", "spend_cupac"} and all(c.status == "ok" for c in pre)
    cov = _checks(run, "cuped_covariate")
    assert [c.status for c in cov] == ["ok"]
    assert _result(run, "spend_cupac").effect.method == "cuped"
    inter = _checks(run, "interaction")
    assert inter and all(c.status == "ok" and c.segment == "other" for c in inter)


@pytest.fixture
def fresh(tmp_path):
    def make(**kw):
        con = connect(tmp_path / f"w{len(list(tmp_path.iterdir()))}.duckdb")
        exposures, events, units = _world(**kw)
        _load(con, exposures, events)
        return con, units
    return make


def test_pre_exposure_imbalance_warns_and_names_cuped_correction(fresh):
    con, _ = fresh(pre_shift=0.3)
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    warn = [c for c in _checks(run, "pre_exposure_imbalance") if c.metric == "spend"]
    assert warn[0].status == "warn" and warn[0].value < 0.001
    assert "CUPED corrects" in warn[0].detail and "standardised difference" in warn[0].detail


def test_restarts_are_flagged(fresh):
    con, _ = fresh(restart=300)
    run = analyze_experiment(con, _config(start=START.date()), "exp", AS_OF, robustness=False)
    restart = [c for c in _checks(run, "pre_exposure_imbalance") if c.segment == "restarts"]
    assert restart[0].status == "warn" and restart[0].value == 300


def test_cupac_covariate_differing_by_arm_is_refused(fresh):
    con, _ = fresh(score_shift=0.2)
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    cov = _checks(run, "cuped_covariate")
    assert cov[0].status == "warn" and "differs by arm" in cov[0].detail
    assert _result(run, "spend_cupac").effect.method == "welch"


def test_cupac_covariate_changing_after_exposure_is_refused(fresh):
    con, _ = fresh()
    con.execute("INSERT INTO exposures (unit_id, experiment, variant, exposed_at, score) "
                "SELECT unit_id, experiment, variant, exposed_at + INTERVAL 1 HOUR, score + 1 FROM exposures "
                "WHERE experiment = 'exp' LIMIT 50")
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    cov = _checks(run, "cuped_covariate")
    assert cov[0].status == "warn" and "changes after exposure" in cov[0].detail


def test_interaction_between_concurrent_experiments_warns(fresh):
    con, _ = fresh(interaction=0.6)
    run = analyze_experiment(con, _config(), "exp", AS_OF, robustness=False)
    warn = [c for c in _checks(run, "interaction") if c.status == "warn"]
    assert warn and warn[0].segment == "other" and "other" in warn[0].detail and warn[0].metric == "spend"


def test_robustness_recomputes_quantiles_at_the_same_look(world):
    con, _ = world
    cfg = _config({"sequential": "group", "looks": 14, "max_days": 28})
    run = analyze_experiment(con, cfg, "exp", AS_OF)
    assert run.status == "ok", run.error
    robust = _checks(run, "decision_robustness")
    assert robust and "could not" not in robust[0].detail
