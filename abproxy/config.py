"""The workspace file `abproxy.yaml`: typed models, loading, clear errors.

Every model forbids unknown keys so a typo never passes silently. `load_config` returns a
validated `Config` or raises `ConfigError` listing every problem with its key path.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError  # noqa: F401  (re-exported: config.ConfigError)

CONFIG_FILE = "abproxy.yaml"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, max_length=63)]
Key = Annotated[str, Field(pattern=KEY.pattern, max_length=100)]
Aggregate = Literal["sum", "count", "count_distinct_days", "max", "min", "avg", "exists"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(Strict):
    ingest_every_minutes: PositiveFloat = 15
    analyze_cron: str = "0 * * * *"
    misfire_grace_seconds: PositiveInt = 300

    @field_validator("analyze_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
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


class EventSource(Strict):
    """Which events feed one number of a unit: name, optional SQL predicate, aggregate."""

    event: Key
    aggregate: Aggregate = "sum"
    where: str | None = None
    column: Identifier = "value"


class Capping(Strict):
    """Winsorize per-unit values at an absolute value or a pooled quantile (METHODS §6)."""

    quantile: float | None = Field(default=None, gt=0.5, lt=1)
    value: float | None = None
    ignore_zeros: bool = False

    @model_validator(mode="after")
    def _one(self) -> "Capping":
        if (self.quantile is None) == (self.value is None):
            raise ValueError("give exactly one of 'quantile' (e.g. 0.99) or 'value' (an absolute cap)")
        return self


class Cuped(Strict):
    """CUPED covariate: the metric over a pre-exposure window, or (CUPAC) a numeric exposure
    attribute logged at exposure time, e.g. the model's predicted value (METHODS §5, §17)."""

    pre_window_days: PositiveFloat = 14
    covariate: Identifier | None = None

    @model_validator(mode="after")
    def _one(self) -> "Cuped":
        if self.covariate is not None and "pre_window_days" in self.model_fields_set:
            raise ValueError("give either 'pre_window_days' (the metric before exposure) or 'covariate' "
                             "(an exposure column), not both")
        return self


class Metric(Strict):
    type: Literal["mean", "proportion", "ratio", "quantile"]
    name: str | None = None
    description: str = ""
    owner: str = ""
    event: Key | None = None
    aggregate: Aggregate | None = None
    where: str | None = None
    column: Identifier = "value"
    numerator: EventSource | None = None
    denominator: EventSource | None = None
    sql: str | None = None
    window_days: PositiveFloat = 14
    quantile: float | None = Field(default=None, gt=0, lt=1)
    capping: Capping | None = None
    cuped: Cuped | bool | None = None
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _shape(self) -> "Metric":
        if self.sql is not None:
            if self.event or self.numerator or self.denominator:
                raise ValueError("a raw 'sql' metric takes no 'event', 'numerator' or 'denominator'")
            if self.cuped:
                raise ValueError("CUPED is not available for raw 'sql' metrics")
            return self
        if self.type == "ratio":
            if self.numerator is None or self.denominator is None:
                raise ValueError("a ratio metric needs 'numerator' and 'denominator' ({event, aggregate})")
            if self.event is not None:
                raise ValueError("a ratio metric takes 'numerator'/'denominator', not 'event'")
        else:
            if self.event is None:
                raise ValueError(f"a {self.type} metric needs 'event' (the event name to aggregate)")
            if self.numerator or self.denominator:
                raise ValueError(f"'numerator'/'denominator' are for ratio metrics, not {self.type}")
        if self.type == "proportion" and self.capping is not None:
            raise ValueError("capping does not apply to a proportion metric")
        if (self.type == "quantile") != (self.quantile is not None):
            raise ValueError("a quantile metric needs 'quantile' (e.g. 0.9), and 'quantile' needs type: quantile")
        if self.type == "quantile" and (self.capping is not None or self.cuped):
            raise ValueError("a quantile metric takes no 'capping' or 'cuped' (quantiles are robust to the tail)")
        return self

    @property
    def cuped_covariate(self) -> str | None:
        """The exposure column used as CUPED covariate (CUPAC), if any."""
        return self.cuped.covariate if isinstance(self.cuped, Cuped) else None

    @property
    def cuped_days(self) -> float | None:
        if self.cuped is True:
            return Cuped().pre_window_days
        if isinstance(self.cuped, Cuped) and self.cuped.covariate is None:
            return self.cuped.pre_window_days
        return None

    def source(self) -> EventSource:
        """The event source of a mean/proportion metric."""
        default = "count" if self.type == "proportion" else "sum"
        return EventSource(event=self.event, aggregate=self.aggregate or default,
                           where=self.where, column=self.column)


