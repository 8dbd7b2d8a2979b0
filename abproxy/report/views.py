"""Derived views of one experiment (an `ExperimentView`), shared by the page and the HTML export:
the forest rows and the unit each metric reads in, guardrail margins, cautions, harmed segments, the
run history table and what changed since the previous run (both from the read layer's records)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from abproxy import format as fmt
from abproxy.ledger import loads
from abproxy.report.text import count, finite, lift, when

def assessment(significant: Any, effect: Any, higher_is_better: bool) -> str:
    """'better' | 'worse' | 'none' for a significant effect in the good/bad direction."""
    if not bool(significant) or not finite(effect) or float(effect) == 0:
        return "none"
    return "better" if (float(effect) > 0) == higher_is_better else "worse"


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
    details = loads(other.iloc[0].get("details"), {}) or {}
    values = details.get("pooled") or []
    shown = ", ".join(str(v) for v in values[:12]) + (f" and {len(values) - 12} more" if len(values) > 12 else "")
    return (f"'other' pools {len(values)} value(s) ({shown}) that had fewer than {fmt.count(minimum)} units in some "
            "arm (or no units in one), so that each row compares enough units." if values else
            f"'other' pools the values with fewer than {fmt.count(minimum)} units in some arm.")


def needs_text(reasons: list[str]) -> str | None:
    """The reason that says how much more data is needed (KEEP_RUNNING), if any."""
    return next((r for r in reasons if "Needs " in r or "more units" in r), None)


def compare_runs(view) -> list[tuple[str, str]]:
    """'What changed since the previous run': (aspect, plain-language change) pairs, read from the
    read layer's diff of the two runs (`diff.run_diff`, the record `abproxy diff` prints)."""
    d = view.changes
    if not d:
        return []
    v, data = d["verdict"], d["data"]
    d0 = v["before"]["decision"] or v["before"]["status"]
    d1 = v["after"]["decision"] or v["after"]["status"]
    out: list[tuple[str, str]] = [("Verdict", f"{d0} → {d1}" if d0 != d1 else f"unchanged ({d1})")]
    out += [("Models", m["text"]) for m in d.get("lineage") or [] if m["changed"]]
    out += _primary_changes(view, d["metrics"])
    out.append(("Definitions", _definitions_text(d["definitions"])))
    for key, label in (("exposure_rows", "Exposure rows"), ("event_rows", "Event rows")):
        x = data[key]
        if x["before"] is not None or x["after"] is not None:
            delta = f" ({x['delta']:+,})" if x.get("delta") is not None else ""
            out.append((label, f"{count(x['before'])} → {count(x['after'])}{delta}"))
    if data["max_occurred_at"]["changed"]:
        out.append(("Latest event", f"{when(data['max_occurred_at']['before'])} → {when(data['max_occurred_at']['after'])}"))
    new_files = [f["path"] for f in data["files_added"]]
    if new_files:
        shown = ", ".join(new_files[:5]) + (f" and {len(new_files) - 5} more" if len(new_files) > 5 else "")
        out.append(("Files", f"{len(new_files)} new: {shown}"))
    u0, u1 = data["units"]["before"] or {}, data["units"]["after"] or {}
    if data["units"]["changed"]:
        out.append(("Units", "; ".join(f"{k} {count(u0.get(k))} → {count(n)}" for k, n in u1.items())))
    code = d["code"]
    if code["changed"]:
        (a0, a1), (g0, g1) = ((code[k]["before"], code[k]["after"]) for k in ("version", "git_commit"))
        out.append(("Code", f"{a0} ({(g0 or '')[:8]}) → {a1} ({(g1 or '')[:8]})"))
    out.append(("Data as of", f"{when(data['as_of']['before'])} → {when(data['as_of']['after'])}"))
    return out


def _primary_changes(view, metrics: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The first three primary metrics' estimates, before → after, per arm."""
    out = []
    for metric in (view.meta.get("primary_metrics") or [])[:3]:
        for m in sorted((m for m in metrics if m["metric"] == metric), key=lambda m: m["variant"]):
            x, y = m["before"], m["after"]
            if not (x and y):
                continue
            delta = (y["rel_effect"] - x["rel_effect"]) * 100 if finite(x["rel_effect"]) and finite(y["rel_effect"]) else None
            out.append((f"Primary estimate {view.metric_label(metric)} ({m['variant']})",
                        f"{lift(x['rel_effect'], *x['rel_ci'])} → {lift(y['rel_effect'], *y['rel_ci'])}"
                        + (f" ({delta:+.1f} pt)" if delta is not None else "")))
    return out


def _definitions_text(definitions: dict[str, Any]) -> str:
    """'unchanged (hash h)' or 'changed: hash a → b (experiment: keys, metric m)'."""
    h0, h1 = definitions["hash"]["before"], definitions["hash"]["after"]
    if h0 == h1:
        return f"unchanged (hash {h1})"
    keys, metrics = [], []
    for c in definitions["changed"]:
        parts = c["path"].split(".")
        if parts[0] == "experiment" and len(parts) > 1:
            keys.append(parts[1])
        elif parts[0] == "metrics" and len(parts) > 1:
            metrics.append(parts[1])
    changed = ([f"experiment: {', '.join(sorted(set(keys)))}"] if keys else []) + \
        [f"metric {m}" for m in sorted(set(metrics))]
    return f"changed: hash {h0} → {h1}" + (f" ({', '.join(changed)})" if changed else "")


def history_rows(view, limit: int = 30) -> list[dict[str, Any]]:
    """The run history table of the page and the export, latest run first, from the read layer's
    history records (`history.history_on`, what `abproxy history` prints): the first primary
    metric's lift per arm beside each run's verdict."""
    primary = (view.meta.get("primary_metrics") or [None])[0]
    out = []
    for r in list(reversed(view.run_history))[:limit]:
        lifts = [(e["rel_effect"], *(e["rel_ci"] or [None, None])) for e in r["primary"] if e["metric"] == primary]
        out.append({**r, "verdict": r["decision"] or "FAILED", "lifts": lifts})
    return out
