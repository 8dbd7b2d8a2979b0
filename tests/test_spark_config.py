"""engine / spark / source configuration, and the Spark engine's one-line answers when something is
missing (no Spark session is started here: these run in the fast suite)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from abproxy.config import ConfigError, Source, parse_config

BASE = {"metrics": {"m": {"type": "mean", "event": "purchase"}},
        "experiments": {"e": {"control": "a", "variants": {"a": {}, "b": {}}, "primary": ["m"]}}}
SPARK = {**BASE, "engine": "spark", "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "8"}},
         "source": {"exposures": "lake/exposures", "events": "lake/events/*.parquet"}}


def _problems(data) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_engine_defaults_to_duckdb():
    config = parse_config(BASE)
    assert config.engine == "duckdb" and config.source is None


def test_spark_configuration_as_in_the_readme():
    config = parse_config(SPARK)
    assert config.engine == "spark" and config.spark.master == "local[2]"
    assert config.spark.conf == {"spark.sql.shuffle.partitions": "8"} and config.spark.connect_url is None
    assert config.source.events == "lake/events/*.parquet" and config.spark.quantiles == "exact"


@pytest.mark.parametrize("spark, connect", [({"master": "sc://host:15002"}, "sc://host:15002"),
                                            ({"remote": "sc://host:15002"}, "sc://host:15002"),
                                            ({"master": "yarn"}, None)])
def test_spark_connect_address(spark, connect):
    assert parse_config({**SPARK, "spark": spark}).spark.connect_url == connect


@pytest.mark.parametrize("change, where, words", [
    ({"engine": "spark", "source": None}, "source", "engine: spark reads"),
    ({"engine": "duckdb"}, "source", "set 'engine: spark' or remove 'source'"),
    ({"engine": "sparkk"}, "engine", "'duckdb' or 'spark'"),
    ({"source": {"exposures": "x"}}, "source.events", "Field required"),
    ({"source": {"exposures": "x", "events": "y", "evnts": "z"}}, "source.evnts", "unknown key"),
    ({"spark": {"master": "local[2]", "remote": "sc://h:15002"}}, "spark", "not both"),
    ({"spark": {"remote": "http://h:15002"}}, "spark", "sc://host:15002"),
    ({"spark": {"masterr": "local"}}, "spark.masterr", "unknown key"),
    ({"spark": {"quantiles": "fast"}}, "spark.quantiles", "'exact' or 'approximate'"),
])
def test_bad_engine_settings_name_the_key(change, where, words):
    data = {**SPARK, **change}
    data = {k: v for k, v in data.items() if v is not None}
    problems = _problems(data)
    assert any(w == where and words in msg for w, msg in problems), problems


@pytest.mark.parametrize("location, table", [
    ("events", True), ("lake.events", True), ("main.lake.events", True), ("./events", False),
    ("/lake/events", False), ("lake/*.parquet", False), ("events.parquet", False), ("s3a://bucket/events", False),
    ("dbfs:/mnt/events", False)])
def test_source_is_a_table_name_or_a_path(location, table):
    assert Source.is_table(location) is table


def _workspace(tmp_path: Path, data: dict) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "abproxy.yaml").write_text(yaml.safe_dump(data))
    return root


def _cli(root: Path, *args: str, env: dict | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + "import sys; from abproxy.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args, "--workspace", str(root)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_ingest_on_spark_says_the_source_is_external(tmp_path):
    root = _workspace(tmp_path, SPARK)
    result = _cli(root, "ingest")
    assert result.returncode == 0, result.stderr
    assert "engine: spark reads" in result.stdout and "nothing to ingest" in result.stdout
    assert not (root / "data" / "warehouse.duckdb").exists()


BLOCK_PYSPARK = textwrap.dedent("""
    import importlib.abc, sys
    class _NoPySpark(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "pyspark" or name.startswith("pyspark."):
                raise ModuleNotFoundError("No module named 'pyspark'", name=name)
    sys.meta_path.insert(0, _NoPySpark())
""")


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_missing_pyspark_is_one_line(tmp_path):
    line = _one_line(_cli(_workspace(tmp_path, SPARK), "analyze", prelude=BLOCK_PYSPARK))
    assert "pip install 'abproxy[spark]'" in line


def test_missing_java_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path / "empty")   # no java on the PATH
    line = _one_line(_cli(_workspace(tmp_path, SPARK), "analyze", env=env))
    assert "Java 17" in line and "default-jre-headless" in line
