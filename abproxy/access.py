"""Who may read the report: the OIDC login set up for Streamlit (`st.login`) and the allow-list.

`abproxy serve` writes Streamlit's `[auth]` secrets (provider metadata URL, client id, the client
secret read from an environment variable, the cookie secret) and the allow-list into a private
secrets file for the Streamlit child only; the report (`report.components.login_gate`) asks
anonymous visitors to log in and refuses anyone whose verified email is not allowed.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

from .config import Auth
from .errors import AuthSetupError

ACCESS_SECTION = "abproxy_access"


def allowed(email: str | None, emails: list[str], domains: list[str], verified: bool | None = None) -> bool:
    """True if this email may read the report: listed, or at an allowed domain (exactly, or a
    subdomain of it); an email the provider says is unverified never is."""
    if not email or verified is False or email.count("@") != 1:
        return False
    email = email.strip().lower()
    domain = email.rsplit("@", 1)[1]
    return email in emails or any(domain == d or domain.endswith("." + d) for d in domains)


def redirect_uri(auth: Auth, address: str, port: int) -> str:
    if auth.redirect_uri:
        return auth.redirect_uri
    host = "localhost" if address in ("127.0.0.1", "0.0.0.0", "::", "", "localhost") else address
    return f"http://{host}:{port}/oauth2callback"


def _toml(value) -> str:
    return json.dumps(value)   # a JSON string or list of strings is valid TOML


def secrets_toml(auth: Auth, address: str, port: int, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    client_secret = env.get(auth.client_secret_env, "")
    if not client_secret:
        raise AuthSetupError(f"auth: the client secret is read from the environment variable "
                             f"{auth.client_secret_env}, which is not set; export it (the secret your OIDC "
                             "provider issued for this client) and start again")
    cookie = env.get(auth.cookie_secret_env) or secrets.token_urlsafe(32)
    lines = ["[auth]",
             f"redirect_uri = {_toml(redirect_uri(auth, address, port))}",
             f"cookie_secret = {_toml(cookie)}",
             f"client_id = {_toml(auth.client_id)}",
             f"client_secret = {_toml(client_secret)}",
             f"server_metadata_url = {_toml(auth.server_metadata_url)}",
             "",
             f"[{ACCESS_SECTION}]",
             f"allowed_emails = {_toml(auth.allowed_emails)}",
             f"allowed_domains = {_toml(auth.allowed_domains)}",
             ""]
    return "\n".join(lines)


def write_secrets(auth: Auth, address: str, port: int) -> Path:
    """The secrets file in a new private folder (0700, file 0600); the caller removes the folder.
    Raises AuthSetupError before anything is written when a secret is missing."""
    text = secrets_toml(auth, address, port)
    folder = Path(tempfile.mkdtemp(prefix="abproxy-auth-"))
    path = folder / "secrets.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
