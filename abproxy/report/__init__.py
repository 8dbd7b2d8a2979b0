"""The Streamlit report (pages read only the published snapshot) and the HTML review export.

Each page module (overview, experiment, catalog, models, data_health) has a `render()` function
and runs it when Streamlit executes the file as a page script; `navigation()` wires them into
`st.navigation` for `app.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# module → (title, icon, url path)
PAGES: dict[str, tuple[str, str, str]] = {
    "overview": ("Overview", ":material/dashboard:", "overview"),
    "experiment": ("Experiment", ":material/science:", "experiment"),
    "catalog": ("Metrics catalog", ":material/menu_book:", "metrics"),
    "models": ("Models", ":material/model_training:", "models"),
    "data_health": ("Data health", ":material/monitor_heart:", "data-health"),
}


def page(name: str) -> Any:
    """The st.Page of one report page (identical arguments every time, so it also works for
    st.page_link / st.switch_page)."""
    import streamlit as st

    title, icon, url = PAGES[name]
    return st.Page(HERE / f"{name}.py", title=title, icon=icon, url_path=url, default=name == "overview")


def navigation() -> Any:
    import streamlit as st

    return st.navigation([page(name) for name in PAGES])