MODEL_REF = re.compile(r"^models:/(?P<name>[^/@\s]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_\-]+))$")


class Variant(Strict):
    """A variant and the model behind it (lineage): typed here, or resolved from an MLflow registry
    reference `models:/name/3` (a version) or `models:/name@alias` at each run."""

    model: str = ""
    version: str = ""
    mlflow: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    training_data: str = ""
    link: str = ""
    description: str = ""

    @field_validator("mlflow")
    @classmethod
    def _model_ref(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_REF.match(value.strip()):
            raise ValueError(f"{value!r} is not an MLflow model reference; write 'models:/NAME/VERSION' "
                             "(e.g. models:/recsys/3) or 'models:/NAME@ALIAS' (e.g. models:/recsys@challenger)")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_source(self) -> "Variant":
        if self.mlflow and self.version:
            raise ValueError("give either 'mlflow' (the registry names the version) or 'version', not both")
        return self


class Guardrail(Strict):
    metric: Key
    margin: float = Field(default=0.0, ge=0)
    relative: bool = True


class Decision(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    sequential: bool | Literal["group"] = True
    looks: PositiveInt | None = None
    sequential_tuning: PositiveFloat = 5000
    min_days: float = Field(default=7, ge=0)
    min_units_per_variant: int = Field(default=1000, ge=0)
    power: float = Field(default=0.8, gt=0, lt=1)
    target_mde: PositiveFloat = 0.02
    max_days: PositiveFloat | None = None
    segment_harm: Literal["block", "warn"] = "warn"
    min_segment_units: PositiveInt = 500

    @model_validator(mode="after")
    def _looks(self) -> "Decision":
        if self.sequential == "group" and self.looks is None:
            raise ValueError("sequential: group needs 'looks' (the planned number of analyses, e.g. 14)")
        if self.looks is not None and self.sequential != "group":
            raise ValueError("'looks' is for sequential: group (group-sequential boundaries)")
        return self

    @property
    def group_sequential(self) -> bool:
        return self.sequential == "group"


class Drift(Strict):
    decay_fraction: float = Field(default=0.5, gt=0, lt=1)
    recent_days: PositiveInt = 7


class Experiment(Strict):
    name: str = ""
    hypothesis: str = ""
    owner: str = ""
    status: Literal["running", "shipped", "rolled_back", "stopped"] = "running"
    start: dt.date | None = None
    end: dt.date | None = None
    control: Key
    variants: dict[Key, Variant]
    allocation: dict[Key, PositiveFloat] | None = None
    primary: list[Key] = Field(min_length=1)
    secondary: list[Key] = Field(default_factory=list)
    guardrails: list[Key | Guardrail] = Field(default_factory=list)
    segments: list[Identifier] = Field(default_factory=list)
    decision: Decision = Field(default_factory=Decision)
    holdback: bool = False
    launched_at: dt.date | None = None
    drift: Drift = Field(default_factory=Drift)

    @model_validator(mode="after")
    def _arms(self) -> "Experiment":
        if len(self.variants) < 2:
            raise ValueError("an experiment needs at least two variants (the control and one treatment)")
        if self.control not in self.variants:
            raise ValueError(f"control '{self.control}' is not one of the variants {sorted(self.variants)}")
        if self.allocation is not None:
            if set(self.allocation) != set(self.variants):
                raise ValueError(f"allocation names {sorted(self.allocation)} but the variants are {sorted(self.variants)}")
            total = sum(self.allocation.values())
            if abs(total - 1) > 1e-6:
                raise ValueError(f"allocation sums to {total:g}; the shares must sum to 1")
        if self.start and self.end and self.end < self.start:
            raise ValueError("'end' is before 'start'")
        if self.decision.group_sequential and self.planned_days is None:
            raise ValueError("sequential: group needs a planned duration: set decision.max_days, or 'start' and 'end'")
        return self

    @property
    def planned_days(self) -> float | None:
        """Planned duration in days: decision.max_days, else start..end (inclusive)."""
        if self.decision.max_days:
            return float(self.decision.max_days)
        if self.start and self.end:
            return float((self.end - self.start).days + 1)
        return None

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.allocation) if self.allocation else {v: 1 / len(self.variants) for v in self.variants}

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variants if v != self.control]

    @property
    def guardrail_specs(self) -> list[Guardrail]:
        return [g if isinstance(g, Guardrail) else Guardrail(metric=g) for g in self.guardrails]

    def roles(self) -> dict[str, str]:
        """metric key -> role, in display order: primary, guardrail, secondary."""
        roles = {m: "primary" for m in self.primary}
        roles.update({g.metric: "guardrail" for g in self.guardrail_specs if g.metric not in roles})
        roles.update({m: "secondary" for m in self.secondary if m not in roles})
        return roles


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


