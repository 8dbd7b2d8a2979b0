"""How the files of an inbox folder are written: `ingest.formats` → reader options and SQL.

`options_for` merges the `ingest.formats` entries that apply to one file (folders from the
outside in, then file patterns in the order written; later entries win field by field).
The SQL helpers turn a text or typed column into a UTC `TIMESTAMP` with DuckDB's own
functions (`try_strptime` with the configured formats, `timezone()` for naive local times,
`to_timestamp`/`epoch_ms` for epoch seconds/milliseconds), so the parsing stays set-based.
"""
from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .config import InboxFormat

GLOB_CHARS = "*?["
# Plain numbers read as epoch time: 9–11 digits are seconds (1973–5138), 12–14 milliseconds.
EPOCH_SECONDS = r"^\s*[0-9]{9,11}(\.[0-9]+)?\s*$"
EPOCH_MILLIS = r"^\s*[0-9]{12,14}\s*$"
# A text timestamp that carries its own offset (…10:00Z, …10:00+02, …10:00:00.5-0130).
HAS_OFFSET = r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$"
DEFAULT_EXPECTED = "ISO 8601 such as 2026-11-16 17:11:00, or epoch seconds/milliseconds"
# Formats tried on rejected values to suggest a `timestamp_format` (first one that parses them all).
COMMON_FORMATS = ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                  "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S",
                  "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y",
                  "%Y%m%d%H%M%S", "%d %b %Y %H:%M", "%b %d %Y %H:%M", "%m/%d/%Y %I:%M %p")


@dataclass(frozen=True)
class ReadOptions:
    """The reader options of one file; `keys` are the `ingest.formats` entries that set them."""

    delimiter: str = ","
    timestamp_formats: tuple[str, ...] = ()
    timezone: str | None = None
    null_values: tuple[str, ...] = ()
    renames: dict[str, str] = field(default_factory=dict)   # file column (lower case) → new name
    keys: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """'' for the default options, else '+' and a short hash of them (kept with a failed file
        in the ledger, so that changing the options retries it)."""
        if self == ReadOptions(keys=self.keys):
            return ""
        text = repr((self.delimiter, self.timestamp_formats, self.timezone, self.null_values,
                     sorted(self.renames.items())))
        return "+" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def rename(self, name: str) -> str:
        return self.renames.get(name.lower(), name)

    @property
    def expected(self) -> str:
        """What a timestamp must look like, for messages."""
        if self.timestamp_formats:
            return " or ".join(f"'{f}'" for f in self.timestamp_formats) + " (ingest.formats timestamp_format)"
        return DEFAULT_EXPECTED

    def where(self, rel: str) -> str:
        """The `ingest.formats` key to edit for this file (the most specific one that applies)."""
        return self.keys[-1] if self.keys else rel.split("/", 1)[0]


def _applies(key: str, rel: str) -> bool:
    key = key.strip("/")
    if any(ch in key for ch in GLOB_CHARS):
        return fnmatch.fnmatchcase(rel, key)
    return rel == key or rel.startswith(key + "/")


def options_for(formats: dict[str, InboxFormat] | None, rel: str) -> ReadOptions:
    """The merged options of every `ingest.formats` entry that applies to `rel` (inbox-relative)."""
    entries = [(k, f) for k, f in (formats or {}).items() if _applies(k, rel)]
    folders = sorted((e for e in entries if not any(ch in e[0] for ch in GLOB_CHARS)),
                     key=lambda e: e[0].strip("/").count("/"))
    patterns = [e for e in entries if any(ch in e[0] for ch in GLOB_CHARS)]
    merged: dict = {}
    for _, fmt in folders + patterns:
        merged.update({name: getattr(fmt, name) for name in fmt.model_fields_set})
    return ReadOptions(
        delimiter=merged.get("delimiter") or ",",
        timestamp_formats=tuple(merged.get("timestamp_format") or ()),
        timezone=merged.get("timezone"),
        null_values=tuple(merged.get("null_values") or ()),
        renames={k.lower(): v for k, v in (merged.get("columns") or {}).items()},
        keys=tuple(k for k, _ in folders + patterns))


# ------------------------------------------------------------------ SQL


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _local(naive: str, opts: ReadOptions) -> str:
    """A naive TIMESTAMP expression read in the configured zone (default UTC) → UTC TIMESTAMP."""
    if opts.timezone is None:
        return naive
    return f"CAST(timezone({_lit(opts.timezone)}, {naive}) AS TIMESTAMP)"


