"""The report's allow-list, the login settings serve writes, and the gate failing closed."""
from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import tomllib
import yaml

from abproxy.access import AuthSetupError, allowed, secrets_toml, write_secrets
from abproxy.config import ConfigError, parse_config

AUTH = {"server_metadata_url": "https://id.example/.well-known/openid-configuration", "client_id": "abp",
        "allowed_emails": ["PM@Example.com"], "allowed_domains": ["@review.example"]}


def test_allow_list():
    auth = parse_config({"auth": AUTH}).auth
    emails, domains = auth.allowed_emails, auth.allowed_domains
    assert (emails, domains) == (["pm@example.com"], ["review.example"])
    assert allowed("pm@example.com", emails, domains)
    assert allowed("Lead@Review.Example", emails, domains)
    assert allowed("a@eu.review.example", emails, domains)          # a subdomain
    assert not allowed("pm@example.com.evil", emails, domains)
    assert not allowed("x@evilreview.example", emails, domains)
    assert not allowed("pm@example.com", emails, domains, verified=False)
    assert not allowed(None, emails, domains) and not allowed("a@b@review.example", emails, domains)


def test_auth_needs_an_allow_list_and_a_callback_path():
    with pytest.raises(ConfigError, match="allowed_emails"):
        parse_config({"auth": {**AUTH, "allowed_emails": [], "allowed_domains": []}})
    with pytest.raises(ConfigError, match="oauth2callback"):
        parse_config({"auth": {**AUTH, "redirect_uri": "https://x.example/"}})


def test_secrets_come_from_the_environment(tmp_path, monkeypatch):
    auth = parse_config({"auth": AUTH}).auth
    with pytest.raises(AuthSetupError, match="ABPROXY_OIDC_CLIENT_SECRET"):
        secrets_toml(auth, "127.0.0.1", 8600, environ={})
    text = secrets_toml(auth, "127.0.0.1", 8600, environ={"ABPROXY_OIDC_CLIENT_SECRET": 's"e\\cret'})
    data = tomllib.loads(text)
    assert data["auth"]["client_secret"] == 's"e\\cret'
    assert data["auth"]["redirect_uri"] == "http://localhost:8600/oauth2callback"
    assert len(data["auth"]["cookie_secret"]) >= 32
    assert data["abproxy_access"]["allowed_domains"] == ["review.example"]
    monkeypatch.setenv("ABPROXY_OIDC_CLIENT_SECRET", "s")
    path = write_secrets(auth, "127.0.0.1", 8600)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(path.parent)


def test_serve_refuses_to_start_without_the_client_secret(tmp_path, monkeypatch, capsys):
    from abproxy.scheduler import serve
    from abproxy.workspace import Workspace, init_workspace

    root = init_workspace(tmp_path / "ws")
    data = yaml.safe_load((root / "abproxy.yaml").read_text())
    (root / "abproxy.yaml").write_text(yaml.safe_dump({**data, "auth": AUTH}))
    monkeypatch.delenv("ABPROXY_OIDC_CLIENT_SECRET", raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert serve(Workspace.open(root), port=0) == 1
    assert "ABPROXY_OIDC_CLIENT_SECRET" in capsys.readouterr().err
    assert not list(temp.iterdir()), "a refused start leaves no secrets folder behind"


def test_the_gate_fails_closed_without_the_login_settings(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from abproxy.workspace import init_workspace

    root = init_workspace(tmp_path / "ws")
    data = yaml.safe_load((root / "abproxy.yaml").read_text())
    (root / "abproxy.yaml").write_text(yaml.safe_dump({**data, "auth": AUTH}))
    monkeypatch.setenv("ABPROXY_WORKSPACE", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["The report is not available"]
    assert "abproxy serve" in at.error[0].value
    assert not at.sidebar.caption, "nothing of the workspace is shown"