FORMAT_ROOTS = ("exposures", "events")


class InboxFormat(Strict):
    """How the files of one inbox folder or file pattern are written (ingest.formats)."""

    delimiter: str | None = None
    timestamp_format: list[str] | None = None
    timezone: str | None = None
    null_values: list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None:
            value = {"\\t": "\t", "tab": "\t"}.get(value, value)
            if len(value) != 1 or value in "\"\n\r":
                raise ValueError("expected one character such as ';', '|' or '\\t' (tab)")
        return value

    @field_validator("timestamp_format", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        formats = [value] if isinstance(value, str) else value
        if isinstance(formats, list):
            for text in formats:
                if isinstance(text, str) and "%" not in text:
                    raise ValueError(f"'{text}' is not a strptime format; write e.g. '%d/%m/%Y %H:%M'")
        return formats

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone '{value}'; use an IANA name such as "
                                 "'Europe/Berlin' or 'UTC'") from None
        return value

    @field_validator("columns")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not IDENTIFIER.fullmatch(target):
                raise ValueError(f"'{source}: {target}': the new name must be a column name such as unit_id")
        targets = [t.lower() for t in value.values()]
        if len(set(targets)) != len(targets):
            raise ValueError("two columns are renamed to the same name")
        return value


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


TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


class SparkSettings(Strict):
    """Where `engine: spark` computes: a Spark master (`local[2]`, `yarn`, `spark://…`) or a Spark
    Connect endpoint (`sc://host:15002`, as `master` or `remote`), and extra Spark configuration."""

    master: str | None = None
    remote: str | None = None
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    quantiles: Literal["exact", "approximate"] = "exact"   # capping: percentile or percentile_approx

    @model_validator(mode="after")
    def _one_endpoint(self) -> "SparkSettings":
        if self.master and self.remote:
            raise ValueError("give 'master' (e.g. local[2]) or 'remote' (sc://host:15002), not both")
        for name in (self.master, self.remote):
            if name is not None and not name.strip():
                raise ValueError("'master'/'remote' is empty; e.g. master: \"local[2]\"")
        if self.remote and not self.remote.startswith("sc://"):
            raise ValueError(f"'remote' must be a Spark Connect address like sc://host:15002 (got {self.remote!r})")
        return self

    @property
    def connect_url(self) -> str | None:
        """The Spark Connect address, when the session is remote."""
        if self.remote:
            return self.remote
        return self.master if self.master and self.master.startswith("sc://") else None


