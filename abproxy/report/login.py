"""The report's login gate: Streamlit's OIDC login (`st.login`) and the allow-list of `auth:`.

Runs first on every page. Without `auth:` in abproxy.yaml it does nothing. With it, an anonymous
visitor sees only a login page, a logged-in user whose email is not allowed sees only a refusal
(and a log-out button), and the report is shown to allowed users. It fails closed: a workspace that
asks for a login but whose report was not started with its secrets (`abproxy serve` writes them)
shows nothing but how to start it properly.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from abproxy.access import ACCESS_SECTION, allowed


@lru_cache(maxsize=8)
def _configured(root: str, mtime: int) -> bool | None:
    """Whether abproxy.yaml asks for a login (None if it cannot be read)."""
    from abproxy.workspace import Workspace

    try:
        return Workspace.open(root).config.auth is not None
    except Exception:
        return None


def _secrets() -> tuple[bool, Any]:
    """(login secrets present, the allow-list section) from the Streamlit secrets."""
    import streamlit as st

    try:
        return "auth" in st.secrets, st.secrets.get(ACCESS_SECTION)
    except Exception:   # no secrets file at all
        return False, None


def gate(root: Path) -> None:
    """Render the login or refusal page and stop the script, unless the visitor may read."""
    import streamlit as st

    config = root / "abproxy.yaml"
    wanted = _configured(str(root), config.stat().st_mtime_ns if config.exists() else 0)
    has_login, access = _secrets()
    if not has_login and not wanted:
        return
    if not has_login or access is None:
        st.title("The report is not available")
        st.error("abproxy.yaml asks for a login ('auth:'), but this report was started without its login "
                 "settings. Start it with `abproxy serve`, which sets up the login.", icon=":material/lock:")
        st.stop()
    if not st.user.is_logged_in:
        st.title("abproxy report")
        st.write("Log in to read the experiment report.")
        st.button("Log in", type="primary", on_click=st.login, key="abproxy_login")
        st.stop()
    email = st.user.get("email")
    if not allowed(email, list(access.get("allowed_emails", [])), list(access.get("allowed_domains", [])),
                   st.user.get("email_verified")):
        st.title("Access refused")
        st.error(f"{email or 'This account'} may not read this report. Ask the workspace owner to add you "
                 "to auth.allowed_emails or auth.allowed_domains in abproxy.yaml.", icon=":material/block:")
        st.button("Log out", on_click=st.logout, key="abproxy_logout")
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {email}")
        st.button("Log out", on_click=st.logout, key="abproxy_logout")
