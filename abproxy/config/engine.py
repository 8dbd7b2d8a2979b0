"""Where the data queries run: `engine`, `spark` and `source` (issue 16)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from .base import Strict


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
