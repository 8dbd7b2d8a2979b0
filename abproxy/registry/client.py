"""Reaching the MLflow tracking server / model registry: the URI, the client, bounded retries.

MLflow is optional (`pip install 'abproxy[mlflow]'`) and imported only here, only when a workspace
uses it. Every call goes through `Registry.call`, which retries with a short backoff and, once the
registry proved unreachable, skips the remaining calls of the pass: the job never waits long on it.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..config import Config, MlflowSettings
from ..errors import UsageError

log = logging.getLogger(__name__)
NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
INSTALL = "pip install 'abproxy[mlflow]'"


class MlflowMissing(UsageError):
    """abproxy.yaml uses MLflow but the client is not installed (one line, exit 2)."""

    def __init__(self, detail: str = ""):
        super().__init__(f"abproxy.yaml uses MLflow (an 'mlflow:' key) but the MLflow client is not "
                         f"installed{f' ({detail})' if detail else ''}: {INSTALL}")


class RegistryUnavailable(Exception):
    """The registry cannot be reached (or read); the message says which and why."""


class NotInRegistry(Exception):
    """The registry answered, but the model, version or alias does not exist."""


def require_client() -> None:
    """Raise MlflowMissing unless the MLflow client can be imported."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise MlflowMissing(str(exc)) from None


def tracking_uri(settings: MlflowSettings | None, root: Path) -> str:
    """The configured URI (else $MLFLOW_TRACKING_URI); a relative sqlite path is taken relative to the
    workspace folder, and a sqlite file must exist (MLflow would silently create an empty one)."""
    uri = (settings.tracking_uri if settings else None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryUnavailable("no MLflow tracking URI: set mlflow.tracking_uri in abproxy.yaml or "
                                  "$MLFLOW_TRACKING_URI")
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else root / path
        if not path.exists():
            raise RegistryUnavailable(f"no MLflow database at {path}")
        return f"sqlite:///{path}"
    return uri


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) in NOT_FOUND


class Registry:
    """An MLflow client with bounded retries and a circuit breaker for one pass of the job."""

    def __init__(self, uri: str, client: Any, retries: int = 2, backoff: float = 0.5):
        self.uri, self.client, self.retries, self.backoff = uri, client, retries, backoff
        self.down: str | None = None      # why the registry is considered unreachable in this pass

    @classmethod
    def open(cls, config: Config, root: Path) -> "Registry":
        """Connect (MlflowMissing without the client; RegistryUnavailable if it cannot be used)."""
        settings = config.mlflow or MlflowSettings()
        require_client()
        uri = tracking_uri(settings, root)
        # abproxy retries itself; MLflow's own defaults (7 retries, 120 s timeout) would hold the job for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.timeout_seconds)))
        from mlflow import MlflowClient

        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        except Exception as exc:  # an unsupported URI, a store MLflow cannot open
            raise RegistryUnavailable(f"cannot open the MLflow registry {uri}: {_short(exc)}") from None
        return cls(uri, client, settings.retries)

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
        """(result, attempts). Raises NotInRegistry at once, RegistryUnavailable after the retries."""
        if self.down:
            raise RegistryUnavailable(self.down)
        for attempt in range(1, self.retries + 2):
            try:
                return fn(*args), attempt
            except Exception as exc:
                if is_not_found(exc):
                    raise NotInRegistry(f"{what}: {_short(exc)}") from None
                if attempt > self.retries:
                    self.down = f"MLflow registry {self.uri} unreachable ({what}: {_short(exc)})"
                    log.warning("%s", self.down)
                    raise RegistryUnavailable(self.down) from None
                log.info("MLflow %s failed (attempt %d of %d): %s; retrying", what, attempt, self.retries + 1,
                         _short(exc))
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
