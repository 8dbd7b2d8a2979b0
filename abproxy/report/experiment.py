"""Experiment page: verdict and reasons, scorecard, forest plot, effect over time, health,
segments, power, model lineage and run history of one experiment (`?experiment=KEY`)."""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from abproxy.report import components as c
from abproxy.report import export  # noqa: F401  (registers the review_html query)
from abproxy.report import gates
from abproxy.report import data

COLOURS = {"better": "#1a9850", "worse": "#d73027", "none": "#6b6b6b"}
SHAPES = {"better": "triangle-up", "worse": "triangle-down", "none": "circle"}
CALLOUT = {"SHIP": st.success, "ROLLBACK": st.error, "INVALID": st.warning}


# --------------------------------------------------------------------------- choosing the experiment

def choose(exps: pd.DataFrame) -> str:
    """The experiment from ?experiment=KEY (kept in the URL when the selectbox changes)."""
    keys = list(exps["experiment"])
    names = dict(zip(exps["experiment"], exps["name"].fillna(exps["experiment"])))
    wanted = st.query_params.get("experiment")
    if wanted and wanted not in keys:
        st.warning(f"There is no experiment {c.md(wanted)} in this snapshot; showing {c.md(keys[0])} instead.")
    state = st.session_state.get("experiment_key")
    if state not in keys or (wanted in keys and wanted != state):
        st.session_state["experiment_key"] = wanted if wanted in keys else keys[0]
    key = st.selectbox("Experiment", keys, key="experiment_key", format_func=lambda k: f"{names.get(k) or k} ({k})",
                       on_change=lambda: st.query_params.update(experiment=st.session_state["experiment_key"]))
    st.query_params["experiment"] = key
    return key


# --------------------------------------------------------------------------- sections

def header(view: data.ExperimentView) -> None:
    meta = view.meta
    st.title(view.name)
    bits = [f"key **{c.md(view.key)}**", f"status **{c.md(meta.get('status') or 'unknown')}**"]
    if meta.get("owner"):
        bits.append(f"owner {c.md(meta['owner'])}")
    if meta.get("start"):
        bits.append(f"started {c.md(meta['start'])}")
    st.markdown(" · ".join(bits))
    if meta.get("hypothesis"):
        st.markdown(f"*Hypothesis:* {c.md(meta['hypothesis'])}")


def verdict_banner(view: data.ExperimentView) -> None:
    run = view.run
    decision = run.get("decision") if run.get("status") == "ok" else "FAILED"
    reasons = data.loads(run.get("reasons"), [])
    ship = f" → ship **{c.md(run['ship_variant'])}**" if run.get("ship_variant") else ""
    body = [f"### {c.md(c.verdict_text(decision))}{ship}", f"Verdict: {c.verdict_meaning(decision)}."]
    if run.get("status") != "ok":
        body.append(f"The latest analysis failed: {c.md(run.get('error') or 'unknown error')}")
    body += [f"- {c.md(r)}" for r in reasons]
    CALLOUT.get(decision, st.info)("\n".join(body))
    units = data.loads(run.get("units"), {})
    st.markdown(f"{c.verdict_badge(decision)} Run **{c.md(run['run_id'])}** · data as of {c.when(run.get('as_of'))} · "
                f"analysed {c.when(run.get('finished_at') or run.get('started_at'))} · "
                f"{c.num(run.get('days_running'), 3)} days · units "
                + ", ".join(f"{c.md(v)} {c.count(n)}" for v, n in units.items())
                + f" · method {c.md(run.get('method') or 'n/a')}")


def _details(row: dict[str, Any]) -> dict[str, Any]:
    return data.loads(row.get("details"), {}) or {}


