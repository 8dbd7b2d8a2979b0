"""Metrics catalog page: each metric's definition, generated SQL, owner and the experiments using it."""
from __future__ import annotations

from typing import Any

import streamlit as st

from abproxy.report import components as c
from abproxy.report import gates


def definition_lines(m: dict[str, Any]) -> list[str]:
    d = m.get("definition") or {}
    lines = [f"Type **{c.md(m.get('type'))}**, window {c.num(m.get('window_days'), 3)} days, "
             + ("higher is better" if m.get("higher_is_better", True) else "lower is better")]
    if d.get("event"):
        lines.append(f"Event {c.md(d['event'])}, aggregate {c.md(d.get('aggregate') or 'default')}"
                     + (f", where {c.md(d['where'])}" if d.get("where") else ""))
    for part in ("numerator", "denominator"):
        src = d.get(part)
        if isinstance(src, dict):
            lines.append(f"{part.capitalize()}: {c.md(src.get('aggregate'))} of {c.md(src.get('event'))}"
                         + (f" where {c.md(src['where'])}" if src.get("where") else ""))
    if d.get("capping"):
        cap = d["capping"]
        lines.append("Capped at " + (f"the pooled {c.num(cap['quantile'])} quantile" if cap.get("quantile") is not None
                                     else f"{c.num(cap.get('value'))}"))
    if d.get("cuped"):
        lines.append("CUPED variance reduction with the pre-exposure period")
    return lines


def preview_lines(p: dict[str, Any]) -> list[str]:
    """The preview panel's lines (abproxy.preview.MetricPreview as published in the snapshot)."""
    def share(x):
        return "n/a" if x is None else f"{x:.1%}"

    mde = ", ".join(f"{d} days {share(v)}" for d, v in (p.get("mde") or {}).items())
    return [f"On the units of {c.md(p.get('experiment'))} as of {c.md(p.get('as_of'))} UTC: "
            f"{p.get('units', 0):,} units, {p.get('units_nonzero', 0):,} with a non-zero value "
            f"(zeros {share(p.get('zero_share'))})",
            f"Per-unit value: p50 {c.num(p.get('p50'))}, p90 {c.num(p.get('p90'))}, p99 {c.num(p.get('p99'))}, "
            f"max {c.num(p.get('max'))}; cap from the capping setting: "
            + (c.num(p.get("cap")) if p.get("cap") is not None else "none"),
            f"Coefficient of variation {c.num(p.get('cv'))}; MDE at the current traffic "
            f"({c.num(p.get('units_per_day'))} units/day): {mde}"]


def render() -> None:
    snap = gates.require_snapshot()
    st.title("Metrics catalog")
    metrics = snap.load("catalog")
    if not metrics:
        st.info("No metrics in the snapshot: define them under `metrics:` in abproxy.yaml and run `abproxy run`.")
        return
    names = {e["experiment"]: e["name"] for e in snap.load("experiments").to_dict("records")}
    query = st.text_input("Filter", placeholder="metric name, owner or experiment").strip().lower()
    st.caption(f"{len(metrics)} metrics. A unit's value is the aggregate of its events in "
               "[exposed_at, exposed_at + window]; a unit without events counts as 0.")
    for m in metrics:
        haystack = " ".join(str(x) for x in (m["metric"], m.get("name"), m.get("owner"), *m["used_by"])).lower()
        if query and query not in haystack:
            continue
        st.subheader(f"{c.md(m.get('name') or m['metric'])} ({c.md(m['metric'])})")
        if m.get("description"):
            st.markdown(c.md(m["description"]))
        st.markdown("\n".join(f"- {line}" for line in definition_lines(m)))
        used = ", ".join(f"{c.md(names.get(k) or k)} ({c.md(k)})" for k in m["used_by"]) or "no experiment"
        st.markdown(f"Owner: **{c.md(m.get('owner') or 'unassigned')}** · Used by: {used}")
        with st.expander("Preview on the data"):
            if m.get("preview"):
                st.markdown("\n".join(f"- {line}" for line in preview_lines(m["preview"])))
                if m["preview"].get("rows"):
                    st.dataframe(m["preview"]["rows"], hide_index=True)
            else:
                st.text(m.get("preview_error") or "No preview yet: it is computed by the next analysing pass "
                                                  "(abproxy run), for metrics used by an experiment.")
        with st.expander("Generated SQL"):
            st.code(m.get("sql") or "-- no SQL", language="sql")


if __name__ == "__main__":
    render()
