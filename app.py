"""The abproxy report: `streamlit run app.py -- --workspace DIR` (or ABPROXY_WORKSPACE=DIR).

It reads only the read-only snapshot the job publishes; pages live in abproxy/report/.
"""
import streamlit as st

from abproxy.report import gates, navigation

st.set_page_config(page_title="abproxy report", page_icon="🧪", layout="wide")
pages = navigation()
gates.sidebar()
pages.run()
