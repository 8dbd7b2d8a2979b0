"""Overview page: every experiment with its verdict, primary lift, progress and freshness."""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from abproxy import format as fmt
from abproxy.report import components as c
from abproxy.report import gates
from abproxy.report import data


def experiment_link(key: str, label: str = "Open experiment") -> None:
    """A link to the experiment page for `key` (a caption when not running under st.navigation)."""
    from abproxy.report import page

    try:
        st.page_link(page("experiment"), label=label, icon=":material/arrow_forward:",
                     query_params={"experiment": key})
    except Exception:  # a page script run on its own has no navigation to link into
        st.caption(f"Experiment page: ?experiment={c.md(key)}")


def _units(run: dict[str, Any] | None) -> str:
    units = data.loads(run.get("units"), {}) if run else {}
    return ", ".join(f"{c.md(v)} {c.count(n)}" for v, n in units.items()) or "n/a"


def _primary_lines(item: dict[str, Any]) -> list[str]:
    run = item["run"]
    if run is None:
        return ["Not analysed yet"]
    if run.get("status") != "ok":
        return ["Analysis failed: " + c.md(run.get("error") or "unknown error")]
    exp_alpha = data.loads(item.get("decision"), {}).get("alpha", 0.05) or 0.05
    multi = len(item["primary"]) > 1
    lines = []
    for p in item["primary"]:
        arm = f"{c.md(p['variant'])}: " if multi else ""
        unit, est, lo, hi = _shown(p, item)
        lines.append(f"{arm}**{c.md(p.get('label') or p['metric'])}** {fmt.effect(est, lo, hi, 1 - exp_alpha, unit)}"
                     + (" (significant)" if p.get("significant") else ""))
    return lines or ["No primary result"]


def _shown(p: dict[str, Any], item: dict[str, Any]) -> tuple[str, Any, Any, Any]:
    """The primary result as the experiment page shows it: the lift, or the absolute effect when the
    lift has no interval."""
    if all(c.finite(p.get(k)) for k in ("rel_effect", "rel_ci_lo", "rel_ci_hi")):
        return "rel", p["rel_effect"], p["rel_ci_lo"], p["rel_ci_hi"]
    unit = "pt" if p.get("type") == "proportion" else "abs"
    return unit, p.get("abs_effect"), p.get("abs_ci_lo"), p.get("abs_ci_hi")


def _card(item: dict[str, Any]) -> None:
    run = item["run"]
    decision = (run or {}).get("decision") if run and run.get("status") == "ok" else ("FAILED" if run else None)
    with st.container(border=True):
        left, mid, right = st.columns([3, 4, 3])
        with left:
            st.markdown(f"#### {c.md(item.get('name') or item['experiment'])}")
            st.markdown(f"{c.md(item['experiment'])} · status: **{c.md(item.get('status') or 'unknown')}**")
            experiment_link(item["experiment"])
        with mid:
            shipped = item.get("status") == "shipped"
            cautions = item.get("cautions") or []
            caution = f" — :orange-badge[⚠ with caution]" if cautions else ""
            st.markdown(f"{c.verdict_badge(decision)}{caution} — {c.verdict_meaning(decision, shipped)}")
            st.markdown("Primary: " + "; ".join(_primary_lines(item)))
            for text in cautions[:3]:
                st.markdown(f"⚠ {c.md(text)}")
            if len(cautions) > 3:
                st.caption(f"… and {len(cautions) - 3} more caution(s) on the experiment page")
            issues = item.get("issues") or []
            if issues:
                fails = sum(i["status"] == "fail" for i in issues)
                text = ", ".join(part for part in (f"{fails} failed" if fails else "",
                                                   f"{len(issues) - fails} warning(s)" if len(issues) > fails else "") if part)
                titles = ", ".join(dict.fromkeys(c.check_title(i["check_name"]) for i in issues))
                st.markdown(f"{c.health_badge('fail' if fails else 'warn')} Health: {text} ({c.md(titles)})")
        with right:
            days = fmt.days(run.get("days_running")) if run else "n/a"
            st.markdown(f"**{days} running** · units: {_units(run)}")
            latest_event = data.loads(run.get("watermark"), {}).get("max_occurred_at") if run else None
            st.caption(f"Last analysed {c.when(run.get('finished_at') or run.get('started_at')) if run else 'never'}"
                       + (f" · data as of {c.when(run.get('as_of'))}" if run else "")
                       + (f" · latest event {c.when(latest_event)}" if latest_event else ""))


def _timeline(portfolio: pd.DataFrame) -> alt.Chart | None:
    if portfolio.empty:
        return None
    frame = portfolio.drop_duplicates("run_id").copy()
    frame["lift"] = frame["primary_lift"].map(lambda x: c.pct(x))
    frame["when"] = [c.when(t) for t in frame["as_of"]]
    frame = frame[["experiment", "as_of", "when", "decision", "lift", "run_id"]]
    colour, shape = c.decision_encodings()
    return alt.Chart(c.chart_data(frame)).mark_point(size=120, filled=True).encode(
        x=alt.X("as_of:T", title="data as of", scale=c.time_scale(frame["as_of"]),
                axis=alt.Axis(format="%Y-%m-%d %H:%M", labelAngle=-30, tickCount=6)),
        y=alt.Y("experiment:N", title=None),
        color=colour, shape=shape,
        tooltip=[alt.Tooltip(f) for f in ("experiment:N", "when:N", "decision:N", "lift:N", "run_id:N")],
    ).properties(height=max(120, 40 * frame["experiment"].nunique()), title="Verdict timeline")


def render() -> None:
    snap = gates.require_snapshot()
    st.title("Rollout overview")
    fresh = snap.load("freshness")
    st.caption(c.freshness_caption(fresh))
    items = snap.load("overview")
    if not items:
        st.info("The snapshot holds no experiments yet: add one under `experiments:` in abproxy.yaml and run "
                "`abproxy run`.")
        return
    for item in items:
        run = item["run"]
        item["verdict"] = (run.get("decision") or "FAILED") if run else "NOT_ANALYSED"
    statuses = sorted({str(i.get("status") or "unknown") for i in items})
    verdicts = [v for v in c.VERDICTS if any(i["verdict"] == v for i in items)]
    f1, f2 = st.columns(2)
    pick_status = f1.multiselect("Status", statuses, placeholder="All statuses")
    pick_verdict = f2.multiselect("Verdict", verdicts, format_func=c.verdict_text, placeholder="All verdicts")
    shown = [i for i in items if (not pick_status or str(i.get("status") or "unknown") in pick_status)
             and (not pick_verdict or i["verdict"] in pick_verdict)]
    tally = pd.Series([i["verdict"] for i in shown]).value_counts()
    st.markdown(f"**{len(shown)} of {len(items)} experiments** — "
                + ", ".join(f"{c.md(c.verdict_text(v))}: {n}" for v, n in tally.items()))
    for item in shown:
        _card(item)
    portfolio = snap.load("portfolio")
    chart = _timeline(portfolio[portfolio["experiment"].isin([i["experiment"] for i in shown])])
    if chart is not None:
        c.show_chart(chart, "Verdict of every run of each experiment over time")
    st.download_button("Download portfolio (CSV)", portfolio.to_csv(index=False).encode(),
                       file_name="abproxy-portfolio.csv", mime="text/csv", icon=":material/download:",
                       help="Every experiment's verdict timeline: run id, data as of, decision, primary lift")


if __name__ == "__main__":
    render()
