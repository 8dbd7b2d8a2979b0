"""Experiment page: verdict and reasons, scorecard, forest plot, effect over time, health,
segments, power, model lineage and run history of one experiment (`?experiment=KEY`)."""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from abproxy import format as fmt
from abproxy.report import components as c
from abproxy.report import export  # noqa: F401  (registers the review_html query)
from abproxy.report import gates
from abproxy.report import data
from abproxy.report.experiment_charts import forest_chart, over_time  # noqa: F401  (the page's sections)

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
    st.title(c.md(view.name))
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
    shipped = view.meta.get("status") == "shipped"
    cautions = c.cautions(view)
    target = "keep the shipped" if shipped else "ship"
    ship = f" → {target} **{c.md(run['ship_variant'])}**" if run.get("ship_variant") else ""
    caution = f" — with {len(cautions)} caution{'s' if len(cautions) > 1 else ''}" if cautions else ""
    body = [f"### {c.md(c.verdict_text(decision))}{ship}{caution}",
            f"Verdict: {c.verdict_meaning(decision, shipped)}."]
    if cautions:
        body.append("**Before acting, read:** " + " ".join(f"⚠ {c.md(x)}" for x in cautions))
    if run.get("status") != "ok":
        body.append(f"The latest analysis failed: {c.md(run.get('error') or 'unknown error')}")
    body += [f"- {c.md(r)}" for r in reasons]
    callout = st.warning if cautions and decision in ("SHIP", "KEEP_RUNNING", "NO_DETECTABLE_EFFECT") else \
        CALLOUT.get(decision, st.info)
    callout("\n".join(body), icon=":material/warning:" if cautions else None)
    units = data.loads(run.get("units"), {})
    st.markdown(f"{c.verdict_badge(decision)} Run **{c.md(run['run_id'])}** · data as of {c.when(run.get('as_of'))} · "
                f"analysed {c.when(run.get('finished_at') or run.get('started_at'))} · "
                f"{fmt.days(run.get('days_running'))} · units "
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
    headers = ["Metric", "Role", "Arm", "Control", "Variant", f"Change ({level:.0%} CI)", "Adj. p", "Result"]
    if detailed:
        headers += ["Method", "n (control / variant)", "Variance (control / variant)", "CUPED variance cut",
                    "MDE (relative)", "MDE (absolute)", "Raw p", "Warning"]
    rows = []
    for r in overall.to_dict("records"):
        verdict = c.assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"]))
        mark = {"better": ":green[▲ better, significant]", "worse": ":red[▼ worse, significant]",
                "none": "○ not significant"}[verdict]
        mtype = types.get(r["metric"])
        control, variant = fmt.values([r["control_mean"], r["variant_mean"]], mtype)
        row = [f"**{c.md(view.metric_label(r['metric']))}** ({c.md(r['metric'])})", c.md(r["role"]), c.md(r["variant"]),
               control, variant, c.effect_text(view, r, level), c.pvalue(r["p_value_adjusted"]), mark]
        if detailed:
            d = _details(r)
            cv, vv = fmt.numbers([d.get("control_var"), d.get("variant_var")])
            row += [c.md(r.get("method") or "n/a"), f"{c.count(r['control_units'])} / {c.count(r['variant_units'])}",
                    f"{cv} / {vv}",
                    c.pct(r.get("cuped_variance_reduction"), signed=False) if c.finite(r.get("cuped_variance_reduction")) else "—",
                    c.pct(r.get("mde_rel"), signed=False), c.num(r.get("mde")), c.pvalue(r.get("p_value")),
                    c.md(r.get("warning") or "—")]
        rows.append(row)
    st.markdown(c.md_table(headers, rows))
    st.caption("Changes are relative to the control arm (guardrails with an absolute margin: in their own unit, "
               "proportions in percentage points). Each interval is the one the decision uses (sequential "
               "intervals in sequential mode), widened to the multiple-testing level of its family, so it excludes "
               "0 exactly when the result is significant. Adjusted p: Holm within primary and within guardrail "
               "metrics, Benjamini–Hochberg within secondary metrics. ▲/▼ mark significant effects in the good/bad "
               "direction of each metric.")


def forest(view: data.ExperimentView) -> None:
    rows = c.forest_rows(view)
    shown = False
    for unit, title in (("rel", "Change with its decision interval"),
                        ("pt", "Change in percentage points (guardrails with an absolute margin)"),
                        ("abs", "Change in the metric's units")):
        chart = forest_chart([r for r in rows if r["unit"] == unit], title, unit)
        if chart is not None:
            c.show_chart(chart, f"Forest plot: {title}; red ticks are guardrail margins")
            shown = True
    if shown and any(r["margin"] is not None for r in rows):
        st.caption("Red ticks: the worst tolerated change of each guardrail (its margin); ◀ or ▶ marks a margin "
                   "beyond the edge of the plot. A guardrail is harmed when its whole interval lies beyond the tick.")


def _check_line(r: dict[str, Any]) -> str:
    where = " · ".join(c.md(x) for x in (r.get("metric"), r.get("segment"), r.get("variant")) if isinstance(x, str) and x)
    return (f"{c.health_badge(r['status'])} **{c.md(c.check_title(r['check_name']))}**"
            + (f" ({where})" if where else "") + f" — {c.md(r.get('detail') or '')}")


def health_panel(view: data.ExperimentView) -> None:
    st.header("Health checks")
    h = view.health
    if h.empty:
        st.info("No health checks recorded for the latest run.")
        return
    rows = h.to_dict("records")
    problems = [r for r in rows if r["status"] in ("fail", "warn")]
    problems.sort(key=lambda r: 0 if r["status"] == "fail" else 1)
    ok = [r for r in rows if r["status"] not in ("fail", "warn")]
    fails = sum(r["status"] == "fail" for r in problems)
    summary = [f"{fails} failed" if fails else "", f"{len(problems) - fails} warning(s)" if len(problems) > fails else "",
               f"{len(ok)} passed"]
    st.markdown(", ".join(x for x in summary if x) + ".")
    for r in problems:
        st.markdown(_check_line(r))
    if not problems:
        st.success("Every check passed.", icon=":material/check_circle:")
    with st.expander(f"Passed checks ({len(ok)})"):
        st.markdown("\n\n".join(_check_line(r) for r in ok) or "None.")


def segments_panel(view: data.ExperimentView) -> None:
    st.header("Segments")
    seg = view.segments
    configured = list(view.meta.get("segments") or [])
    minimum = (view.meta.get("decision") or {}).get("min_segment_units", 500)
    if seg.empty:
        st.info("No segment results: " + ("no `segments:` configured for this experiment." if not configured else
                f"every value of {', '.join(c.md(d) for d in configured)} had fewer than {c.count(minimum)} units "
                "per arm, so no segment row would differ from the whole population."))
        return
    harmed = c.harmed_segments(view)
    harmed_keys = {(h["segment"], h["metric"], h["variant"]) for h in harmed}
    if harmed:
        st.error("**Harmed segments** (significantly worse while the overall effect is not):\n"
                 + "\n".join(f"- **{c.md(h['segment'])}** ({c.md(view.metric_label(h['metric']))}, {c.md(h['variant'])}): "
                             f"{c.md(c.harmed_text(h))}" for h in harmed), icon=":material/warning:")
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
        note = c.pooled_note(part, minimum)
        if note:
            st.caption(c.md(note))
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
                         c.effect_text(view, r, level), c.pvalue(r["p_value_adjusted"]), mark])
            if r["role"] == "primary":
                unit, est, lo, hi = c.shown_effect(view, r)
                chart_rows.append({"label": f"{name} · {view.metric_label(r['metric'])}" + (" · " + r["variant"] if part["variant"].nunique() > 1 else ""),
                                   "rel": est, "lo": lo, "hi": hi, "margin": None, "unit": unit,
                                   "assessment": "worse" if hit else verdict})
        units = {r["unit"] for r in chart_rows}
        chart = forest_chart(chart_rows, f"Primary metric by {dim}", units.pop()) if len(units) == 1 else None
        if chart is not None:
            c.show_chart(chart, f"Primary metric lift by {dim}")
        with st.expander(f"All {dim} results ({len(rows)})", expanded=bool(harmed)):
            st.markdown(c.md_table(["Segment", "Metric", "Arm", "Units (control / variant)", f"Change ({level:.0%} CI)",
                                    "Adj. p", "Result"], rows))
    missing = [d for d in configured if d not in set(seg["segment"])]
    if missing:
        st.caption(f"Not shown: {', '.join(c.md(d) for d in missing)} — every value had fewer than {c.count(minimum)} "
                   "units per arm, so a row would be the whole population.")
    st.caption("Adjusted p: Benjamini–Hochberg within each segment dimension; intervals at the matching level.")