def scorecard(view: data.ExperimentView) -> None:
    st.header("Scorecard")
    overall = view.overall
    if overall.empty:
        st.info("The latest run has no metric results.")
        return
    detailed = st.toggle("Show statistical details", help="method, sample sizes, variances, CUPED, MDE")
    level = 1 - view.alpha
    types = dict(zip(view.metrics["metric"], view.metrics["type"])) if len(view.metrics) else {}
    headers = ["Metric", "Role", "Arm", "Control", "Variant", f"Lift ({level:.0%} CI)", "Adj. p", "Result"]
    if detailed:
        headers += ["Method", "n (control / variant)", "Variance (control / variant)", "CUPED variance cut",
                    "MDE (relative)", "MDE (absolute)", "Raw p", "Warning"]
    rows = []
    for r in overall.to_dict("records"):
        verdict = c.assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"]))
        mark = {"better": ":green[▲ better, significant]", "worse": ":red[▼ worse, significant]",
                "none": "○ not significant"}[verdict]
        mtype = types.get(r["metric"])
        row = [f"**{c.md(view.metric_label(r['metric']))}** ({c.md(r['metric'])})", c.md(r["role"]), c.md(r["variant"]),
               c.value_text(r["control_mean"], mtype), c.value_text(r["variant_mean"], mtype),
               c.lift(r["rel_effect"], r["rel_ci_lo"], r["rel_ci_hi"], level), c.pvalue(r["p_value_adjusted"]), mark]
        if detailed:
            d = _details(r)
            row += [c.md(r.get("method") or "n/a"), f"{c.count(r['control_units'])} / {c.count(r['variant_units'])}",
                    f"{c.num(d.get('control_var'))} / {c.num(d.get('variant_var'))}",
                    c.pct(r.get("cuped_variance_reduction"), signed=False) if c.finite(r.get("cuped_variance_reduction")) else "—",
                    c.pct(r.get("mde_rel"), signed=False), c.num(r.get("mde")), c.pvalue(r.get("p_value")),
                    c.md(r.get("warning") or "")]
        rows.append(row)
    st.markdown(c.md_table(headers, rows))
    st.caption("Lifts are relative to the control arm. Adjusted p: Holm within primary and within guardrail "
               "metrics, Benjamini–Hochberg within secondary metrics. ▲/▼ mark significant effects in the good/bad "
               "direction of each metric.")


def forest_chart(rows: list[dict[str, Any]], title: str) -> alt.LayerChart | None:
    """Relative lifts (%) with CIs; marker colour and shape by assessment; guardrail margins as ticks."""
    records = []
    for r in rows:
        if not c.finite(r.get("rel")):
            continue
        scaled = {k: float(r[k]) * 100 if c.finite(r.get(k)) else None for k in ("rel", "lo", "hi", "margin")}
        records.append({"label": r["label"], "assessment": r.get("assessment", "none"),
                        "lift": c.lift(r["rel"], r.get("lo"), r.get("hi")), **scaled})
    if not records:
        return None
    y = alt.Y("label:N", sort=[r["label"] for r in records], title=None, axis=alt.Axis(labelLimit=320))
    colour = alt.Color("assessment:N", title="significant", scale=alt.Scale(domain=list(COLOURS), range=list(COLOURS.values())))
    shape = alt.Shape("assessment:N", title="significant", scale=alt.Scale(domain=list(SHAPES), range=list(SHAPES.values())))
    zero = alt.Chart().mark_rule(strokeDash=[4, 4], color="#444").encode(x=alt.datum(0))
    bars = alt.Chart().mark_rule(strokeWidth=2).encode(
        x=alt.X("lo:Q", title="relative lift vs control (%)"), x2=alt.X2("hi"), y=y, color=colour)
    points = alt.Chart().mark_point(filled=True, size=110).encode(
        x=alt.X("rel:Q"), y=y, color=colour, shape=shape,
        tooltip=[alt.Tooltip("label:N"), alt.Tooltip("lift:N"), alt.Tooltip("assessment:N")])
    layers = [zero, bars, points]
    if any(r["margin"] is not None for r in records):
        layers.append(alt.Chart().mark_tick(color="#d73027", thickness=3, size=22, opacity=0.8)
                      .transform_filter("isValid(datum.margin)").encode(
            x=alt.X("margin:Q"), y=y, tooltip=[alt.Tooltip("margin:Q", title="guardrail margin (%)", format="+.1f")]))
    return alt.layer(*layers, data=c.chart_data(records)).properties(height=max(90, 34 * len(records)), title=title)


