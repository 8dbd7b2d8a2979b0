"""Small shared pieces of the report: text formatting, escaping, verdict and health badges, derived
views and charts (the snapshot gate every page passes through lives in `gates`).

Every string a user wrote (names, descriptions, reasons, paths) goes through `md()` before it is
put into Markdown; nothing here uses `unsafe_allow_html`.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Iterable, Sequence

import pandas as pd

from abproxy import format as fmt
from abproxy.ledger import loads

# decision → (badge colour, symbol, plain words); the symbol differs in shape, not only colour
VERDICTS: dict[str, tuple[str, str, str]] = {
    "SHIP": ("green", "✔", "ship the variant"),
    "ROLLBACK": ("red", "✖", "roll the variant back"),
    "KEEP_RUNNING": ("blue", "↻", "keep collecting data"),
    "NO_DETECTABLE_EFFECT": ("gray", "≈", "no effect detectable"),
    "INVALID": ("orange", "⚠", "numbers cannot be trusted"),
    "FAILED": ("red", "✖", "the analysis failed"),
    "NOT_ANALYSED": ("gray", "○", "not analysed yet"),
    "CONTROL": ("gray", "◼", "baseline arm"),
    "NOT_SHIPPED": ("gray", "◻", "another arm was shipped"),
}
# symbols from common text fonts (DejaVu), not colour emoji: they must render everywhere
HEALTH: dict[str, tuple[str, str]] = {"ok": ("green", "✔"), "warn": ("orange", "⚠"), "fail": ("red", "✖")}
JOB_STATUS: dict[str, tuple[str, str]] = {"ok": ("green", "✔"), "running": ("blue", "↻"), "failed": ("red", "✖"),
                                          "interrupted": ("orange", "⚠")}

_MD_ALWAYS = re.compile(r"([\\`*\[\]<>|$~])")          # code, emphasis, links/directives, HTML, tables, LaTeX
_MD_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")  # emphasis can only start/end at a word edge
_MD_COLON = re.compile(r":(?=[A-Za-z])")                   # :red[...] directives
_MD_EMOJI = re.compile(r":(?=[\w-]+:)")                     # :x: shortcodes (matched on the text, after escapes)
WORD_JOINER = "\u2060"                                      # invisible; breaks the shortcode pattern
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")                     # &lt; would render as <
_MD_LINE_START = re.compile(r"^(\s*)([#>+\-=]|\d+(?=[.)]))")  # headings, quotes, lists at the start


# --------------------------------------------------------------------------- text

def md(value: Any) -> str:
    """Escape user text for Streamlit Markdown, so it shows literally: the characters that start
    Markdown, directive, emoji or LaTeX syntax are backslash-escaped (intraword underscores such as
    spend_per_user are left alone) and newlines become spaces (safe inside table cells)."""
    text = "" if value is None else str(value).replace("\r", " ").replace("\n", " ")
    text = _MD_ALWAYS.sub(r"\\\1", text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    text = _MD_EMOJI.sub(":" + WORD_JOINER, text)
    text = _MD_COLON.sub(r"\\:", text)
    text = _MD_ENTITY.sub(r"\\&", text)
    match = _MD_LINE_START.match(text)
    if match:
        lead, mark = match.groups()
        if mark[0].isdigit():        # "1. " / "1) " would start an ordered list
            end = match.end()
            text = text[:end] + "\\" + text[end:]
        else:
            text = f"{lead}\\{text[len(lead):]}"
    return text


# Numbers read the same everywhere: the formatting module decides (report, export and CLI).
finite = fmt.finite
pct = fmt.pct
pvalue = fmt.pvalue
count = fmt.count
when = fmt.when
size = fmt.size


def ci(lo: Any, hi: Any, unit: str = "rel") -> str:
    return fmt.interval(lo, hi, unit)


def lift(rel: Any, lo: Any, hi: Any, level: float = 0.95, unit: str = "rel") -> str:
    """'+4.6% (95% CI -1.9% to +11.1%)'."""
    return fmt.effect(rel, lo, hi, level, unit)


def num(x: Any, digits: int = 4) -> str:
    return fmt.number(x, significant=digits)


def ago(value: Any, now: dt.datetime | None = None) -> str:
    """'3 h ago' relative to now (UTC)."""
    if value is None:
        return ""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return ""
    if pd.isna(ts):
        return ""
    ts = ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    seconds = (pd.Timestamp(now) - ts).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


# --------------------------------------------------------------------------- badges and tables

def verdict_text(decision: str | None) -> str:
    """Plain text with a shape symbol: '✔ SHIP'."""
    code = decision or "NOT_ANALYSED"
    _, symbol, _ = VERDICTS.get(code, ("gray", "•", ""))
    return f"{symbol} {code}"


def verdict_badge(decision: str | None) -> str:
    """Markdown badge: coloured, with a symbol and the decision as text."""
    code = decision or "NOT_ANALYSED"
    colour, symbol, _ = VERDICTS.get(code, ("gray", "•", ""))
    return f":{colour}-badge[{symbol} {md(code)}]"


SHIPPED_MEANING = {"SHIP": "keep the shipped model", "ROLLBACK": "revert the shipped model",
                   "NO_DETECTABLE_EFFECT": "the shipped model's lift has faded",
                   "KEEP_RUNNING": "keep monitoring against the holdback"}


def verdict_meaning(decision: str | None, shipped: bool = False) -> str:
    """Plain words for a decision; a shipped model (holdback monitoring) is kept or reverted."""
    if shipped and decision in SHIPPED_MEANING:
        return SHIPPED_MEANING[decision]
    return VERDICTS.get(decision or "NOT_ANALYSED", ("", "", ""))[2]


def health_badge(status: str | None) -> str:
    colour, symbol = HEALTH.get((status or "").lower(), ("gray", "•"))
    return f":{colour}-badge[{symbol} {md((status or 'unknown').upper())}]"


def job_badge(status: str | None) -> str:
    colour, symbol = JOB_STATUS.get(status or "", ("gray", "•"))
    return f":{colour}-badge[{symbol} {md(status or 'unknown')}]"


def assessment(significant: Any, effect: Any, higher_is_better: bool) -> str:
    """'better' | 'worse' | 'none' for a significant effect in the good/bad direction."""
    if not bool(significant) or not finite(effect) or float(effect) == 0:
        return "none"
    return "better" if (float(effect) > 0) == higher_is_better else "worse"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; cells must already be escaped (or be our own formatted numbers)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def freshness_caption(fresh: dict[str, Any]) -> str:
    parts = [f"Snapshot published {when(fresh.get('published_at'))} ({ago(fresh.get('published_at'))})"]
    if fresh.get("latest_event") is not None:
        parts.append(f"latest event analysed {when(fresh.get('latest_event'))}")
    if fresh.get("last_loaded_at") is not None:
        parts.append(f"last file loaded {when(fresh.get('last_loaded_at'))}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- derived rows (app and export)

def value_text(x: Any, metric_type: str | None) -> str:
    """A per-arm metric value: proportions as a percentage, other metrics as a number."""
    return fmt.value(x, metric_type)


def guardrail_margins(view) -> dict[str, dict[str, Any]]:
    return {g.get("metric"): g for g in view.meta.get("guardrails") or [] if isinstance(g, dict)}


def margin_position(view, row: dict[str, Any], unit: str = "rel") -> float | None:
    """Where a guardrail's tolerated harm sits on the axis of its unit (None: not a guardrail, or
    no margin). An absolute margin shown on a relative axis is converted with the control mean."""
    g = guardrail_margins(view).get(row["metric"])
    if g is None or row.get("role") != "guardrail":
        return None
    margin = float(g.get("margin") or 0.0)
    relative = bool(g.get("relative", True))
    if relative != (unit == "rel"):
        base = row.get("control_mean")
        if not finite(base) or float(base) == 0:
            return None
        margin = margin / abs(float(base)) if unit == "rel" else margin * abs(float(base))
    return -margin if view.higher_is_better(row["metric"]) else margin


def forest_rows(view) -> list[dict[str, Any]]:
    """One row per overall metric × arm of the latest run: label, relative lift and CI, the
    assessment (better / worse / none) and the guardrail margin position."""
    overall = view.overall
    multi = overall["variant"].nunique() > 1 if len(overall) else False
    rows = []
    for r in overall.to_dict("records"):
        label = f"{view.metric_label(r['metric'])} ({r['role']})" + (f" · {r['variant']}" if multi else "")
        unit, est, lo, hi = shown_effect(view, r)
        rows.append({"label": label, "metric": r["metric"], "role": r["role"], "variant": r["variant"],
                     "unit": unit, "rel": est, "lo": lo, "hi": hi,
                     "significant": bool(r["significant"]) if finite(est) else False,
                     "assessment": assessment(r["significant"], r["abs_effect"], view.higher_is_better(r["metric"])),
                     "margin": margin_position(view, r, unit)})
    return rows


def metric_unit(view, metric: str) -> str:
    """The one unit a metric's effects read in on every page and in the export (format.unit_of)."""
    g = guardrail_margins(view).get(metric)
    types = dict(zip(view.metrics["metric"], view.metrics["type"])) if len(view.metrics) else {}
    relative = True if g is None or view.meta.get("roles", {}).get(metric) != "guardrail" else g.get("relative", True)
    return fmt.unit_of(types.get(metric), bool(relative))


