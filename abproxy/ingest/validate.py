"""Validation: a file's column names, and the per-row checks that send a row to `rejected_rows`
with its reason (missing, unparseable or future timestamps, non-numeric or overflowing values)."""
from __future__ import annotations

from datetime import datetime

from .. import formats
from ..config import IDENTIFIER, NULL_MARKERS
from ..errors import BadFile
from ..formats import ReadOptions
from .sql import (BLANKS, INTERNAL_PREFIX, MAX_NAME, MAX_VALUE, NUMERIC_TYPES, OPTIONAL, REQUIRED,
                  SYSTEM_COLUMNS, TIMESTAMP_COLUMN, base_type, lit, q, ts_lit)


def check_columns(rel: str, kind: str, fmt: str, columns: list[tuple[str, str]],
                  delimiter_hint: str = "") -> dict[str, tuple[str, str]]:
    """Validate the file's column names; return required/optional column → (name in file, type)."""
    names = [name for name, _ in columns]
    lowered: dict[str, tuple[str, str]] = {}
    for name, ctype in columns:
        if name.lower() in lowered:
            raise BadFile(f"{rel}: column name '{name}' appears twice (names are case-insensitive); "
                          "rename one of them")
        lowered[name.lower()] = (name, ctype)
    missing = [c for c in REQUIRED[kind] if c not in lowered]
    if missing:
        found = ", ".join(f"'{name}'" for name in names)
        message = f"{rel}: missing required columns {', '.join(missing)} (found: {found})"
        if fmt == "csv" and len(names) == 1:
            message += delimiter_hint or "; is the delimiter ','?"
        raise BadFile(message)
    known = REQUIRED[kind] + OPTIONAL[kind]
    for position, name in enumerate(names, start=1):
        low = name.lower()
        if low in known:
            continue
        if not name.strip():
            raise BadFile(f"{rel}: column {position} has no name in the header; name it or remove it")
        if low in SYSTEM_COLUMNS or low.startswith(INTERNAL_PREFIX):
            raise BadFile(f"{rel}: column '{name}' is reserved by abproxy; rename it")
        if not IDENTIFIER.fullmatch(name) or len(name) > MAX_NAME:
            raise BadFile(f"{rel}: column '{name}' is not a valid attribute name (letters, digits and _, "
                          f"not starting with a digit, at most {MAX_NAME} characters); rename it")
    return {c: lowered[c] for c in known if c in lowered}


def _text(name: str, ctype: str) -> str:
    return q(name) if ctype == "VARCHAR" else f"CAST({q(name)} AS VARCHAR)"


def blank(name: str, ctype: str, markers: tuple[str, ...] = ()) -> str:
    """NULL, '' or only white space, or (text) one of the null `markers` (cheap tests first)."""
    if ctype != "VARCHAR":
        return f"({q(name)} IS NULL)"
    test = f"{q(name)} IS NULL OR ({q(name)} < '!' AND trim({q(name)}, {BLANKS}) = '')"
    if markers:
        longest = max(len(m) for m in markers) + 2
        listed = ", ".join(lit(m) for m in markers)
        test += f" OR (length({q(name)}) <= {longest} AND lower(trim({q(name)}, {BLANKS})) IN ({listed}))"
    return f"({test})"


def _timestamp(name: str, ctype: str, opts: ReadOptions) -> str:
    """UTC TIMESTAMP (session is UTC): typed timestamps as they are, text in the configured
    formats / zone, epoch seconds or milliseconds (formats.timestamp_sql)."""
    base = ctype.upper().strip() if ctype.upper().startswith("TIMESTAMP WITH") else base_type(ctype)
    return formats.timestamp_sql(q(name), base, opts)


def _number(name: str, ctype: str) -> str:
    base = base_type(ctype)
    if base in NUMERIC_TYPES or base == "DECIMAL":
        return f"CAST({q(name)} AS DOUBLE)"
    return f"TRY_CAST({_text(name, ctype)} AS DOUBLE)"


def checked_sql(kind: str, source: str, cols: dict[str, tuple[str, str]], future_limit: datetime,
                markers: tuple[str, ...] = NULL_MARKERS, opts: ReadOptions | None = None) -> str:
    """The file's rows with normalised `__abp_<column>` values and `__abp_reason` (NULL = good).
    A cell of an identifier, timestamp or event_id column holding a null marker ('NULL', 'None', …)
    counts as missing; `value` keeps its own rule (blank is NULL, any other non-number is rejected)."""
    ts_col = TIMESTAMP_COLUMN[kind]
    opts = opts or ReadOptions()
    norm = []
    for col in REQUIRED[kind]:
        name, ctype = cols[col]
        norm.append(f"{_timestamp(name, ctype, opts) if col == ts_col else _text(name, ctype)} AS __abp_{col}")
    if "value" in cols:
        norm.append(f"{_number(*cols['value'])} AS __abp_value")
    if "event_id" in cols:
        name, ctype = cols["event_id"]
        norm.append(f"CASE WHEN {blank(name, ctype, markers)} THEN NULL ELSE {_text(name, ctype)} END "
                    "AS __abp_event_id")

    checks = [(blank(*cols[col], markers), f"missing {col}") for col in REQUIRED[kind] if col != ts_col]
    checks.append((blank(*cols[ts_col], markers), "missing timestamp"))
    checks.append((f"(__abp_{ts_col} IS NULL OR NOT isfinite(__abp_{ts_col}))",
                   f"unparseable timestamp in {ts_col}"))
    checks.append((f"__abp_{ts_col} > {ts_lit(future_limit)}", "timestamp in the future"))
    if "value" in cols:
        checks.append((f"(NOT {blank(*cols['value'])} AND (__abp_value IS NULL OR NOT isfinite(__abp_value)))",
                       "non-numeric value"))
        checks.append((f"abs(__abp_value) > {MAX_VALUE:.0e}",
                       f"value too large (beyond ±{MAX_VALUE:.0e}: its square would overflow a sum of squares)"))
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {lit(text)}" for cond, text in checks) + " END"
    return (f"SELECT *, {reason} AS __abp_reason FROM "
            f"(SELECT *, {', '.join(norm)} FROM ({source}))")


def check_table_width(rel: str, kind: str, extras: list[tuple[str, str]],
                      table_columns: dict[str, tuple[str, str]], limit: int) -> None:
    """Columns are added to the table for good: the table's property columns stay within the cap."""
    core = set(REQUIRED[kind] + OPTIONAL[kind] + SYSTEM_COLUMNS)
    present = [name for name in table_columns if name not in core]
    new = [name for name, _ in extras if name.lower() not in table_columns]
    if new and len(present) + len(new) > limit:
        raise BadFile(f"{rel}: would add {len(new)} new property column(s) to {kind}, which already has "
                      f"{len(present)} (ingest.max_columns is {limit}); drop the columns no metric or "
                      "segment uses, or raise ingest.max_columns in abproxy.yaml")
