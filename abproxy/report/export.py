"""The go/no-go review: one self-contained HTML file per experiment.

Everything is inline (CSS in a <style> element, charts drawn here as SVG); the file makes no
request of any kind, so it can be mailed, attached to a ticket or opened offline. Every piece of
user text is escaped with html.escape.
"""
from __future__ import annotations

import datetime as dt
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb
import pandas as pd

from abproxy import format as fmt
from abproxy.report import components as c
from abproxy.report.data import ExperimentView, experiment_view, loads, register_query
from abproxy.report.export_svg import e, forest_svg, nice_ticks, series_svg  # noqa: F401  (nice_ticks: tests)
from abproxy.warehouse import open_snapshot

VERDICT_COLOURS = {"green": ("#e6f4ea", "#1a7f37"), "red": ("#fdecea", "#c62828"), "blue": ("#e8f0fe", "#1a56b0"),
                   "gray": ("#f1f3f4", "#444444"), "orange": ("#fff4e5", "#b45309")}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1040px;
padding:24px;color:#1f2328;line-height:1.45}
h1{margin:0 0 4px}h2{margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:0 0 4px}
.verdict{border-radius:8px;padding:12px 18px;margin-top:16px;border:2px solid}
.badge{display:inline-block;border-radius:6px;padding:2px 10px;font-weight:700;border:2px solid}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.harmed td{background:#fdecea;font-weight:600}
.better{color:#1a7f37}.worse{color:#c62828}.none{color:#555}
.status-ok{color:#1a7f37}.status-warn{color:#b45309}.status-fail{color:#c62828}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px;word-break:break-all}
svg{max-width:100%;height:auto;font-family:inherit}
footer{margin-top:32px;color:#57606a;font-size:12px}
.untrusted{color:#b45309}details.untrusted{opacity:.75;border:2px dashed #b45309;padding:6px 10px}
@media print{body{max-width:none}h2{page-break-after:avoid}table,svg{page-break-inside:avoid}}
"""
MARK = {"better": "▲ better, significant", "worse": "▼ worse, significant", "none": "○ not significant"}


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Sequence[str] | None = None,
          numeric: Iterable[int] = ()) -> str:
    """An HTML table; cells must already be escaped."""
    numeric = set(numeric)
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{v}</td>' if j in numeric else f"<td>{v}</td>" for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def badge(decision: str | None) -> str:
    colour = c.VERDICTS.get(decision or "NOT_ANALYSED", ("gray", "", ""))[0]
    bg, fg = VERDICT_COLOURS.get(colour, VERDICT_COLOURS["gray"])
    return f'<span class="badge" style="background:{bg};color:{fg};border-color:{fg}">{e(c.verdict_text(decision))}</span>'


# --------------------------------------------------------------------------- sections

def _header(view: ExperimentView) -> str:
    m = view.meta
    bits = [f"key <code>{e(view.key)}</code>", f"status <b>{e(m.get('status') or 'unknown')}</b>"]
    if m.get("owner"):
        bits.append(f"owner {e(m['owner'])}")
    if m.get("start"):
        bits.append(f"started {e(m['start'])}")
    out = f"<header><h1>Go/no-go review: {e(view.name)}</h1><p class=\"meta\">{' · '.join(bits)}</p>"
    if m.get("hypothesis"):
        out += f"<p><i>Hypothesis:</i> {e(m['hypothesis'])}</p>"
    return out + "</header>"


def _verdict(view: ExperimentView) -> str:
    run = view.run
    decision = run.get("decision") if run.get("status") == "ok" else "FAILED"
    shipped = view.meta.get("status") == "shipped"
    cautions = c.cautions(view)
    colour = "orange" if cautions else c.VERDICTS.get(decision or "NOT_ANALYSED", ("gray", "", ""))[0]
    bg, fg = VERDICT_COLOURS.get(colour, VERDICT_COLOURS["gray"])
    target = "keep the shipped" if shipped else "ship"
    ship = f" → {target} <b>{e(run['ship_variant'])}</b>" if run.get("ship_variant") else ""
    caution = (f" — with {len(cautions)} caution{'s' if len(cautions) > 1 else ''}" if cautions else "")
    warn = ("<p><b>Before acting, read:</b></p><ul class=\"cautions\">"
            + "".join(f"<li>⚠ {e(x)}</li>" for x in cautions) + "</ul>") if cautions else ""
    reasons = "".join(f"<li>{e(r)}</li>" for r in loads(run.get("reasons"), []) or [])
    error = f"<p>The latest analysis failed: {e(run.get('error'))}</p>" if run.get("status") != "ok" else ""
    return (f'<section class="verdict" style="background:{bg};border-color:{fg}" aria-label="verdict">'
            f"<h2 style=\"border:0;margin:4px 0\">{badge(decision)}{ship}{e(caution)} "
            f"<small>({e(c.verdict_meaning(decision, shipped))})</small></h2>"
            f"{warn}{error}<ul>{reasons}</ul></section>")


def _run_facts(view: ExperimentView) -> str:
    run = view.run
    units = loads(run.get("units"), {}) or {}
    rows = [["Run id", f"<code>{e(run['run_id'])}</code>"], ["Data as of", e(c.when(run.get("as_of")))],
            ["Analysed", e(c.when(run.get("finished_at") or run.get("started_at")))],
            ["Method", e(run.get("method"))], ["Days running", e(fmt.days(run.get("days_running")))],
            ["Units", e(", ".join(f"{v} {c.count(n)}" for v, n in units.items()))],
            ["Sample-ratio p", e(c.pvalue(run.get("srm_p")))],
            ["Definition hash", f"<code>{e(run.get('definition_hash'))}</code>"],
            ["Code", e(f"abproxy {run.get('code_version') or '?'}" + (f", commit {run['git_commit']}" if run.get("git_commit") else ""))],
            ["Snapshot published", e(c.when(view.published_at))]]
    return "<h2>Run</h2>" + table(["", ""], rows)


def _scorecard(view: ExperimentView) -> str:
    overall = view.overall
    if overall.empty:
        return "<h2>Scorecard</h2><p>The latest run has no metric results.</p>"
    level = 1 - view.alpha
    types = dict(zip(view.metrics["metric"], view.metrics["type"])) if len(view.metrics) else {}
    rows, classes = [], []
    for r in overall.to_dict("records"):
        kind = c.assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"]))
        d = loads(r.get("details"), {}) or {}
        control, variant = fmt.values([r["control_mean"], r["variant_mean"]], types.get(r["metric"]))
        cv, vv = fmt.numbers([d.get("control_var"), d.get("variant_var")])
        mde = f", MDE ±{c.pct(r.get('mde_rel'), signed=False)}" if c.finite(r.get("mde_rel")) else ""
        rows.append([f"<b>{e(view.metric_label(r['metric']))}</b><br><code>{e(r['metric'])}</code>", e(r["role"]),
                     e(r["variant"]), e(control), e(variant),
                     e(c.effect_text(view, r, level)), e(c.pvalue(r["p_value_adjusted"])),
                     f'<span class="{kind}">{e(MARK[kind])}</span>',
                     e(f"{r.get('method') or ''}, n {c.count(r['control_units'])} / {c.count(r['variant_units'])}, "
                       f"var {cv} / {vv}"
                       + (f", CUPED cut the variance by {c.pct(r['cuped_variance_reduction'], signed=False)}"
                          if c.finite(r.get("cuped_variance_reduction")) else "")
                       + mde + (f", warning: {r['warning']}" if r.get("warning") else ""))])
        classes.append("")
    rows_by_unit = c.forest_rows(view)
    forests = "".join(forest_svg([x for x in rows_by_unit if x["unit"] == unit], title, unit=unit)
                      for unit, title in (("rel", f"Change with its {level:.0%} decision interval"),
                                          ("pt", "Change in percentage points (guardrails with an absolute margin)"),
                                          ("abs", "Change in the metric's units")))
    return ("<h2>Scorecard</h2>" + table(["Metric", "Role", "Arm", "Control", "Variant", f"Change ({level:.0%} CI)",
                                          "Adj. p", "Result", "Statistical details"], rows, classes, numeric=(3, 4, 6))
            + "<p class=\"meta\">Each interval is the one the decision uses (sequential in sequential mode), at the "
              "multiple-testing level of its family, so it excludes 0 exactly when the result is significant. "
              "Adjusted p: Holm within primary and within guardrail metrics, Benjamini–Hochberg within secondary. "
              "▲/▼: significant in the good/bad direction; red dashed ticks: guardrail margins.</p>"
            + forests)


def _series(view: ExperimentView) -> str:
    s = view.series
    primary = (view.meta.get("primary_metrics") or [None])[0]
    if s.empty or primary is None:
        return ""
    out = ["<h2>Effect over time</h2>"]
    for variant in dict.fromkeys(s[s["metric"] == primary]["variant"]):
        pick = s[(s["metric"] == primary) & (s["variant"] == variant) & (s["kind"] == "cumulative")]
        out.append(series_svg(pick, f"Cumulative {view.metric_label(primary)} lift, {variant} vs control"))
    return "".join(out)


def _segments(view: ExperimentView) -> str:
    seg = view.segments
    if seg.empty:
        return ""
    harmed = c.harmed_segments(view)
    keys = {(h["segment"], h["metric"], h["variant"]) for h in harmed}
    out = ["<h2>Segments</h2>"]
    if harmed:
        out.append("<p><b>⚠ Harmed segments</b> (significantly worse while the overall effect is not):</p><ul>"
                   + "".join(f"<li><b>{e(h['segment'])}</b> ({e(view.metric_label(h['metric']))}, {e(h['variant'])}): "
                             f"{e(c.harmed_text(h))}</li>" for h in harmed) + "</ul>")
    else:
        out.append("<p>✔ No segment is significantly harmed.</p>")
    het = view.health[view.health["check_name"] == "segment_heterogeneity"] if len(view.health) else pd.DataFrame()
    if len(het):
        out.append("<p>Heterogeneity:</p><ul>" + "".join(
            f'<li class="status-{e(r["status"])}">{e(r["status"].upper())}: {e(r["detail"])}</li>'
            for r in het.to_dict("records")) + "</ul>")
    minimum = (view.meta.get("decision") or {}).get("min_segment_units", 500)
    notes = [c.pooled_note(seg[seg["segment"] == d], minimum) for d in dict.fromkeys(seg["segment"])]
    out += [f"<p class=\"meta\">{e(d)}: {e(n)}</p>" for d, n in zip(dict.fromkeys(seg["segment"]), notes) if n]
    level = 1 - view.alpha
    rows, classes = [], []
    for r in seg.to_dict("records"):
        name = f"{r['segment']}={r['segment_value']}"
        hit = (name, r["metric"], r["variant"]) in keys
        kind = c.assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"]))
        rows.append([e(name), e(view.metric_label(r["metric"])), e(r["variant"]),
                     e(f"{c.count(r['control_units'])} / {c.count(r['variant_units'])}"),
                     e(c.effect_text(view, r, level)), e(c.pvalue(r["p_value_adjusted"])),
                     "⚠ HARMED" if hit else f'<span class="{kind}">{e(MARK[kind])}</span>'])
        classes.append("harmed" if hit else "")
    out.append(table(["Segment", "Metric", "Arm", "Units (control / variant)", f"Change ({level:.0%} CI)", "Adj. p",
                      "Result"], rows, classes))
    return "".join(out)


def _health(view: ExperimentView) -> str:
    """Failures and warnings first with plain titles; the passed checks folded."""
    h = view.health
    if h.empty:
        return "<h2>Health checks</h2><p>No health checks recorded.</p>"
    order = {"fail": 0, "warn": 1}

    def row(r: dict[str, Any]) -> list[str]:
        symbol = c.HEALTH.get(r["status"], ("", "•"))[1]
        where = " · ".join(str(x) for x in (r.get("metric"), r.get("segment"), r.get("variant")) if isinstance(x, str) and x)
        return [f'<span class="status-{e(r["status"])}">{e(symbol)} {e(str(r["status"]).upper())}</span>',
                e(c.check_title(r["check_name"])), e(where), e(r.get("detail"))]

    records = h.to_dict("records")
    problems = sorted((r for r in records if r["status"] in order), key=lambda r: order[r["status"]])
    ok = [r for r in records if r["status"] not in order]
    headers = ["Status", "Check", "Where", "Explanation"]
    out = "<h2>Health checks</h2>"
    out += table(headers, [row(r) for r in problems]) if problems else "<p>✔ Every check passed.</p>"
    if ok:
        out += (f"<details><summary>Passed checks ({len(ok)})</summary>" + table(headers, [row(r) for r in ok])
                + "</details>")
    return out


def _power(view: ExperimentView) -> str:
    run, policy = view.run, view.meta.get("decision") or {}
    needs = c.needs_text(loads(run.get("reasons"), []) or [])
    out = ["<h2>Power and sample size</h2>"]
    if needs:
        out.append(f"<p>↻ {e(needs)}</p>")
    out.append(f"<p>Policy: at least {e(fmt.number(policy.get('min_days'), decimals=0))} days and "
               f"{e(c.count(policy.get('min_units_per_variant')))} units per arm; target effect "
               f"{e(c.pct(policy.get('target_mde'), signed=False))} at {e(c.pct(policy.get('power'), 0, signed=False))} power.</p>")
    overall = view.overall
    if len(overall):
        out.append(table(["Metric", "Arm", "MDE (relative)", "MDE (absolute)"],
                         [[e(view.metric_label(r["metric"])), e(r["variant"]),
                           e("±" + c.pct(r["mde_rel"], signed=False) if c.finite(r["mde_rel"]) else "n/a"),
                           e(c.num(r["mde"]))] for r in overall.to_dict("records")], numeric=(2, 3)))
    return "".join(out)


def _lineage(view: ExperimentView) -> str:
    v = view.variants
    if v.empty:
        return ""
    rows = []
    for r in v.to_dict("records"):
        params = loads(r.get("params"), {}) or {}
        rows.append([f"<b>{e(r['variant'])}</b>", "control" if r.get("is_control") else "treatment", e(r.get("model")),
                     e(r.get("version")), e(", ".join(f"{k}={val}" for k, val in params.items())),
                     e(r.get("training_data")), e(c.pct(r.get("allocation"), 0, signed=False)), e(r.get("description")),
                     e(r.get("link"))])
    return "<h2>Model lineage</h2>" + table(["Arm", "Role", "Model", "Version", "Params", "Training data", "Allocation",
                                             "Description", "Link"], rows)


def _watermark(view: ExperimentView) -> str:
    w = loads(view.run.get("watermark"), {}) or {}
    rows = [["Exposure rows", e(c.count(w.get("exposure_rows")))], ["Latest exposure", e(c.when(w.get("max_exposed_at")))],
            ["Event rows", e(c.count(w.get("event_rows")))], ["Latest event", e(c.when(w.get("max_occurred_at")))]]
    files = list(zip(w.get("files") or [], w.get("file_hashes") or []))
    out = "<h2>Data watermark</h2>" + table(["", ""], rows)
    if files:
        out += (f"<details><summary>{len(files)} loaded file(s)</summary>"
                + table(["File", "sha256"], [[e(p), f"<code>{e(h)}</code>"] for p, h in files]) + "</details>")
    return out


def _history(view: ExperimentView) -> str:
    rows = []
    for r in c.history_rows(view):
        lifts = "; ".join(fmt.effect(*x) for x in r["lifts"]) or "n/a"
        rows.append([e(c.when(r["as_of"])), f"<code>{e(r['run_id'])}</code>", e(c.verdict_text(r["verdict"])),
                     e(lifts), f"<code>{e(r.get('definition_hash'))}</code>"])
    out = "<h2>Run history</h2>" + table(["Data as of", "Run", "Verdict", "Primary lift", "Definition hash"], rows)
    changes = c.compare_runs(view)
    if changes:
        out += ("<h3>What changed since the previous run</h3><ul>"
                + "".join(f"<li><b>{e(a)}</b>: {e(t)}</li>" for a, t in changes) + "</ul>")
    return out


def review_html(con: duckdb.DuckDBPyConnection, key: str) -> str:
    """The go/no-go review of experiment `key` from a snapshot connection (KeyError if unknown)."""
    view = experiment_view(con, key)
    try:
        version = metadata.version("abproxy")
    except metadata.PackageNotFoundError:
        version = "?"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [_header(view)]
    if view.run is None:
        body.append("<section class=\"verdict\"><h2>Not analysed yet</h2><p>This experiment has no analysis run in the "
                    "snapshot; run <code>abproxy run</code> first.</p></section>")
        body.append(_lineage(view))
    else:
        trusted = view.run.get("status") == "ok" and view.run.get("decision") != "INVALID"
        numbers = [_scorecard(view), _series(view), _segments(view)]
        if trusted:
            body += [_verdict(view), _run_facts(view), *numbers, _health(view), _power(view)]
        else:
            body += [_verdict(view), _run_facts(view), _health(view),
                     "<h2>Results (not trustworthy)</h2><p class=\"untrusted\"><b>⚠ The verdict is INVALID (or the "
                     "analysis failed): the numbers below cannot be trusted until the failed checks above are fixed. "
                     "They are kept for diagnosis only.</b></p><details class=\"untrusted\"><summary>Show the "
                     "untrusted scorecard and charts</summary>" + "".join(numbers) + "</details>"]
        body += [_lineage(view), _watermark(view), _history(view)]
    body.append(f"<footer>Generated by abproxy {e(version)} on {e(generated)} from the report snapshot published "
                f"{e(c.when(view.published_at))}. This file is self-contained and makes no network requests.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Go/no-go review: {e(view.name)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def write_review(ws: Any, key: str, path: Path | str) -> Path:
    """Write the review of `key` from workspace `ws`'s snapshot to `path` (KeyError listing the
    known keys if `key` is unknown; WarehouseError if no snapshot was published yet)."""
    con = open_snapshot(ws.snapshot)
    try:
        text = review_html(con, key)
    finally:
        con.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


register_query("review_html", review_html)   # Snapshot.load("review_html", key) for the page
