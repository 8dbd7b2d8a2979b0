"""Models page: a leaderboard of every model version with its own outcome and latest measured effects,
best outcome first (then the largest primary lift), rolled-back ones included."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from abproxy import format as fmt
from abproxy.lineage import outcome_rank
from abproxy.report import components as c
from abproxy.report import gates

OUTCOME_STYLE = {"shipped": "green", "ship recommended": "green", "roll back recommended": "red",
                 "revert recommended": "red", "rolled back": "red", "invalid data": "orange",
                 "analysis failed": "red", "collecting data": "blue"}


def effects_text(row: dict[str, Any], role: str) -> str:
    """Primary: the lift with its decision interval; guardrails: the change only, one per line."""
    parts = []
    for e in row["effects"]:
        if e["role"] != role:
            continue
        star = " ✱" if e.get("significant") else ""
        value = (fmt.effect(e["rel_effect"], e["rel_ci_lo"], e["rel_ci_hi"]) if role == "primary"
                 else fmt.pct(e["rel_effect"]))
        parts.append(f"{c.md(e['label'])} {value}{star}")
    return "; ".join(parts) or "—"


def offline_text(row: dict[str, Any]) -> str:
    metrics = row.get("offline_metrics") or {}
    parts = [f"{c.md(k)} {v:.4g}" for k, v in sorted(metrics.items()) if c.finite(v)]
    return ", ".join(parts) or "—"


def _primary_lift(row: dict[str, Any]) -> float:
    vals = [e["rel_effect"] for e in row["effects"] if e["role"] == "primary" and c.finite(e["rel_effect"])]
    return vals[0] if vals else float("-inf")


def experiment_cell(row: dict[str, Any]) -> str:
    """'Recommendation model v2 · recsys-v2 · v2 · running'; the key once when the name is the key."""
    name, key = row.get("experiment_name") or row["experiment"], row["experiment"]
    parts = ([name] if name == key else [name, key]) + [row["variant"], row.get("experiment_status") or "unknown"]
    return " · ".join(c.md(p) for p in parts)


def outcome_badge(outcome: str) -> str:
    return f":{OUTCOME_STYLE.get(outcome, 'gray')}-badge[{c.md(outcome)}]"


def render() -> None:
    snap = gates.require_snapshot()
    st.title("Model leaderboard")
    rows = snap.load("models")
    if not rows:
        st.info("No model versions in the snapshot: describe each variant's model and version in abproxy.yaml.")
        return
    include_controls = st.toggle("Show control arms (baselines)", value=False)
    models = sorted({r.get("model") or "(unnamed)" for r in rows})
    pick = st.multiselect("Model", models, placeholder="All models")
    shown = [r for r in rows if (include_controls or not r.get("is_control"))
             and (not pick or (r.get("model") or "(unnamed)") in pick)]
    shown.sort(key=lambda r: (outcome_rank(r["outcome"]), -_primary_lift(r), str(r.get("model") or "")))
    st.caption("Each row is one model version in one experiment, measured against that experiment's control in "
               "its latest analysis, best outcome first, then the largest primary lift. ✱ marks significant "
               "effects. Rolled-back and stopped experiments keep their last measurement.")
    table = []
    for r in shown:
        run = r["run"] or {}
        table.append([f"**{c.md(r.get('model') or '(unnamed)')} {c.md(r.get('version') or '')}**",
                      experiment_cell(r),
                      outcome_badge(r["outcome"]),
                      effects_text(r, "primary") if not r.get("is_control") else "baseline",
                      effects_text(r, "guardrail") if not r.get("is_control") else "baseline",
                      offline_text(r), fmt.day(run.get("as_of")) if run else "never"])
    st.markdown(c.md_table(["Model", "Experiment · arm · status", "Outcome", "Primary lift (95% CI)",
                            "Guardrails", "Offline metrics", "Data as of"], table))
    render_offline_online(snap.load("offline_online"))
    frame = pd.DataFrame([{"model": r.get("model"), "version": r.get("version"), "experiment": r["experiment"],
                           "variant": r["variant"], "control": bool(r.get("is_control")), "outcome": r["outcome"],
                           "verdict": r["verdict"],
                           "primary_lift": _primary_lift(r) if not r.get("is_control") else None,
                           "params": r.get("params"), "training_data": r.get("training_data"),
                           "run_id": (r["run"] or {}).get("run_id")} for r in shown])
    if len(frame):
        frame["primary_lift"] = frame["primary_lift"].replace(float("-inf"), None)
    st.download_button("Download leaderboard (CSV)", frame.to_csv(index=False).encode(), file_name="abproxy-models.csv",
                       mime="text/csv", on_click="ignore", icon=":material/download:")



def render_offline_online(entries: list[dict[str, Any]]) -> None:
    """Across past experiments: does an offline metric's change rank versions like their online lift?"""
    st.subheader("Offline vs online")
    st.caption("For each treatment with registry lineage: its offline metric minus the control's, against the "
               "online lift of the primary metric (latest run; rolled-back and failed models included). "
               "Spearman rank correlation with its 95% interval.")
    if not entries:
        st.info("No offline metrics yet: variants that name MLflow model versions (mlflow: models:/name/N) bring "
                "their training runs' metrics.")
        return
    rows = [[c.md(e["offline_metric"]), c.md(e["online_metric"]), str(e["n"]), c.md(e["message"])] for e in entries]
    st.markdown(c.md_table(["Offline metric", "Online metric", "Experiments", "Rank correlation"], rows))


if __name__ == "__main__":
    render()
