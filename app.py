"""The abproxy report: `streamlit run app.py -- --workspace DIR` (or ABPROXY_WORKSPACE=DIR).

It reads only the read-only snapshot the job publishes; pages live in abproxy/report/.
"""
import streamlit as st

from abproxy.report import components, navigation

st.set_page_config(page_title="abproxy report", page_icon="🧪", layout="wide")
pages = navigation()
with st.sidebar:
    source, snap = components.current_snapshot()
    st.caption(f"Workspace: {components.md(source.root)}")
    if snap is not None:
        st.caption(components.freshness_caption(snap.load("freshness")))
pages.run()
