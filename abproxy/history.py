"""Read-only views of the analysis ledger: an experiment's run history, what changed between two
runs, and the model leaderboard.

Everything here reads the published report snapshot (never the warehouse, which the scheduler may
hold open for writing), so these commands work while a job runs.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Iterable

import duckdb

from . import format as fmt
from .errors import HistoryError
from . import ledger
from .ledger import loads
from .lineage import arm_status_of_run
from .offline import offline_vs_online, registry_fields
from .warehouse import open_snapshot

MISSING = "(absent)"


# --------------------------------------------------------------------------- snapshot access

def _connect(ws) -> duckdb.DuckDBPyConnection:
    return open_snapshot(ws.snapshot)


_tables = ledger.tables
_rows = ledger.rows


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else str(value)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _known_experiments(con: duckdb.DuckDBPyConnection, ws=None) -> list[str]:
    keys = set(ledger.run_experiments(con))
    if "experiments" in _tables(con):
        keys |= {r[0] for r in con.execute("SELECT experiment FROM experiments").fetchall()}
    if ws is not None and getattr(ws, "config", None) is not None:
        keys |= set(ws.config.experiments)
    return sorted(keys)


def _effect(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "metric": r["metric"], "role": r["role"], "variant": r["variant"], "control": r["control"],
        "control_mean": _num(r["control_mean"]), "variant_mean": _num(r["variant_mean"]),
        "abs_effect": _num(r["abs_effect"]), "abs_ci": [_num(r["abs_ci_lo"]), _num(r["abs_ci_hi"])],
        "rel_effect": _num(r["rel_effect"]), "rel_ci": [_num(r["rel_ci_lo"]), _num(r["rel_ci_hi"])],
        "p_value": _num(r["p_value"]), "p_value_adjusted": _num(r["p_value_adjusted"]),
        "significant": bool(r["significant"]) if r["significant"] is not None else None,
        "control_units": r["control_units"], "variant_units": r["variant_units"],
    }


# --------------------------------------------------------------------------- history

def history(ws, key: str) -> list[dict[str, Any]]:
    """Every run of experiment `key`, oldest first, with its verdict and primary-metric effects."""
    con = _connect(ws)
    try:
        known = _known_experiments(con, ws)
        if key not in known:
            raise HistoryError(f"unknown experiment '{key}' (known: {', '.join(known) or 'none yet'})")
        runs = ledger.runs_of(con, key)
        results = ledger.overall_results(con, [r["run_id"] for r in runs])
    finally:
        con.close()
    out = []
    for r in runs:
        primary = [_effect(x) for x in results.get(r["run_id"], []) if x["role"] == "primary"]
        out.append({
            "run_id": r["run_id"], "experiment": r["experiment"], "job_id": r["job_id"],
            "started_at": _iso(r["started_at"]), "finished_at": _iso(r["finished_at"]), "as_of": _iso(r["as_of"]),
            "status": r["status"], "error": r["error"], "decision": r["decision"], "ship_variant": r["ship_variant"],
            "reasons": loads(r["reasons"], []),
            "primary": [{k: e[k] for k in ("metric", "variant", "rel_effect", "rel_ci", "abs_effect",
                                            "p_value_adjusted", "significant")} for e in primary],
            "definition_hash": r["definition_hash"], "code_version": r["code_version"],
            "git_commit": r["git_commit"], "method": r["method"], "units": loads(r["units"], {}),
            "days_running": _num(r["days_running"]),
        })
    return out


# --------------------------------------------------------------------------- diff

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


def _value_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    return json.dumps(value, sort_keys=True, default=str)


def _files_by_path(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rows = _rows(con, "SELECT path, kind, sha256, rows_loaded, loaded_at FROM files WHERE status = 'loaded' "
                      "ORDER BY file_id")
    return {r["path"]: r for r in rows}


def _file_entries(paths: Iterable[str], files: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        f = files.get(p, {})
        out.append({"path": p, "kind": f.get("kind"), "rows": f.get("rows_loaded"),
                    "loaded_at": _iso(f.get("loaded_at"))})
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
        "as_of": _before_after(_iso(a["as_of"]), _iso(b["as_of"])),
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
    ea = {(r["metric"], r["variant"]): _effect(r) for r in ra}
    eb = {(r["metric"], r["variant"]): _effect(r) for r in rb}
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


def _pct(x: float | None, digits: int = 1) -> str:
    return fmt.pct(x, digits)


def _ci_text(ci: list[float | None] | None) -> str:
    if not ci:
        return "n/a"
    return f"{_pct(ci[0])} to {_pct(ci[1])}"


def _code_text(version: str | None, commit: str | None) -> str:
    return f"{version or 'unknown'}" + (f" ({commit[:10]})" if commit else "")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


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
            lines.append(f"{_plural(len(entries), 'file')} {label} ({rows})" if label != "new"
                         else f"{_plural(len(entries), 'new file')} ({rows})")
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
            lines.append(f"Definition changed: {c['path']} {_value_text(c['before'])} → {_value_text(c['after'])}")
        if len(definitions_changed) > len(shown):
            lines.append(f"… and {len(definitions_changed) - len(shown)} more definition change(s)")
    else:
        lines.append("Same definitions")
    if code["changed"]:
        lines.append(f"Code changed: {_code_text(code['version']['before'], code['git_commit']['before'])} → "
                     f"{_code_text(code['version']['after'], code['git_commit']['after'])}")
    for m in metrics:
        x, y = m["before"], m["after"]
        name = f"{m['metric']} ({m['variant']})"
        if x is None:
            lines.append(f"{name} is new: {_pct(y['rel_effect'])}")
        elif y is None:
            lines.append(f"{name} is no longer analysed")
        elif m["significance_changed"]:
            state = "became significant" if y["significant"] else "is no longer significant"
            lines.append(f"{name} {state}: {_pct(x['rel_effect'])} → {_pct(y['rel_effect'])} "
                         f"(adjusted p {_p(x['p_value_adjusted'])} → {_p(y['p_value_adjusted'])})")
        elif m["role"] == "primary" and m["changed"]:
            lines.append(f"{name} {_pct(x['rel_effect'])} → {_pct(y['rel_effect'])} "
                         f"(95% CI {_ci_text(y['rel_ci'])})")
    if not any(m["changed"] for m in metrics) and metrics:
        lines.append("Every metric's numbers are identical")
    return lines


def _p(p: float | None) -> str:
    return fmt.pvalue(p)


def diff(ws, run_a: str, run_b: str) -> dict[str, Any]:
    """What changed between two runs (ids or unique prefixes): data, definitions, code, metric
    estimates and the verdict, plus a plain-sentence summary."""
    con = _connect(ws)
    try:
        ida, idb = resolve_run(con, run_a), resolve_run(con, run_b)
        found = ledger.run_rows(con, [ida, idb])
        a, b = found[ida], found[idb]
        results = ledger.overall_results(con, [ida, idb])
        files = _files_by_path(con)
        lineage = _lineage_diff(*(ledger.run_lineage(con, i) for i in (ida, idb)))
    finally:
        con.close()
    data = _data_diff(a, b, files)
    changed = _changes(loads(a["definitions"], {}), loads(b["definitions"], {}))
    definitions = {"hash": _before_after(a["definition_hash"], b["definition_hash"]),
                   "changed": changed}
    code = {"version": _before_after(a["code_version"], b["code_version"]),
            "git_commit": _before_after(a["git_commit"], b["git_commit"])}
    code["changed"] = code["version"]["changed"] or code["git_commit"]["changed"]
    metrics = _metrics_diff(results.get(ida, []), results.get(idb, []))
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
    runs = {side: {"run_id": r["run_id"], "experiment": r["experiment"], "started_at": _iso(r["started_at"]),
                   "as_of": _iso(r["as_of"]), "status": r["status"]} for side, r in (("a", a), ("b", b))}
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


# --------------------------------------------------------------------------- models

def _version_key(version: str | None) -> tuple:
    """Natural order: 1.10.0 after 1.9.0; numbers before text within a position."""
    parts = re.split(r"(\d+)", version or "")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _lineage(con: duckdb.DuckDBPyConnection, tables: set[str]) -> list[dict[str, Any]]:
    """Variant lineage rows: the snapshot's `variants` table, plus experiments that only survive in
    the ledger (removed from abproxy.yaml), taken from their latest run's stored definitions."""
    rows: list[dict[str, Any]] = []
    experiments: dict[str, dict[str, Any]] = {}
    if "experiments" in tables:
        experiments = {r["experiment"]: r for r in _rows(con, "SELECT experiment, name, status, control "
                                                              "FROM experiments")}
    if "variants" in tables:
        for r in _rows(con, "SELECT experiment, variant, is_control, model, version, params, training_data, link "
                            "FROM variants"):
            e = experiments.get(r["experiment"], {})
            rows.append({**r, "params": loads(r["params"], {}), "experiment_name": e.get("name") or r["experiment"],
                         "experiment_status": e.get("status"), "source": "config"})
    seen = {r["experiment"] for r in rows}
    for run in ledger.latest_runs(con, "experiment, definitions").values():
        if run["experiment"] in seen:
            continue
        exp = (loads(run["definitions"], {}) or {}).get("experiment") or {}
        for name, v in (exp.get("variants") or {}).items():
            rows.append({"experiment": run["experiment"], "variant": name, "is_control": name == exp.get("control"),
                         "model": v.get("model", ""), "version": v.get("version", ""), "params": v.get("params") or {},
                         "training_data": v.get("training_data", ""), "link": v.get("link", ""),
                         "experiment_name": exp.get("name") or run["experiment"],
                         "experiment_status": exp.get("status"), "source": "ledger"})
    return rows


