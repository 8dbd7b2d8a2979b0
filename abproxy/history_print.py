"""The read layer's records as the CLI prints them: `abproxy history`, `diff` and `models`."""
from __future__ import annotations

from typing import Any

from .offline import offline_vs_online
from .reading import ci_text, code_text, num, p_text, pct, plural, value_text


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
    return f"{pct(e['rel_effect'])}{star} [{ci_text(e['rel_ci'])}]"


def print_history(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("No runs recorded yet for this experiment; run 'abproxy run' first.")
        return
    print(f"{rows[0]['experiment']}: {plural(len(rows), 'run')} (oldest first; * = significant after adjustment)")
    table = []
    for r in rows:
        verdict = r["decision"] or r["status"].upper()
        if r["ship_variant"]:
            verdict += f" → {r['ship_variant']}"
        primary = r["primary"] or [None]
        for i, e in enumerate(primary):
            effect = (f"{e['metric']}[{e['variant']}] {_effect_cell(e)} p={p_text(e['p_value_adjusted'])}"
                      if e else (r["error"] or "-"))
            if i == 0:
                units = ", ".join(f"{k} {n:,}" for k, n in (r["units"] or {}).items()) or "-"
                table.append([r["run_id"], _short_ts(r["started_at"]), _short_ts(r["as_of"]), verdict,
                              r.get("verdict_words") or "-", effect, units, r["code_version"] or "-",
                              (r["definition_hash"] or "-")[:8]])
            else:
                table.append(["", "", "", "", "", effect, "", "", ""])
    for line in _table(["run", "started", "as of", "verdict", "meaning", "primary effect (95% CI)", "units", "code",
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
        print(f"  {key:<16} {value_text(d['before'])} → {value_text(d['after'])}")
    for label, key in (("added", "files_added"), ("removed", "files_removed"), ("replaced", "files_replaced")):
        for f in data[key]:
            print(f"  file {label}: {f['path']} ({f['kind'] or '?'}, {f['rows'] if f['rows'] is not None else '?'} rows)")
    print()
    print(f"Definitions (hash {result['definitions']['hash']['before']} → {result['definitions']['hash']['after']})")
    if not result["definitions"]["changed"]:
        print("  unchanged")
    for c in result["definitions"]["changed"]:
        print(f"  {c['path']}: {value_text(c['before'])} → {value_text(c['after'])}")
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
    print(f"Code  {code_text(code['version']['before'], code['git_commit']['before'])} → "
          f"{code_text(code['version']['after'], code['git_commit']['after'])}")
    print()
    print("Metrics (overall, relative effect [95% CI], * = significant)")
    table = []
    for m in result["metrics"]:
        x, y, d = m["before"], m["after"], m["delta"]
        table.append([m["metric"], m["role"], m["variant"], _effect_cell(x) if x else "-", _effect_cell(y) if y else "-",
                      pct(d["rel_effect"], 2) if d else "-",
                      f"{p_text(x['p_value_adjusted']) if x else '-'} → {p_text(y['p_value_adjusted']) if y else '-'}"])
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
            guard_text = "; ".join(f"{e['metric']} {pct(e['rel_effect'])}{'*' if e['significant'] else ''}"
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
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if num(v) is not None) or "-"