def power_panel(view: data.ExperimentView) -> None:
    st.header("Power and sample size")
    run, policy = view.run, view.meta.get("decision") or {}
    reasons = data.loads(run.get("reasons"), [])
    needs = c.needs_text(reasons)
    if needs:
        st.info(c.md(needs), icon=":material/hourglass_top:")
    units = data.loads(run.get("units"), {})
    st.markdown(f"Policy: at least **{fmt.number(policy.get('min_days'), decimals=0)}** days and **{c.count(policy.get('min_units_per_variant'))}** "
                f"units per arm; target effect {c.pct(policy.get('target_mde'), signed=False)} at "
                f"{c.pct(policy.get('power'), 0, signed=False)} power. "
                f"So far: {fmt.days(run.get('days_running'))}, smallest arm "
                f"{c.count(min(units.values()) if units else None)} units.")
    overall = view.overall
    if overall.empty:
        return
    rows = [[c.md(view.metric_label(r["metric"])), c.md(r["role"]), c.md(r["variant"]),
             ("±" + c.pct(r["mde_rel"], signed=False)) if c.finite(r["mde_rel"]) else "n/a", c.num(r["mde"]),
             c.effect_text(view, r)]
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
        frame = frame[frame["rel_effect"].notna()]
        frame["when"] = [c.when(t) for t in frame["as_of"]]
        x = alt.X("as_of:T", title="data as of", scale=c.time_scale(frame["as_of"]),
                  axis=alt.Axis(format="%Y-%m-%d %H:%M", labelAngle=-30, tickCount=6))
        cols = ["run_id", "as_of", "when", "decision", "lift", "variant", "rel_effect", "rel_ci_lo", "rel_ci_hi"]
        bounded = frame[frame["rel_ci_lo"].notna() & frame["rel_ci_hi"].notna()]
        layers = []
        if len(bounded):
            layers.append(alt.Chart(c.chart_data(bounded[cols])).mark_rule().encode(
                x=x, y=alt.Y("rel_ci_lo:Q", title=f"{view.metric_label(primary)} lift (%)"), y2=alt.Y2("rel_ci_hi")))
        layers.append(alt.Chart(c.chart_data(frame[cols])).mark_point(filled=True, size=110).encode(
            x=x, y=alt.Y("rel_effect:Q", title=f"{view.metric_label(primary)} lift (%)"), color=colour, shape=shape,
            tooltip=[alt.Tooltip(f) for f in ("run_id:N", "when:N", "decision:N", "lift:N", "variant:N")]))
        if len(frame):
            c.show_chart(alt.layer(*layers).properties(height=240, title="Verdict timeline"),
                         "Primary lift and verdict of every run")
    rows = []
    for r in c.history_rows(view):
        lifts = "; ".join(c.lift(*x, 1 - view.alpha) for x in r["lifts"]) or "n/a"
        rows.append([c.when(r["as_of"]), c.md(r["run_id"]), c.md(c.verdict_text(r["verdict"])), lifts,
                     c.md(r.get("definition_hash") or ""), fmt.days(r.get("days_running"))])
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
    if view.run.get("decision") == "INVALID" or view.run.get("status") != "ok":
        health_panel(view)
        st.header("Results (not trustworthy)")
        st.error("The verdict is INVALID (or the analysis failed): the numbers below cannot be trusted until the "
                 "failed checks above are fixed. They are kept for diagnosis only.", icon=":material/block:")
        with st.expander("Show the untrusted scorecard and charts", expanded=False):
            untrusted(view)
    else:
        scorecard(view)
        forest(view)
        over_time(view)
        health_panel(view)
        segments_panel(view)
        power_panel(view)
    lineage(view)
    history(view)


def untrusted(view: data.ExperimentView) -> None:
    st.markdown("**⚠ NOT TRUSTWORTHY — for diagnosis only**")
    scorecard(view)
    forest(view)
    segments_panel(view)


if __name__ == "__main__":
    render()