def models(ws) -> list[dict[str, Any]]:
    """Every (model, version) of every experiment — running, shipped, rolled back or failed — with
    the latest run's verdict and, for treatments, its overall effect on each metric against the control."""
    con = _connect(ws)
    try:
        tables = _tables(con)
        lineage = _lineage(con, tables)
        latest = ledger.latest_runs(con)
        latest_ok = ledger.latest_runs(con, "run_id, experiment, started_at", "status = 'ok'")
        results = ledger.overall_results(con, [r["run_id"] for r in latest_ok.values()])
        recorded = ledger.latest_lineage(con)
    finally:
        con.close()
    out = []
    for v in lineage:
        key = v["experiment"]
        lin = recorded.get((key, v["variant"]))
        if lin and lin.get("model"):      # resolved from a registry: the version the run actually saw
            v = {**v, "model": lin["model"], "version": lin.get("version") or v["version"],
                 "params": {**(lin.get("params") or {}), **(v["params"] or {})}}
        run, ok = latest.get(key), latest_ok.get(key)
        treatment = not v["is_control"]
        effects = []
        if treatment and ok:
            for r in results.get(ok["run_id"], []):
                if r["variant"] == v["variant"]:
                    e = _effect(r)
                    effects.append({k: e[k] for k in ("metric", "role", "rel_effect", "rel_ci", "abs_effect",
                                                      "p_value_adjusted", "significant", "control")})
        decision = run["decision"] if run else None
        ship = run["ship_variant"] if run else None
        out.append({
            "model": v["model"], "version": v["version"], "experiment": key,
            "experiment_name": v["experiment_name"], "experiment_status": v["experiment_status"],
            "variant": v["variant"], "role": "treatment" if treatment else "baseline",
            "is_control": bool(v["is_control"]), "params": v["params"], "training_data": v["training_data"],
            "link": v["link"], "source": v["source"],
            "run_id": run["run_id"] if run else None, "run_at": _iso(run["started_at"]) if run else None,
            "as_of": _iso(run["as_of"]) if run else None, "run_status": run["status"] if run else None,
            "error": run["error"] if run else None,
            "decision": decision, "ship_variant": ship,
            "status": _arm(v, run, lin),
            "variant_status": _variant_status(decision, ship, v, run),
            "shipped": bool(treatment and decision == "SHIP" and ship == v["variant"]
                            and v["experiment_status"] == "shipped"),
            "effects_run_id": ok["run_id"] if ok and treatment else None,
            "effects": effects,
            **registry_fields(lin),
        })
    out.sort(key=lambda r: (outcome_rank(r["variant_status"]), -_lift_of(r), (r["model"] or "").lower(),
                            _version_key(r["version"]), r["experiment"], r["variant"]))
    return out