def shown_effect(view, row: dict[str, Any]) -> tuple[str, Any, Any, Any]:
    """(unit, estimate, lower, upper) as a reader sees a result: the metric's unit; the absolute
    effect when the lift has no interval (control mean not clearly away from 0)."""
    unit = metric_unit(view, row["metric"])
    if unit == "rel" and finite(row.get("rel_effect")) and finite(row.get("rel_ci_lo")) and finite(row.get("rel_ci_hi")):
        return unit, row["rel_effect"], row["rel_ci_lo"], row["rel_ci_hi"]
    if unit == "rel":
        types = dict(zip(view.metrics["metric"], view.metrics["type"])) if len(view.metrics) else {}
        unit = "pt" if types.get(row["metric"]) == "proportion" else "abs"
    return unit, row.get("abs_effect"), row.get("abs_ci_lo"), row.get("abs_ci_hi")


def effect_text(view, row: dict[str, Any], level: float | None = None) -> str:
    """A result's effect with its decision interval, in the metric's unit."""
    unit, est, lo, hi = shown_effect(view, row)
    return fmt.effect(est, lo, hi, 1 - view.alpha if level is None else level, unit)


# plain titles for the health checks (the snake_case names stay in the ledger and the JSON)
CHECK_TITLES = {
    "srm": "Traffic split (sample-ratio mismatch)", "multiple_exposures": "Units that saw several variants",
    "early_exposures": "Exposures long before the experiment", "invalid_sums": "Impossible metric sums",
    "unknown_variants": "Exposures to unknown variants", "unknown_experiments": "Exposures to unknown experiments",
    "future_timestamps": "Timestamps in the future", "event_profile": "Event profile", "null_values": "Missing values",
    "event_missing": "Events that stopped arriving", "event_volume": "Daily event volume",
    "duplicate_events": "Duplicated events", "late_data": "Late data", "segment_harm": "Harmed segments",
    "segment_heterogeneity": "Effect differs between segments", "novelty": "Fading lift (novelty)",
    "launch_decay": "Effect since launch", "distribution_drift": "Metric distribution drift",
    "decision_robustness": "Decision robustness (capping, CUPED, window)",
    "verdict_stability": "Verdict stability across runs",
}