def forest(view: data.ExperimentView) -> None:
    rows = c.forest_rows(view)
    chart = forest_chart(rows, "Relative lift with confidence intervals")
    if chart is None:
        return
    c.show_chart(chart, "Forest plot of relative lifts with confidence intervals; red ticks are guardrail margins")
    if any(r["margin"] is not None for r in rows):
        st.caption("Red ticks: the worst tolerated change of each guardrail (its margin). A guardrail is harmed when "
                   "its whole interval lies beyond the tick.")


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
    charts = []
    for kind, title in (("cumulative", "Cumulative effect (all units exposed up to the day)"),
                        ("daily", "Daily effect (units exposed that day)")):
        part = pick[pick["kind"] == kind]
        if part.empty:
            continue
        base = alt.Chart().encode(x=alt.X("day:T", title="exposure day"))
        band = (base.mark_rule() if kind == "daily" else base.mark_area(opacity=0.2)).encode(
            y=alt.Y("rel_ci_lo:Q", title="relative lift (%)"), y2=alt.Y2("rel_ci_hi"))
        line = base.mark_line(point=True).encode(
            y=alt.Y("rel_effect:Q"),
            tooltip=[alt.Tooltip("day:T"), alt.Tooltip("lift:N"), alt.Tooltip("control_units:Q"),
                     alt.Tooltip("variant_units:Q")])
        zero = alt.Chart().mark_rule(strokeDash=[4, 4]).encode(y=alt.datum(0))
        cols = ["day", "rel_effect", "rel_ci_lo", "rel_ci_hi", "lift", "control_units", "variant_units"]
        charts.append(alt.layer(band, line, zero, data=c.chart_data(part[cols])).properties(title=title, height=260))
    for col, chart in zip(st.columns(len(charts)), charts):
        c.show_chart(chart, f"{view.metric_label(metric)} effect by exposure day", col)
    last = pick[pick["kind"] == "cumulative"].tail(1)
    if len(last):
        r = last.iloc[0]
        st.markdown(f"Cumulative {c.md(view.metric_label(metric))} lift on the last day: "
                    f"**{c.lift(r['rel_effect'] / 100, r['rel_ci_lo'] / 100, r['rel_ci_hi'] / 100)}** "
                    "(fixed-horizon interval). A daily effect that shrinks over time points to a novelty effect (drift).")


def health_panel(view: data.ExperimentView) -> None:
    st.header("Health checks")
    h = view.health
    if h.empty:
        st.info("No health checks recorded for the latest run.")
        return
    counts = h["status"].value_counts()
    st.markdown(" ".join(f"{c.health_badge(s)} {counts.get(s, 0)}" for s in ("fail", "warn", "ok")))
    order = {"fail": 0, "warn": 1, "ok": 2}
    for r in sorted(h.to_dict("records"), key=lambda r: order.get(r["status"], 3)):
        where = " · ".join(c.md(x) for x in (r.get("metric"), r.get("segment"), r.get("variant")) if isinstance(x, str) and x)
        st.markdown(f"{c.health_badge(r['status'])} **{c.md(r['check_name'])}**"
                    + (f" ({where})" if where else "") + f" — {c.md(r.get('detail') or '')}")


