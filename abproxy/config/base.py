"""What every part of `abproxy.yaml` shares: strict models (unknown keys are errors), key and identifier patterns."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


CONFIG_FILE = "abproxy.yaml"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, max_length=63)]
Key = Annotated[str, Field(pattern=KEY.pattern, max_length=100)]
Aggregate = Literal["sum", "count", "count_distinct_days", "max", "min", "avg", "exists"]


class Strict(BaseModel):
    # defer_build: a model's validator is built at its first validation, not at import (start-up of
    # commands that never validate it; `Config`'s build includes the nested models' schemas)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