def _parsed(text: str, opts: ReadOptions) -> str:
    if opts.timestamp_formats:
        parts = []
        for fmt in opts.timestamp_formats:
            parsed = f"try_strptime({text}, {_lit(fmt)})"
            aware = "%z" in fmt or "%Z" in fmt
            parts.append(f"CAST({parsed} AS TIMESTAMP)" if aware else _local(parsed, opts))
        return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
    aware = f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if opts.timezone is None:
        return aware  # naive text is read in the session zone, UTC
    naive = _local(f"TRY_CAST({text} AS TIMESTAMP)", opts)
    return f"(CASE WHEN regexp_matches({text}, {_lit(HAS_OFFSET)}) THEN {aware} ELSE {naive} END)"


def _epoch(number: str) -> str:
    return (f"(CASE WHEN abs({number}) >= 1e11 THEN CAST(epoch_ms(CAST({number} AS BIGINT)) AS TIMESTAMP) "
            f"ELSE CAST(to_timestamp(CAST({number} AS DOUBLE)) AS TIMESTAMP) END)")


def timestamp_sql(column: str, base_type: str, opts: ReadOptions) -> str:
    """SQL turning the quoted `column` of DuckDB type `base_type` into a UTC TIMESTAMP (NULL when
    it does not parse)."""
    if base_type == "TIMESTAMP WITH TIME ZONE" or base_type == "TIMESTAMPTZ":
        return f"CAST({column} AS TIMESTAMP)"
    if base_type.startswith("TIMESTAMP") or base_type == "DATE":
        return _local(f"CAST({column} AS TIMESTAMP)", opts)
    if base_type in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UINTEGER", "UBIGINT",
                     "FLOAT", "DOUBLE", "DECIMAL"):
        return _epoch(column)
    text = column if base_type == "VARCHAR" else f"CAST({column} AS VARCHAR)"
    return (f"(CASE WHEN regexp_full_match({text}, {_lit(EPOCH_SECONDS)}) "
            f"OR regexp_full_match({text}, {_lit(EPOCH_MILLIS)}) THEN {_epoch(f'CAST(trim({text}) AS DOUBLE)')} "
            f"ELSE {_parsed(text, opts)} END)")


def null_sql(column: str, opts: ReadOptions) -> str:
    """A text column with the configured null markers turned into NULL (JSON/Parquet text; CSV
    uses read_csv's own `nullstr`)."""
    if not opts.null_values:
        return column
    return f"CASE WHEN {column} IN ({', '.join(_lit(v) for v in opts.null_values)}) THEN NULL ELSE {column} END"


def csv_options(opts: ReadOptions) -> str:
    """read_csv arguments for the delimiter and the null markers."""
    nulls = ("", *opts.null_values)
    return f"delim={_lit(opts.delimiter)}, nullstr=[{', '.join(_lit(v) for v in dict.fromkeys(nulls))}]"


# ------------------------------------------------------------------ hints


def detect_delimiter(con: duckdb.DuckDBPyConnection, path: Path, header: str | None = None) -> str | None:
    """The delimiter DuckDB's CSV sniffer sees in the file, or the most frequent candidate in the
    header line when the sniffer cannot tell."""
    try:
        found = con.execute("SELECT Delimiter FROM sniff_csv(?)", [str(path)]).fetchone()
        if found and found[0] and found[0] != ",":
            return found[0]
    except duckdb.Error:
        pass
    if header:
        counts = {d: header.count(d) for d in ";\t|:"}
        best = max(counts, key=counts.get)
        if counts[best]:
            return best
    return None


def show_delimiter(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


def suggest_format(con: duckdb.DuckDBPyConnection, values: list[str]) -> str | None:
    """The first common strptime format that parses every sample value, or None."""
    values = [v.strip() for v in values if v and v.strip()][:100]
    if not values:
        return None
    sample = "[" + ", ".join(_lit(v) for v in values) + "]"
    checks = ", ".join(f"bool_and(try_strptime(v, {_lit(f)}) IS NOT NULL)" for f in COMMON_FORMATS)
    row = con.execute(f"SELECT {checks} FROM (SELECT unnest({sample}) AS v)").fetchone()
    return next((f for f, ok in zip(COMMON_FORMATS, row) if ok), None)
