"""The experiment page's charts: the forest plot (effects with their decision intervals and the
guardrail margins) and the effect over time (cumulative and daily)."""
from __future__ import annotations

from typing import Any

import altair as alt
import streamlit as st

from abproxy import format as fmt
from abproxy.report import components as c
from abproxy.report import data

COLOURS = {"better": "#1a9850", "worse": "#d73027", "none": "#6b6b6b"}
SHAPES = {"better": "triangle-up", "worse": "triangle-down", "none": "circle"}


AXIS_TITLES = {"rel": "change vs control (%)", "pt": "change vs control (percentage points)",
               "abs": "change vs control (metric units)"}


def view_domain(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The x range of a forest plot: every estimate and interval and 0, padded; guardrail margins do
    not stretch it (a margin outside is drawn at the edge with a marker instead)."""
    values = [0.0] + [float(r[k]) for r in rows for k in ("rel", "lo", "hi") if c.finite(r.get(k))]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 1.0
    return lo - pad, hi + pad


def forest_chart(rows: list[dict[str, Any]], title: str, unit: str = "rel") -> alt.LayerChart | None:
    """Effects with their decision intervals; marker colour and shape by assessment; guardrail margins
    as red ticks, clipped to the view (a '◀'/'▶' tick marks a margin beyond the edge)."""
    scale = 1 if unit == "abs" else 100
    records = []
    for r in rows:
        if not (c.finite(r.get("rel")) and c.finite(r.get("lo")) and c.finite(r.get("hi"))):
            continue
        records.append({"label": r["label"], "assessment": r.get("assessment", "none"),
                        "lift": fmt.effect(r["rel"], r.get("lo"), r.get("hi"), unit=unit),
                        **{k: float(r[k]) * scale for k in ("rel", "lo", "hi")},
                        "margin": float(r["margin"]) * scale if c.finite(r.get("margin")) else None})
    if not records:
        return None
    lo, hi = view_domain(records)
    x_scale = alt.Scale(domain=[lo, hi], nice=False, zero=False)
    y = alt.Y("label:N", sort=[r["label"] for r in records], title=None, axis=alt.Axis(labelLimit=320))
    colour = alt.Color("assessment:N", title="significant", scale=alt.Scale(domain=list(COLOURS), range=list(COLOURS.values())))
    shape = alt.Shape("assessment:N", title="significant", scale=alt.Scale(domain=list(SHAPES), range=list(SHAPES.values())))
    data = c.chart_data([{k: v for k, v in r.items() if k != "margin"} for r in records])
    zero = alt.Chart(c.chart_data([{"x": 0.0}])).mark_rule(strokeDash=[4, 4], color="#444").encode(
        x=alt.X("x:Q", scale=x_scale))
    bars = alt.Chart(data).mark_rule(strokeWidth=2).encode(
        x=alt.X("lo:Q", title=AXIS_TITLES[unit], scale=x_scale), x2=alt.X2("hi"), y=y, color=colour)
    points = alt.Chart(data).mark_point(filled=True, size=110).encode(
        x=alt.X("rel:Q", scale=x_scale), y=y, color=colour, shape=shape,
        tooltip=[alt.Tooltip("label:N"), alt.Tooltip("lift:N"), alt.Tooltip("assessment:N")])
    layers = [zero, bars, points]
    margins = [{"label": r["label"], "margin": r["margin"], "at": min(max(r["margin"], lo), hi),
                "mark": "◀" if r["margin"] < lo else "▶" if r["margin"] > hi else "",
                "text": fmt.change(r["margin"] / scale, unit)} for r in records if r["margin"] is not None]
    if margins:
        mdata = c.chart_data(margins)
        layers.append(alt.Chart(mdata).mark_tick(color="#d73027", thickness=3, size=22, opacity=0.8).encode(
            x=alt.X("at:Q", scale=x_scale), y=y, tooltip=[alt.Tooltip("text:N", title="guardrail margin")]))
        outside = [m for m in margins if m["mark"]]
        if outside:
            layers.append(alt.Chart(c.chart_data(outside)).mark_text(color="#d73027", fontSize=14, dy=-14).encode(
                x=alt.X("at:Q", scale=x_scale), y=y, text="mark:N",
                tooltip=[alt.Tooltip("text:N", title="guardrail margin (beyond the view)")]))
    return alt.layer(*layers).properties(height=max(90, 34 * len(records)), title=title)


def over_time(view: data.ExperimentView) -> None:
    st.header("Effect over time")
    s = view.series
    if s.empty:
        st.info("No daily series in the latest run.")
        return
    metrics = list(dict.fromkeys(s["metric"]))
    primary = [m for m in view.meta.get("primary_metrics") or [] if m in metrics]
    cols = st.columns(2)
    metric = cols[0].selectbox("Metric", metrics, index=metrics.index(primary[0]) if primary else 0,
                               format_func=view.metric_label, key="series_metric")
    arms = list(dict.fromkeys(s[s["metric"] == metric]["variant"]))
    arm = cols[1].selectbox("Arm", arms, key="series_arm") if len(arms) > 1 else arms[0]
    pick = s[(s["metric"] == metric) & (s["variant"] == arm)].copy()
    for col in ("rel_effect", "rel_ci_lo", "rel_ci_hi"):
        pick[col] = pick[col] * 100
    pick["lift"] = [c.pct(x / 100) for x in pick["rel_effect"]]
    sequential = "sequential" in str(view.run.get("method") or "")
    decision = metric in (view.meta.get("roles") or {}) and (view.meta.get("roles") or {}).get(metric) != "secondary"
    band_name = ("always-valid confidence sequence" if sequential else "confidence interval")
    charts = []
    for kind, title in (("cumulative", f"Cumulative effect (all units exposed up to the day), {band_name}"),
                        ("daily", "Daily effect (units exposed that day; per-cohort interval, for the trend)")):
        part = pick[(pick["kind"] == kind) & pick["rel_effect"].notna()]
        if part.empty:
            continue
        x = alt.X("day:T", title="exposure day", axis=alt.Axis(format="%Y-%m-%d"))
        bounded = part[part["rel_ci_lo"].notna() & part["rel_ci_hi"].notna()]
        layers = []
        if len(bounded):
            band = alt.Chart(c.chart_data(bounded[COLS]))
            layers.append((band.mark_rule() if kind == "daily" else band.mark_area(opacity=0.2)).encode(
                x=x, y=alt.Y("rel_ci_lo:Q", title="relative lift (%)"), y2=alt.Y2("rel_ci_hi")))
        layers.append(alt.Chart(c.chart_data(part[COLS])).mark_line(point=True).encode(
            x=x, y=alt.Y("rel_effect:Q", title="relative lift (%)"),
            tooltip=[alt.Tooltip("day:T", format="%Y-%m-%d"), alt.Tooltip("lift:N"),
                     alt.Tooltip("control_units:Q", format=","), alt.Tooltip("variant_units:Q", format=",")]))
        layers.append(alt.Chart(c.chart_data([{"y": 0.0}])).mark_rule(strokeDash=[4, 4]).encode(y="y:Q"))
        charts.append(alt.layer(*layers).properties(title=title, height=260))
    for col, chart in zip(st.columns(len(charts)), charts):
        c.show_chart(chart, f"{view.metric_label(metric)} effect by exposure day", col)
    result = view.overall[(view.overall["metric"] == metric) & (view.overall["variant"] == arm)]
    if len(result):
        r = result.iloc[0].to_dict()
        st.markdown(f"{c.md(view.metric_label(metric))} on the last day, as the verdict reads it: "
                    f"**{c.effect_text(view, r)}**"
                    + (" — the band of the cumulative chart is the same always-valid interval, day by day."
                       if sequential and decision else ".")
                    + " A daily effect that shrinks over time points to a novelty effect (drift).")


COLS = ["day", "rel_effect", "rel_ci_lo", "rel_ci_hi", "lift", "control_units", "variant_units"]