def check_title(name: Any) -> str:
    return CHECK_TITLES.get(str(name), fmt.words(name))


def cautions(view) -> list[str]:
    """The warnings the latest verdict carries (the same rule as the verdict's `cautions`)."""
    from abproxy.verdict import Flag, cautions_of

    h, run = view.health, view.run
    if run is None or h.empty or run.get("status") != "ok" or run.get("decision") == "INVALID":
        return []
    roles = view.meta.get("roles") or {}
    flags = [Flag(r["check_name"], r["status"], r.get("detail") or "", _text(r.get("segment")),
                  _text(r.get("metric")), _text(r.get("variant"))) for r in h.to_dict("records")]
    return cautions_of(flags, {m for m, role in roles.items() if role in ("primary", "guardrail")})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def harmed_segments(view) -> list[dict[str, Any]]:
    """Segments the health checks flagged as harmed (segment_harm warnings), with their detail (the
    'no segment harmed' OK row is not a harmed segment)."""
    h = view.health
    if h.empty:
        return []
    rows = h[(h["check_name"] == "segment_harm") & (h["status"] != "ok")]
    return [{"segment": r["segment"], "metric": r["metric"], "variant": r["variant"], "detail": r["detail"],
             "status": r["status"]} for r in rows.to_dict("records")]