class Source(Strict):
    """External exposures and events (engine: spark): each a Parquet path or glob (relative paths are
    under the workspace; any URI Spark reads, e.g. s3a://, abfss://, dbfs:/) or a table name
    (`table`, `schema.table` or `catalog.schema.table`). Same columns as the inbox contract."""

    exposures: str = Field(min_length=1)
    events: str = Field(min_length=1)

    @staticmethod
    def is_table(location: str) -> bool:
        """A bare dotted identifier names a table; anything else (a '/', a glob, '.parquet') is a path.
        A relative folder named like a table is written './events'."""
        return bool(TABLE_NAME.match(location)) and not location.lower().endswith(".parquet")


class Config(Strict):
    warehouse: str = "data/warehouse.duckdb"
    inbox: Inbox = Field(default_factory=Inbox)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    snapshot: str = "data/report.duckdb"
    schedule: Schedule = Field(default_factory=Schedule)
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings)
    metrics: dict[Key, Metric] = Field(default_factory=dict)
    experiments: dict[Key, Experiment] = Field(default_factory=dict)
    notifications: Notifications = Field(default_factory=Notifications)
    health: HealthSettings = Field(default_factory=HealthSettings)
    mlflow: MlflowSettings | None = None
    auth: Auth | None = None
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    source: Source | None = None

    def uses_mlflow(self) -> bool:
        return self.mlflow is not None or any(v.mlflow for e in self.experiments.values() for v in e.variants.values())

    @field_validator("inbox", mode="before")
    @classmethod
    def _inbox_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


def definition_hash(config: Config, experiment: str) -> str:
    """sha256 of an experiment's definition and the definitions of the metrics it uses."""
    return hashlib.sha256(json.dumps(definitions(config, experiment), sort_keys=True).encode()).hexdigest()[:16]


def definitions(config: Config, experiment: str) -> dict[str, Any]:
    exp = config.experiments[experiment]
    return {
        "experiment": exp.model_dump(mode="json"),
        "metrics": {m: config.metrics[m].model_dump(mode="json") for m in exp.roles()},
    }


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in {"str", "Guardrail", "Cuped", "bool"}))]
    return ".".join(parts) or "(top level)"


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors():
        where, msg = _location(item["loc"]), item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key (a typo?): remove it or fix its spelling (see the README's configuration reference)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        problems.append((where, msg))
    return list(dict.fromkeys(problems))


def _unknown_metrics(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Metrics named by experiments but not defined, checked on the raw mapping so they are
    reported together with every other problem."""
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    known = ", ".join(sorted(metrics)) or "none defined"
    problems = []
    experiments = data.get("experiments") if isinstance(data.get("experiments"), dict) else {}
    for key, exp in experiments.items():
        if not isinstance(exp, dict):
            continue
        for field in ("primary", "secondary", "guardrails"):
            names = exp.get(field) or []
            for i, item in enumerate(names if isinstance(names, list) else []):
                name = item.get("metric") if isinstance(item, dict) else item
                if isinstance(name, str) and name not in metrics:
                    problems.append((f"experiments.{key}.{field}.{i}",
                                     f"unknown metric '{name}'; define it under 'metrics' (known: {known})"))
    return problems


def _engine_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """`engine: spark` needs `source`; `source` means nothing to DuckDB (it loads the inbox)."""
    engine, source = data.get("engine", "duckdb"), data.get("source")
    if engine == "spark" and source is None:
        return [("source", "engine: spark reads the exposures and events where they live: add "
                           "'source: {exposures: <Parquet path/glob or table>, events: <same>}'")]
    if engine == "duckdb" and source is not None:
        return [("source", "read by engine: spark only (DuckDB loads the inbox): set 'engine: spark' "
                           "or remove 'source'")]
    return []


def parse_config(data: Any, path: Path | str = CONFIG_FILE) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("(top level)", "expected a mapping of keys such as 'metrics' and 'experiments'")])
    problems = _unknown_metrics(data) + _engine_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc) + problems
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(workspace: Path | str) -> Config:
    path = Path(workspace) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(path, [("(file)", f"not found; create a workspace with 'abproxy init {workspace}' "
                                            "or point --workspace at one")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(path, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_config(data, path)


def resolve_workspace(workspace: str | os.PathLike | None) -> Path:
    return Path(workspace or os.environ.get("ABPROXY_WORKSPACE") or ".").resolve()
