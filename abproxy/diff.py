"""What changed between two runs: data, definitions, code, model lineage, metric estimates and the
verdict, as one record with a plain-sentence summary. `abproxy diff`, the report's "what changed
since the previous run" and the HTML export all read this one record."""
from __future__ import annotations

from typing import Any, Iterable

import duckdb

from . import ledger
from .errors import HistoryError
from .ledger import loads
from .reading import ci_text, code_text, connect, effect_record, iso, p_text, pct, plural, rows, value_text


def resolve_run(con: duckdb.DuckDBPyConnection, ref: str) -> str:
    """The run id that `ref` (a full id or a unique prefix) names."""
    ref = (ref or "").strip()
    if not ref:
        raise HistoryError("empty run id; see 'abproxy history KEY' for run ids")
    matches = ledger.run_ids_starting(con, ref)
    if not matches:
        raise HistoryError(f"no run '{ref}' in the ledger; see 'abproxy history KEY' for run ids")
    if ref in matches:
        return ref
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
        raise HistoryError(f"run id prefix '{ref}' is ambiguous ({len(matches)} runs: {shown}); give more characters")
    return matches[0]


def _changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Dotted key paths whose values differ, recursively through mappings (and equal-length lists)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in before:
                out.append({"path": sub, "before": None, "after": after[k], "change": "added"})
            elif k not in after:
                out.append({"path": sub, "before": before[k], "after": None, "change": "removed"})
            else:
                out += _changes(before[k], after[k], sub)
        return out
    if (isinstance(before, list) and isinstance(after, list) and len(before) == len(after)
            and any(isinstance(x, (dict, list)) for x in before + after)):
        out = []
        for i, (b, a) in enumerate(zip(before, after)):
            out += _changes(b, a, f"{path}.{i}" if path else str(i))
        return out
    if before != after:
        return [{"path": path or "(root)", "before": before, "after": after, "change": "changed"}]
    return []