def _arm(v: dict[str, Any], run: dict[str, Any] | None, lin: dict[str, Any] | None) -> str:
    """The arm's status as its latest run recorded it (lineage.arm_status, with the verdict's own word
    per arm), else by the same rule from the run row."""
    if run is not None and lin and lin.get("run_id") == run["run_id"] and lin.get("arm_status"):
        return lin["arm_status"]
    return arm_status_of_run(v["variant"], bool(v["is_control"]), run)


def _lift_of(row: dict[str, Any]) -> float:
    """The first primary lift in the metric's good direction (−inf when there is none)."""
    for e in row["effects"]:
        value = e.get("rel_effect")
        if e.get("role") == "primary" and value is not None and math.isfinite(value):
            return value if e.get("higher_is_better", True) else -value
    return -math.inf


def _variant_status(decision: str | None, ship: str | None, v: dict[str, Any], run: dict[str, Any] | None) -> str:
    return arm_outcome(v["variant"], bool(v["is_control"]), v.get("experiment_status"), run)


# outcome → sort rank on the leaderboard (best first)
OUTCOMES = ("shipped", "ship recommended", "collecting data", "no detectable effect", "not chosen",
            "revert recommended", "roll back recommended", "rolled back", "stopped", "invalid data",
            "analysis failed", "not analysed", "baseline")


