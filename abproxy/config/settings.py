"""The service settings: inbox, ingest, schedule, DuckDB, notifications, health, auth, MLflow."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from .base import Strict
from .formats import FORMAT_ROOTS, InboxFormat


CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))   # minute, hour, day, month, day of week


def plain_cron(value: str) -> bool:
    """True for a crontab line made only of `*`, `*/step`, `n` and `n-m` items inside each field's
    bounds: APScheduler accepts every such line, so it need not be imported to check it (start-up)."""
    fields = value.split()
    if len(fields) != 5:
        return False
    for text, (low, high) in zip(fields, CRON_BOUNDS):
        for item in text.split(","):
            m = re.fullmatch(r"\*(?:/([0-9]+))?|([0-9]+)(?:-([0-9]+))?", item)
            if m is None:
                return False
            step, first, last = m.groups()
            if step is not None and not 1 <= int(step) <= high - low:
                return False
            if first is not None and not low <= int(first) <= int(last or first) <= high:
                return False
    return True


class Schedule(Strict):
    ingest_every_minutes: PositiveFloat = 15
    analyze_cron: str = "0 * * * *"
    misfire_grace_seconds: PositiveInt = 300

    @field_validator("analyze_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if plain_cron(value):
            return value
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a 5-field cron expression ({exc}); e.g. '0 * * * *'") from exc
        return value


class DuckDBSettings(Strict):
    memory_limit: str = "3GB"
    threads: PositiveInt | None = None

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)", value.strip()):
            raise ValueError("expected a size like '4GB' or '512MB'")
        return value.strip()


class Webhook(Strict):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)


class Notifications(Strict):
    webhooks: list[Webhook | str] = Field(default_factory=list)
    command: str | None = None
    link: str = "http://localhost:8501"
    retries: int = Field(default=3, ge=0, le=10)
    timeout_seconds: PositiveFloat = 5


class Inbox(Strict):
    """Where files are dropped. `inbox: inbox` is short for `inbox: {path: inbox}`."""

    path: str = "inbox"
    follow_symlinks: bool = False


NULL_MARKERS = ("null", "none", "nan", "n/a", "\\n", "nil", "undefined")


class Auth(Strict):
    """The report's login (Streamlit's OIDC support, `st.login`): who may read the report."""

    server_metadata_url: str
    client_id: str
    client_secret_env: str = "ABPROXY_OIDC_CLIENT_SECRET"
    cookie_secret_env: str = "ABPROXY_COOKIE_SECRET"
    redirect_uri: str | None = None
    allowed_emails: list[str] = Field(default_factory=list)
    allowed_domains: list[str] = Field(default_factory=list)

    @field_validator("server_metadata_url")
    @classmethod
    def _metadata(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected the provider's metadata URL, e.g. "
                             "https://accounts.google.com/.well-known/openid-configuration")
        return value

    @field_validator("redirect_uri")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        if value is not None and not value.rstrip("/").endswith("/oauth2callback"):
            raise ValueError("the redirect URI must be the report's address ending in /oauth2callback, "
                             "e.g. https://abproxy.example.com/oauth2callback")
        return value

    @field_validator("allowed_emails", "allowed_domains")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().lstrip("@") for v in value if v.strip()]

    @model_validator(mode="after")
    def _someone(self) -> "Auth":
        if not self.allowed_emails and not self.allowed_domains:
            raise ValueError("give 'allowed_emails' and/or 'allowed_domains': with neither, nobody could "
                             "read the report")
        return self


class HealthSettings(Strict):
    volume_change: float = Field(default=0.5, gt=0)
    volume_trailing_days: PositiveInt = 14
    event_missing_days: PositiveFloat = 2
    late_hours: PositiveFloat = 48
    null_rate_increase: float = Field(default=0.05, gt=0, le=1)
    max_future_minutes: PositiveFloat = 10
    pre_exposure_p: float = Field(default=0.001, gt=0, lt=1)
    interaction_p: float = Field(default=0.01, gt=0, lt=1)


class IngestSettings(Strict):
    """Limits and conventions of loading inbox files, and how the files of each folder are written."""

    max_columns: PositiveInt = 200
    null_markers: list[str] = Field(default_factory=lambda: list(NULL_MARKERS))
    max_rejected_fraction: float = Field(default=0.05, ge=0, le=1)
    formats: dict[str, InboxFormat] = Field(default_factory=dict)

    @field_validator("formats")
    @classmethod
    def _where(cls, value: dict[str, InboxFormat]) -> dict[str, InboxFormat]:
        for key in value:
            root = key.strip("/").split("/", 1)[0]
            if root not in FORMAT_ROOTS:
                raise ValueError(f"'{key}': a format applies to a folder or file pattern inside the inbox, "
                                 "starting with exposures/ or events/ (e.g. 'exposures/partner' or "
                                 "'events/*.tsv')")
        return value


class Promote(Strict):
    """Move a registry alias to the shipped variant's model version."""

    alias: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+$", max_length=255)]
    on: Literal["SHIP"] = "SHIP"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads the bare key `on` as the boolean true."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class MlflowSettings(Strict):
    """The MLflow tracking server / model registry (`pip install 'abproxy[mlflow]'`)."""

    tracking_uri: str | None = None          # default: $MLFLOW_TRACKING_URI
    write_back: bool = True
    promote: Promote | None = None
    timeout_seconds: PositiveFloat = 10
    retries: int = Field(default=2, ge=0, le=10)
