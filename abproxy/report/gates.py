"""The gates every report page passes through: locate the workspace's snapshot, show the friendly
start page when there is none (or it cannot be read), and the sidebar with freshness."""
from __future__ import annotations

from abproxy.report import data
from abproxy.report.components import freshness_caption, md


def current_snapshot():
    """(Source, Snapshot | None) for this session's workspace."""
    source = data.locate()
    return source, data.Snapshot.at(source.snapshot)


def require_snapshot():
    """The Snapshot to read, or render the friendly start page and stop the script."""
    import streamlit as st

    source, snap = current_snapshot()
    if source.config_error:
        st.warning("The workspace configuration (abproxy.yaml) has a problem, so the report falls back to "
                   f"`{DEFAULT_SNAPSHOT_TEXT}`. Fix it and run `abproxy validate`:", icon=":material/warning:")
        st.code(source.config_error, language=None)
    if snap is None:
        if source.snapshot.is_symlink():   # a link to a version that was deleted
            _broken_snapshot(source)
        else:
            empty_page(source)
        st.stop()
    if source.snapshot.is_dir():
        _broken_snapshot(source)
        st.stop()
    try:
        snap.load("freshness")
    except Exception as exc:  # a damaged or foreign file: say so instead of a traceback
        st.title("The report snapshot cannot be read")
        st.error(f"{md(source.snapshot)}: {md(type(exc).__name__)}: {md(exc)}", icon=":material/error:")
        st.markdown("Publish a fresh one with `abproxy run` (the job rewrites the snapshot atomically); "
                    "the warehouse itself is not affected.")
        st.stop()
    return snap


DEFAULT_SNAPSHOT_TEXT = "data/report.duckdb"


def _broken_snapshot(source) -> None:
    """A snapshot link to a deleted version, or a directory in the snapshot's place."""
    import streamlit as st

    from abproxy.warehouse import WarehouseError, open_snapshot

    try:
        open_snapshot(source.snapshot).close()
        problem = "cannot be read"
    except (WarehouseError, OSError) as exc:
        problem = str(exc)
    st.title("The report snapshot cannot be read")
    st.error(md(problem), icon=":material/error:")
    st.markdown("Run `abproxy run` to publish a fresh snapshot (the job rewrites it atomically); the "
                "warehouse itself is not affected.")


def empty_page(source) -> None:
    import streamlit as st

    st.title("Welcome to abproxy")
    st.markdown(f"There is no report yet for the workspace **{md(source.root)}**: no analysis has been "
                f"published (looked for {md(source.snapshot)}).")
    st.subheader("How to start")
    st.markdown(
        "1. Create a workspace: `abproxy init my-workspace` (or try the demo: `make run`, which builds a "
        "simulated workspace and serves this report).\n"
        "2. Describe your metrics and experiments in `abproxy.yaml`.\n"
        "3. Drop files into `inbox/exposures/` (unit\\_id, experiment, variant, exposed\\_at) and "
        "`inbox/events/` (unit\\_id, event, occurred\\_at, value) — CSV, Parquet or JSON Lines.\n"
        "4. Run `abproxy run` once (or `abproxy schedule` to keep it fresh): it loads the inbox, analyses "
        "every running experiment and publishes the snapshot this report reads.\n"
        "5. Reload this page.")
    st.caption("Start the report on another workspace with `streamlit run app.py -- --workspace DIR` "
               "or by setting ABPROXY_WORKSPACE.")


def sidebar() -> None:
    """Workspace and freshness, under the page list."""
    import streamlit as st

    source, snap = current_snapshot()
    with st.sidebar:
        st.caption(f"Workspace: {md(source.root)}")
        if snap is None:
            st.caption("No report snapshot yet.")
            return
        try:
            st.caption(freshness_caption(snap.load("freshness")))
        except Exception:
            st.caption("The report snapshot cannot be read.")
