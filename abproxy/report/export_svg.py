"""The HTML export's charts, drawn as inline SVG (no script, no request): the forest plot with its
guardrail margins and the cumulative effect over time with its interval band."""
from __future__ import annotations

import math
from html import escape
from typing import Any

import pandas as pd

from abproxy import format as fmt
from abproxy.report import components as c

COLOURS = {"better": "#1a7f37", "worse": "#c62828", "none": "#555555"}


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _marker(kind: str, x: float, y: float, colour: str) -> str:
    if kind == "better":
        return f'<polygon points="{x:.1f},{y - 7:.1f} {x - 7:.1f},{y + 5:.1f} {x + 7:.1f},{y + 5:.1f}" fill="{colour}"/>'
    if kind == "worse":
        return f'<polygon points="{x:.1f},{y + 7:.1f} {x - 7:.1f},{y - 5:.1f} {x + 7:.1f},{y - 5:.1f}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="{colour}"/>'


def forest_svg(rows: list[dict[str, Any]], title: str, width: int = 960, unit: str = "rel") -> str:
    """A forest plot: one row per comparison, the change (in `unit`) with its decision interval, marker
    shape by assessment (▲ better, ▼ worse, ● not significant), red dashed ticks at guardrail margins,
    clipped to the view (a margin beyond the edge is drawn at the edge with an arrow)."""
    rows = [r for r in rows if c.finite(r.get("rel"))]
    if not rows:
        return ""
    scale = 1 if unit == "abs" else 100
    suffix = {"rel": "%", "pt": " pt", "abs": ""}[unit]
    values = [0.0]
    for r in rows:
        values += [float(r[k]) * scale for k in ("rel", "lo", "hi") if c.finite(r.get(k))]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, top, row_h = 330, width - 20, 36, 30
    height = top + row_h * len(rows) + 42

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{e(title)}">', f"<title>{e(title)}</title>",
             f'<text x="{left}" y="18" font-size="14" font-weight="600">{e(title)}</text>']
    axis_y = top + row_h * len(rows) + 6
    for t in nice_ticks(lo, hi):
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{axis_y}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle">{t:+g}{suffix}</text>')
    parts.append(f'<line x1="{sx(0):.1f}" y1="{top - 6}" x2="{sx(0):.1f}" y2="{axis_y}" stroke="#333" '
                 'stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{(left + right) / 2:.0f}" y="{axis_y + 32}" font-size="12" text-anchor="middle">'
                 f"{e(AXIS[unit])}</text>")
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        kind = r.get("assessment", "none")
        colour = COLOURS.get(kind, COLOURS["none"])
        label = str(r["label"])
        label = label if len(label) <= 46 else label[:45] + "…"
        text = fmt.effect(r["rel"], r.get("lo"), r.get("hi"), unit=unit)
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{e(label)}</text>')
        if c.finite(r.get("lo")) and c.finite(r.get("hi")):
            parts.append(f'<line x1="{sx(float(r["lo"]) * scale):.1f}" y1="{y:.1f}" x2="{sx(float(r["hi"]) * scale):.1f}" '
                         f'y2="{y:.1f}" stroke="{colour}" stroke-width="2.5"/>')
        if c.finite(r.get("margin")):
            m = float(r["margin"]) * scale
            x = sx(min(max(m, lo), hi))
            arrow = "◀" if m < lo else "▶" if m > hi else ""
            tip = f"guardrail margin {fmt.change(r['margin'], unit)}" + (" (beyond the view)" if arrow else "")
            parts.append(f'<line x1="{x:.1f}" y1="{y - 11:.1f}" x2="{x:.1f}" y2="{y + 11:.1f}" stroke="#c62828" '
                         f'stroke-width="3" stroke-dasharray="3 2"><title>{e(tip)}</title></line>')
            if arrow:
                parts.append(f'<text x="{x:.1f}" y="{y - 13:.1f}" font-size="12" fill="#c62828" text-anchor="middle">'
                             f'{arrow}<title>{e(tip)}</title></text>')
        parts.append(f'<g><title>{e(label)}: {e(text)}</title>{_marker(kind, sx(float(r["rel"]) * scale), y, colour)}</g>')
    parts.append("</svg>")
    return "".join(parts)


AXIS = {"rel": "change vs control (%)", "pt": "change vs control (percentage points)",
        "abs": "change vs control (metric units)"}


def series_svg(points: pd.DataFrame, title: str, width: int = 960, height: int = 260) -> str:
    """The cumulative relative effect (%) by exposure day with its CI band."""
    if points.empty:
        return ""
    pts = points.sort_values("day")
    pts = pts[[c.finite(v) for v in pts["rel_effect"]]]
    if pts.empty:
        return ""
    ys = [float(v) * 100 for col in ("rel_effect", "rel_ci_lo", "rel_ci_hi") for v in pts[col] if c.finite(v)] + [0.0]
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 60, width - 20, 30, height - 40
    n = len(pts)

    def sx(i: int) -> float:
        return left + (i / max(n - 1, 1)) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{e(title)}">', f"<title>{e(title)}</title>",
             f'<text x="{left}" y="18" font-size="14" font-weight="600">{e(title)}</text>']
    for t in nice_ticks(lo, hi, 5):
        parts.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{t:+g}%</text>')
    rows = list(pts.to_dict("records"))
    band = [(sx(i), sy(float(r["rel_ci_hi"]) * 100)) for i, r in enumerate(rows) if c.finite(r["rel_ci_hi"])]
    band += [(sx(i), sy(float(r["rel_ci_lo"]) * 100)) for i, r in reversed(list(enumerate(rows))) if c.finite(r["rel_ci_lo"])]
    if band:
        parts.append('<polygon fill="#1a56b0" fill-opacity="0.15" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in band) + '"/>')
    parts.append(f'<line x1="{left}" y1="{sy(0):.1f}" x2="{right}" y2="{sy(0):.1f}" stroke="#333" stroke-dasharray="4 3"/>')
    line = [(sx(i), sy(float(r["rel_effect"]) * 100)) for i, r in enumerate(rows) if c.finite(r["rel_effect"])]
    if line:
        parts.append('<polyline fill="none" stroke="#1a56b0" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>')
        for (x, y), r in zip(line, [r for r in rows if c.finite(r["rel_effect"])]):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1a56b0"><title>{e(str(r["day"])[:10])}: '
                         f'{e(fmt.effect(r["rel_effect"], r["rel_ci_lo"], r["rel_ci_hi"]))}</title></circle>')
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        parts.append(f'<text x="{sx(i):.1f}" y="{bottom + 16}" font-size="11" text-anchor="{anchor}">'
                     f'{e(str(rows[i]["day"])[:10])}</text>')
    parts.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 32}" font-size="12" text-anchor="middle">'
                 "exposure day (units exposed up to that day)</text></svg>")
    return "".join(parts)
