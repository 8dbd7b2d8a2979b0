"""The event-volume check expects events by days since exposure (issue 11, item 17): when enrollment
has ended, the units left in their window are late in it, where users act less — no false alarm."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from abproxy.config import EventSource
from abproxy.quality import AgeProfile, Scope, expected_events, volume_checks

START = dt.date(2026, 11, 1)
WINDOW = 14


def rate(age: int) -> float:
    """Events per unit and day, falling with days since exposure (users act less late in the window)."""
    return 2.0 * 0.8 ** age


def workspace(enrol_days: int, total_days: int, per_day: int = 1000, seed: int = 0):
    """Cohorts of `per_day` units exposed on each of the first `enrol_days` days, Poisson events at
    the age-dependent rate, profiled per calendar day like `daily_profile` (unit-days in window)."""
    rng = np.random.default_rng(seed)
    cohorts = {START + dt.timedelta(days=i): per_day for i in range(enrol_days)}
    days = [START + dt.timedelta(days=i) for i in range(total_days)]
    events, daily = [], []
    for d in days:
        count, unit_days = 0, 0.0
        for e, n in cohorts.items():
            age = (d - e).days
            if 0 <= age <= WINDOW:
                k = int(rng.poisson(n * rate(age)))
                events.append({"day": d, "age": age, "event": "purchase", "n": k})
                count += k
                unit_days += n if age < WINDOW else 0.0
        daily.append({"day": d, "unit_days": unit_days, "t0": count})
    profile = AgeProfile(pd.DataFrame(events), cohorts, WINDOW)
    scope = Scope("x", dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(6)), WINDOW, ("purchase",),
                  {"purchase": ("spend",)}, {EventSource(event="purchase"): ("spend",)}, frozenset())
    return scope, pd.DataFrame(daily), profile


def test_no_false_alarm_a_week_after_enrollment_ended():
    scope, daily, profile = workspace(enrol_days=14, total_days=21)
    # the old expectation (per unit-day in window, as if every day of a window had the same rate) warned
    old = volume_checks(scope, daily, 14, 0.5)
    assert old and old[0].status == "warn" and "dropped" in old[0].detail
    new = volume_checks(scope, daily, 14, 0.5, profile)
    assert new[0].status == "ok", new[0].detail
    assert "per unit at each day since exposure" in new[0].detail
    assert abs(new[0].value) < 0.2


def test_a_real_drop_still_warns():
    scope, daily, profile = workspace(enrol_days=14, total_days=21, seed=1)
    last = daily.index[-1]
    daily.loc[last, "t0"] = int(daily.loc[last, "t0"] * 0.3)
    c = volume_checks(scope, daily, 14, 0.5, profile)[0]
    assert c.status == "warn" and "dropped" in c.detail


def test_expected_events_follow_the_ages_of_the_units_in_window():
    scope, daily, profile = workspace(enrol_days=14, total_days=21, seed=2)
    last = daily["day"].iloc[-1]
    history = list(daily["day"].iloc[-15:-1])
    truth = sum(n * rate((last - e).days) for e, n in profile.cohorts.items() if 0 <= (last - e).days <= WINDOW)
    assert abs(expected_events(profile, "purchase", last, history) / truth - 1) < 0.05
