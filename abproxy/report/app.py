"""The Streamlit entry of the report, shipped in the package: `streamlit run <this file> -- --workspace DIR`
(`abproxy serve` does that; the repository's top-level `app.py` is a thin entry calling `main`).

It reads only the read-only snapshot the job publishes; pages live beside it in abproxy/report/.
"""
from __future__ import annotations


def main() -> None:
    import streamlit as st

    from abproxy.report import gates, login, navigation
    from abproxy.report.data import workspace_root

    # a product manager must not read Streamlit's "Deploy" button as "deploy the model": no developer toolbar
    st.set_option("client.toolbarMode", "minimal")
    st.set_page_config(page_title="abproxy report", page_icon="🧪", layout="wide")
    login.gate(workspace_root())   # with 'auth:' in abproxy.yaml: only allowed, logged-in users go on
    pages = navigation()
    gates.sidebar()
    pages.run()


if __name__ == "__main__":
    main()