def _files_by_path(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    loaded = rows(con, "SELECT path, kind, sha256, rows_loaded, loaded_at FROM files WHERE status = 'loaded' "
                       "ORDER BY file_id")
    return {r["path"]: r for r in loaded}


def _file_entries(paths: Iterable[str], files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        f = files.get(p, {})
        out.append({"path": p, "kind": f.get("kind"), "rows": f.get("rows_loaded"),
                    "loaded_at": iso(f.get("loaded_at"))})
    return out


def _before_after(before: Any, after: Any, numeric: bool = False) -> dict[str, Any]:
    out = {"before": before, "after": after, "changed": before != after}
    if numeric:
        out["delta"] = (after - before) if isinstance(before, (int, float)) and isinstance(after, (int, float)) else None
    return out


def _data_diff(a: dict[str, Any], b: dict[str, Any], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    wa, wb = loads(a["watermark"], {}), loads(b["watermark"], {})
    fa, fb = list(wa.get("files") or []), list(wb.get("files") or [])
    ha = dict(zip(fa, wa.get("file_hashes") or []))
    hb = dict(zip(fb, wb.get("file_hashes") or []))
    added = [p for p in fb if p not in ha]
    removed = [p for p in fa if p not in hb]
    replaced = [p for p in fb if p in ha and ha[p] != hb.get(p)]
    data = {
        "files_added": _file_entries(added, files),
        "files_removed": _file_entries(removed, files),
        "files_replaced": _file_entries(replaced, files),
        "files_before": len(fa), "files_after": len(fb),
        "as_of": _before_after(iso(a["as_of"]), iso(b["as_of"])),
        "exposure_rows": _before_after(wa.get("exposure_rows"), wb.get("exposure_rows"), numeric=True),
        "event_rows": _before_after(wa.get("event_rows"), wb.get("event_rows"), numeric=True),
        "max_exposed_at": _before_after(wa.get("max_exposed_at"), wb.get("max_exposed_at")),
        "max_occurred_at": _before_after(wa.get("max_occurred_at"), wb.get("max_occurred_at")),
        "units": _before_after(loads(a["units"], {}), loads(b["units"], {})),
    }
    data["changed"] = bool(added or removed or replaced) or any(
        data[k]["changed"] for k in ("exposure_rows", "event_rows", "max_exposed_at", "max_occurred_at"))
    return data


def _metrics_diff(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ea = {(r["metric"], r["variant"]): effect_record(r) for r in ra}
    eb = {(r["metric"], r["variant"]): effect_record(r) for r in rb}
    keys = list(dict.fromkeys([*ea, *eb]))
    out = []
    for metric, variant in keys:
        x, y = ea.get((metric, variant)), eb.get((metric, variant))
        keep = ("abs_effect", "abs_ci", "rel_effect", "rel_ci", "p_value_adjusted", "significant",
                "control_mean", "variant_mean", "control_units", "variant_units")
        before = {k: x[k] for k in keep} if x else None
        after = {k: y[k] for k in keep} if y else None
        delta = None
        if x and y:
            delta = {k: (y[k] - x[k]) if x[k] is not None and y[k] is not None else None
                     for k in ("abs_effect", "rel_effect", "p_value_adjusted")}
        out.append({
            "metric": metric, "variant": variant, "role": (y or x)["role"], "control": (y or x)["control"],
            "before": before, "after": after, "delta": delta,
            "significance_changed": bool(x and y and x["significant"] != y["significant"]),
            "changed": before != after,
        })
    return out


def _summary(a, b, data, definitions_changed, code, metrics, verdict) -> list[str]:
    lines = []
    if a["experiment"] != b["experiment"]:
        lines.append(f"The runs belong to different experiments: {a['experiment']} and {b['experiment']}")
    if verdict["changed"]:
        lines.append(f"Verdict changed from {verdict['before']['decision'] or a['status']} to "
                     f"{verdict['after']['decision'] or b['status']}"
                     + (f" ({verdict['after']['ship_variant']})" if verdict["after"]["ship_variant"] else ""))
    else:
        lines.append(f"Verdict unchanged: {verdict['after']['decision'] or b['status']}")
    for label, entries in (("new", data["files_added"]), ("removed", data["files_removed"]),
                           ("replaced", data["files_replaced"])):
        if entries:
            by_kind: dict[str, int] = {}
            for e in entries:
                by_kind[e["kind"] or "rows"] = by_kind.get(e["kind"] or "rows", 0) + (e["rows"] or 0)
            rows = ", ".join(f"{n:,} {kind}" for kind, n in sorted(by_kind.items()))
            lines.append(f"{plural(len(entries), 'file')} {label} ({rows})" if label != "new"
                         else f"{plural(len(entries), 'new file')} ({rows})")
    if data["as_of"]["changed"]:
        lines.append(f"Analysed as of {data['as_of']['after']} instead of {data['as_of']['before']}")
    for key, word in (("exposure_rows", "Exposure"), ("event_rows", "Event")):
        d = data[key]
        if d["changed"] and d["before"] is not None and d["after"] is not None:
            lines.append(f"{word} rows {d['before']:,} → {d['after']:,} ({d['delta']:+,})")
    if not data["changed"] and not data["as_of"]["changed"]:
        lines.append("Same data (no file added or removed, same row counts)")
    if definitions_changed:
        shown = definitions_changed[:10]
        for c in shown:
            lines.append(f"Definition changed: {c['path']} {value_text(c['before'])} → {value_text(c['after'])}")
        if len(definitions_changed) > len(shown):
            lines.append(f"… and {len(definitions_changed) - len(shown)} more definition change(s)")
    else:
        lines.append("Same definitions")
    if code["changed"]:
        lines.append(f"Code changed: {code_text(code['version']['before'], code['git_commit']['before'])} → "
                     f"{code_text(code['version']['after'], code['git_commit']['after'])}")
    for m in metrics:
        x, y = m["before"], m["after"]
        name = f"{m['metric']} ({m['variant']})"
        if x is None:
            lines.append(f"{name} is new: {pct(y['rel_effect'])}")
        elif y is None:
            lines.append(f"{name} is no longer analysed")
        elif m["significance_changed"]:
            state = "became significant" if y["significant"] else "is no longer significant"
            lines.append(f"{name} {state}: {pct(x['rel_effect'])} → {pct(y['rel_effect'])} "
                         f"(adjusted p {p_text(x['p_value_adjusted'])} → {p_text(y['p_value_adjusted'])})")
        elif m["role"] == "primary" and m["changed"]:
            lines.append(f"{name} {pct(x['rel_effect'])} → {pct(y['rel_effect'])} "
                         f"(95% CI {ci_text(y['rel_ci'])})")
    if not any(m["changed"] for m in metrics) and metrics:
        lines.append("Every metric's numbers are identical")
    return lines


def diff(ws, run_a: str, run_b: str) -> dict[str, Any]:
    """What changed between two runs (ids or unique prefixes): data, definitions, code, model lineage,
    metric estimates and the verdict, plus a plain-sentence summary (`abproxy diff`)."""
    con = connect(ws)
    try:
        return run_diff(con, run_a, run_b)
    finally:
        con.close()


def run_diff(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str) -> dict[str, Any]:
    """`diff` on an open snapshot connection: the report's "what changed" and the export use it too."""
    ida, idb = resolve_run(con, run_a), resolve_run(con, run_b)
    found = ledger.run_rows(con, [ida, idb])
    results = ledger.overall_results(con, [ida, idb])
    lineage = _lineage_diff(*(ledger.run_lineage(con, i) for i in (ida, idb)))
    return _compose(found[ida], found[idb], results.get(ida, []), results.get(idb, []), _files_by_path(con), lineage)


def _compose(a: dict[str, Any], b: dict[str, Any], ra_results: list[dict[str, Any]], rb_results: list[dict[str, Any]],
             files: dict[str, dict[str, Any]], lineage: list[dict[str, Any]]) -> dict[str, Any]:
    data = _data_diff(a, b, files)
    changed = _changes(loads(a["definitions"], {}), loads(b["definitions"], {}))
    definitions = {"hash": _before_after(a["definition_hash"], b["definition_hash"]),
                   "changed": changed}
    code = {"version": _before_after(a["code_version"], b["code_version"]),
            "git_commit": _before_after(a["git_commit"], b["git_commit"])}
    code["changed"] = code["version"]["changed"] or code["git_commit"]["changed"]
    metrics = _metrics_diff(ra_results, rb_results)
    ra, rb = loads(a["reasons"], []), loads(b["reasons"], [])
    verdict = {
        "before": {"decision": a["decision"], "ship_variant": a["ship_variant"], "reasons": ra,
                   "status": a["status"], "error": a["error"]},
        "after": {"decision": b["decision"], "ship_variant": b["ship_variant"], "reasons": rb,
                  "status": b["status"], "error": b["error"]},
        "changed": (a["decision"], a["ship_variant"], a["status"]) != (b["decision"], b["ship_variant"], b["status"]),
        "reasons_added": [r for r in rb if r not in ra],
        "reasons_removed": [r for r in ra if r not in rb],
    }
    runs = {side: {"run_id": r["run_id"], "experiment": r["experiment"], "started_at": iso(r["started_at"]),
                   "as_of": iso(r["as_of"]), "status": r["status"]} for side, r in (("a", a), ("b", b))}
    summary = _summary(a, b, data, changed, code, metrics, verdict)
    summary[1:1] = [m["text"] for m in lineage if m["changed"]]
    return {"run_a": runs["a"], "run_b": runs["b"], "data": data, "definitions": definitions, "code": code,
            "lineage": lineage, "metrics": metrics, "verdict": verdict, "summary": summary}


def _lineage_diff(la: dict[str, dict[str, Any]], lb: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, the model version each run served; an alias that moved reads
    'challenger moved from v7 to v8'."""
    out = []
    for variant in dict.fromkeys([*la, *lb]):
        x, y = la.get(variant), lb.get(variant)
        same = (x or {}).get("model"), (x or {}).get("version")
        changed = bool(x and y and (same != (y.get("model"), y.get("version"))))
        moved = changed and bool(y.get("alias")) and x.get("ref") == y.get("ref")
        if moved:
            text = f"{y['alias']} moved from v{x['version']} to v{y['version']} ({variant}, {y['ref']})"
        elif changed:
            text = (f"{variant} model changed: {x['model']} {x['version']} → {y['model']} {y['version']}").strip()
        else:
            text = ""
        out.append({"variant": variant, "before": x, "after": y, "changed": changed, "alias_moved": moved,
                    "text": text})
    return out


