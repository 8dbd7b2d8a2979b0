"""Data health page: the ingest ledger, rejected rows by reason, failed files, freshness and the
scheduler's job runs."""
from __future__ import annotations

import streamlit as st

from abproxy import format as fmt
from abproxy.report import components as c
from abproxy.report import gates
from abproxy.report import data


def freshness(fresh: dict) -> None:
    st.header("Freshness")
    job = fresh.get("last_job") or {}
    rows = [["Snapshot published", c.when(fresh.get("published_at")), c.ago(fresh.get("published_at"))],
            ["Last file loaded", c.when(fresh.get("last_loaded_at")), c.ago(fresh.get("last_loaded_at"))],
            ["Latest event analysed", c.when(fresh.get("latest_event")), c.ago(fresh.get("latest_event"))],
            ["Latest exposure analysed", c.when(fresh.get("latest_exposure")), c.ago(fresh.get("latest_exposure"))],
            ["Last job", (f"{c.md(job.get('kind'))} {c.md(job.get('status'))}, started {c.when(job.get('started_at'))}"
                          if job else "none"), c.ago(job.get("started_at")) if job else ""]]
    st.markdown(c.md_table(["What", "When (UTC)", "Age"], rows))


def files(frame) -> None:
    st.header("Ingest ledger")
    if frame.empty:
        st.info("No files ingested yet: drop CSV, Parquet or JSON Lines files into inbox/exposures/ and "
                "inbox/events/, then run `abproxy run`.")
        return
    by_status = frame.groupby("status").agg(files=("file_id", "count"), rows=("rows_loaded", "sum"),
                                            rejected=("rows_rejected", "sum"), duplicates=("rows_duplicate", "sum"))
    st.markdown(c.md_table(["Status", "Files", "Rows loaded", "Rows rejected", "Duplicate rows"],
                           [[c.md(s), c.count(r.files), c.count(r.rows), c.count(r.rejected), c.count(r.duplicates)]
                            for s, r in by_status.iterrows()]))
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        st.error("**Failed files** (nothing from them was loaded; fix and drop them again):\n"
                 + "\n".join(f"- **{c.md(r['path'])}** ({c.when(r['loaded_at'])}): {c.md(r.get('message') or 'no message')}"
                             for r in failed.to_dict("records")), icon=":material/error:")
    else:
        st.success("No failed files.", icon=":material/check_circle:")
    other = frame[frame["status"].isin(["changed", "duplicate"])]
    if len(other):
        st.markdown("**Skipped files**\n" + "\n".join(
            f"- {c.md(r['path'])}: {c.md(r['status'])}" + (f" — {c.md(r['message'])}" if r.get("message") else "")
            for r in other.head(20).to_dict("records")))
    st.dataframe(display_files(frame), hide_index=True, width="stretch")


def display_files(frame):
    """The ingest ledger as a reader sees it: sizes in KB/MB, times to the minute, no empty markers."""
    import pandas as pd

    rows = [{"file": r["path"], "kind": r["kind"], "status": r["status"], "size": fmt.size(r.get("size")),
             "rows loaded": fmt.count(r.get("rows_loaded")), "rejected": fmt.count(r.get("rows_rejected")),
             "duplicates": fmt.count(r.get("rows_duplicate")), "loaded at (UTC)": fmt.when(r.get("loaded_at")),
             "message": r.get("message") if isinstance(r.get("message"), str) else "",
             "sha256": (r.get("sha256") or "")[:12] if isinstance(r.get("sha256"), str) else ""}
            for r in frame.to_dict("records")]
    return pd.DataFrame(rows)


def rejected(frame) -> None:
    st.header("Rejected rows")
    if frame.empty:
        st.success("No rejected rows.", icon=":material/check_circle:")
        return
    st.markdown(c.md_table(["Reason", "Rows", "Files"],
                           [[c.md(r["reason"]), c.count(r["rows"]), c.count(r["files"])] for r in frame.to_dict("records")]))
    for r in frame.to_dict("records"):
        with st.expander(f"Examples: {c.md(r['reason'])} ({fmt.count(r['rows'])} rows)"):
            for ex in list(r["examples"]):
                st.text(f"{ex['path']} row {fmt.count(ex['row'])}: {ex['raw']}")


def jobs(frame) -> None:
    st.header("Job runs")
    if frame.empty:
        st.info("No job has run yet: `abproxy run` once, or `abproxy schedule`.")
        return
    rows = []
    for r in frame.head(20).to_dict("records"):
        errors = data.loads(r.get("errors"), []) or []
        rows.append([c.when(r["started_at"]), c.md(r["kind"]), c.job_badge(r["status"]), c.count(r.get("files_loaded")), c.count(r.get("rows_loaded")),
                     c.count(r.get("experiments_analyzed")), c.md("; ".join(map(str, errors))[:300]) or "—"])
    st.markdown(c.md_table(["Started", "Kind", "Status", "Files", "Rows", "Experiments analysed", "Errors"], rows))


def render() -> None:
    snap = gates.require_snapshot()
    st.title("Data health")
    health = snap.load("data_health")
    freshness(health["freshness"])
    files(health["files"])
    rejected(health["rejected"])
    jobs(health["jobs"])


if __name__ == "__main__":
    render()
