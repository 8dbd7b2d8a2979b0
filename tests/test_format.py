"""The one formatting module: how each kind of number reads in the report, the export and the CLI."""
from __future__ import annotations

import datetime as dt
import math

import pytest

from abproxy import format as fmt

NON_FINITE = [None, math.nan, math.inf, -math.inf, float("nan"), "x", True]


@pytest.mark.parametrize("fn", [fmt.pct, fmt.pt, fmt.number, fmt.count, fmt.pvalue, fmt.size, fmt.days,
                                fmt.when, fmt.day])
@pytest.mark.parametrize("x", NON_FINITE)
def test_nothing_non_finite_reaches_a_reader(fn, x):
    text = fn(x)
    assert text == fmt.MISSING
    for bad in ("nan", "NaN", "None", "inf"):
        assert bad not in text


def test_effects_without_numbers_read_na():
    assert fmt.effect(math.nan, 0.1, 0.2) == "n/a"
    assert fmt.effect(0.05, math.nan, 0.2) == "+5.0% (no interval)"
    assert fmt.interval(None, 0.1) == "n/a"


def test_pvalues_never_scientific_nor_a_bare_one():
    assert fmt.pvalue(1.6e-31) == "< 0.001"
    assert fmt.pvalue(0.0004) == "< 0.001"
    assert fmt.pvalue(0.04212) == "0.042"
    assert fmt.pvalue(1.0) == "1.000"


def test_units():
    assert fmt.pct(0.031) == "+3.1%"
    assert fmt.pct(-0.00001) == "+0.0%"                    # no '-0.0%'
    assert fmt.pt(0.0014) == "+0.14 pt"
    assert fmt.change(0.0014, "pt") == "+0.14 pt"
    assert fmt.change(0.031, "rel") == "+3.1%"
    assert fmt.unit_of("proportion", False) == "pt"
    assert fmt.unit_of("proportion", True) == "rel"
    assert fmt.unit_of("mean", False) == "abs"
    assert fmt.effect(0.0014, -0.001, 0.003, 0.95, "pt") == "+0.14 pt (95% CI -0.10 pt to +0.30 pt)"


def test_side_by_side_values_share_their_decimals():
    assert fmt.numbers([10, 9.288]) == ["10.00", "9.29"]
    assert fmt.values([0.1, 0.10234], "proportion") == ["10.00%", "10.23%"]
    assert fmt.number(1234567.0) == "1,234,567"
    assert fmt.number(2e15) == "2.000×10^15"


def test_sizes_and_timestamps():
    assert fmt.size(512) == "512 B"
    assert fmt.size(2048) == "2.0 KB"
    assert fmt.size(5 * 1024 ** 2) == "5.0 MB"
    assert fmt.when(dt.datetime(2026, 11, 30, 8, 15, 42, 123456)) == "2026-11-30 08:15 UTC"
    aware = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert fmt.when(aware) == "2026-11-30 08:15 UTC"
    assert fmt.when("2026-11-30T08:15:42.123456") == "2026-11-30 08:15 UTC"
    assert fmt.day(dt.date(2026, 11, 30)) == "2026-11-30"


def test_words():
    assert fmt.words("event_missing") == "Event missing"
