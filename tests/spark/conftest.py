"""One real local Spark session for the whole Spark suite (per xdist worker): local[2], Java 17,
UI off, two shuffle partitions. Every module here sets `pytestmark = pytest.mark.spark` (run them alone with -m spark)."""
from __future__ import annotations

import pytest

from abproxy.config import SparkSettings
from abproxy.spark import SparkUnavailable, requirements, session

SETTINGS = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "2",
                                                   "spark.default.parallelism": "2"})


@pytest.fixture(scope="session")
def spark():
    try:
        requirements(SETTINGS)
    except SparkUnavailable as exc:
        pytest.skip(str(exc))
    return session(SETTINGS)