def harmed_text(h: dict[str, Any]) -> str:
    """'country=DE (spend_per_user, treatment): -12.8% …' without repeating the segment."""
    detail = str(h.get("detail") or "")
    seg = h.get("segment") if isinstance(h.get("segment"), str) else ""
    if seg and detail.startswith(seg + ":"):
        detail = detail[len(seg) + 1:].strip()
    return detail


def pooled_note(part: pd.DataFrame, minimum: Any) -> str | None:
    """What was pooled into 'other' and why."""
    other = part[part["segment_value"] == "other"]
    if other.empty:
        return None
    details = _loads(other.iloc[0].get("details"), {}) or {}
    values = details.get("pooled") or []
    shown = ", ".join(str(v) for v in values[:12]) + (f" and {len(values) - 12} more" if len(values) > 12 else "")
    return (f"'other' pools {len(values)} value(s) ({shown}) that had fewer than {fmt.count(minimum)} units in some "
            "arm (or no units in one), so that each row compares enough units." if values else
            f"'other' pools the values with fewer than {fmt.count(minimum)} units in some arm.")


def _loads(value: Any, default: Any) -> Any:
    from abproxy.ledger import loads

    return loads(value, default)


def needs_text(reasons: list[str]) -> str | None:
    """The reason that says how much more data is needed (KEEP_RUNNING), if any."""
    return next((r for r in reasons if "Needs " in r or "more units" in r), None)


def compare_runs(view) -> list[tuple[str, str]]:
    """'What changed since the previous run': (aspect, plain-language change) pairs."""
    now, before = view.run, view.previous
    if now is None or before is None:
        return []
    out: list[tuple[str, str]] = []
    d0, d1 = before.get("decision") or before.get("status"), now.get("decision") or now.get("status")
    out.append(("Verdict", f"{d0} → {d1}" if d0 != d1 else f"unchanged ({d1})"))
    hist = view.history
    for metric in (view.meta.get("primary_metrics") or [])[:3]:
        for variant in sorted(set(hist["variant"])) if len(hist) else []:
            pick = hist[(hist["metric"] == metric) & (hist["variant"] == variant)]
            a = pick[pick["run_id"] == before["run_id"]]
            b = pick[pick["run_id"] == now["run_id"]]
            if len(a) and len(b):
                x, y = a.iloc[0], b.iloc[0]
                delta = (y["rel_effect"] - x["rel_effect"]) * 100 if finite(x["rel_effect"]) and finite(y["rel_effect"]) else None
                out.append((f"Primary estimate {view.metric_label(metric)} ({variant})",
                            f"{lift(x['rel_effect'], x['rel_ci_lo'], x['rel_ci_hi'])} → "
                            f"{lift(y['rel_effect'], y['rel_ci_lo'], y['rel_ci_hi'])}"
                            + (f" ({delta:+.1f} pt)" if delta is not None else "")))
    h0, h1 = before.get("definition_hash"), now.get("definition_hash")
    if h0 == h1:
        out.append(("Definitions", f"unchanged (hash {h1})"))
    else:
        changed = _changed_definitions(view.previous_definitions, view.definitions)
        out.append(("Definitions", f"changed: hash {h0} → {h1}" + (f" ({', '.join(changed)})" if changed else "")))
    w0, w1 = loads(before.get("watermark"), {}), loads(now.get("watermark"), {})
    for key, label in (("exposure_rows", "Exposure rows"), ("event_rows", "Event rows")):
        if key in w0 or key in w1:
            a, b = w0.get(key), w1.get(key)
            diff = f" ({int(b) - int(a):+,})" if finite(a) and finite(b) else ""
            out.append((label, f"{count(a)} → {count(b)}{diff}"))
    if w0.get("max_occurred_at") != w1.get("max_occurred_at"):
        out.append(("Latest event", f"{when(w0.get('max_occurred_at'))} → {when(w1.get('max_occurred_at'))}"))
    new_files = [f for f in w1.get("files") or [] if f not in set(w0.get("files") or [])]
    if new_files:
        shown = ", ".join(new_files[:5]) + (f" and {len(new_files) - 5} more" if len(new_files) > 5 else "")
        out.append(("Files", f"{len(new_files)} new: {shown}"))
    u0, u1 = loads(before.get("units"), {}), loads(now.get("units"), {})
    if u0 != u1:
        out.append(("Units", "; ".join(f"{v} {count(u0.get(v))} → {count(n)}" for v, n in u1.items())))
    v0 = (before.get("code_version"), before.get("git_commit"))
    v1 = (now.get("code_version"), now.get("git_commit"))
    if v0 != v1:
        out.append(("Code", f"{v0[0]} ({(v0[1] or '')[:8]}) → {v1[0]} ({(v1[1] or '')[:8]})"))
    out.append(("Data as of", f"{when(before.get('as_of'))} → {when(now.get('as_of'))}"))
    return out