def arm_outcome(variant: str, is_control: bool, experiment_status: str | None,
                run: dict[str, Any] | None) -> str:
    """One arm's own outcome in its experiment's latest run (the CLI and the models page share it):
    'ship recommended' while the experiment runs, 'shipped' only once its status is shipped; in a
    ROLLBACK only the arms the verdict names are rolled back."""
    if is_control:
        return "baseline"
    if experiment_status == "rolled_back":
        return "rolled back"
    if run is None:
        return "not analysed"
    if run.get("status") != "ok" or not run.get("decision"):
        return "analysis failed"
    decision, ship = run["decision"], run.get("ship_variant")
    shipped = experiment_status == "shipped"
    if decision == "SHIP":
        if ship != variant:
            return "not chosen"
        return "shipped" if shipped else "ship recommended"
    if decision == "ROLLBACK":
        named = _named_in_first_reason(variant, run.get("reasons"))
        if not named:
            return "no detectable effect"
        return "revert recommended" if shipped else "roll back recommended"
    if experiment_status == "stopped":
        return "stopped"
    return {"KEEP_RUNNING": "collecting data", "INVALID": "invalid data",
            "NO_DETECTABLE_EFFECT": "no detectable effect"}.get(decision, decision.lower())


def _named_in_first_reason(variant: str, reasons: Any) -> bool:
    """Does the verdict's first reason ('Roll back a, b: …') name this arm?"""
    first = (loads(reasons, []) or [""])[0]
    head = str(first).split(":", 1)[0]
    names = [n.strip() for n in head.replace("Roll back", "").replace("Revert the shipped model", "").split(",")]
    return variant in names


def outcome_rank(outcome: str) -> int:
    return OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES)


