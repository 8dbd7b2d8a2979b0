"""abproxy.yaml validation: every problem with its key path and what is expected."""
from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from abproxy.config import ConfigError, load_config, parse_config
from abproxy.workspace import STARTER_CONFIG, init_workspace

BASE = yaml.safe_load(STARTER_CONFIG)


def problems(data) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return {where: what for where, what in exc.value.problems}


def edited(**paths):
    data = copy.deepcopy(BASE)
    for path, value in paths.items():
        *parents, last = path.split("__")
        node = data
        for p in parents:
            node = node[p.replace("_DASH_", "-")]
        node[last] = value
    return data


def test_the_starter_config_and_the_design_example_are_valid():
    config = parse_config(BASE)
    exp = config.experiments["recsys-v2"]
    assert exp.roles() == {"spend_per_user": "primary", "refund_rate": "guardrail",
                           "buyer_rate": "secondary", "spend_per_session": "secondary"}
    assert exp.guardrail_specs[0].margin == 0.05 and exp.weights == {"v1": 0.5, "v2": 0.5}


def test_unknown_metric_named_by_an_experiment():
    data = copy.deepcopy(BASE)
    data["experiments"]["recsys-v2"]["primary"] = ["spend_per_usr"]
    found = problems(data)
    assert "unknown metric 'spend_per_usr'" in found["experiments.recsys-v2.primary.0"]
    assert "spend_per_user" in found["experiments.recsys-v2.primary.0"]  # lists the known ones


@pytest.mark.parametrize("window", [0, -3, "two weeks"])
def test_window_must_be_a_positive_number(window):
    data = copy.deepcopy(BASE)
    data["metrics"]["buyer_rate"]["window_days"] = window
    assert "metrics.buyer_rate.window_days" in problems(data)


def test_allocation_must_sum_to_one_and_name_the_variants():
    data = copy.deepcopy(BASE)
    data["experiments"]["recsys-v2"]["allocation"] = {"v1": 0.5, "v2": 0.6}
    assert "sum to 1" in problems(data)["experiments.recsys-v2"]
    data["experiments"]["recsys-v2"]["allocation"] = {"v1": 0.5, "v3": 0.5}
    assert "variants" in problems(data)["experiments.recsys-v2"]


def test_unknown_keys_are_typos_not_silently_ignored():
    data = copy.deepcopy(BASE)
    data["metrics"]["refund_rate"]["higher_is_beter"] = False
    data["experiments"]["recsys-v2"]["decision"]["alhpa"] = 0.1
    data["shedule"] = {}
    found = problems(data)
    for where in ("metrics.refund_rate.higher_is_beter", "experiments.recsys-v2.decision.alhpa", "shedule"):
        assert "unknown key" in found[where]


def test_every_problem_is_reported_at_once():
    data = copy.deepcopy(BASE)
    data["metrics"]["buyer_rate"]["window_days"] = -1
    data["experiments"]["recsys-v2"]["control"] = "v9"
    data["experiments"]["recsys-v2"]["secondary"] = ["nope"]
    data["schedule"]["analyze_cron"] = "every hour"
    found = problems(data)
    assert len(found) == 4
    assert "cron" in found["schedule.analyze_cron"]
    assert "control 'v9'" in found["experiments.recsys-v2"]


@pytest.mark.parametrize("metric, message", [
    ({"type": "mean"}, "needs 'event'"),
    ({"type": "ratio", "numerator": {"event": "purchase"}}, "needs 'numerator' and 'denominator'"),
    ({"type": "proportion", "event": "x", "capping": {"quantile": 0.99}}, "capping does not apply"),
    ({"type": "mean", "event": "x", "capping": {"quantile": 0.99, "value": 5}}, "exactly one"),
    ({"type": "mean", "sql": "SELECT 1", "cuped": True}, "CUPED is not available"),
    ({"type": "mean", "event": "bad'name"}, "pattern"),
    ({"type": "mean", "event": "x", "aggregate": "median"}, "sum"),
])
def test_metric_shapes(metric, message):
    data = copy.deepcopy(BASE)
    data["metrics"]["extra"] = metric
    found = problems(data)
    assert any(where.startswith("metrics.extra") and message in what for where, what in found.items()), found


def test_segment_and_key_names_cannot_carry_sql():
    data = copy.deepcopy(BASE)
    data["experiments"]["recsys-v2"]["segments"] = ["country; DROP TABLE events"]
    assert any("segments" in where for where in problems(data))


def test_guardrails_accept_a_name_or_a_margin():
    data = copy.deepcopy(BASE)
    data["experiments"]["recsys-v2"]["guardrails"] = ["refund_rate", {"metric": "buyer_rate", "margin": 0.01,
                                                                       "relative": False}]
    specs = parse_config(data).experiments["recsys-v2"].guardrail_specs
    assert [(g.metric, g.margin, g.relative) for g in specs] == [("refund_rate", 0.0, True), ("buyer_rate", 0.01, False)]


def test_load_config_reports_yaml_syntax_with_its_line(tmp_path):
    init_workspace(tmp_path)
    (tmp_path / "abproxy.yaml").write_text("metrics:\n  a: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    assert "line" in exc.value.problems[0][0] and "YAML" in exc.value.problems[0][1]


_ITEM = st.one_of(st.just("*"), st.integers(0, 70).map(lambda n: f"*/{n}"), st.integers(0, 70).map(str),
                  st.tuples(st.integers(0, 70), st.integers(0, 70)).map(lambda t: f"{t[0]}-{t[1]}"),
                  st.sampled_from(["mon", "1-5/2", "L", "?", "x", ""]))
_CRON = st.lists(st.lists(_ITEM, min_size=1, max_size=3).map(",".join), min_size=4, max_size=6).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(_CRON)
def test_the_cron_shortcut_accepts_only_what_apscheduler_accepts(expr):
    """schedule.analyze_cron is checked without importing APScheduler when every item is plain (`*`,
    `*/n`, `n`, `n-m` in bounds): such a line must be one APScheduler accepts too."""
    from apscheduler.triggers.cron import CronTrigger

    from abproxy.config.settings import plain_cron

    if plain_cron(expr):
        CronTrigger.from_crontab(expr, timezone="UTC")


@pytest.mark.parametrize("expr", ["*/60 * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
                                  "0 0 * * 7", "5-3 * * * *", "*/0 * * * *", "0 * * *"])
def test_a_cron_line_outside_the_bounds_is_still_refused(expr):
    assert "cron" in problems(edited(schedule__analyze_cron=expr))["schedule.analyze_cron"]
