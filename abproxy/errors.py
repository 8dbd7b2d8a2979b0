"""Every error a user can cause, in one hierarchy, each with the exit code the CLI returns.

Library code raises these; `cli.main` catches `AbproxyError` once and prints `error: <message>` (one
line, or the listed problems of a configuration) and returns `exit_code`. Anything else is a bug and is
printed with its type and a hint to rerun with `--debug`. This module imports nothing of the project.
"""
from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class AbproxyError(Exception):
    """A problem the user can fix; the message says what is wrong, where, and what to do."""

    exit_code = EXIT_FAILED


class UserError(AbproxyError):
    """A bad command-line value or request (printed as one line)."""


class UsageError(AbproxyError):
    """The command cannot run as asked (exit 2, like argparse's own usage errors)."""

    exit_code = EXIT_USAGE


class ConfigError(AbproxyError):
    """The workspace configuration is invalid; `problems` lists (key path, message)."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]):
        self.path, self.problems = str(path), problems
        lines = [f"{self.path}: {len(problems)} problem(s)"]
        lines += [f"  {where}: {what}" for where, what in problems]
        super().__init__("\n".join(lines))


class UnknownExperimentError(AbproxyError, KeyError):
    """An experiment key the configuration does not define (a KeyError, for callers that look keys up)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WarehouseError(AbproxyError):
    """The warehouse cannot be opened or upgraded; the message says what to do."""


class LockError(AbproxyError):
    """Another abproxy process is writing this workspace."""


class HistoryError(AbproxyError):
    """A run or experiment the user named does not exist; the message is one line with what to do."""


class MetricSQLError(AbproxyError, ValueError):
    """A metric cannot be turned into SQL; the message names the metric and the problem."""


class UnsafeSQL(MetricSQLError):
    """Metric SQL that DuckDB's parser shows would escape its place or reach outside the warehouse."""


class AuthSetupError(AbproxyError):
    """The report's login cannot be set up (a secret is missing); the message says what to set."""


class BadFile(AbproxyError):
    """An inbox file cannot be loaded; the message names the file, the problem and the fix."""


class DefinitionError(AbproxyError, ValueError):
    """A metric or segment definition does not match the warehouse; the message has the key paths."""


class PreviewError(UserError, ValueError):
    """A metric cannot be previewed (unknown key, no experiment); the message says what to do."""


class SparkUnavailable(AbproxyError):
    """engine: spark cannot run here (no pyspark, no Java, no session); the message says what to install."""


class SourceError(AbproxyError, ValueError):
    """The configured `source` cannot be read or lacks a column of the input contract."""


class EngineError(AbproxyError, ValueError):
    """A query failed on the engine (Spark's message, cut to its first line: no JVM stack)."""