def _changed_definitions(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    if before.get("experiment") != after.get("experiment"):
        keys = sorted(k for k in set(before.get("experiment") or {}) | set(after.get("experiment") or {})
                      if (before.get("experiment") or {}).get(k) != (after.get("experiment") or {}).get(k))
        changed.append("experiment: " + ", ".join(keys))
    m0, m1 = before.get("metrics") or {}, after.get("metrics") or {}
    changed += [f"metric {m}" for m in sorted(set(m0) | set(m1)) if m0.get(m) != m1.get(m)]
    return changed


def show_chart(chart: Any, alt_text: str, where: Any = None) -> None:
    """Render an Altair chart. The spec is built without JSON-schema validation (the charts are
    fixed code; validation would cost most of a page's time)."""
    import streamlit as st

    spec = chart.to_dict(validate=False)
    spec.setdefault("autosize", {"type": "fit-x", "contains": "padding"})   # the height is the plot's
    (where or st).vega_lite_chart(spec, width="stretch", alt=alt_text)


def _json_value(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date, pd.Timestamp)):
        return None if pd.isna(v) else v.isoformat()
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()                         # numpy scalar → Python
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def time_scale(values: Any) -> Any:
    """A time axis that never collapses to one instant (a single run would read '.500 .500 …'): the
    domain spans the values, padded by an hour, at least a day wide."""
    import altair as alt

    stamps = [pd.Timestamp(v) for v in values if v is not None and not pd.isna(v)]
    if not stamps:
        return alt.Scale()
    lo, hi = min(stamps), max(stamps)
    pad = max(pd.Timedelta(hours=1), (pd.Timedelta(days=1) - (hi - lo)) / 2)
    def stamp(t: pd.Timestamp) -> Any:   # local-time fields, like the ISO strings of chart_data
        return alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour, minutes=t.minute)

    return alt.Scale(domain=[stamp(lo - pad), stamp(hi + pad)])


def chart_data(rows: Any) -> Any:
    """Inline Vega-Lite data from records or a DataFrame (JSON-safe values, no pandas round trip
    inside Altair)."""
    import altair as alt

    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    return alt.Data(values=[{k: _json_value(v) for k, v in r.items()} for r in records])


DECISION_COLOURS = {"SHIP": "#1a9850", "ROLLBACK": "#d73027", "KEEP_RUNNING": "#4575b4",
                    "NO_DETECTABLE_EFFECT": "#878787", "INVALID": "#f46d43", "FAILED": "#7f0000"}
DECISION_SHAPES = {"SHIP": "triangle-up", "ROLLBACK": "cross", "KEEP_RUNNING": "circle",
                   "NO_DETECTABLE_EFFECT": "square", "INVALID": "diamond", "FAILED": "triangle-down"}


def decision_encodings() -> tuple[Any, Any]:
    """Colour and shape channels for a `decision` field: the same verdict always looks the same,
    and shape tells the verdicts apart without colour."""
    import altair as alt

    colour = alt.Color("decision:N", title="verdict", scale=alt.Scale(domain=list(DECISION_COLOURS),
                                                                      range=list(DECISION_COLOURS.values())))
    shape = alt.Shape("decision:N", title="verdict", scale=alt.Scale(domain=list(DECISION_SHAPES),
                                                                     range=list(DECISION_SHAPES.values())))
    return colour, shape