def segments_panel(view: data.ExperimentView) -> None:
    st.header("Segments")
    seg = view.segments
    if seg.empty:
        st.info("No segment results (no `segments:` configured for this experiment, or too few units).")
        return
    harmed = c.harmed_segments(view)
    harmed_keys = {(h["segment"], h["metric"], h["variant"]) for h in harmed}
    if harmed:
        st.error("**Harmed segments** (significantly worse while the overall effect is not):\n"
                 + "\n".join(f"- **{c.md(h['segment'])}**: {c.md(h['detail'])}" for h in harmed), icon=":material/warning:")
    else:
        st.success("No segment is significantly harmed.", icon=":material/check_circle:")
    het = view.health[view.health["check_name"] == "segment_heterogeneity"] if len(view.health) else pd.DataFrame()
    if len(het):
        st.markdown("**Heterogeneity** (does the effect differ between the values of a dimension?)\n"
                    + "\n".join(f"- {c.health_badge(r['status'])} {c.md(r['detail'])}" for r in het.to_dict("records")))
    level = 1 - view.alpha
    for dim in list(dict.fromkeys(seg["segment"])):
        part = seg[seg["segment"] == dim]
        st.subheader(f"By {c.md(dim)}")
        rows, chart_rows = [], []
        for r in part.to_dict("records"):
            name = f"{dim}={r['segment_value']}"
            hit = (name, r["metric"], r["variant"]) in harmed_keys
            verdict = c.assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"]))
            mark = (":red-badge[⚠ HARMED]" if hit else {"better": ":green[▲ better]", "worse": ":red[▼ worse]",
                                                         "none": "○ not significant"}[verdict])
            label = f"**{c.md(name)}**" if hit else c.md(name)
            rows.append([label, c.md(view.metric_label(r["metric"])), c.md(r["variant"]),
                         f"{c.count(r['control_units'])} / {c.count(r['variant_units'])}",
                         c.lift(r["rel_effect"], r["rel_ci_lo"], r["rel_ci_hi"], level), c.pvalue(r["p_value_adjusted"]), mark])
            if r["role"] == "primary":
                chart_rows.append({"label": f"{name} · {view.metric_label(r['metric'])}" + (" · " + r["variant"] if part["variant"].nunique() > 1 else ""),
                                   "rel": r["rel_effect"], "lo": r["rel_ci_lo"], "hi": r["rel_ci_hi"], "margin": None,
                                   "assessment": "worse" if hit else verdict})
        chart = forest_chart(chart_rows, f"Primary metric by {dim}")
        if chart is not None:
            c.show_chart(chart, f"Primary metric lift by {dim}")
        with st.expander(f"All {dim} results ({len(rows)})", expanded=bool(harmed)):
            st.markdown(c.md_table(["Segment", "Metric", "Arm", "Units (control / variant)", f"Lift ({level:.0%} CI)",
                                    "Adj. p", "Result"], rows))
    st.caption("Adjusted p: Benjamini–Hochberg within each segment dimension. Small segments are pooled into 'other'.")


def power_panel(view: data.ExperimentView) -> None:
    st.header("Power and sample size")
    run, policy = view.run, view.meta.get("decision") or {}
    reasons = data.loads(run.get("reasons"), [])
    needs = c.needs_text(reasons)
    if needs:
        st.info(c.md(needs), icon=":material/hourglass_top:")
    units = data.loads(run.get("units"), {})
    st.markdown(f"Policy: at least **{c.num(policy.get('min_days'), 3)}** days and **{c.count(policy.get('min_units_per_variant'))}** "
                f"units per arm; target effect {c.pct(policy.get('target_mde'), signed=False)} at "
                f"{c.pct(policy.get('power'), 0, signed=False)} power. "
                f"So far: {c.num(run.get('days_running'), 3)} days, smallest arm "
                f"{c.count(min(units.values()) if units else None)} units.")
    overall = view.overall
    if overall.empty:
        return
    rows = [[c.md(view.metric_label(r["metric"])), c.md(r["role"]), c.md(r["variant"]),
             "±" + c.pct(r["mde_rel"], signed=False), c.num(r["mde"]),
             c.lift(r["rel_effect"], r["rel_ci_lo"], r["rel_ci_hi"], 1 - view.alpha)]
            for r in overall.to_dict("records")]
    st.markdown(c.md_table(["Metric", "Role", "Arm", "MDE (relative)", "MDE (absolute)", "Observed lift"], rows))
    st.caption("MDE: the smallest true effect the current sample detects with the planned power; smaller effects "
               "may exist but would go unnoticed.")


def lineage(view: data.ExperimentView) -> None:
    st.header("Model lineage")
    v = view.variants
    if v.empty:
        st.info("No variant lineage in the snapshot.")
        return
    rows = []
    for r in v.to_dict("records"):
        params = data.loads(r.get("params"), {}) or {}
        rows.append([f"**{c.md(r['variant'])}**", "control" if r.get("is_control") else "treatment",
                     c.md(r.get("model") or ""), c.md(r.get("version") or ""),
                     c.md(", ".join(f"{k}={val}" for k, val in params.items())), c.md(r.get("training_data") or ""),
                     c.pct(r.get("allocation"), 0, signed=False), c.md(r.get("description") or ""), c.md(r.get("link") or "")])
    st.markdown(c.md_table(["Arm", "Role", "Model", "Version", "Params", "Training data", "Allocation",
                            "Description", "Link"], rows))