# --------------------------------------------------------------------------- printing

def _table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _short_ts(value: str | None) -> str:
    if not value:
        return "-"
    return value.replace("T", " ")[:16]


def _effect_cell(e: dict[str, Any]) -> str:
    star = "*" if e.get("significant") else ""
    return f"{_pct(e['rel_effect'])}{star} [{_ci_text(e['rel_ci'])}]"


def print_history(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("No runs recorded yet for this experiment; run 'abproxy run' first.")
        return
    print(f"{rows[0]['experiment']}: {_plural(len(rows), 'run')} (oldest first; * = significant after adjustment)")
    table = []
    for r in rows:
        verdict = r["decision"] or r["status"].upper()
        if r["ship_variant"]:
            verdict += f" → {r['ship_variant']}"
        primary = r["primary"] or [None]
        for i, e in enumerate(primary):
            effect = (f"{e['metric']}[{e['variant']}] {_effect_cell(e)} p={_p(e['p_value_adjusted'])}"
                      if e else (r["error"] or "-"))
            if i == 0:
                units = ", ".join(f"{k} {n:,}" for k, n in (r["units"] or {}).items()) or "-"
                table.append([r["run_id"], _short_ts(r["started_at"]), _short_ts(r["as_of"]), verdict, effect, units,
                              r["code_version"] or "-", (r["definition_hash"] or "-")[:8]])
            else:
                table.append(["", "", "", "", effect, "", "", ""])
    for line in _table(["run", "started", "as of", "verdict", "primary effect (95% CI)", "units", "code",
                        "definitions"], table):
        print(line)


def print_diff(result: dict[str, Any]) -> None:
    a, b = result["run_a"], result["run_b"]
    print(f"Run {a['run_id']} ({a['experiment']}, as of {_short_ts(a['as_of'])}) → "
          f"run {b['run_id']} ({b['experiment']}, as of {_short_ts(b['as_of'])})")
    print()
    print("Summary")
    for line in result["summary"]:
        print(f"  - {line}")
    data = result["data"]
    print()
    print("Data")
    for key in ("exposure_rows", "event_rows", "max_exposed_at", "max_occurred_at"):
        d = data[key]
        print(f"  {key:<16} {_value_text(d['before'])} → {_value_text(d['after'])}")
    for label, key in (("added", "files_added"), ("removed", "files_removed"), ("replaced", "files_replaced")):
        for f in data[key]:
            print(f"  file {label}: {f['path']} ({f['kind'] or '?'}, {f['rows'] if f['rows'] is not None else '?'} rows)")
    print()
    print(f"Definitions (hash {result['definitions']['hash']['before']} → {result['definitions']['hash']['after']})")
    if not result["definitions"]["changed"]:
        print("  unchanged")
    for c in result["definitions"]["changed"]:
        print(f"  {c['path']}: {_value_text(c['before'])} → {_value_text(c['after'])}")
    moves = [m for m in result.get("lineage", []) if m["after"] or m["before"]]
    if moves:
        print()
        print("Models")
        for m in moves:
            x, y = m["before"] or {}, m["after"] or {}
            print(f"  {m['variant']:<12} {x.get('model') or '-'} {x.get('version') or '-'} → "
                  f"{y.get('model') or '-'} {y.get('version') or '-'}" + (f"  ({m['text']})" if m["changed"] else ""))
    code = result["code"]
    print()
    print(f"Code  {_code_text(code['version']['before'], code['git_commit']['before'])} → "
          f"{_code_text(code['version']['after'], code['git_commit']['after'])}")
    print()
    print("Metrics (overall, relative effect [95% CI], * = significant)")
    table = []
    for m in result["metrics"]:
        x, y, d = m["before"], m["after"], m["delta"]
        table.append([m["metric"], m["role"], m["variant"], _effect_cell(x) if x else "-", _effect_cell(y) if y else "-",
                      _pct(d["rel_effect"], 2) if d else "-",
                      f"{_p(x['p_value_adjusted']) if x else '-'} → {_p(y['p_value_adjusted']) if y else '-'}"])
    for line in _table(["metric", "role", "variant", "before", "after", "Δ rel", "p adj"], table):
        print(f"  {line}")
    v = result["verdict"]
    print()
    print(f"Verdict  {v['before']['decision'] or v['before']['status']} → {v['after']['decision'] or v['after']['status']}")
    for r in v["reasons_removed"]:
        print(f"  - {r}")
    for r in v["reasons_added"]:
        print(f"  + {r}")


def print_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("No model variants found; add experiments to abproxy.yaml and run 'abproxy run'.")
        return
    print("Model leaderboard (latest run of each experiment; * = significant after adjustment)")
    table = []
    for r in rows:
        primary = [e for e in r["effects"] if e["role"] == "primary"]
        guards = [e for e in r["effects"] if e["role"] == "guardrail"]
        if r["role"] == "baseline":
            primary_text, guard_text = "(baseline)", ""
        else:
            primary_text = "; ".join(f"{e['metric']} {_effect_cell(e)}" for e in primary) or "-"
            guard_text = "; ".join(f"{e['metric']} {_pct(e['rel_effect'])}{'*' if e['significant'] else ''}"
                                   for e in guards) or "-"
        table.append([r["model"] or "-", r["version"] or "-", r["experiment"], r["experiment_status"] or "-",
                      r["variant"], r["decision"] or r["run_status"] or "-", r["variant_status"],
                      primary_text, guard_text])
        table[-1].append(_offline_cell(r["offline_metrics"]))
    for line in _table(["model", "version", "experiment", "status", "variant", "verdict", "outcome",
                        "primary effect (95% CI)", "guardrails", "offline metrics"], table):
        print(line)
    print()
    print("Offline vs online (does an offline metric rank versions like their online lift?)")
    found = offline_vs_online(rows)
    if not found:
        print("  No treatment and control with offline metrics yet (variants that name MLflow versions get them)")
    for entry in found:
        print(f"  - {entry['offline_metric']} vs {entry['online_metric']}: {entry['message']}")


def _offline_cell(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if _num(v) is not None) or "-"


def models_report(ws) -> dict[str, Any]:
    """`abproxy models --json`: the leaderboard rows and the offline-vs-online correlations."""
    rows = models(ws)
    return {"models": rows, "offline_vs_online": offline_vs_online(rows)}


# --------------------------------------------------------------------------- latest verdict (gate)

def latest_verdict(ws, key: str) -> tuple[dict[str, Any] | None, list[str], dict[str, str],
                                          list[dict[str, Any]]] | None:
    """(latest run row or None, the variant names, arm status by variant, the run's health rows) of
    experiment `key`; None when the key is unknown."""
    con = _connect(ws)
    try:
        if key not in _known_experiments(con, ws):
            return None
        tables = _tables(con)
        run = ledger.latest_run(con, key)
        variants = _variant_names(con, ws, key, run, tables)
        arms, health = {}, []
        if run is not None:
            arms = {v: lin["arm_status"] for v, lin in ledger.run_lineage(con, run["run_id"]).items()}
            health = ledger.run_health(con, run["run_id"])
    finally:
        con.close()
    return run, variants, arms, health


def _variant_names(con, ws, key: str, run: dict[str, Any] | None, tables: set[str]) -> list[str]:
    if run is not None:
        exp = (loads(run.get("definitions"), {}) or {}).get("experiment") or {}
        if exp.get("variants"):
            return list(exp["variants"])
    config = getattr(ws, "config", None)
    if config is not None and key in config.experiments:
        return list(config.experiments[key].variants)
    if "variants" in tables:
        return [r[0] for r in con.execute("SELECT variant FROM variants WHERE experiment = ?", [key]).fetchall()]
    return []
