"""How every kind of number reads, everywhere a person sees one: the report pages, the HTML review
and the CLI. One module decides, so the same value never reads two ways.

Rules
- Nothing non-finite or missing reaches a reader: ``None``, NaN and ±inf print as ``MISSING`` ("n/a").
- Relative effects and shares are percentages (``+3.1%``); absolute effects of proportions and their
  margins are percentage points (``+0.14 pt``); one metric uses one unit (see :func:`unit_of`).
- p-values: three decimals, ``< 0.001`` below that (never ``1.6e-31``, never a bare ``1``).
- Values shown side by side share their number of decimals (:func:`numbers`): ``10.00`` beside ``9.29``.
- Sizes in B/KB/MB/GB; timestamps to the minute in UTC; counts with thousands separators.

Pure functions; no Streamlit, pandas or project imports except for timestamp parsing.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable

MISSING = "n/a"
Unit = str  # "rel" (relative %), "pt" (percentage points), "abs" (the metric's own units)


def finite(x: Any) -> bool:
    """A real, finite number (bools excluded)."""
    if x is None or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _rounded(v: float, digits: int) -> float:
    """Round for display; -0.0 becomes 0.0 (never '-0.0%')."""
    r = round(v, digits)
    return 0.0 if r == 0 else r


def pct(x: Any, digits: int = 1, signed: bool = True) -> str:
    """A fraction as a percentage: 0.031 → '+3.1%'."""
    if not finite(x):
        return MISSING
    v = _rounded(float(x) * 100, digits)
    return f"{v:+.{digits}f}%" if signed else f"{v:.{digits}f}%"


def pt(x: Any, digits: int = 2, signed: bool = True) -> str:
    """A difference of proportions in percentage points: 0.0014 → '+0.14 pt'."""
    if not finite(x):
        return MISSING
    v = _rounded(float(x) * 100, digits)
    return f"{v:+.{digits}f} pt" if signed else f"{v:.{digits}f} pt"


def _decimals(x: float, significant: int = 4) -> int:
    """Decimals that show `significant` digits of x (0 for |x| ≥ 10^significant)."""
    if x == 0:
        return 2
    magnitude = math.floor(math.log10(abs(x)))
    return max(0, min(6, significant - 1 - magnitude))


def number(x: Any, significant: int = 4, decimals: int | None = None, signed: bool = False) -> str:
    """A plain number with thousands separators and `significant` digits (or fixed `decimals`);
    very large or tiny magnitudes use a readable exponent ('1.2×10^9')."""
    if not finite(x):
        return MISSING
    v = float(x)
    if v != 0 and (abs(v) >= 1e12 or abs(v) < 1e-6):
        mantissa, exponent = f"{v:.{significant - 1}e}".split("e")
        return f"{'+' if signed and v > 0 else ''}{mantissa}×10^{int(exponent)}"
    d = _decimals(v, significant) if decimals is None else decimals
    v = _rounded(v, d)
    return f"{v:+,.{d}f}" if signed else f"{v:,.{d}f}"


def numbers(xs: Iterable[Any], significant: int = 4) -> list[str]:
    """Several values shown side by side, with the same decimals (those of the largest magnitude)."""
    values = list(xs)
    real = [abs(float(x)) for x in values if finite(x) and float(x) != 0]
    d = _decimals(max(real), significant) if real else 2
    return [number(x, significant, decimals=d) for x in values]


def count(n: Any) -> str:
    """An integer count: 12345 → '12,345'."""
    return f"{int(round(float(n))):,}" if finite(n) else MISSING


def pvalue(p: Any) -> str:
    """'< 0.001' or three decimals ('0.042', '1.000')."""
    if not finite(p):
        return MISSING
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{min(p, 1.0):.3f}"


def size(n_bytes: Any) -> str:
    """Bytes as B / KB / MB / GB (powers of 1024)."""
    if not finite(n_bytes):
        return MISSING
    v = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(v) < 1024 or unit == "GB":
            return f"{v:,.0f} {unit}" if unit == "B" else f"{v:,.1f} {unit}"
        v /= 1024
    return MISSING  # pragma: no cover


def days(x: Any) -> str:
    """A duration in days: '14.2 days' (one decimal)."""
    if not finite(x):
        return MISSING
    v = float(x)
    return f"{v:,.1f} day" + ("" if abs(v - 1) < 0.05 else "s")


def when(value: Any) -> str:
    """A timestamp to the minute in UTC: 'YYYY-MM-DD HH:MM UTC' (naive timestamps are UTC)."""
    ts = _timestamp(value)
    return ts.strftime("%Y-%m-%d %H:%M UTC") if ts is not None else MISSING


def day(value: Any) -> str:
    """A date: 'YYYY-MM-DD'."""
    ts = _timestamp(value)
    return ts.strftime("%Y-%m-%d") if ts is not None else MISSING


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, dt.date):
        ts = dt.datetime.combine(value, dt.time())
    else:
        try:
            import pandas as pd

            parsed = pd.Timestamp(value)
        except (TypeError, ValueError):
            return None
        if parsed is pd.NaT or pd.isna(parsed):
            return None
        ts = parsed.to_pydatetime()
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return ts


def unit_of(metric_type: str | None, margin_relative: bool | None = True) -> Unit:
    """The one unit a metric's effects read in: relative lift, except for a guardrail whose margin is
    absolute (percentage points for proportions, the metric's own units otherwise)."""
    if margin_relative is False:
        return "pt" if metric_type == "proportion" else "abs"
    return "rel"


def change(x: Any, unit: Unit) -> str:
    """An effect (or margin) in its unit: '+3.1%', '+0.14 pt' or '+0.3120'."""
    if unit == "pt":
        return pt(x)
    if unit == "abs":
        return number(x, signed=True)
    return pct(x)


def interval(lo: Any, hi: Any, unit: Unit = "rel") -> str:
    """'+1.2% to +5.0%' (n/a unless both ends are finite)."""
    if not (finite(lo) and finite(hi)):
        return MISSING
    return f"{change(lo, unit)} to {change(hi, unit)}"


def effect(est: Any, lo: Any, hi: Any, level: float = 0.95, unit: Unit = "rel") -> str:
    """'+4.6% (95% CI -1.9% to +11.1%)'; without a finite interval just the estimate."""
    if not finite(est):
        return MISSING
    if not (finite(lo) and finite(hi)):
        return f"{change(est, unit)} (no interval)"
    return f"{change(est, unit)} ({level:.0%} CI {interval(lo, hi, unit)})"


def value(x: Any, metric_type: str | None) -> str:
    """A per-arm metric value: proportions as a percentage with two decimals, others as a number."""
    return pct(x, 2, signed=False) if metric_type == "proportion" else number(x)


def values(xs: Iterable[Any], metric_type: str | None) -> list[str]:
    """Per-arm values shown side by side (same decimals)."""
    xs = list(xs)
    return [pct(x, 2, signed=False) for x in xs] if metric_type == "proportion" else numbers(xs)


def words(identifier: Any) -> str:
    """snake_case → 'Snake case' for a check or column name without a title of its own."""
    text = str(identifier or "").replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else MISSING