def history(view: data.ExperimentView) -> None:
    st.header("Run history")
    runs = view.runs
    hist = view.history
    primary = (view.meta.get("primary_metrics") or [None])[0]
    prim = hist[hist["metric"] == primary] if len(hist) else pd.DataFrame()
    if len(prim):
        frame = prim.merge(runs[["run_id", "decision"]], on="run_id", how="left")
        frame["decision"] = frame["decision"].fillna("FAILED")
        for col in ("rel_effect", "rel_ci_lo", "rel_ci_hi"):
            frame[col] = frame[col] * 100
        frame["lift"] = [c.pct(x / 100) for x in frame["rel_effect"]]
        colour, shape = c.decision_encodings()
        base = alt.Chart().encode(x=alt.X("as_of:T", title="data as of", scale=alt.Scale(padding=24)))
        chart = alt.layer(
            base.mark_rule().encode(y=alt.Y("rel_ci_lo:Q", title=f"{view.metric_label(primary)} lift (%)"),
                                    y2=alt.Y2("rel_ci_hi")),
            base.mark_point(filled=True, size=110).encode(
                y=alt.Y("rel_effect:Q"), color=colour, shape=shape,
                tooltip=[alt.Tooltip(f) for f in ("run_id:N", "as_of:T", "decision:N", "lift:N", "variant:N")]),
            data=c.chart_data(frame[["run_id", "as_of", "decision", "lift", "variant", "rel_effect", "rel_ci_lo",
                                     "rel_ci_hi"]]),
        ).properties(height=240, title="Verdict timeline")
        c.show_chart(chart, "Primary lift and verdict of every run")
    by_run = {r: g for r, g in prim.groupby("run_id")} if len(prim) else {}
    rows = []
    for r in runs.iloc[::-1].head(30).to_dict("records"):
        p = by_run.get(r["run_id"])
        lifts = "; ".join(c.lift(x["rel_effect"], x["rel_ci_lo"], x["rel_ci_hi"], 1 - view.alpha)
                          for x in p.to_dict("records")) if p is not None else "n/a"
        rows.append([c.when(r["as_of"]), c.md(r["run_id"]), c.md(c.verdict_text(r.get("decision") or "FAILED")), lifts,
                     c.md(r.get("definition_hash") or ""), c.num(r.get("days_running"), 3)])
    st.markdown(c.md_table(["Data as of", "Run", "Verdict", "Primary lift", "Definition hash", "Days"], rows))
    st.subheader("What changed since the previous run")
    changes = c.compare_runs(view)
    if not changes:
        st.markdown("This is the first run of this experiment.")
    else:
        st.markdown("\n".join(f"- **{c.md(aspect)}**: {c.md(text)}" for aspect, text in changes))


def download(snap: data.Snapshot, view: data.ExperimentView) -> None:
    st.download_button("Download go/no-go review", snap.load("review_html", view.key).encode(),
                       file_name=f"{view.key}-review.html", mime="text/html", icon=":material/download:",
                       on_click="ignore", type="primary",
                       help="One self-contained HTML file: verdict, reasons, scorecard, charts, lineage, health")


def render() -> None:
    snap = gates.require_snapshot()
    exps = snap.load("experiments")
    if exps.empty:
        st.title("Experiment")
        st.info("The snapshot holds no experiments yet.")
        return
    key = choose(exps)
    view: data.ExperimentView = snap.load("experiment", key)
    header(view)
    if view.run is None:
        st.info("This experiment has not been analysed yet. Runs happen with `abproxy run` or on the schedule "
                "(only experiments with status running, or shipped with a holdback, are analysed).")
        lineage(view)
        return
    download(snap, view)
    verdict_banner(view)
    scorecard(view)
    forest(view)
    over_time(view)
    health_panel(view)
    segments_panel(view)
    power_panel(view)
    lineage(view)
    history(view)


if __name__ == "__main__":
    render()
