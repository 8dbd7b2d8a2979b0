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
        with st.expander("Generated SQL"):
            st.code(m.get("sql") or "-- no SQL", language="sql")


if __name__ == "__main__":
    render()
