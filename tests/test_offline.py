"""Offline vs online across experiments: pairs, the 5-experiment minimum, failed models included."""
from __future__ import annotations

import pytest
from scipy.stats import spearmanr

from abproxy.offline import MIN_EXPERIMENTS, NOT_ENOUGH, offline_vs_online


def _rows(points: list[tuple[float, float, float]], status: str = "shipped") -> list[dict]:
    """One experiment per (control auc, treatment auc, online lift)."""
    rows = []
    for i, (base, auc, lift) in enumerate(points):
        key = f"exp{i}"
        rows.append({"experiment": key, "variant": "v1", "is_control": True, "offline_metrics": {"val_auc": base},
                     "effects": []})
        rows.append({"experiment": key, "variant": "v2", "is_control": False, "variant_status": status,
                     "offline_metrics": {"val_auc": auc, "only_here": 1.0},
                     "effects": [{"metric": "spend", "role": "primary", "rel_effect": lift},
                                 {"metric": "refunds", "role": "guardrail", "rel_effect": 0.5}]})
    return rows


def test_below_five_experiments_there_is_no_number():
    [entry] = offline_vs_online(_rows([(0.8, 0.81, 0.01), (0.8, 0.85, 0.05), (0.7, 0.72, -0.02), (0.8, 0.9, 0.1)]))
    assert entry["n"] == 4 < MIN_EXPERIMENTS and entry["status"] == NOT_ENOUGH and entry["rho"] is None
    assert entry["message"].startswith("not enough experiments yet: 4 of the 5")


def test_the_rank_correlation_of_offline_deltas_with_online_lifts():
    points = [(0.80, 0.81, 0.010), (0.80, 0.85, 0.050), (0.70, 0.72, -0.020), (0.80, 0.90, 0.030),
              (0.75, 0.74, -0.010), (0.60, 0.66, 0.080)]
    rows = _rows(points[:3]) + _rows(points[3:], status="roll back")   # failed models count too
    for r in rows[6:]:
        r["experiment"] += "b"
    [entry] = offline_vs_online(rows)
    deltas = [auc - base for base, auc, _ in points]
    lifts = [lift for _, _, lift in points]
    assert entry["n"] == 6 and entry["status"] == "ok"
    assert entry["rho"] == pytest.approx(spearmanr(deltas, lifts).statistic)
    assert entry["ci"][0] < entry["rho"] < entry["ci"][1]
    assert (entry["offline_metric"], entry["online_metric"]) == ("val_auc", "spend")
    assert "Spearman ρ" in entry["message"] and "n = 6" in entry["message"]


def test_arms_without_a_control_value_or_an_online_lift_are_left_out():
    rows = _rows([(0.8, 0.81, 0.01)])
    rows[1]["effects"][0]["rel_effect"] = float("nan")
    assert offline_vs_online(rows) == []
    rows = _rows([(0.8, 0.81, 0.01)])
    rows[0]["offline_metrics"] = {}
    assert offline_vs_online(rows) == []
